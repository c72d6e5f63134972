"""HookPoint: an identity module that knows its dotted name.

Every intermediate the video draws passes through one of these. With no functions
attached it returns its input untouched; `Transformer.hooks` and
`Transformer.run_with_cache` attach functions for the length of a `with` block.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]


class HookPoint(nn.Module):
    def __init__(self, *, top_level: bool = False) -> None:
        super().__init__()
        self.top_level = top_level  # published without its parent's path (embed, not embed.embed)
        self.name = ""  # set by the model once the module tree is built (blocks.3.attn.pattern)
        self.fns: list[HookFn] = []

    @property
    def active(self) -> bool:
        return bool(self.fns)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # skips nn.Module's call machinery: with nothing attached a hook point costs one check
        return self.forward(x) if self.fns else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fn in self.fns:
            out = fn(x, self.name)
            if out is not None:
                x = out
        return x

    def extra_repr(self) -> str:
        return self.name


def name_hook_points(root: nn.Module) -> dict[str, HookPoint]:
    """Give each HookPoint under `root` its module path, and return them by name.

    Module paths carry a `hook_` prefix only inside PyTorch's tree; the public name drops
    the module attribute and keeps the path, so `blocks.0.attn.hook_pattern` is
    published as `blocks.0.attn.pattern`.
    """
    points: dict[str, HookPoint] = {}
    for path, module in root.named_modules():
        if isinstance(module, HookPoint):
            parts = path.split(".")
            parts[-1] = parts[-1].removeprefix("hook_")
            module.name = parts[-1] if module.top_level else ".".join(parts)
            points[module.name] = module
    return points
