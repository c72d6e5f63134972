"""Forward pass of a gpt2-shaped model (random weights): glassformer's fast path vs
Hugging Face GPT2LMHeadModel on the same weights, same run. Ratio < 1 means we are faster.

    .venv/bin/python benchmarks/bench_forward.py
"""

import torch

from _common import env_line, hf_gpt2_and_ours, race


def main() -> None:
    hf, ours = hf_gpt2_and_ours()
    print(f"gpt2 shape (124M), float32, {env_line()}, HF attn: {hf.config._attn_implementation}")
    for batch in (1, 8):
        ids = torch.randint(0, 50257, (batch, 256))
        with torch.inference_mode():
            ref, mine = hf(ids).logits, ours(ids)
            assert (ref - mine).abs().max() < 1e-3
            t = race(
                {"glassformer": lambda ids=ids: ours(ids), "hf": lambda ids=ids: hf(ids)},
                repeats=9 if batch == 1 else 5,
            )
        print(
            f"{batch}x256: glassformer {t['glassformer'] * 1e3:8.1f} ms   HF {t['hf'] * 1e3:8.1f} ms   "
            f"ratio {t['glassformer'] / t['hf']:.3f}"
        )


if __name__ == "__main__":
    main()
