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


# Every activation name, its shape in words, the models it fires on, and what it is.
# {i} is a layer index. The README's table is this one.
ACTIVATIONS = [
    ("embed", "batch, query, d_model", "GPT, BERT", "rows of W_E for the tokens"),
    ("pos_embed", "1, query, d_model", "GPT, BERT", "learned position rows, added to embed"),
    ("type_embed", "batch, query, d_model", "BERT", "token-type (segment) rows, added to embed"),
    ("ln_embed", "batch, query, d_model", "BERT", "the summed embedding, normalised (post-LN models)"),
    ("blocks.{i}.resid_pre", "batch, query, d_model", "GPT, BERT", "the residual stream E entering block i"),
    ("blocks.{i}.ln1", "batch, query, d_model", "GPT, BERT",
     "GPT: LayerNorm of resid_pre, what attention reads; BERT: LayerNorm of resid_mid"),
    ("blocks.{i}.attn.q", "batch, head, query, d_head", "GPT, BERT", "queries Q = E·W_Q"),
    ("blocks.{i}.attn.k", "batch, head, key, d_head", "GPT, BERT", "keys K = E·W_K"),
    ("blocks.{i}.attn.v", "batch, head, key, d_head", "GPT, BERT", "values E·W_V (value-down)"),
    ("blocks.{i}.attn.scores", "batch, head, query, key", "GPT, BERT",
     "Q·Kᵀ/√d_head, −∞ where masked (the grid of dot products)"),
    ("blocks.{i}.attn.pattern", "batch, head, query, key", "GPT, BERT", "softmax of scores; each row sums to 1"),
    ("blocks.{i}.attn.z", "batch, head, query, d_head", "GPT, BERT", "pattern · values, per head"),
    ("blocks.{i}.attn.out", "batch, query, d_model", "GPT, BERT", "ΔE: Σ over heads of z·W_O (value-up), plus bias"),
    ("blocks.{i}.resid_mid", "batch, query, d_model", "GPT, BERT", "resid_pre + ΔE"),
    ("blocks.{i}.ln2", "batch, query, d_model", "GPT, BERT",
     "GPT: LayerNorm of resid_mid, what the MLP reads; BERT: LayerNorm of resid_post, the block's output"),
    ("blocks.{i}.mlp.pre", "batch, query, d_mlp", "GPT, BERT", "up-projection, before the non-linearity"),
    ("blocks.{i}.mlp.post", "batch, query, d_mlp", "GPT, BERT", "neuron activations"),
    ("blocks.{i}.mlp.out", "batch, query, d_model", "GPT, BERT", "down-projection: what the MLP adds"),
    ("blocks.{i}.resid_post", "batch, query, d_model", "GPT, BERT", "the stream after the MLP is added"),
    ("ln_final", "batch, query, d_model", "GPT", "final LayerNorm of the stream"),
    ("logits", "batch, query, vocab", "GPT", "ln_final · W_U"),
]  # fmt: skip
