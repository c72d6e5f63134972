"""Hook points and capture: how every intermediate is named, listened to and kept.

A HookPoint is an identity module that knows its dotted name (`blocks.3.attn.pattern`).
With no functions attached it returns its input untouched at the cost of one check.
`attach` hangs functions on the named points for the length of a `with` block, and
`run_with_cache` uses it to keep only the activations asked for. All of this works on
any module tree that holds HookPoints, so the model imports it and never the reverse.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Callable, Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Protocol

import torch
from torch import nn

from .config import GlassformerError

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]
Names = str | list[str] | tuple[str, ...] | Callable[[str], bool]


class HookPoint(nn.Module):
    def __init__(self, *, top_level: bool = False) -> None:
        super().__init__()
        self.top_level = top_level  # published without its parent's path (embed, not embed.embed)
        self.name = ""  # set once the module tree is built (blocks.3.attn.pattern)
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
    it, so `blocks.0.attn.hook_pattern` is published as `blocks.0.attn.pattern`.
    """
    points: dict[str, HookPoint] = {}
    for path, module in root.named_modules():
        if isinstance(module, HookPoint):
            parts = path.split(".")
            parts[-1] = parts[-1].removeprefix("hook_")
            module.name = parts[-1] if module.top_level else ".".join(parts)
            points[module.name] = module
    return points


def match(points: Mapping[str, HookPoint], names: Names) -> list[str]:
    """The point names chosen by an exact name, a glob, a list of them, or a predicate,
    in the order the data reaches them."""
    if callable(names):
        return [n for n in points if names(n)]
    patterns = [names] if isinstance(names, str) else list(names)
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in points if fnmatchcase(n, pattern)]
        if not hits:
            raise GlassformerError(f"no activation is called {pattern!r}; see model.hook_names() for the list")
        chosen += [h for h in hits if h not in chosen]
    return chosen


@contextlib.contextmanager
def attach(points: Mapping[str, HookPoint], fns: Mapping[str, HookFn]) -> Iterator[None]:
    """Attach `fn(tensor, name) -> tensor | None` to the named points for the length of a
    `with` block; returning a tensor replaces the activation."""
    attached: list[tuple[HookPoint, HookFn]] = []
    try:
        for pattern, fn in fns.items():
            for name in match(points, pattern):
                points[name].fns.append(fn)
                attached.append((points[name], fn))
        yield
    finally:
        for point, fn in attached:
            point.fns.remove(fn)


