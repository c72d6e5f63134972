"""Training: text -> token ids -> batches -> AdamW, with exact resume and DDP.

config.py   TrainConfig: every setting, with its help line
data.py     text -> ids -> batches
devices.py  device, precision, DDP process group
state.py    the run directory: lock, log, checkpoints, resume state
loop.py     the loop itself
"""

from .config import TrainConfig
from .loop import TrainResult, resume, train

__all__ = ["TrainConfig", "TrainResult", "resume", "train"]
