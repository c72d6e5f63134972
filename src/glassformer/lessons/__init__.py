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

from pathlib import Path

from ..config import GlassformerError
from . import adjectives, induction, superposition

LESSONS = {"adjectives": adjectives, "induction": induction}
TOYS = {"superposition": superposition}  # lessons that are not transformers: they have their own command
MODELS = Path(__file__).resolve().parent / "models"


def get(name: str):
    """The lesson module called `name` (with or without the `lesson:` prefix)."""
    short = name.removeprefix("lesson:")
    if short in TOYS:
        raise GlassformerError(
            f"lesson:{short} is not a transformer: it is a toy model with its own trainer; "
            f"run `glassformer {short}` (or open its card in the explorer)"
        )
    try:
        return LESSONS[short]
    except KeyError:
        raise GlassformerError(
            f"unknown lesson {short!r}; lessons: {', '.join('lesson:' + n for n in LESSONS)}"
        ) from None


def model_dir(name: str) -> Path:
    """Where the lesson's shipped model lives (checked to be a known lesson)."""
    get(name)
    return MODELS / name.removeprefix("lesson:")
