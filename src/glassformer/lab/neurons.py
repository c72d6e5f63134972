"""The MLP as a store of facts (the video's chapter 7): which neurons fire at a position,
which tokens a neuron's row of W_out pushes up (given the sign it fires with), and which
neurons push hardest toward the model's own guess.
"""

from __future__ import annotations

import torch

from ..inputs import check_neuron, need_decoder
from ..model import Transformer
from .attribution import final_norm_direction


@torch.inference_mode()
def top_neurons(model: Transformer, ids: torch.Tensor, position: int = -1, k: int = 10) -> list[tuple[int, int, float]]:
    """The k MLP neurons (layer, index, signed activation) that fire hardest at `position`,
    by the size of their activation: a neuron at −22 writes its row 22 times, negated."""
    L = model.config.n_layers
    _, cache = model.run_with_cache(ids, names="blocks.*.mlp.post")
    acts = torch.stack([cache[f"blocks.{i}.mlp.post"][0, position] for i in range(L)]).float()  # [L, d_mlp]
    _, flat = acts.flatten().abs().topk(min(k, acts.numel()))
    return [(int(f) // acts.shape[1], int(f) % acts.shape[1], float(acts.flatten()[f])) for f in flat]


@torch.inference_mode()
def neuron_tokens(
    model: Transformer, layer: int, neuron: int, k: int = 10, sign: float = 1.0
) -> list[tuple[str, float]]:
    """Tokens whose logits this neuron raises most when its activation has the sign of
    `sign`, read directly through W_U (the direct path; later layers may change it): with
    a negative activation the row is written negated, so what it raises are the tokens its
    row would push down."""
    need_decoder(model, "reading neurons through W_U")
    check_neuron(model, layer, neuron)
    writes = model.block(layer).mlp.down.weight[neuron].float()  # [C]: what the neuron adds per unit
    if model.config.normalization != "rmsnorm":
        writes = writes - writes.mean()  # a LayerNorm centres it first (as attribution.final_norm_direction says)
    scores = (writes * model.ln_final.weight.float()) @ model.W_U.float()  # [V]
    values, top = (scores * (1.0 if sign >= 0 else -1.0)).topk(k)
    names = model.tokenizer.token_texts(top.tolist()) if model.tokenizer else [str(i) for i in top.tolist()]
    return list(zip(names, values.tolist()))


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
    need_decoder(model, "direct logit attribution")
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
