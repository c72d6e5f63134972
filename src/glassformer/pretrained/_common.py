"""Bookkeeping shared by the converters: every key used once, every shape checked."""

from __future__ import annotations

import torch

from ..config import GlassformerError


class Converter:
    def __init__(self, state: dict[str, torch.Tensor], arch: str) -> None:
        self.state = state
        self.arch = arch
        self.used: set[str] = set()

    def take(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in self.state:
            raise GlassformerError(f"{self.arch} weights are missing tensor {key!r}")
        tensor = self.state[key]
        if tuple(tensor.shape) != tuple(shape):
            raise GlassformerError(
                f"{self.arch} tensor {key!r} has shape {list(tensor.shape)}, expected {list(shape)}"
            )
        self.used.add(key)
        return tensor.float()

    def drop(self, key: str) -> None:
        """A key that may be present and is deliberately not used."""
        self.used.add(key)

    def check_all_used(self) -> None:
        unused = sorted(set(self.state) - self.used)
        if unused:
            raise GlassformerError(
                f"{self.arch} weights have {len(unused)} tensor(s) this converter does not "
                f"understand, e.g. {unused[0]!r}"
            )
