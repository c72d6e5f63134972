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
from ..inputs import check_layer_head, tokenizer_of
from ..lessons import adjectives as adjectives_lesson
from ..lessons import induction as induction_lesson
from ..model import Transformer
from .explain import HeadWalk, sharpest_query

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


@dataclass
class Detection:
    """Every detector's table that could be scored, and why the others were skipped."""

    tables: dict[str, torch.Tensor]
    skipped: dict[str, str] = field(default_factory=dict)
    switch_off: torch.Tensor | None = None  # [layer, head] mean KL on the next token with the head's z at zero
    switch_off_on: str = ""  # the texts that KL was measured on, or why it was not

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
    if model.config.causal:
        only = switch_off_heads(model, found.tables)
        texts, where, found.switch_off_on = switch_off_texts(model, ids, None if only is None else len(only))
        found.switch_off = switch_off_table(model, texts, where, only)
        if only is not None:
            found.switch_off_on += f"; only the {CANDIDATES} best heads of each detector (the others: ·)"
    else:
        found.switch_off_on = "not measured: an encoder predicts no next token"
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


CANDIDATES = 4  # the switch-off check runs on this many of the best pattern heads: one batch of 5 on 30 × 9 heads
FULL_SWEEP = 32  # up to this many heads, `heads` switches off every one; above, the detectors' best
SWEEP_TOKENS = 2048  # above FULL_SWEEP: token positions the switch-off column may run (rows × length × heads)
LOGITS_PER_PASS = 2**25  # floats of logits one switch-off pass may hold (128 MB)


def switch_off_kl(
    model: Transformer, ids: torch.Tensor, chosen: list[tuple[int, int]], where: torch.Tensor | None = None
) -> torch.Tensor:
    """[len(chosen)] the mean KL(before ‖ after) of the next-token distribution when each
    (layer, head)'s z is set to zero, over the positions `where` ([B, T] bool; default
    all). One forward for all of them: row block k of a stacked batch loses head k."""
    if not model.config.causal:
        raise GlassformerError("switching a head off is measured on the next token, and an encoder predicts none")
    B, T = ids.shape
    where = torch.ones(B, T, dtype=torch.bool) if where is None else where
    K = len(chosen)
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for k, (layer, head) in enumerate(chosen):
        check_layer_head(model, layer, head)
        by_layer.setdefault(layer, []).append((k, head))

    def off(rows: list[tuple[int, int]]):
        def fn(z_BHTD: torch.Tensor, _name: str) -> torch.Tensor:
            z_BHTD = z_BHTD.clone()
            for k, head in rows:
                z_BHTD[(k + 1) * B : (k + 2) * B, head] = 0.0
            return z_BHTD

        return fn

    hooks = {f"blocks.{layer}.attn.z": off(rows) for layer, rows in by_layer.items()}
    with torch.inference_mode(), model.hooks(hooks):
        logits = model(ids.repeat(K + 1, 1).to(model.device)).float().cpu()
    logp = logits.log_softmax(-1).view(K + 1, B, T, -1)
    kl = (logp[0].exp() * (logp[0] - logp[1:])).sum(-1)  # [K, B, T]
    return (kl * where).sum(dim=(1, 2)) / where.sum().clamp(min=1)


def switch_off_table(
    model: Transformer, ids: torch.Tensor, where: torch.Tensor | None = None, only: list[tuple[int, int]] | None = None
) -> torch.Tensor:
    """[layer, head] switch_off_kl for every head (or those in `only`, the rest NaN), a
    few heads per forward pass."""
    L, H = model.config.n_layers, model.config.n_heads
    chosen = [(layer, head) for layer in range(L) for head in range(H)] if only is None else only
    step = max(1, LOGITS_PER_PASS // (ids.numel() * model.config.vocab_size) - 1)
    table = torch.full((L, H), float("nan"))
    for i in range(0, len(chosen), step):
        part = chosen[i : i + step]
        for (layer, head), kl in zip(part, switch_off_kl(model, ids, part, where).tolist()):
            table[layer, head] = kl
    return table


def switch_off_heads(model: Transformer, tables: dict[str, torch.Tensor]) -> list[tuple[int, int]] | None:
    """The heads the `heads` switch-off column measures: all of them on a model with at
    most FULL_SWEEP, else the CANDIDATES best of each detector (one pass per head on 30 × 9
    heads would take minutes)."""
    L, H = model.config.n_layers, model.config.n_heads
    if L * H <= FULL_SWEEP:
        return None
    chosen: list[tuple[int, int]] = []
    for table in tables.values():
        for i in table.flatten().argsort(descending=True)[:CANDIDATES].tolist():
            if divmod(i, H) not in chosen:
                chosen.append(divmod(i, H))
    return chosen


def switch_off_texts(
    model: Transformer, ids: torch.Tensor | None = None, heads: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(ids, where, what): the texts the `heads` switch-off column runs on: `ids`, else the
    adjectives lesson's sentences for a model that reads them, else repeated random
    segments; when only `heads` of a large model's heads are measured, kept to a few rows
    (SWEEP_TOKENS) so that the column costs a few forward passes of the detectors' texts."""
    if ids is not None:
        rows, what = ids, "this text"
    elif speaks_adjectives(model):
        return (*lesson_nouns(model, n=200, seed=12345, every_position=True), "200 lesson sentences")
    else:
        rows, what = random_repeats(model), "repeated random segments"
    keep = rows.shape[0] if heads is None else max(1, min(rows.shape[0], SWEEP_TOKENS // (rows.shape[1] * heads)))
    if keep < rows.shape[0]:
        what += f" (the first {keep} of {rows.shape[0]} rows)"
    rows = rows[:keep]
    return rows, torch.ones(rows.shape, dtype=torch.bool), what


def lesson_nouns(model: Transformer, n: int = 200, seed: int = 12345, every_position: bool = False):
    """(ids [B, T] right-padded, where [B, T]): the adjectives lesson's sentences and the
    nouns that have adjectives (or, with every_position, every real token)."""
    sentences = adjectives_lesson.sentences(n, seed)
    rows = [tokenizer_of(model).encode(" ".join(w for w, _, _ in sent)) for sent in sentences]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    where = torch.zeros(ids.shape, dtype=torch.bool)
    for b, sent in enumerate(sentences):
        for i, (_, pos, _) in enumerate(sent):
            owned = any(owner == i for _, _, owner in sent)
            where[b, i] = every_position or (pos == "NOUN" and owned)
    return ids, where


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
    why = f"the head whose last token looks sharply at one earlier token (position {key}, weight {weight:.2f})"
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
