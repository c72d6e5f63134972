"""run_with_cache: one forward pass that keeps only the activations asked for."""

from __future__ import annotations

import torch


class ActivationCache:
    """Activations by hook name. `cache[name]` is a tensor; `cache.names()` lists them."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self._tensors = tensors

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(
                f"{name!r} was not kept; this cache holds: {', '.join(self._tensors) or 'nothing'}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def __iter__(self):
        return iter(self._tensors)

    def names(self) -> list[str]:
        return list(self._tensors)

    def items(self):
        return self._tensors.items()

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {list(v.shape)}" for k, v in self._tensors.items())
        return f"ActivationCache({shapes})"


def run_with_cache(model, input_ids, names=None, *, device=None, **forward_kwargs):
    """Run `model` on `input_ids`, keeping the activations that `names` picks.

    `names`: an exact name, a glob ("blocks.*.attn.pattern"), a list of those, or a
    predicate fn(name) -> bool; None keeps nothing, so the fused attention is used.
    `device="cpu"` moves each capture off the accelerator as soon as it is made.
    Gradients are not tracked (wrap your own forward in hooks() if you need them).
    """
    chosen = [] if names is None else model.matching_hook_names(names)
    kept: dict[str, torch.Tensor] = {}

    def keep(tensor: torch.Tensor, name: str) -> None:
        kept[name] = tensor.detach().to(device) if device is not None else tensor.detach()

    if not isinstance(input_ids, torch.Tensor):
        input_ids = torch.as_tensor(input_ids, dtype=torch.long)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    with torch.inference_mode(), model.hooks({name: keep for name in chosen}):
        output = model(input_ids.to(model.device), **forward_kwargs)
    ordered = {name: kept[name] for name in chosen if name in kept}
    return output, ActivationCache(ordered)
