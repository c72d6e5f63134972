"""Synthetic corpora, generated in code from a seed, that each teach one mechanism.

    lesson:adjectives  nouns must look back at their own adjectives (the video's example)
    lesson:induction   a repeated random sequence can only be predicted by finding the
                       earlier copy and copying what came next
"""

from __future__ import annotations

from ..config import GlassformerError
from . import adjectives, induction

LESSONS = {"adjectives": adjectives, "induction": induction}


def get(name: str):
    """The lesson module called `name` (with or without the `lesson:` prefix)."""
    name = name.removeprefix("lesson:")
    try:
        return LESSONS[name]
    except KeyError:
        raise GlassformerError(
            f"unknown lesson {name!r}; lessons: {', '.join('lesson:' + n for n in LESSONS)}"
        ) from None
