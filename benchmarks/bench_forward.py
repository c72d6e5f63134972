"""Forward pass of a gpt2-shaped model (random weights): glassformer in fp32 and in bf16
(matrices in bf16, stream/norms/pattern in fp32) vs Hugging Face GPT2LMHeadModel in fp32
and in bf16, on the same weights, same run. Ratio < 1 means glassformer is faster.

    .venv/bin/python benchmarks/bench_forward.py
"""

import copy

import torch

from glassformer.hardware import cpu_has_bf16_units

from _common import env_line, hf_gpt2_and_ours, race


def main() -> None:
    hf, ours = hf_gpt2_and_ours()
    ours16 = copy.deepcopy(ours).set_precision("bf16")
    hf16 = copy.deepcopy(hf).to(torch.bfloat16)
    print(
        f"gpt2 shape (124M), {env_line()}, HF attn: {hf.config._attn_implementation}, "
        f"bf16 units: {cpu_has_bf16_units()}"
    )
    for batch in (1, 8):
        ids = torch.randint(0, 50257, (batch, 256))
        repeats = 9 if batch == 1 else 5
        with torch.inference_mode():
            assert (hf(ids).logits - ours(ids)).abs().max() < 1e-3
            # fp32 against fp32 first, then the bf16 contenders: four models taking turns
            # would evict one another's weights from the caches between runs
            t = race({"ours fp32": lambda ids=ids: ours(ids), "HF fp32": lambda ids=ids: hf(ids)}, repeats=repeats)
            t |= race(
                {
                    "ours bf16": lambda ids=ids: ours16(ids),
                    "HF bf16": lambda ids=ids: hf16(ids),
                    "HF fp32 again": lambda ids=ids: hf(ids),
                },
                repeats=max(3, repeats // 2),
            )
        print(
            f"{batch}x256: " + "   ".join(f"{k} {v * 1e3:7.1f} ms" for k, v in t.items()) + "\n"
            f"   ratios: fp32/HF fp32 {t['ours fp32'] / t['HF fp32']:.2f}, bf16/HF fp32 "
            f"{t['ours bf16'] / t['HF fp32 again']:.2f}, bf16/HF bf16 {t['ours bf16'] / t['HF bf16']:.2f}"
        )


if __name__ == "__main__":
    main()
