"""Generation speed at batch 1: gpt2-small shape (random weights), greedy, 128 new
tokens, glassformer's KV-cached `generate` in fp32 and in bf16 vs Hugging Face `generate`
(fp32) on the same weights, same run. Also the fraction of the memory-bandwidth bound
reached: at batch 1 every new token must read every weight once, so
tokens/s <= bandwidth / weight bytes.

    .venv/bin/python benchmarks/bench_generate.py
"""

import copy

import torch

import glassformer as gf
from glassformer.hardware import cpu_has_bf16_units

from _common import copy_bandwidth, decode_time_split, env_line, hf_gpt2_and_ours, race

NEW = 128


def weight_bytes(model) -> int:
    # one row of W_pos per token; W_E is read whole by W_U
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n != "embed.W_pos.weight")


def main() -> None:
    hf, ours = hf_gpt2_and_ours()
    ours16 = copy.deepcopy(ours).set_precision("bf16")
    prompt = torch.randint(0, 50257, (1, 16))

    def hf_generate():
        return hf.generate(prompt, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)

    with torch.inference_mode():
        ref = hf_generate()
        assert torch.equal(ref, gf.generate(ours, prompt, max_new_tokens=NEW, temperature=0)), "greedy tokens differ"
        same16 = (gf.generate(ours16, prompt, max_new_tokens=NEW, temperature=0) == ref).float().mean().item()
        t = race(
            {
                "fp32": lambda: gf.generate(ours, prompt, max_new_tokens=NEW, temperature=0),
                "bf16": lambda: gf.generate(ours16, prompt, max_new_tokens=NEW, temperature=0),
                "hf": hf_generate,
            },
            repeats=3,
            warmup=1,
        )
    tps = {k: NEW / v for k, v in t.items()}
    bandwidth = copy_bandwidth()
    bound32, bound16 = bandwidth / weight_bytes(ours), bandwidth / weight_bytes(ours16)
    print(f"gpt2 shape (124M), batch 1, {NEW} new tokens greedy, {env_line()}, bf16 units: {cpu_has_bf16_units()}")
    print(
        f"glassformer fp32 {tps['fp32']:6.1f} tok/s   bf16 {tps['bf16']:6.1f} tok/s   HF generate (fp32) "
        f"{tps['hf']:6.1f} tok/s   fp32 speed-up {tps['fp32'] / tps['hf']:.2f}x   "
        f"bf16/fp32 {tps['bf16'] / tps['fp32']:.2f}x"
    )
    print(
        f"memory bandwidth (copy) {bandwidth / 1e9:.1f} GB/s; fp32 weights {weight_bytes(ours) / 1e6:.0f} MB/token -> "
        f"bound {bound32:.1f} tok/s: glassformer reaches {tps['fp32'] / bound32:.0%}, HF {tps['hf'] / bound32:.0%}; "
        f"bf16 weights {weight_bytes(ours16) / 1e6:.0f} MB/token -> bound {bound16:.1f} tok/s: "
        f"{tps['bf16'] / bound16:.0%}; bf16 tokens equal to fp32's: {same16:.0%}"
    )
    print(decode_time_split(ours))


if __name__ == "__main__":
    main()
