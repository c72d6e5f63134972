"""The one sampler: from logits to the distribution a token is drawn from.

    probabilities(logits, temperature, top_k, top_p)

softmax(logits / T), cut to the k likeliest tokens and then to the smallest set whose
probability reaches p. T = 0 puts all the weight on the likeliest token (the first, on
a tie), so greedy decoding and the T = 0 picture agree. Generation, the command line,
the explorer and the pictures all use this module, and its `check` is the only place
the settings are validated.
"""

from __future__ import annotations

import math

import torch

from .config import GlassformerError

MAX_TEMPERATURE = 100.0  # beyond this every distribution is flat to the eye


def check(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
    """One-line errors for settings that cannot make a distribution."""
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
        raise GlassformerError(f"temperature must be a finite number, got {temperature!r}")
    if not 0 <= temperature <= MAX_TEMPERATURE:
        raise GlassformerError(f"temperature must be between 0 and {MAX_TEMPERATURE:g}, got {temperature:g}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise GlassformerError(f"top_k must be a whole number >= 1, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and math.isfinite(top_p) and 0 < top_p <= 1):
        raise GlassformerError(f"top_p must be in (0, 1], got {top_p!r}")


def probabilities(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The distribution over the last axis, in float32."""
    check(temperature, top_k, top_p)
    logits = logits.float()
    if bool(torch.isnan(logits).any()):
        raise GlassformerError("the model's logits hold NaN (its numbers overflowed); there is no distribution")
    if temperature == 0:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    # subtracting the maximum first keeps a tiny temperature finite (the best token scores 0,
    # the rest fall to −∞), and float64 holds a subnormal T that float32 would round to 0
    scaled = ((logits - logits.amax(-1, keepdim=True)).double() / temperature).float()
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if top_p is not None and top_p < 1.0:
        # ranked by logit, ties by position (as argmax and greedy decoding rank them): two
        # probabilities that round to the same float must not swap the likeliest token out
        order = torch.sort(scaled, dim=-1, descending=True, stable=True).indices
        sorted_p = probs.gather(-1, order)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the tokens ranked above each one
        cut = before >= top_p  # in float32 a top_p under ~1e-45 is 0, and would cut even the first
        cut[..., 0] = False  # the likeliest token always stays
        sorted_p = sorted_p.masked_fill(cut, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def draw(probs_BV: torch.Tensor, *, greedy: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B] token ids: the likeliest (greedy) or one drawn from each row."""
    if greedy:
        return probs_BV.argmax(-1)
    return torch.multinomial(probs_BV, 1, generator=generator)[:, 0]
