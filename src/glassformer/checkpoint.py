"""Our checkpoint directory: config.json + model.safetensors + tokenizer.json.

Nothing is ever unpickled: weights are safetensors, everything else is JSON. The folder
is written atomically (files.write_dir_atomically); pretrained/build.py makes a model
from what `read` returns.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from .config import GlassformerError, ModelConfig
from .files import read_json, read_safetensors, read_text, save_tensors, write_dir_atomically
from .model import Transformer
from .tokenizer import Tokenizer, tokenizer_from_json

FORMAT = "glassformer"
VERSION = 2  # 2: separate query/key/value matrices and a `positions` field (1: fused qkv)
# a training run's folder (train/state.py writes it; the loader reads a run by these names)
RUN_LOCK, RUN_LOG, LATEST, BEST = ".lock", "log.jsonl", "latest", "best"
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"


# --- checkpoints ----------------------------------------------------------------------
def is_checkpoint(path: str | Path) -> bool:
    config = Path(path) / CONFIG
    if not config.is_file():
        return False
    try:
        header = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return False
    return isinstance(header, dict) and header.get("format") == FORMAT


def weights_to_save(model: Transformer) -> dict[str, torch.Tensor]:
    """The state dict with the tied W_U dropped (it is W_E) and every tensor contiguous."""
    state = model.state_dict()
    if model.config.causal and model.config.tied_unembedding:
        state.pop("unembed.weight", None)
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save(
    model: Transformer,
    path: str | Path,
    *,
    tokenizer: Tokenizer | None = None,
    extra: Callable[[Path], None] | None = None,
    meta: dict | None = None,
) -> Path:
    """Write `model` (and its tokenizer) to the directory `path`, atomically.

    `extra(tmp_dir)` may write more files (training state) into the same directory.
    An existing directory is replaced only if it is a glassformer checkpoint.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not is_checkpoint(path))):
        raise GlassformerError(f"{path} exists and is not a glassformer checkpoint; choose another directory")
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer

    def write(tmp: Path) -> None:
        header = {"format": FORMAT, "version": VERSION, "model": model.config.to_dict()}
        if meta:
            header["meta"] = meta
        (tmp / CONFIG).write_text(json.dumps(header, indent=2) + "\n")
        save_tensors(weights_to_save(model), tmp / WEIGHTS, metadata={"format": "pt"})
        if tokenizer is not None:
            (tmp / TOKENIZER).write_text(tokenizer.to_json(), encoding="utf-8")
        if extra is not None:
            extra(tmp)

    return write_dir_atomically(path, write)


def read_config(path: str | Path) -> tuple[ModelConfig, dict]:
    """(model config, the whole header) of the checkpoint at `path`."""
    path = Path(path)
    if not (path / CONFIG).exists():
        raise GlassformerError(f"{path} has no {CONFIG}; is it a checkpoint directory?")
    header = read_json(path / CONFIG)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise GlassformerError(f"{path / CONFIG} is not a glassformer config")
    version = header.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise GlassformerError(f"{path / CONFIG}: version must be a whole number, got {version!r}")
    if version > VERSION:
        raise GlassformerError(f"{path} was written by a newer glassformer (format {version}); upgrade")
    model = header.get("model")
    if not isinstance(model, dict):
        raise GlassformerError(f'{path / CONFIG} has no "model" object describing the shape')
    if version < 2:
        model = _config_v1(model)
    try:
        return ModelConfig.from_dict(model), header
    except GlassformerError as err:
        raise GlassformerError(f"{path / CONFIG}: {err}") from None


def _config_v1(model: dict) -> dict:
    """Format 1 said `learned_positions: true|false` where format 2 says `positions`."""
    model = dict(model)
    learned = model.pop("learned_positions", True)
    model.setdefault("positions", "learned" if learned else "none")
    return model


def _state_v1(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Format 1 kept W_Q | W_K | W_V side by side in one `attn.qkv` and called W_O `attn.proj`."""
    HD = config.n_heads * config.d_head
    out = {}
    for key, value in state.items():
        if ".attn.qkv." in key:
            for part, name in zip(value.split(HD, dim=-1), ("query", "key", "value")):
                out[key.replace(".qkv.", f".{name}.")] = part.contiguous()
        else:
            out[key.replace(".attn.proj.", ".attn.output.")] = value
    return out


def read(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], Tokenizer | None]:
    """(config, weights under today's key names, tokenizer or None) of the checkpoint
    directory at `path`, every file checked; pretrained.build makes the model."""
    path = Path(path)
    config, header = read_config(path)
    state = read_safetensors(path / WEIGHTS)
    if header.get("version", 1) < 2:
        state = _state_v1(state, config)
    tokenizer = None
    if (path / TOKENIZER).is_file():
        tokenizer = tokenizer_from_json(read_text(path / TOKENIZER), str(path / TOKENIZER))
    return config, state, tokenizer
