"""What the chip can do: which device to run on, and whether it multiplies bf16 natively.

Training (`--precision`) and inference (`dtype=`) both ask the same question, so it is
answered once, here, below everything that builds a model.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from .config import GlassformerError


@functools.lru_cache(maxsize=1)
def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX). Without those
    instructions bf16 is emulated and slower than fp32, so `auto` keeps fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to know, stay with fp32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_native(device: str | torch.device) -> bool:
    """True where bf16 products run faster than fp32: CUDA GPUs that support bf16, and
    CPUs with bf16 units."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16_units()


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(name: str, device: str | torch.device = "cpu", what: str = "precision") -> str:
    """ "auto" is bf16 where `device` multiplies bf16 natively, else fp32 (emulated bf16 is
    slower); "fp32" and "bf16" stay as asked, except bf16 on a GPU that has none."""
    if name not in PRECISIONS:
        raise GlassformerError(f"unknown {what} {name!r}; use {', '.join(PRECISIONS)}")
    native = bf16_native(device)
    if name == "auto":
        return "bf16" if native else "fp32"
    if name == "bf16" and torch.device(device).type == "cuda" and not native:
        raise GlassformerError(f"this GPU has no bf16 support; use {what} fp32")
    return name


def resolve_device(name: str = "auto") -> str:
    """ "auto" (CUDA when present, else the CPU), "cpu", "cuda" or "cuda:N", checked."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise GlassformerError(f"device {name} asked for, but no CUDA GPU is available")
        if name != "cuda" and int(name[5:]) >= torch.cuda.device_count():
            raise GlassformerError(f"device {name} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
        return name
    raise GlassformerError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
