"""The head a first look opens on, and why: by one rule for every model, a head that both
shows the pattern (the lesson's, or a sharp look at one earlier token) and matters when
switched off (the switch-off column of `heads`, measured here too). `explain`, `show`
and the explorer all ask `choose_head` and `query_to_follow`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import lessons
from ..inputs import check_layer_head, token_texts
from ..lessons import adjectives as adjectives_lesson
from ..model import Transformer
from .explain import HeadWalk, sharpest_query
from .heads import (
    _patterns,
    adjective_scores,
    induction,
    induction_targets,
    random_repeats,
    speaks_adjectives,
    strongest,
)
from .switch_off import CANDIDATES, lesson_nouns, switch_off_kl


@dataclass
class Showcase:
    """The head to look at first, and why; `questions` is what its queries ask and its
    keys answer, where the lesson says (None for a head found only by its pattern)."""

    layer: int
    head: int
    why: str
    questions: tuple[str, str] | None = None
    per_text: bool = True  # False: found on the lesson's own texts, the same for any sentence


def choose_head(model: Transformer, ids: torch.Tensor, layer: int | None = None, head: int | None = None) -> Showcase:
    """The head to walk through `ids`: the one asked for, else the showcase head (with
    the lesson's questions only when the two are the same head)."""
    shown = showcase_head(model, ids)
    if layer is None and head is None:
        return Showcase(shown.layer, shown.head, shown.why + "; --layer/--head show another", shown.questions)
    layer = shown.layer if layer is None else layer
    head = shown.head if head is None else head
    check_layer_head(model, layer, head)
    if (layer, head) == (shown.layer, shown.head):
        return shown
    return Showcase(layer, head, "the head you asked for")


def query_to_follow(model: Transformer, walk: HeadWalk) -> int:
    """The position a first look at a head follows, the same in the terminal and the
    explorer: on the adjectives lesson, the noun with the most adjectives in front of it;
    otherwise the position whose query looks most sharply at another token."""
    if speaks_adjectives(model):
        noun = noun_with_most_adjectives(walk.tokens)
        if noun is not None:
            return noun
    return sharpest_query(walk)


def noun_with_most_adjectives(tokens: list[str]) -> int | None:
    """The position of the lesson noun with the most adjectives right in front of it."""
    words = adjectives_lesson
    best, most = None, 0
    for i, token in enumerate(tokens):
        if token in words.NOUNS:
            count = 0
            while i - count - 1 >= 0 and tokens[i - count - 1] in words.ADJECTIVES:
                count += 1
            if count > most:
                best, most = i, count
    return best


def _pick(pattern: torch.Tensor, model: Transformer, ids: torch.Tensor, where: torch.Tensor):
    """(layer, head, pattern score, KL or None for an encoder) by the one rule: of the
    CANDIDATES heads with the best pattern scores, those whose switching off moves the
    next token (at the positions that show the pattern) at least half as much as the one
    that moves it most; of those, the one with the best pattern score."""
    if not model.config.causal:  # nothing to switch off against: the pattern alone decides
        layer, head, score = strongest(pattern)
        return layer, head, score, None
    flat = pattern.flatten().argsort(descending=True)[:CANDIDATES].tolist()
    chosen = [divmod(i, pattern.shape[1]) for i in flat]  # best pattern first
    kls = switch_off_kl(model, ids, chosen, where).tolist()
    k = next(k for k, kl in enumerate(kls) if kl >= max(kls) / 2)
    layer, head = chosen[k]
    return layer, head, float(pattern[layer, head]), kls[k]


def showcase_head(model: Transformer, ids: torch.Tensor) -> Showcase:
    """The head that best shows what this model does, for a first look, by one rule for
    every model (see `_pick`): it shows the pattern and the model needs it. The pattern is
    the adjectives lesson's (nouns on their own adjectives), the induction lesson's, or
    for any other model how sharply the last token looks at one earlier token (not the
    first, where many heads park attention they have no use for)."""
    lesson = lessons.spoken_by(model.tokenizer)
    showcase = SHOWCASES.get(lesson.SHOWCASE) if lesson is not None else None
    if showcase is not None:
        return showcase(model)
    ids = ids[:1]
    P = _patterns(model, ids)[:, 0, :, -1]  # [L, H, S]: every head's last query
    offset = 1 if P.shape[-1] > 2 else 0
    if offset:
        P = P[..., 1:-1]  # neither the first token nor the query itself
    last = torch.zeros(ids.shape, dtype=torch.bool)
    last[:, -1] = True
    layer, head, weight, kl = _pick(P.amax(-1), model, ids, last)
    key = int(P[layer, head].argmax()) + offset
    tokens = token_texts(model, ids[0, [-1, key]])  # named: the first look may follow another query
    why = (
        f"the head whose last token, “{tokens[0]}”, looks sharply at one earlier token, “{tokens[1]}” "
        f"(position {key}, weight {weight:.2f})"
    )
    if kl is not None:
        why += f", and switched off it moves the next token by KL {kl:.2f}"
    return Showcase(layer, head, why)


def _adjective_showcase(model: Transformer) -> Showcase:
    """The adjectives lesson's head: nouns on their own adjectives, and needed there."""
    nouns, where = lesson_nouns(model)
    owns, _, evens = adjective_scores(model)
    layer, head, score, kl = _pick(evens, model, nouns, where)
    own = owns[layer, head]
    why = (
        f"the adjective head: nouns put {own:.0%} of their attention on their own adjectives "
        f"({score:.0%} counting each up to an equal share), and switched off it moves the word "
        f"after the noun by KL {kl:.2f}"
    )
    questions = ("is there an adjective in front of me?", "I am an adjective!")
    return Showcase(layer, head, why, questions, per_text=False)


def _induction_showcase(model: Transformer) -> Showcase:
    """The induction lesson's head: to what followed the token last time, and needed there."""
    probe = random_repeats(model)
    where = induction_targets(probe).any(-1)
    layer, head, score, kl = _pick(induction(model, probe), model, probe, where)
    why = (
        f"the induction head: {score:.0%} of its attention goes to what came next last time, and "
        f"switched off it moves the next token there by KL {kl:.2f}"
    )
    questions = ("where was my token before?", "the token just before me was this one")
    return Showcase(layer, head, why, questions, per_text=False)


# A lesson's SHOWCASE names one of these: how its head is found and what is said of it. A
# new lesson whose head one of them finds needs nothing here.
SHOWCASES: dict[str, Callable[[Transformer], Showcase]] = {
    "adjective": _adjective_showcase,
    "induction": _induction_showcase,
}
