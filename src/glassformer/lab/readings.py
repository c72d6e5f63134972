"""What a learner should be told beside the numbers of one head, in one place, so that the
terminal, the explorer and the report say the same thing.

- ΔE against E: the residual stream E that ΔE is added to, and (pre-norm models) the
  normed E that W_Q, W_K and W_V read: two sizes, each named.
- ΔE as a direction: in a decoder, the head's ΔE at the query read through the final
  norm and W_U (its direct effect on the next-token logits); on the adjectives lesson,
  its cosine with each adjective's own value direction V·W_O.
- Attention sinks, negative dot products, and what the detectors say a head's pattern
  looks like on this text.

Everything here returns plain values and sentences; nobody here prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..lessons import adjectives as adjectives_lesson
from ..model import Transformer
from .explain import HeadWalk
from .heads import DETECTORS, STRONG, speaks_adjectives

SINK = 0.5  # a query whose weight on the first or a special token reaches this is said to park there
SPECIAL = re.compile(r"^(\[[A-Z]+\]|<\|?[^<>]*\|?>|<s>|</s>)$")  # [CLS], [SEP], <|endoftext|>, <s>


@dataclass
class DeltaReading:
    """One head's ΔE at one query: its size against the stream's, and where it points."""

    query: int
    stream: float  # |E|: the residual stream at the query, that ΔE is added to
    normed: float | None  # |norm(E)|: what W_Q, W_K, W_V read (pre-norm models; None: they read E)
    delta: float  # |ΔE| of this head at the query
    up: list[tuple[str, float]] = field(default_factory=list)  # direct logit effect, largest first
    down: list[tuple[str, float]] = field(default_factory=list)  # most negative first
    cosines: list[tuple[int, str, float]] = field(default_factory=list)  # (position, adjective, cos)

    def sentences(self, token: str) -> list[str]:
        """The reading as the lines every view prints."""
        normed = f"; the head read norm(E), |norm(E)| = {self.normed:.2f}, a rescaled copy of E" if self.normed else ""
        out = [
            f"|ΔE| = {self.delta:.2f} is added to the residual stream E of “{token}”, |E| = {self.stream:.2f}: "
            f"{self.delta / max(self.stream, 1e-9):.2f} of its length{normed}"
        ]
        if self.up:
            ups = ", ".join(f"{_quoted(t)} {v:+.2f}" for t, v in self.up)
            downs = ", ".join(f"{_quoted(t)} {v:+.2f}" for t, v in self.down)
            out.append(
                f"read through the final norm and W_U (its direct effect on the next-token logits), this ΔE "
                f"pushes up {ups}; and down {downs}"
            )
        if self.cosines:
            cos = ", ".join(f"“{w}” (position {p}) {c:+.2f}" for p, w, c in self.cosines)
            out.append(f"cosine of this ΔE with each adjective's own value direction V·W_O: {cos}")
        return out


def _quoted(token: str) -> str:
    return "[" + token.replace("\n", "⏎") + "]"


@torch.inference_mode()
def read_delta(model: Transformer, walk: HeadWalk, query: int, k: int = 5) -> DeltaReading:
    """The head's ΔE at `query`: against E, through W_U (decoders), and, on the adjectives
    lesson, against the value direction of every adjective up to the query."""
    return read_deltas(model, walk, [query], k)[0]


@torch.inference_mode()
def read_deltas(model: Transformer, walk: HeadWalk, queries: list[int] | None = None, k: int = 5) -> list[DeltaReading]:
    """read_delta for each of `queries` (default: every position), W_U read once for all."""
    queries = list(range(len(walk.tokens))) if queries is None else queries
    dE = walk.dE.tensor[queries]  # [Q, C]
    readings = [
        DeltaReading(
            q,
            float(walk.stream[q].norm()),
            float(walk.normed.tensor[q].norm()) if walk.normed is not None else None,
            float(dE[n].norm()),
        )
        for n, q in enumerate(queries)
    ]
    if walk.final is not None and model.tokenizer is not None:
        effect = direct_logit_effect(model, dE, walk.final[queries])  # [Q, V]
        top, bottom = effect.topk(k, dim=-1), (-effect).topk(k, dim=-1)
        for n, r in enumerate(readings):
            r.up = list(zip(model.tokenizer.token_texts(top.indices[n].tolist()), top.values[n].tolist()))
            r.down = list(zip(model.tokenizer.token_texts(bottom.indices[n].tolist()), (-bottom.values[n]).tolist()))
    if speaks_adjectives(model):
        words = set(adjectives_lesson.ADJECTIVES)
        for n, r in enumerate(readings):
            seen = walk.tokens[: r.query + 1] if walk.causal else walk.tokens
            for p, token in enumerate(seen):
                if token in words:
                    direction = walk.value_out[p]
                    cos = float(dE[n] @ direction / (dE[n].norm() * direction.norm()).clamp(min=1e-12))
                    r.cosines.append((p, token, cos))
    return readings


def direct_logit_effect(model: Transformer, delta_C: torch.Tensor, final_C: torch.Tensor) -> torch.Tensor:
    """[..., V]: what `delta_C` [..., C] adds to every logit through the final norm (its
    scale frozen at its value for the final stream `final_C` [..., C], the usual
    linearisation) and W_U."""
    norm = model.ln_final
    x, final = delta_C.float(), final_C.float()
    if model.config.normalization == "rmsnorm":
        scale = (final.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
    else:  # a LayerNorm centres first; its bias does not depend on ΔE
        scale = (final.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
        x = x - x.mean(-1, keepdim=True)
    return (x * norm.weight.float() / scale) @ model.W_U.float()


def is_special(token: str) -> bool:
    return bool(SPECIAL.match(token))


def sink_note(walk: HeadWalk, query: int) -> str | None:
    """A sentence when the query's weight mostly goes to the first token or a special
    token (an attention sink), else None."""
    weights = walk.pattern.tensor[query]
    parked = [p for p, t in enumerate(walk.tokens) if p == 0 or is_special(t)]
    if query == 0 and walk.causal:
        return None  # the first query can look nowhere else: that is the mask, not a sink
    share = float(weights[parked].sum())
    if share < SINK:
        return None
    where = " and ".join(f"“{walk.tokens[p]}”" for p in parked if float(weights[p]) >= 0.05) or "them"
    v = walk.V.tensor.norm(dim=-1)
    others = [p for p in range(len(walk.tokens)) if p not in parked]
    value = f"here |V| = {float(v[parked].mean()):.2f}"
    if others:
        value += f" against {float(v[others].mean()):.2f} on average for the other tokens"
    return (
        f"attention sink: {share:.2f} of this query's weight goes to {where}, the first or a special token. "
        "The weights must sum to 1, so a head with nothing to find in this sentence parks them on a token "
        f"every query can see (Xiao et al., 2023); what it then adds is that token's value, {value}"
    )


def scores_note(walk: HeadWalk, query: int) -> str | None:
    """A sentence when the query's dot products are negative: only their differences count."""
    dots = walk.dots.tensor[query]
    seen = dots[~torch.isinf(walk.mask.tensor[query])]
    negative = int((seen < 0).sum())
    if negative == 0:
        return None
    every = "every one of" if negative == seen.numel() else f"{negative} of"
    return (
        f"{every} this query's {seen.numel()} dot products is negative: that is fine, softmax cares only about "
        "their differences (adding the same number to every score leaves the weights as they are), so the "
        "largest score wins however negative it is"
    )


