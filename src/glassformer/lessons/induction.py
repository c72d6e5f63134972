"""lesson:induction — copy what came next last time.

Each episode is a run of random tokens followed by the same run again:

    t17 t3 t40 t9 ... | t17 t3 t40 t9 ...

The first copy cannot be predicted; in the second, the next token is whatever
followed the current token in the first copy. A two-layer model learns it with an
induction head: a previous-token head in layer 0 lets each token carry "what came
before me", and a head in layer 1 looks for the earlier position whose predecessor
is the current token, then copies it.

`batch(n, half, vocab, seed)` returns a LongTensor [n, 2 * half]: row i is a random
sequence of `half` ids from 1..vocab-1 (id 0 is unused) followed by itself.
"""

from __future__ import annotations

import torch

from ._words import word_tokenizer

VOCAB = 64  # random symbols t1..t63; t0 is never drawn
HALF = 32  # one copy; an episode is 64 tokens, the lesson model's context
WORDS = [f"t{i}" for i in range(VOCAB)]


def batch(n: int, half: int = HALF, vocab: int = VOCAB, seed: int = 0) -> torch.Tensor:
    """[n, 2 * half] ids: `half` random tokens, then the same `half` again."""
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(1, vocab, (n, half), generator=g)
    return torch.cat([first, first], dim=1)


def tokenizer():
    # the word tokenizer puts [UNK] at 0 and t0..t63 at 1..64: token tK has id K + 1
    return word_tokenizer(WORDS)


def corpus(seed: int = 0) -> tuple[list[int], list[int]]:
    """(train ids, val ids) as one stream of back-to-back episodes, in tokenizer ids."""
    train = batch(8_000, seed=seed) + 1
    val = batch(200, seed=seed + 1_000_003) + 1
    return train.flatten().tolist(), val.flatten().tolist()


TRAIN_DEFAULTS = dict(
    preset="lesson-tiny",
    steps=1500,
    batch_size=32,
    lr=3e-3,
    min_lr=3e-4,
    warmup=100,
    eval_every=250,
    weight_decay=0.1,
    precision="fp32",
)  # (lessons train in fp32: see adjectives.py)
