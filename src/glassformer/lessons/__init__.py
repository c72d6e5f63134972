"""Synthetic corpora, generated in code from a seed, that each teach one mechanism, and
the small models glassformer's own trainer grew on them (shipped in `models/`, rebuilt
with `make lessons`).

    lesson:adjectives  nouns must gather ALL their own adjectives: the word after a noun
                       follows their balance, calm against fierce (the video's example)
    lesson:induction   a random segment that reappears later can only be continued by
                       finding its earlier copy and copying what came next
    lesson:superposition  not a transformer: the toy model of superposition (more features
                       than dimensions), with its own trainer; `glassformer superposition`
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Protocol, cast

from ..config import GlassformerError
from ..tokenizer import Tokenizer

MODELS = Path(__file__).resolve().parent / "models"


class Lesson(Protocol):
    """What a lesson module offers. A new lesson is one file here that defines these, plus
    its shipped model in models/NAME (`make lessons` trains every lesson it finds)."""

    NAME: str  # lesson:NAME
    EXAMPLE: str  # the text explain, show and the explorer open on
    WORDS: list[str]  # its vocabulary, one token per word
    TRAIN_DEFAULTS: dict  # what `glassformer train --data lesson:NAME` uses (see _words.train_defaults)
    SHOWCASE: str  # the head detector whose best head shows the lesson (lab/heads.SHOWCASES)

    def tokenizer(self) -> Tokenizer: ...

    def corpus(self, seed: int = 0) -> tuple[list[int], list[int]]: ...  # (train ids, held-out ids)


class Toy(Protocol):
    """A lesson that is not a transformer: it has its own trainer and command."""

    NAME: str
    EXAMPLE: str
    TOY: bool


def _found() -> tuple[dict[str, ModuleType], dict[str, ModuleType]]:
    """Every lesson module in this package, by NAME: transformer lessons and toys."""
    found: dict[str, ModuleType] = {}
    toys: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        (toys if getattr(module, "TOY", False) else found)[module.NAME] = module
    return found, toys


LESSONS, TOYS = _found()


def get(name: str) -> Lesson:
    """The lesson called `name` (with or without the `lesson:` prefix)."""
    short = name.removeprefix("lesson:")
    if short in TOYS:
        raise GlassformerError(
            f"lesson:{short} is not a transformer: it is a toy model with its own trainer; "
            f"run `glassformer {short}` (or open its card in the explorer)"
        )
    try:
        return cast(Lesson, LESSONS[short])
    except KeyError:
        raise GlassformerError(
            f"unknown lesson {short!r}; lessons: {', '.join('lesson:' + n for n in LESSONS)}"
        ) from None


def spoken_by(tokenizer: Tokenizer | None) -> Lesson | None:
    """The lesson whose words `tokenizer` reads one per token (the lesson's own model, or
    one trained on it), else None."""
    if tokenizer is None:
        return None
    for lesson in LESSONS.values():
        ids = [tokenizer.token_id(w) for w in lesson.WORDS]
        if all(i is not None for i in ids):
            return cast(Lesson, lesson)
    return None


def model_dir(name: str) -> Path:
    """Where the lesson's shipped model lives (checked to be a known lesson)."""
    get(name)
    return MODELS / name.removeprefix("lesson:")