class ActivationCache:
    """Activations by hook name. `cache[name]` is a tensor; `cache.names()` lists them."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self._tensors = tensors

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            held = ", ".join(self._tensors) or "nothing"
            raise KeyError(f"{name!r} was not kept; this cache holds: {held}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def names(self) -> list[str]:
        return list(self._tensors)

    def items(self):
        return self._tensors.items()

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {list(v.shape)}" for k, v in self._tensors.items())
        return f"ActivationCache({shapes})"


class Hooked(Protocol):
    """What capture needs of a model: its hook points, its device, and a forward."""

    hook_points: dict[str, HookPoint]

    @property
    def device(self) -> torch.device: ...

    def __call__(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor: ...


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep memory it frees for reuse instead of handing it back to
    the system, once per process. A capture keeps every activation it asked for, so each
    call would otherwise fault in fresh pages for all of them (for a gpt2-shaped model at
    256 tokens, about a fifth of the whole run); with this, the next call of the same
    shape reuses pages already mapped (benchmarks/bench_cache.py). The cost is a resident
    size that stays near its peak. Elsewhere than glibc, nothing happens (False)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    # 32 MiB is the largest mmap threshold glibc accepts on 64-bit; 1 GiB of free memory
    # at the top of the heap is kept before any of it is returned
    return bool(mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(mallopt(M_TRIM_THRESHOLD, 2**30))


def run_with_cache(
    model: Hooked, input_ids, names: Names | None = None, *, device=None, **forward_kwargs
) -> tuple[torch.Tensor, ActivationCache]:
    """Run `model` on `input_ids`, keeping the activations that `names` picks.

    `names`: an exact name, a glob ("blocks.*.attn.pattern"), a list of those, or a
    predicate fn(name) -> bool; None keeps nothing, so the fused attention is used.
    `device="cpu"` moves each capture off the accelerator as soon as it is made.
    Gradients are not tracked (wrap your own forward in `model.hooks()` if you need them).
    """
    chosen = [] if names is None else match(model.hook_points, names)
    if chosen:
        keep_freed_memory()
    kept: dict[str, torch.Tensor] = {}

    def keep(tensor: torch.Tensor, name: str) -> None:
        kept[name] = tensor.detach().to(device) if device is not None else tensor.detach()

    if not isinstance(input_ids, torch.Tensor):
        input_ids = torch.as_tensor(input_ids, dtype=torch.long)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    with torch.inference_mode(), attach(model.hook_points, {name: keep for name in chosen}):
        output = model(input_ids.to(model.device), **forward_kwargs)
    return output, ActivationCache({name: kept[name] for name in chosen if name in kept})


# Every hook name, its shape in words, the models it fires on, and what it is. {i} is a
# layer index. The README's names table is this one (a test holds them together).
HOOK_TABLE = [
    ("embed", "batch, query, d_model", "GPT, BERT, Llama", "rows of W_E for the tokens"),
    ("pos_embed", "1, query, d_model", "GPT, BERT", "learned position rows, added to embed"),
    ("type_embed", "batch, query, d_model", "BERT", "token-type (segment) rows, added to embed"),
    ("ln_embed", "batch, query, d_model", "BERT", "the summed embedding, normalised (post-LN models)"),
    (
        "blocks.{i}.resid_pre",
        "batch, query, d_model",
        "GPT, BERT, Llama",
        "the residual stream E entering block i",
    ),
    (
        "blocks.{i}.ln1",
        "batch, query, d_model",
        "GPT, BERT, Llama",
        "GPT, Llama: the norm of resid_pre, what attention reads; BERT: LayerNorm of resid_mid",
    ),
    ("blocks.{i}.attn.q_unrotated", "batch, head, query, d_head", "Llama", "queries E·W_Q before rotation"),
    ("blocks.{i}.attn.k_unrotated", "batch, kv_head, key, d_head", "Llama", "keys E·W_K before rotation"),
    (
        "blocks.{i}.attn.q",
        "batch, head, query, d_head",
        "GPT, BERT, Llama",
        "queries Q = E·W_Q (Llama: rotated by position)",
    ),
    (
        "blocks.{i}.attn.k",
        "batch, kv_head, key, d_head",
        "GPT, BERT, Llama",
        "keys K = E·W_K (Llama: rotated by position; one per group of query heads)",
    ),
    (
        "blocks.{i}.attn.v",
        "batch, kv_head, key, d_head",
        "GPT, BERT, Llama",
        "values E·W_V (value-down; Llama: one per group of query heads)",
    ),
    (
        "blocks.{i}.attn.dots",
        "batch, head, query, key",
        "GPT, BERT, Llama",
        "Q·Kᵀ/√d_head: the grid of dot products, before the mask",
    ),
    (
        "blocks.{i}.attn.scores",
        "batch, head, query, key",
        "GPT, BERT, Llama",
        "the dot products with −∞ where masked",
    ),
    (
        "blocks.{i}.attn.pattern",
        "batch, head, query, key",
        "GPT, BERT, Llama",
        "softmax of scores; each row sums to 1",
    ),
    ("blocks.{i}.attn.z", "batch, head, query, d_head", "GPT, BERT, Llama", "pattern · values, per head"),
    (
        "blocks.{i}.attn.out",
        "batch, query, d_model",
        "GPT, BERT, Llama",
        "ΔE: Σ over heads of z·W_O (value-up), plus bias",
    ),
    ("blocks.{i}.resid_mid", "batch, query, d_model", "GPT, BERT, Llama", "resid_pre + ΔE"),
    (
        "blocks.{i}.ln2",
        "batch, query, d_model",
        "GPT, BERT, Llama",
        "GPT, Llama: the norm of resid_mid, what the MLP reads; BERT: LayerNorm of resid_post",
    ),
    (
        "blocks.{i}.mlp.pre",
        "batch, query, d_mlp",
        "GPT, BERT, Llama",
        "x·W_up (Llama: x·W_gate), before the non-linearity",
    ),
    ("blocks.{i}.mlp.pre_linear", "batch, query, d_mlp", "Llama", "x·W_up, the linear half of the gated MLP"),
    (
        "blocks.{i}.mlp.post",
        "batch, query, d_mlp",
        "GPT, BERT, Llama",
        "neuron activations (Llama: act(gate)·up)",
    ),
    ("blocks.{i}.mlp.out", "batch, query, d_model", "GPT, BERT, Llama", "down-projection: what the MLP adds"),
    (
        "blocks.{i}.resid_post",
        "batch, query, d_model",
        "GPT, BERT, Llama",
        "the stream after the MLP is added",
    ),
    ("ln_final", "batch, query, d_model", "GPT, Llama", "final norm of the stream"),
    ("logits", "batch, query, vocab", "GPT, Llama", "ln_final · W_U"),
]
