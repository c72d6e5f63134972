"""Editing activations: head ablation, activation patching, direct logit attribution.

Each helper returns a mapping for `model.hooks(...)`, so edits compose:

    with model.hooks(ablate_head(model, 1, 3) | patch(model, clean_cache, "blocks.0.*")):
        logits = model(ids)
"""

from __future__ import annotations

import torch

from ..config import GlassformerError
from ..inputs import check_layer_head
from ..model import Transformer


def ablate_head(model: Transformer, layer: int, head: int, *, mode: str = "zero", reference=None) -> dict:
    """Remove head `head` of `layer`: its z (pattern-weighted values) is set to zero, or
    to its mean over `reference` token ids (mode="mean"), so its ΔE becomes 0 (or average)."""
    check_layer_head(model, layer, head)
    name = f"blocks.{layer}.attn.z"
    if mode == "zero":
        replacement = None
    elif mode == "mean":
        if reference is None:
            raise GlassformerError("mean ablation needs reference token ids to average over")
        _, cache = model.run_with_cache(reference, names=name)
        replacement = cache[name][:, head].mean(dim=(0, 1))  # [D]
    else:
        raise GlassformerError(f"unknown ablation mode {mode!r}; use zero or mean")

    def fn(z_BHTD: torch.Tensor, _name: str) -> torch.Tensor:
        z_BHTD = z_BHTD.clone()
        z_BHTD[:, head] = 0.0 if replacement is None else replacement.to(z_BHTD)
        return z_BHTD

    return {name: fn}


def patch(model: Transformer, source, names) -> dict:
    """Replace activations with the ones in `source` (an ActivationCache from another
    run of the same length): activation patching."""
    chosen = model.matching_hook_names(names)
    missing = [n for n in chosen if n not in source]
    if missing:
        raise GlassformerError(f"the source cache does not hold {missing[0]!r}")

    def fn(tensor: torch.Tensor, name: str) -> torch.Tensor:
        patched = source[name].to(tensor.device, tensor.dtype)
        if patched.shape != tensor.shape:
            raise GlassformerError(f"cannot patch {name}: shape {list(patched.shape)} vs {list(tensor.shape)}")
        return patched

    return {name: fn for name in chosen}


@torch.inference_mode()
def head_logit_attribution(model: Transformer, ids, token: int, *, position: int = -1) -> torch.Tensor:
    """ "What does each head write?": [layer, head], each head's ΔE at `position`
    projected on the direction that raises `token`'s logit.

    The final norm is linearised the usual way: its scale is frozen at the value the real
    run used, so the contributions of all heads, the MLPs, the embeddings and the biases
    add up to the logit (up to a LayerNorm's bias term).
    """
    if not model.config.causal:
        raise GlassformerError("direct logit attribution needs a decoder (a model with W_U)")
    L = model.config.n_layers
    names = [f"blocks.{i}.attn.z" for i in range(L)] + [f"blocks.{L - 1}.resid_post"]
    _, cache = model.run_with_cache(ids, names=names)
    final = cache[f"blocks.{L - 1}.resid_post"][0, position]  # [C]
    direction, centre = final_norm_direction(model, final, token)
    rows = []
    for i in range(L):
        z_HD = cache[f"blocks.{i}.attn.z"][0, :, position]  # [H, D] at the position
        per_head = torch.einsum("hd,hdc->hc", z_HD.float(), model.block(i).attn.W_O.float())  # each head's ΔE, [H, C]
        if centre:
            per_head = per_head - per_head.mean(-1, keepdim=True)  # LayerNorm centres first
        rows.append(per_head @ direction)
    return torch.stack(rows)


@torch.inference_mode()
def neuron_logit_attribution(model: Transformer, ids, token: int, *, position: int = -1) -> torch.Tensor:
    """ "Which neurons push toward this token?": [layer, neuron], each MLP neuron's
    activation at `position` times what its down-projection row adds to `token`'s logit,
    through the final norm linearised as in head_logit_attribution."""
    _, cache = _neuron_run(model, ids)
    return _neuron_shares(model, cache, token, position)


@torch.inference_mode()
def neurons_toward_guess(model: Transformer, ids, *, position: int = -1, k: int = 10, guesses: int = 3):
    """The model's own likeliest next tokens at `position` [(id, probability)], and the k
    neurons that push hardest toward the first of them [(layer, neuron, logit, activation)]:
    what each adds to that token's logit and its signed activation, from one forward pass."""
    logits, cache = _neuron_run(model, ids)
    probs = logits[0, position].float().softmax(-1)
    top = probs.topk(min(guesses, probs.numel()))
    best = [(int(i), float(p)) for i, p in zip(top.indices, top.values)]
    shares = _neuron_shares(model, cache, best[0][0], position)
    values, flat = shares.flatten().topk(min(k, shares.numel()))
    d_mlp = shares.shape[1]
    found = [(int(f) // d_mlp, int(f) % d_mlp, float(v)) for v, f in zip(values, flat)]
    return best, [(L, i, v, float(cache[f"blocks.{L}.mlp.post"][0, position, i])) for L, i, v in found]


def _neuron_run(model: Transformer, ids):
    if not model.config.causal:
        raise GlassformerError("direct logit attribution needs a decoder (a model with W_U)")
    L = model.config.n_layers
    return model.run_with_cache(ids, names=[f"blocks.{i}.mlp.post" for i in range(L)] + [f"blocks.{L - 1}.resid_post"])


def _neuron_shares(model: Transformer, cache, token: int, position: int) -> torch.Tensor:
    L = model.config.n_layers
    direction, centre = final_norm_direction(model, cache[f"blocks.{L - 1}.resid_post"][0, position], token)
    rows = []
    for i in range(L):
        writes = model.block(i).mlp.down.weight.float()  # [d_mlp, C]: what each neuron adds per unit
        if centre:
            writes = writes - writes.mean(-1, keepdim=True)
        rows.append(cache[f"blocks.{i}.mlp.post"][0, position].float() * (writes @ direction))
    return torch.stack(rows)


def final_norm_direction(model: Transformer, final_C: torch.Tensor, token: int) -> tuple[torch.Tensor, bool]:
    """(direction [C], whether to centre first): x·direction is what x adds to `token`'s
    logit through the final norm, with the norm's scale frozen at its value for `final_C`."""
    norm = model.ln_final
    if model.config.normalization == "rmsnorm":
        scale = (final_C.pow(2).mean() + norm.eps).sqrt()
        centre = False
    else:
        scale = (final_C.var(unbiased=False) + norm.eps).sqrt()
        centre = True
    return norm.weight.float() * model.W_U[:, token].float() / scale.float(), centre
