"""The showcase head on SmolLM2-135M (30 x 9 heads): the one rule (pattern, then the 4
best pattern heads switched off in one batched pass) against one plain forward of the
same text and against the pattern step alone, so the switch-off check's cost reads as a
ratio. Then the `heads` command's detectors, and its switch-off column alone.

    .venv/bin/python benchmarks/bench_showcase.py
"""

import time

import glassformer as gf
from glassformer.inputs import encode_batch
from glassformer.lab import heads, showcase, survey, switch_off

from _common import env_line, race

TEXTS = ["The capital of France is", "Le chat noir dort sur le canapé et le chien"]


def main() -> None:
    print(env_line())
    model = gf.load("smollm2")
    for text in TEXTS:
        ids = encode_batch(model, text)
        t = race(
            {
                "forward": lambda ids=ids: model(ids),
                "pattern only": lambda ids=ids: heads._patterns(model, ids),
                "showcase": lambda ids=ids: showcase.showcase_head(model, ids),
            },
            repeats=3,
            warmup=1,
        )
        shown = showcase.showcase_head(model, ids)
        print(
            f"{text!r} ({ids.shape[1]} tokens): layer {shown.layer} head {shown.head}; forward {t['forward']:.2f}s, "
            f"pattern {t['pattern only'] / t['forward']:.1f}x, showcase {t['showcase'] / t['forward']:.1f}x a forward"
        )
    start = time.perf_counter()
    found = survey.detect_all(model)
    total = time.perf_counter() - start
    only = switch_off.switch_off_heads(model, found.tables)
    texts, where, what = switch_off.switch_off_texts(model, None, None if only is None else len(only))
    t = race(
        {"forward": lambda: model(texts), "column": lambda: switch_off.switch_off_table(model, texts, where, only)},
        repeats=1,
        warmup=0,
    )
    print(
        f"heads: {total:.1f}s in all; its switch-off column {t['column']:.1f}s = "
        f"{t['column'] / t['forward']:.1f}x a forward of its texts ({what})"
    )


if __name__ == "__main__":
    main()
