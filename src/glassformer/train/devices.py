"""Where and how a run computes: the device, the precision, and the DDP process group."""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..hardware import resolve_device


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, d: Dist) -> str:
    """The device this process trains on; under DDP, `cuda` means this rank's own GPU."""
    device = resolve_device(name)
    if device.startswith("cuda"):
        if device == "cuda":
            device = f"cuda:{d.local_rank}"
        torch.cuda.set_device(device)
    return device


def autocast_for(precision: str, device: str):
    """What to wrap each forward in: a factory of bf16 autocast contexts, or of no-ops."""
    if precision != "bf16":
        return nullcontext
    kind = device.split(":")[0]
    return lambda: torch.autocast(kind, dtype=torch.bfloat16)
