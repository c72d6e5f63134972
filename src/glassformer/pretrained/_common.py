"""Bookkeeping shared by the converters: every key used once, every shape checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..config import GlassformerError


def _as_float(tensor: torch.Tensor) -> torch.Tensor:
    if not tensor.is_floating_point():
        raise GlassformerError(f"a weight holds {tensor.dtype} numbers; weights must be floats")
    return tensor.float()


class Converter:
    """Takes tensors out of a source state dict by name, checking each one's shape.
    `convert` turns a stored entry into a float32 tensor; `shape_of` reads its shape."""

    def __init__(
        self,
        state: dict,
        arch: str,
        *,
        convert: Callable[[Any], torch.Tensor] = _as_float,
        shape_of: Callable[[Any], tuple[int, ...]] = lambda t: tuple(t.shape),
    ) -> None:
        self.state, self.arch = state, arch
        self.convert, self.shape_of = convert, shape_of
        self.used: set[str] = set()

    def take(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in self.state:
            raise GlassformerError(f"{self.arch} weights are missing tensor {key!r}")
        stored = self.state[key]
        if self.shape_of(stored) != tuple(shape):
            raise GlassformerError(
                f"{self.arch} tensor {key!r} has shape {list(self.shape_of(stored))}, expected {list(shape)}"
            )
        self.used.add(key)
        return self.convert(stored)

    def drop(self, key: str) -> None:
        """A key that may be present and is deliberately not used."""
        self.used.add(key)

    def finish(self, ours: dict[str, torch.Tensor], config, V: int, C: int) -> dict[str, torch.Tensor]:
        """The decoders' common ending: W_U taken (or a tied copy dropped: some exports save
        it, but it is W_E itself), every key checked used, every tensor contiguous."""
        if config.tied_unembedding:
            self.drop("lm_head.weight")
        else:
            ours["unembed.weight"] = self.take("lm_head.weight", (V, C))
        self.check_all_used()
        return {k: v.contiguous() for k, v in ours.items()}

    def check_all_used(self) -> None:
        unused = sorted(set(self.state) - self.used)
        if unused:
            raise GlassformerError(
                f"{self.arch} weights have {len(unused)} tensor(s) this converter does not "
                f"understand, e.g. {unused[0]!r}"
            )
