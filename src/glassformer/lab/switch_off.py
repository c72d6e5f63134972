"""Switching heads off to see which the model needs: the causal column of `heads` and the
check `showcase` makes (a pattern is not a mechanism). Each head's z is set to zero at
every position, several heads in one batched pass, and the KL of the next-token
distribution from the unchanged one is its score."""

from __future__ import annotations

import torch

from ..config import GlassformerError
from ..inputs import check_layer_head, tokenizer_of
from ..lessons import adjectives as adjectives_lesson
from ..model import Transformer
from .heads import random_repeats, speaks_adjectives

CANDIDATES = 4  # the switch-off check runs on this many of the best pattern heads: one batch of 5 on 30 × 9 heads
FULL_SWEEP = 32  # up to this many heads, `heads` switches off every one; above, the detectors' best
SWEEP_TOKENS = 1024  # above FULL_SWEEP: token positions the switch-off column may run (rows × length × heads)
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
