"""Head detectors: what does each head do? Each returns a [layer, head] score table.

Scores are averages of attention weights, so each lies in [0, 1]: the share of a
query's attention that lands where the detector says it should.
"""

from __future__ import annotations

import torch

from .. import lessons
from ..config import GlassformerError


def _patterns(model, ids: torch.Tensor) -> torch.Tensor:
    """[L, B, H, T, S] attention patterns for a batch of token ids."""
    _, cache = model.run_with_cache(ids, names="blocks.*.attn.pattern", device="cpu")
    return torch.stack([cache[f"blocks.{i}.attn.pattern"] for i in range(model.config.n_layers)])


def previous_token(model, ids: torch.Tensor) -> torch.Tensor:
    """Mean weight each query (after the first) puts on the token just before it."""
    P = _patterns(model, ids)
    return P.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(1, 3))  # [L, H]


def first_token(model, ids: torch.Tensor) -> torch.Tensor:
    """Mean weight each query puts on position 0 (an "attention sink")."""
    return _patterns(model, ids)[..., 0].mean(dim=(1, 3))


def duplicate_token(model, ids: torch.Tensor) -> torch.Tensor:
    """Mean weight a query puts on earlier positions holding the same token as itself,
    over queries that have such an earlier copy."""
    P = _patterns(model, ids)  # [L, B, H, T, S]
    T = ids.shape[1]
    same = ids[:, :, None] == ids[:, None, :]  # [B, T, S]
    earlier = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)
    target = (same & earlier).float()  # [B, T, S]
    has = target.sum(-1) > 0  # [B, T]
    if not has.any():
        raise GlassformerError("no token repeats in this text, so duplicate-token heads cannot be scored")
    share = (P * target[None, :, None]).sum(-1)  # [L, B, H, T]
    return (share * has[None, :, None]).sum(dim=(1, 3)) / has.sum()


def induction(model, ids: torch.Tensor | None = None, *, half: int | None = None, seed: int = 0) -> torch.Tensor:
    """On repeated random tokens, mean weight a query in the second copy puts on the
    token just after its own earlier occurrence (the token to copy)."""
    if ids is None:
        lesson = lessons.induction
        tok = model.tokenizer
        if getattr(tok, "kind", "") == "hf" and tok.token_id("t1") is not None:
            half = half or min(lesson.HALF, model.config.context_length // 2)
            ids = lesson.batch(16, half=half, seed=seed) + 1  # the lesson's ids: token tK is K + 1
        else:
            ids = random_repeats(model, n=16, seed=seed)
    half = ids.shape[1] // 2
    P = _patterns(model, ids)
    t = torch.arange(half, 2 * half - 1)  # queries in the second copy
    return P[..., t, t - half + 1].mean(dim=(1, 3))


def adjective_noun(model, sentences: list | None = None, *, n: int = 200, seed: int = 12345) -> torch.Tensor:
    """Share of each noun's attention that lands on its own adjectives, averaged over
    the nouns that have at least one (the adjectives lesson's grammar)."""
    return adjective_scores(model, sentences, n=n, seed=seed)[0]


def adjective_scores(model, sentences=None, *, n: int = 200, seed: int = 12345):
    """(own, far): `own` as in `adjective_noun`; `far` the share on the noun's own
    adjectives other than the one right before it, over nouns with two or more."""
    adjectives = lessons.adjectives
    if sentences is None:
        sentences = adjectives.sentences(n, seed)
    L, H = model.config.n_layers, model.config.n_heads
    own, far = torch.zeros(L, H), torch.zeros(L, H)
    n_own = n_far = 0
    for sent in sentences:
        ids = torch.tensor([model.tokenizer.encode(" ".join(w for w, _, _ in sent))])
        if ids.shape[1] != len(sent):
            raise GlassformerError("this model's tokenizer does not split the lesson one word per token")
        P = _patterns(model, ids)[:, 0]  # [L, H, T, S]
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


DETECTORS = {
    "previous-token": "weight on the token just before the query",
    "duplicate-token": "weight on earlier copies of the query's own token",
    "induction": "weight on the token after the query's earlier occurrence (repeated random tokens)",
    "first-token": "weight on position 0 (an attention sink)",
    "adjective-noun": "share of a noun's attention on its own adjectives (adjectives lesson)",
}


def random_repeats(model, n: int = 8, seed: int = 0) -> torch.Tensor:
    """[n, 2·half] ids: random tokens then the same again, within the model's vocabulary."""
    lesson = lessons.induction
    half = min(lesson.HALF, model.config.context_length // 2)
    low = 1 if model.config.vocab_size > 2 else 0
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(low, model.config.vocab_size, (n, half), generator=g)
    return torch.cat([first, first], dim=1)


def speaks_adjectives(model) -> bool:
    """True when the model's tokenizer reads the adjectives lesson one word per token."""
    adjectives = lessons.adjectives
    tok = model.tokenizer
    if tok is None:
        return False
    try:
        ids = tok.encode(adjectives.EXAMPLE)
    except GlassformerError:  # a character vocabulary without these letters
        return False
    unknown = tok.token_id("[UNK]") if hasattr(tok, "token_id") else None
    return len(ids) == len(adjectives.EXAMPLE.split()) and unknown not in ids


def detect_all(model, ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every detector's [layer, head] table that applies to this model."""
    ids = random_repeats(model) if ids is None else ids
    tables = {
        "previous-token": previous_token(model, ids),
        "duplicate-token": duplicate_token(model, ids),
        "induction": induction(model, ids) if ids.shape[1] % 2 == 0 else None,
        "first-token": first_token(model, ids),
    }
    if speaks_adjectives(model):
        tables["adjective-noun"] = adjective_noun(model)
    return {k: v for k, v in tables.items() if v is not None}
