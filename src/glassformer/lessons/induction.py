"""lesson:induction — copy what came next last time.

Each episode is random symbols in which one random segment appears twice, at a distance
and a length that change from episode to episode:

    t90 t3 | t17 t40 t9 t101 t66 | t5 t122 t30 | t17 t40 t9 t101 t66 | t88 ...
    prefix   segment (4-32)        gap (0-8)     the segment again     filler

Every symbol appears once in an episode except the segment's second copy, so the earlier
copy of the current token is always the one to copy from.

Nothing in the first copy can be predicted. In the second, the next token is whatever
followed the current token last time, and no fixed offset finds it: a two-layer model
learns it with an induction head. A previous-token head in layer 0 lets each token
carry "what came before me"; a head in layer 1 looks for the earlier position whose
predecessor is the current token, and copies what it holds.

`episodes(n, seed)` returns ([n, 64] ids, [n, 64] targets) where targets marks, for each
position of the second copy but its last, the position in the first copy that holds
the right next token (else -1).
"""

from __future__ import annotations

import torch

from ._words import train_defaults, word_tokenizer

VOCAB = 128  # random symbols t0..t127
LENGTH = 64  # one episode fills the lesson model's context
EPISODE = LENGTH  # training windows start at episode boundaries
SEGMENT = (4, 20)  # short segments: lengths drawn uniformly from this range (inclusive)
GAP = (0, 8)  # random symbols between the two copies
PREFIX = (0, 16)  # random symbols before the first copy
WORDS = [f"t{i}" for i in range(VOCAB)]
FIRST_ID = 1  # the word tokenizer puts [UNK] at 0 and t0..t127 at 1..128: symbol K is token K + FIRST_ID
NAME = "induction"
SHOWCASE = "induction"  # its head: find the earlier copy, copy what came next
EXAMPLE = "t7 t42 t99 t3 t150 t12 t88 t7 t42 t99 t3 t150"  # a segment of five, then again


def episode(g: torch.Generator, segment: int | None = None) -> tuple[torch.Tensor, int, int, int]:
    """(ids [LENGTH] in 0..VOCAB-1, start of the first copy, start of the second, segment length).

    Without `segment`, two episodes in three repeat a long segment (filling what the prefix
    and the gap leave), which gives the model enough to copy that an induction head forms
    (with only short ones, 8,000 steps were not enough); the third repeats a short one,
    so that copying from the first token of a repeat is learned too."""

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=g))

    long_one = segment is None and draw(0, 2) > 0
    prefix = draw(*PREFIX)
    gap = draw(*GAP)
    if long_one:
        L = (LENGTH - prefix - gap) // 2
    else:
        L = segment if segment is not None else draw(*SEGMENT)
        prefix = min(prefix, LENGTH - 2 * L)
        gap = min(gap, LENGTH - 2 * L - prefix)
    # every symbol appears once, except the segment's second copy: an earlier copy of the
    # current token is always the one to copy from, wherever it is
    ids = torch.randperm(VOCAB, generator=g)[:LENGTH]
    first, second = prefix, prefix + L + gap
    ids[second + L :] = ids[second : LENGTH - L].clone()
    ids[second : second + L] = ids[first : first + L]
    return ids, first, second, L


def episodes(n: int, seed: int = 0, segment: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """([n, LENGTH] symbol ids, [n, LENGTH] the first-copy position to copy from, or -1)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.empty(n, LENGTH, dtype=torch.long)
    source = torch.full((n, LENGTH), -1, dtype=torch.long)
    for row in range(n):
        ids[row], first, second, L = episode(g, segment)
        # at second-copy position j (not the last), the next token sits at first + j + 1
        source[row, second : second + L - 1] = torch.arange(first + 1, first + L)
    return ids, source


def tokenizer():
    return word_tokenizer(WORDS)


def corpus(seed: int = 0) -> tuple[list[int], list[int]]:
    """(train ids, val ids) as one stream of back-to-back episodes, in tokenizer ids."""
    train, _ = episodes(12_000, seed=seed)
    val, _ = episodes(300, seed=seed + 1)
    return (train + FIRST_ID).flatten().tolist(), (val + FIRST_ID).flatten().tolist()


@torch.inference_mode()
def copy_accuracy(model, segment: int, n: int = 200, seed: int = 99) -> float:
    """How often the model's top next-token guess in the second copy is the right token,
    for segments of one length at random places (held-out episodes)."""
    ids, source = episodes(n, seed=seed, segment=segment)
    logits = model(ids + FIRST_ID)
    rows, cols = torch.nonzero(source >= 0, as_tuple=True)
    right = ids[rows, source[rows, cols]] + FIRST_ID
    return float((logits[rows, cols].argmax(-1) == right).float().mean())


# what `glassformer train --data lesson:induction` uses when no flag says otherwise; fp32:
# the lessons' heads grew weaker in bf16 (see adjectives.py)
TRAIN_DEFAULTS = train_defaults(steps=12000, eval_every=500)