def detector_note(walk: HeadWalk, query: int | None = None) -> str:
    """What the head detectors, scored on this text's pattern, say this head does (a
    pattern, not yet a cause: switching the head off is what tests a cause); with `query`,
    then where that one query looks most, which an average over queries can hide."""
    note = pattern_note(walk.pattern.tensor, walk.tokens)
    return note if query is None else f"{note}. {focus_note(walk, query)}"


def focus_note(walk: HeadWalk, query: int) -> str:
    """The key the query puts most weight on."""
    weights = walk.pattern.tensor[query]
    key = int(weights.argmax())
    return (
        f"The query followed, “{walk.tokens[query]}”, puts most weight on “{walk.tokens[key]}” "
        f"(position {key}): {float(weights[key]):.2f}"
    )


def pattern_note(P: torch.Tensor, tokens: list, ids: list[int] | None = None) -> str:
    """detector_note for a pattern [query, key] over `tokens` (or their `ids`)."""
    T = P.shape[0]
    scores: dict[str, float] = {}
    if T >= 2:
        scores["previous-token"] = float(P.diagonal(offset=-1).mean())
    scores["first-token"] = float(P[1:, 0].mean()) if T >= 2 else float(P[:, 0].mean())
    keys = ids if ids is not None else tokens
    earlier = [(q, [s for s in range(q) if keys[s] == keys[q]]) for q in range(T)]
    copies = [(q, s) for q, s in earlier if s]
    if copies:
        scores["duplicate-token"] = sum(float(P[q, s].sum()) for q, s in copies) / len(copies)
    ranked = sorted(scores.items(), key=lambda x: -x[1])
    said = "what the detectors say, from its pattern on this text averaged over the queries"
    strong = [f"a {kind} head ({v:.2f}: {DETECTORS[kind]})" for kind, v in ranked if v >= STRONG]
    if strong:
        return f"{said}: " + "; and ".join(strong)
    return f"{said}: no job reaches {STRONG} (" + ", ".join(f"{kind} {v:.2f}" for kind, v in ranked) + ")"
