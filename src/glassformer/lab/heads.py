"""Head detectors: what does each head do? Each returns a [layer, head] score table.

Scores are averages of attention weights, so each lies in [0, 1]: the share of a
query's attention that lands where the detector says it should. A head is named as
doing a job only when its score reaches STRONG; below that the table still shows every
head, and the summary says that none qualifies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import lessons
from ..config import GlassformerError
from ..inputs import tokenizer_of
from ..lessons import adjectives as adjectives_lesson
from ..lessons import induction as induction_lesson
from ..model import Transformer

STRONG = 0.4  # a head "does" a job when at least this share of its attention goes where the job says

DETECTORS = {
    "previous-token": "weight on the token just before the query",
    "duplicate-token": "weight on earlier copies of the query's own token",
    "induction": "weight on the token after an earlier copy of the query's token (repeated random segments)",
    "first-token": "weight on position 0 (an attention sink)",
    "adjective-noun": "share of a noun's attention on its own adjectives, each counted up to an equal share "
    "(a head that gathers them all scores high, one that picks one does not; adjectives lesson)",
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
    lesson = induction_lesson
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
    return model.tokenizer.token_id(token) if model.tokenizer is not None else None


def adjective_noun(
    model: Transformer, sentences: list | None = None, *, n: int = 200, seed: int = 12345
) -> torch.Tensor:
    """Share of each noun's attention that lands on its own k adjectives, each counted up
    to 1/k, averaged over the nouns that have at least one (the adjectives lesson's
    grammar): the video's head, which gathers every adjective, scores near 1; a head that
    looks at one of three scores at most 1/3 + what it spreads on the others."""
    return adjective_scores(model, sentences, n=n, seed=seed)[2]


def adjective_scores(model: Transformer, sentences=None, *, n: int = 200, seed: int = 12345):
    """(own, far, even): `own` the share of a noun's attention on its own adjectives, over
    nouns with one or more; `far` the share on those other than the one right before it,
    over nouns with two or more; `even` as `own` with each adjective counted up to 1/k."""
    if sentences is None:
        sentences = adjectives_lesson.sentences(n, seed)
    L, H = model.config.n_layers, model.config.n_heads
    own, far, even = torch.zeros(L, H), torch.zeros(L, H), torch.zeros(L, H)
    n_own = n_far = 0
    rows = [tokenizer_of(model).encode(" ".join(w for w, _, _ in sent)) for sent in sentences]
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
                even += P[:, :, i, adjs].clamp(max=1 / len(adjs)).sum(-1)
                n_own += 1
            if len(adjs) >= 2:
                far += P[:, :, i, [j for j in adjs if j != i - 1]].sum(-1)
                n_far += 1
    return own / max(n_own, 1), far / max(n_far, 1), even / max(n_own, 1)


def strongest(scores: torch.Tensor) -> tuple[int, int, float]:
    """(layer, head, score) of the highest entry."""
    flat = int(scores.argmax())
    layer, head = divmod(flat, scores.shape[1])
    return layer, head, float(scores[layer, head])


def speaks_adjectives(model: Transformer) -> bool:
    """True when the model reads the adjectives lesson one word per token."""
    return lessons.spoken_by(model.tokenizer) is lessons.LESSONS["adjectives"]


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
