"""run_with_cache of every activation, gpt2-small shape (random weights), 1x256 tokens
on CPU: glassformer vs TransformerLens 3.x HookedTransformer.run_with_cache on the same
weights (no folding or centering, so both compute the same logits), and vs our own
plain forward. Then peak memory of capturing only the patterns at 1x2048 tokens.

    .venv/bin/python benchmarks/bench_cache.py   (needs: pip install 'transformer-lens<4')
"""

import json
import subprocess
import sys

import torch

from _common import env_line, hf_gpt2_and_ours, race


def transformer_lens_copy(hf):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_gpt2_weights

    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer,
        d_model=c.n_embd,
        n_ctx=c.n_positions,
        d_head=c.n_embd // c.n_head,
        n_heads=c.n_head,
        d_mlp=4 * c.n_embd,
        d_vocab=c.vocab_size,
        act_fn="gelu_new",
        normalization_type="LN",
        device="cpu",
    )
    tl = HookedTransformer(cfg)
    tl.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    return tl.eval()


def speed() -> None:
    hf, ours = hf_gpt2_and_ours()
    tl = transformer_lens_copy(hf)
    ids = torch.randint(0, 50257, (1, 256))
    with torch.inference_mode():
        tl_logits, tl_cache = tl.run_with_cache(ids)
        our_logits, our_cache = ours.run_with_cache(ids, names=lambda n: True)
        assert (tl_logits - our_logits).abs().max() < 1e-3, "the two models disagree"
        t = race(
            {
                "ours_cache": lambda: ours.run_with_cache(ids, names=lambda n: True),
                "tl_cache": lambda: tl.run_with_cache(ids),
                "ours_plain": lambda: ours(ids),
            },
            repeats=7,
        )
    print(f"gpt2 shape (124M), 1x256 tokens, {env_line()}")
    print(
        f"run_with_cache (every activation): glassformer {len(our_cache)} tensors {t['ours_cache'] * 1e3:.0f} ms, "
        f"TransformerLens {len(tl_cache)} tensors {t['tl_cache'] * 1e3:.0f} ms -> "
        f"{t['tl_cache'] / t['ours_cache']:.2f}x faster"
    )
    print(
        f"against our plain forward {t['ours_plain'] * 1e3:.0f} ms: run_with_cache takes "
        f"{t['ours_cache'] / t['ours_plain']:.2f}x its time"
    )


MEMORY_CHILD = r"""
import json, os, sys, threading, time, torch, glassformer as gf

def rss():  # resident bytes now
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

torch.manual_seed(0)
model = gf.Transformer(gf.PRESETS["gpt2"].replace(context_length=2048)).eval()
ids = torch.randint(0, 50257, (1, 2048))
peak, done = [0], [False]
def watch():
    while not done[0]:
        peak[0] = max(peak[0], rss()); time.sleep(0.0005)
with torch.inference_mode():
    model(ids[:, :8])  # warm up kernels before measuring
    base = rss()
    t = threading.Thread(target=watch); t.start()
    if sys.argv[1] == "patterns":
        out, cache = model.run_with_cache(ids, names="blocks.*.attn.pattern")
        kept = sum(v.numel() * v.element_size() for v in cache._tensors.values())
    else:
        out = model(ids); kept = 0
    done[0] = True; t.join()
print(json.dumps({"base": base, "peak": max(peak[0], rss()), "kept": kept}))
"""


def memory() -> None:
    runs = {}
    for mode in ("plain", "patterns"):
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, mode], capture_output=True, text=True, check=True)
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    grow = {m: (r["peak"] - r["base"]) / 2**30 for m, r in runs.items()}
    kept = runs["patterns"]["kept"] / 2**30
    print(
        f"memory, gpt2 shape with a 2048 context, 1x2048 tokens (peak RSS above the loaded model): "
        f"plain forward +{grow['plain']:.2f} GiB, keeping blocks.*.attn.pattern +{grow['patterns']:.2f} GiB; "
        f"the 12 patterns are {kept:.2f} GiB, so the capture costs {grow['patterns'] - grow['plain']:.2f} GiB "
        f"over a plain forward"
    )


if __name__ == "__main__":
    speed()
    memory()
