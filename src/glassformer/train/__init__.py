"""Training: text -> token ids -> batches -> AdamW, with exact resume and DDP.

config.py   TrainConfig: every setting, with its help line
data.py     text -> ids -> batches
devices.py  device, precision, DDP process group
state.py    the run directory: lock, log, checkpoints, resume state
loop.py     the loop itself
"""

from typing import Any

from .config import TrainConfig

__all__ = ["TrainConfig", "TrainResult", "resume", "train"]


def __getattr__(name: str) -> Any:
    """The loop and what it imports load only when training: every command's parser reads
    TrainConfig's fields (train's flags), and explain or generate need nothing more."""
    if name in ("TrainResult", "resume", "train"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
