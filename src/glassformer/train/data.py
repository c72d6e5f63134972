"""Text -> token ids -> batches of windows.

Batches are drawn by a seeded torch.Generator whose state is the "data position" a
checkpoint stores, so a resumed run draws exactly the batches the uninterrupted run
would have. Under DDP every rank draws the same global batch and keeps its own rows,
so N ranks of batch B see exactly what one process of batch N·B sees.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import lessons
from ..config import GlassformerError
from ..params import available_memory
from ..tokenizer import CharTokenizer, Tokenizer, train_bpe


def read_text_file(path: str | Path) -> str:
    path = Path(path)
    if not path.exists():
        raise GlassformerError(f"no such file: {path}")
    if path.is_dir():
        raise GlassformerError(f"{path} is a directory; give a UTF-8 text file")
    if not path.is_file():  # a FIFO would block forever, /dev/zero would fill the memory
        raise GlassformerError(f"{path} is not a regular file; give a UTF-8 text file")
    size, have = path.stat().st_size, available_memory()
    if have is not None and 10 * size > have:  # the bytes, the text and 8-byte token ids
        raise GlassformerError(
            f"{path} is {size / 2**30:,.1f} GiB; reading and tokenizing it would take about "
            f"{10 * size / 2**30:,.1f} GiB of memory, more than the {have / 2**30:,.1f} GiB free"
        )
    raw = path.read_bytes()
    if not raw.strip():
        raise GlassformerError(f"{path} is empty; give a file with some text in it")
    if b"\x00" in raw[:65536]:
        raise GlassformerError(f"{path} looks binary (it has NUL bytes); give a UTF-8 text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise GlassformerError(
            f"{path} is not UTF-8 text (bad byte at offset {err.start}); give a UTF-8 text file"
        ) from None


@dataclass
class Dataset:
    train: torch.Tensor  # [N] int64 token ids
    val: torch.Tensor
    tokenizer: Tokenizer
    fingerprint: str  # identifies the data, so a resume on changed data is refused
    stride: int = 1  # windows start at multiples of this (a lesson's episode length), else anywhere


def make_tokenizer(spec: str, train_text: str, full_text: str) -> Tokenizer:
    if spec == "char":
        return CharTokenizer.from_text(full_text)  # every character of the file, as nanoGPT does
    if spec.startswith("bpe:"):
        try:
            size = int(spec.removeprefix("bpe:"))
        except ValueError:
            raise GlassformerError(f"tokenizer {spec!r}: expected bpe:VOCAB_SIZE, e.g. bpe:2048") from None
        return train_bpe([train_text], size)
    raise GlassformerError(f"unknown tokenizer {spec!r}; use char or bpe:VOCAB_SIZE")


def prepare(data: str, tokenizer: str | Tokenizer = "char", *, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Token ids for a text file (first 1 - val_fraction to train, the rest to validate)
    or for `lesson:NAME` (which brings its own tokenizer and held-out data)."""
    if data.startswith("lesson:"):
        lesson = lessons.get(data)
        train_ids, val_ids = lesson.corpus(seed)
        tok = lesson.tokenizer()
        fingerprint = hashlib.sha256(repr((train_ids, val_ids)).encode()).hexdigest()[:16]
        stride = getattr(lesson, "EPISODE", 1)
    else:
        if not 0 < val_fraction < 1:
            raise GlassformerError(f"val_fraction must be in (0, 1), got {val_fraction}")
        text = read_text_file(data)
        cut = int(len(text) * (1 - val_fraction))
        tok = tokenizer if not isinstance(tokenizer, str) else make_tokenizer(tokenizer, text[:cut], text)
        train_ids, val_ids = tok.encode(text[:cut]), tok.encode(text[cut:])
        fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
        stride = 1
    ids = (torch.tensor(train_ids, dtype=torch.long), torch.tensor(val_ids, dtype=torch.long))
    return Dataset(*ids, tok, fingerprint, stride)


class Batcher:
    """Random windows of `context + 1` tokens: inputs x and next-token targets y. With a
    `stride`, windows start only at its multiples (one lesson episode per window)."""

    def __init__(
        self,
        ids: torch.Tensor,
        context: int,
        batch: int,
        *,
        seed: int,
        rank: int = 0,
        world: int = 1,
        stride: int = 1,
    ) -> None:
        if len(ids) < context + 2:
            raise GlassformerError(f"only {len(ids)} tokens of data: need more than the context of {context} tokens")
        self.ids, self.context, self.batch = ids, context, batch
        self.stride, self.n_starts = stride, (len(ids) - context - 1) // stride + 1
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(context + 1)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self.stride * torch.randint(self.n_starts, (self.batch * self.world,), generator=self.generator)
        mine = starts[self.rank * self.batch : (self.rank + 1) * self.batch]
        windows = self.ids[mine[:, None] + self.offsets]  # [B, context + 1]
        return windows[:, :-1], windows[:, 1:]

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def fixed_batches(ids: torch.Tensor, context: int, batch: int, count: int, seed: int, stride: int = 1):
    """The same `count` batches every time: evaluations compare like with like."""
    b = Batcher(ids, context, batch, seed=seed, stride=stride)
    return [b.next() for _ in range(count)]
