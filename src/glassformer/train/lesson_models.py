"""Models trained on the built-in lessons, trained on first use and cached.

`glassformer.load("lesson:adjectives")` returns the cached model, training it with
the lesson's defaults (about a minute on two CPU cores) the first time. The cache is
$GLASSFORMER_CACHE, else ~/.cache/glassformer.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .. import lessons
from ..checkpoint import is_checkpoint
from .trainer import TrainConfig, train

log = logging.getLogger(__name__)


def cache_root() -> Path:
    root = os.environ.get("GLASSFORMER_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "glassformer"


def lesson_config(name: str, out: str | Path, **overrides) -> TrainConfig:
    lesson = lessons.get(name)
    short = name.removeprefix("lesson:")
    return TrainConfig(data=f"lesson:{short}", out=str(out), **{**lesson.TRAIN_DEFAULTS, **overrides})


def is_cached(name: str) -> bool:
    return is_checkpoint(cache_root() / "lessons" / name.removeprefix("lesson:") / "best")


def lesson_model_dir(name: str, *, progress: bool = True) -> Path:
    """The run directory of the lesson's model, trained now if it is not cached."""
    short = name.removeprefix("lesson:")
    lessons.get(short)  # unknown lessons fail here, before anything is written
    final = cache_root() / "lessons" / short
    if is_checkpoint(final / "best"):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    log.info("training the %s lesson model into %s (first use only)", short, final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{short}.tmp-", dir=final.parent))
    try:
        train(lesson_config(short, tmp / "run"), progress=progress)
        if final.exists():  # a half-made directory from an older version
            shutil.rmtree(final)
        os.rename(tmp / "run", final)
    except OSError:
        if not is_checkpoint(final / "best"):  # another process finished first: use theirs
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
