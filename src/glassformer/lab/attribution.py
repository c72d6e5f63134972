"""Direct logit attribution, read without changing anything: what each head's or each
MLP's ΔE adds to one token's logit, through the final norm linearised (its scale frozen
at the value the real run used), so that the parts add up to the logit.
"""

from __future__ import annotations

import torch

from ..inputs import need_decoder
from ..model import Transformer
from .edit import _as_2d


@torch.inference_mode()
def head_logit_attribution(model: Transformer, ids, token: int, *, position: int = -1) -> torch.Tensor:
    """ "What does each head write?": [layer, head], each head's ΔE at `position`
    projected on the direction that raises `token`'s logit.

    The final norm is linearised the usual way: its scale is frozen at the value the real
    run used, so the contributions of all heads, the MLPs, the embeddings and the biases
    add up to the logit (up to a LayerNorm's bias term).
    """
    need_decoder(model, "direct logit attribution")
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
def mlp_logit_attribution(model: Transformer, ids, token: int, *, position: int = -1) -> torch.Tensor:
    """ "How much does each layer's MLP push this token?": [layer], what each MLP adds to
    the stream at `position`, read on `token`'s logit through the final norm linearised
    as in head_logit_attribution."""
    need_decoder(model, "direct logit attribution")
    L = model.config.n_layers
    names = [f"blocks.{i}.mlp.out" for i in range(L)] + [f"blocks.{L - 1}.resid_post"]
    _, cache = model.run_with_cache(_as_2d(ids), names=names)
    direction, centre = final_norm_direction(model, cache[f"blocks.{L - 1}.resid_post"][0, position], token)
    rows = torch.stack([cache[f"blocks.{i}.mlp.out"][0, position].float() for i in range(L)])  # [L, C]
    if centre:
        rows = rows - rows.mean(-1, keepdim=True)
    return rows @ direction


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
