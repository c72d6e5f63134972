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
