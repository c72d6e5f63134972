"""Training: text -> token ids -> batches -> AdamW, with exact resume and DDP."""

from .trainer import TrainConfig, resume, train

__all__ = ["TrainConfig", "resume", "train"]
