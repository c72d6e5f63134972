"""Shared by the benchmarks: same-run, interleaved timing of two contenders."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch


def race(contenders: dict, *, repeats: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each contender, run in turns so drift hits both alike."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def hf_gpt2_and_ours(config_kwargs: dict | None = None, seed: int = 0):
    """A randomly initialised Hugging Face GPT2LMHeadModel and the same weights in glassformer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    import glassformer as gf

    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(**(config_kwargs or {}))).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = gf.load(Path(d))
    return hf, ours


def copy_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes per second moved by a large tensor copy (read + write): the memory bandwidth
    that bounds batch-1 decoding, which must read every weight once per token."""
    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * n_bytes / best


def env_line() -> str:
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu"


def decode_time_split(model, steps: int = 128, prompt_len: int = 16) -> str:
    """Where a batch-1 decoding step's time goes (fp32, CPU): the weight products alone
    (each matrix of a step times one vector, in the same order) against the whole step of
    the numpy decoder; what is left is attention over the cache, norms, activations and
    Python. Best of three."""
    import numpy as np

    from glassformer.cpu_decoder import NumpyDecoder, one_torch_thread

    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len))
    step = products = float("inf")
    with torch.inference_mode(), one_torch_thread():
        for _ in range(3):
            cache = model.new_cache(1, max_len=prompt_len + steps + 1)
            model(prompt, cache=cache, last_only=True)
            decoder = NumpyDecoder(model, cache)
            token, t = 1, time.perf_counter()
            for _ in range(steps):
                token = int(decoder.logits(token, len(cache)).argmax())
            step = min(step, (time.perf_counter() - t) / steps)
            mats = [L[k][0] for L in decoder.layers for k in ("qkv", "o", "up", "down")]
            xs = [np.random.rand(W.shape[0]).astype(np.float32) for W in mats]
            x_final = np.random.rand(decoder.W_U.shape[1]).astype(np.float32)
            t = time.perf_counter()
            for _ in range(steps):
                for x, W in zip(xs, mats):
                    x @ W
                decoder.W_U @ x_final
            products = min(products, (time.perf_counter() - t) / steps)
    n_bytes = sum(W.nbytes for W in mats) + decoder.W_U.nbytes
    read_time = n_bytes / copy_bandwidth()
    return (
        f"a decoding step: {step * 1e3:.2f} ms, of which the weight products {products * 1e3:.2f} ms "
        f"({products / step:.0%}; {n_bytes / 1e6:.0f} MB, {read_time / products:.0%} of the copy-bandwidth rate) "
        f"and the rest (attention over the cache, norms, activations, Python) {(step - products) * 1e3:.2f} ms"
    )
