"""Generation speed at batch 1: gpt2-small shape (random weights), greedy, 128 new
tokens, glassformer's KV-cached `generate` vs Hugging Face `generate` on the same
weights, same run. Also the fraction of the memory-bandwidth bound reached: at batch
1 every new token must read every weight once, so tokens/s <= bandwidth / weight bytes.

    .venv/bin/python benchmarks/bench_generate.py
"""

import time

import torch

from _common import env_line, hf_gpt2_and_ours, race

NEW = 128


def copy_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes per second moved by a large tensor copy (read + write)."""
    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * n_bytes / best


def main() -> None:
    hf, ours = hf_gpt2_and_ours()
    prompt = torch.randint(0, 50257, (1, 16))
    with torch.inference_mode():
        ref = hf.generate(prompt, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)
        mine = ours.generate(prompt, max_new_tokens=NEW, temperature=0)
        assert torch.equal(ref, mine), "greedy tokens differ"
        t = race(
            {
                "glassformer": lambda: ours.generate(prompt, max_new_tokens=NEW, temperature=0),
                "hf": lambda: hf.generate(
                    prompt, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0
                ),
            },
            repeats=3,
            warmup=1,
        )
    ours_tps, hf_tps = NEW / t["glassformer"], NEW / t["hf"]
    weight_bytes = sum(
        p.numel() * p.element_size() for n, p in ours.named_parameters() if n != "embed.W_pos.weight"
    )  # one row of W_pos per token; W_E is read whole by W_U
    bandwidth = copy_bandwidth()
    bound = bandwidth / weight_bytes
    print(f"gpt2 shape (124M), batch 1, {NEW} new tokens greedy, {env_line()}")
    print(f"glassformer {ours_tps:6.1f} tok/s   HF generate {hf_tps:6.1f} tok/s   speed-up {ours_tps / hf_tps:.2f}x")
    print(
        f"memory bandwidth (copy) {bandwidth / 1e9:.1f} GB/s, weights {weight_bytes / 1e6:.0f} MB/token "
        f"-> bound {bound:.1f} tok/s; glassformer reaches {ours_tps / bound:.0%}, HF {hf_tps / bound:.0%}"
    )


if __name__ == "__main__":
    main()
