"""Head detectors: what does each head do? Each returns a [layer, head] score table.

Scores are averages of attention weights, so each lies in [0, 1]: the share of a
query's attention that lands where the detector says it should. A head is named as
doing a job only when its score reaches STRONG; below that the table still shows every
head, and the summary says that none qualifies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import lessons
from ..config import GlassformerError
from ..inputs import check_layer_head
from ..model import Transformer
from .explain import HeadWalk, sharpest_query

STRONG = 0.4  # a head "does" a job when at least this share of its attention goes where the job says

DETECTORS = {
    "previous-token": "weight on the token just before the query",
    "duplicate-token": "weight on earlier copies of the query's own token",
    "induction": "weight on the token after an earlier copy of the query's token (repeated random segments)",
    "first-token": "weight on position 0 (an attention sink)",
    "adjective-noun": "share of a noun's attention on its own adjectives (adjectives lesson)",
}


def _patterns(model: Transformer, ids: torch.Tensor, last_only: bool = False) -> torch.Tensor:
    """[L, B, H, T, S] attention patterns for a batch of token ids."""
    _, cache = model.run_with_cache(ids, names="blocks.*.attn.pattern", device="cpu", last_only=last_only)
    return torch.stack([cache[f"blocks.{i}.attn.pattern"] for i in range(model.config.n_layers)]).float()


def previous_token(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """Mean weight each query (after the first) puts on the token just before it."""
    if ids.shape[1] < 2:
        raise GlassformerError("one token has no previous token to attend to")
    return _patterns(model, ids).diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(1, 3))  # [L, H]


def first_token(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """Mean weight each query puts on position 0 (an "attention sink")."""
    return _patterns(model, ids)[..., 0].mean(dim=(1, 3))


def _target_share(P: torch.Tensor, target: torch.Tensor, what: str) -> torch.Tensor:
    """Mean over queries that have a target of the weight they put on it. P [L, B, H, T, S],
    target [B, T, S] boolean."""
    has = target.any(-1)  # [B, T]
    if not has.any():
        raise GlassformerError(what)
    share = (P * target[None, :, None].float()).sum(-1)  # [L, B, H, T]
    return (share * has[None, :, None]).sum(dim=(1, 3)) / has.sum()


def duplicate_token(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """Mean weight a query puts on earlier positions holding its own token, over queries
    that have such an earlier copy."""
    T = ids.shape[1]
    same = ids[:, :, None] == ids[:, None, :]  # [B, T, S]
    earlier = torch.ones(T, T, dtype=torch.bool).tril(-1)
    return _target_share(_patterns(model, ids), same & earlier, "no token repeats in this text")


def induction_targets(ids: torch.Tensor) -> torch.Tensor:
    """[B, T, S] True at the position right after the latest earlier copy of query t's token
    (when that is not the query's own previous position, which a previous-token head finds)."""
    B, T = ids.shape
    target = torch.zeros(B, T, T, dtype=torch.bool)
    for b in range(B):
        last_seen: dict[int, int] = {}
        for t, token in enumerate(ids[b].tolist()):
            s = last_seen.get(token)
            if s is not None and s + 1 < t:
                target[b, t, s + 1] = True
            last_seen[token] = t
    return target


def induction(model: Transformer, ids: torch.Tensor | None = None, *, seed: int = 0) -> torch.Tensor:
    """On repeated segments, mean weight a query puts on the token that followed its own
    token last time. Without `ids`, scored on random segments of several lengths (5, 9, 13
    and 17 tokens) at random distances, so no single offset can score well."""
    if ids is None:
        ids = random_repeats(model, seed=seed)
    what = "no token repeats at a distance in this text, so induction heads cannot be scored"
    return _target_share(_patterns(model, ids), induction_targets(ids), what)


def random_repeats(model: Transformer, n_each: int = 6, lengths=(5, 9, 13, 17), seed: int = 0) -> torch.Tensor:
    """Random segments repeated at random distances, in the model's own tokens: the lesson's
    symbols for a model that reads them, otherwise ids drawn from its vocabulary."""
    lesson = lessons.induction
    context = min(lesson.LENGTH, model.config.context_length)
    rows = []
    g = torch.Generator().manual_seed(seed)
    speaks_lesson = _token_id(model, f"t{lesson.VOCAB - 1}") is not None
    for L in lengths:
        if 2 * L > context:
            continue
        for _ in range(n_each):
            if speaks_lesson:
                ids, *_ = lesson.episode(g, L)
                rows.append(ids[:context] + lesson.FIRST_ID)
            else:
                ids = torch.randint(1, model.config.vocab_size, (context,), generator=g)
                first = int(torch.randint(0, context - 2 * L + 1, (1,), generator=g))
                second = int(torch.randint(first + L, context - L + 1, (1,), generator=g))
                ids[second : second + L] = ids[first : first + L]
                rows.append(ids)
    if not rows:
        raise GlassformerError(f"a context of {context} tokens is too short for repeated segments")
    return torch.stack(rows)


def _token_id(model: Transformer, token: str) -> int | None:
    finder = getattr(model.tokenizer, "token_id", None)
    return finder(token) if finder is not None else None


def adjective_noun(
    model: Transformer, sentences: list | None = None, *, n: int = 200, seed: int = 12345
) -> torch.Tensor:
    """Share of each noun's attention that lands on its own adjectives, averaged over
    the nouns that have at least one (the adjectives lesson's grammar)."""
    return adjective_scores(model, sentences, n=n, seed=seed)[0]


def adjective_scores(model: Transformer, sentences=None, *, n: int = 200, seed: int = 12345):
    """(own, far): `own` as in `adjective_noun`; `far` the share on the noun's own
    adjectives other than the one right before it, over nouns with two or more."""
    if sentences is None:
        sentences = lessons.adjectives.sentences(n, seed)
    L, H = model.config.n_layers, model.config.n_heads
    own, far = torch.zeros(L, H), torch.zeros(L, H)
    n_own = n_far = 0
    rows = [model.tokenizer.encode(" ".join(w for w, _, _ in sent)) for sent in sentences]
    if any(len(ids) != len(sent) for ids, sent in zip(rows, sentences)):
        raise GlassformerError("this model's tokenizer does not split the lesson one word per token")
    # one forward for every sentence, padded on the right: in a decoder no query looks at
    # a later position, so the padding changes nothing a noun attends to
    width = max(len(r) for r in rows)
    if model.config.causal:
        batches = [torch.tensor([r + [0] * (width - len(r)) for r in rows])]
    else:
        batches = [torch.tensor([r]) for r in rows]
    patterns = torch.cat([_patterns(model, ids) for ids in batches], dim=1)  # [L, B, H, T, S]
    for b, sent in enumerate(sentences):
        P = patterns[:, b]  # [L, H, T, S]
        for i, (_, pos, _) in enumerate(sent):
            if pos != "NOUN":
                continue
            adjs = [j for j, (_, p, owner) in enumerate(sent) if p == "ADJ" and owner == i]
            if adjs:
                own += P[:, :, i, adjs].sum(-1)
                n_own += 1
            if len(adjs) >= 2:
                far += P[:, :, i, [j for j in adjs if j != i - 1]].sum(-1)
                n_far += 1
    return own / max(n_own, 1), far / max(n_far, 1)


def strongest(scores: torch.Tensor) -> tuple[int, int, float]:
    """(layer, head, score) of the highest entry."""
    flat = int(scores.argmax())
    layer, head = divmod(flat, scores.shape[1])
    return layer, head, float(scores[layer, head])


def speaks_adjectives(model: Transformer) -> bool:
    """True when the model's tokenizer reads the adjectives lesson one word per token."""
    tok = model.tokenizer
    if tok is None:
        return False
    example = lessons.adjectives.EXAMPLE
    try:
        ids = tok.encode(example)
    except GlassformerError:  # a character vocabulary without these letters
        return False
    return len(ids) == len(example.split()) and _token_id(model, "[UNK]") not in ids


@dataclass
class Detection:
    """Every detector's table that could be scored, and why the others were skipped."""

    tables: dict[str, torch.Tensor]
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> list[str]:
        """One line per kind: every head that reaches STRONG, strongest first, else the best
        one and that it falls short (to three places, so 0.398 does not read as 0.40)."""
        lines = []
        for kind, table in self.tables.items():
            layer, head, score = strongest(table)
            if score >= STRONG:
                found = sorted(
                    ((float(v), divmod(i, table.shape[1])) for i, v in enumerate(table.flatten())), reverse=True
                )
                named = [f"layer {lh[0]}, head {lh[1]} ({v:.3f})" for v, lh in found if v >= STRONG]
                more = f"; and {len(named) - 4} more" if len(named) > 4 else ""
                lines.append(f"{kind} head{'s' if len(named) > 1 else ''}: " + "; ".join(named[:4]) + more)
            else:
                lines.append(f"{kind}: no head reaches {STRONG} (best: layer {layer}, head {head}, {score:.3f})")
        lines += [f"{kind}: not scored ({why})" for kind, why in self.skipped.items()]
        return lines


def one_pass(model: Transformer, ids: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """The four text detectors on `ids` from one forward pass: every pattern is captured
    once (unembedding only the last position, which no detector reads) and each detector
    reads the same patterns, where calling them one by one ran the model four times."""
    P = _patterns(model, ids, last_only=True)
    share = _target_share

    def previous() -> torch.Tensor:
        if ids.shape[1] < 2:
            raise GlassformerError("one token has no previous token to attend to")
        return P.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(1, 3))

    earlier = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril(-1)
    same = (ids[:, :, None] == ids[:, None, :]) & earlier
    no_repeat = "no token repeats in this text"
    no_distant = "no token repeats at a distance in this text, so induction heads cannot be scored"
    return {
        "previous-token": previous,
        "duplicate-token": lambda: share(P, same, no_repeat),
        "induction": lambda: share(P, induction_targets(ids), no_distant),
        "first-token": lambda: P[..., 0].mean(dim=(1, 3)),
    }


def detect_all(model: Transformer, ids: torch.Tensor | None = None) -> Detection:
    """Every detector that applies to this model, on `ids` (else on repeated random
    segments); one that cannot be scored on this text is skipped with the reason."""
    probe = random_repeats(model) if ids is None else ids
    detectors = one_pass(model, probe)
    if speaks_adjectives(model):
        detectors["adjective-noun"] = lambda: adjective_noun(model)
    found = Detection({})
    for kind, score in detectors.items():
        try:
            found.tables[kind] = score()
        except GlassformerError as err:
            found.skipped[kind] = str(err)
    return found


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
    words = lessons.adjectives
    best, most = None, 0
    for i, token in enumerate(tokens):
        if token in words.NOUNS:
            count = 0
            while i - count - 1 >= 0 and tokens[i - count - 1] in words.ADJECTIVES:
                count += 1
            if count > most:
                best, most = i, count
    return best


def showcase_head(model: Transformer, ids: torch.Tensor) -> Showcase:
    """The head that best shows what this model does, for a first look: the adjectives
    lesson's adjective head; the induction lesson's induction head; for any other model
    the head whose last token looks most sharply at one earlier token (other than the
    first, where many heads park attention they have no use for)."""
    if speaks_adjectives(model):
        layer, head, score = strongest(adjective_noun(model))
        why = f"the adjective head (nouns put {score:.0%} of their attention on their own adjectives)"
        questions = ("is there an adjective in front of me?", "I am an adjective!")
        return Showcase(layer, head, why, questions, per_text=False)
    if _token_id(model, f"t{lessons.induction.VOCAB - 1}") is not None:
        layer, head, score = strongest(induction(model))
        why = f"the induction head ({score:.0%} of its attention goes to what came next last time)"
        questions = ("where was my token before?", "the token just before me was this one")
        return Showcase(layer, head, why, questions, per_text=False)
    P = _patterns(model, ids)[:, 0, :, -1]  # [L, H, S]: every head's last query
    offset = 1 if P.shape[-1] > 2 else 0
    if offset:
        P = P[..., 1:-1]  # neither the first token nor the query itself
    layer, head, weight = strongest(P.amax(-1))
    key = int(P[layer, head].argmax()) + offset
    why = f"the head whose last token looks most sharply at one earlier token (position {key}, weight {weight:.2f})"
    return Showcase(layer, head, why)
