"""The explorer's full-analysis request (every layer's and head's pattern plus the
next-token distribution) on a gpt2-small-shaped model (random weights) at 32 tokens,
measured end to end over HTTP on loopback, against a Hugging Face GPT2LMHeadModel
eager forward with output_attentions=True on the same weights, same run.

    .venv/bin/python benchmarks/bench_explorer.py
"""

import sys
from pathlib import Path

import httpx
import torch

from _common import env_line, hf_gpt2_and_ours, race

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import running

TEXT_TOKENS = 32


def main() -> None:
    hf, ours = hf_gpt2_and_ours()
    hf.set_attn_implementation("eager")
    from glassformer.tokenizer import ByteTokenizer

    ours.tokenizer = ByteTokenizer()  # random weights: any 32 ids will do; bytes make them text
    text = "a fluffy blue creature roamed th"
    ids = torch.tensor([ours.tokenizer.encode(text)])
    assert ids.shape[1] == TEXT_TOKENS
    with running({"gpt2-shape": ours}) as url, httpx.Client(timeout=60) as client:

        def explorer():
            r = client.post(f"{url}/api/analyze", json={"model": "gpt2-shape", "text": text})
            assert r.status_code == 200

        def hugging_face():
            with torch.inference_mode():
                hf(ids, output_attentions=True)

        t = race({"explorer": explorer, "hf": hugging_face}, repeats=15, warmup=3)
    print(f"gpt2 shape (124M), {TEXT_TOKENS} tokens, {env_line()}")
    print(
        f"explorer /api/analyze over HTTP {t['explorer'] * 1e3:.1f} ms   HF eager forward with attentions "
        f"{t['hf'] * 1e3:.1f} ms   ratio {t['explorer'] / t['hf']:.2f}"
    )


if __name__ == "__main__":
    main()
