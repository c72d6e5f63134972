"""Our checkpoint directory: config.json + model.safetensors + tokenizer.json.

Nothing is ever unpickled: weights are safetensors, everything else is JSON.
Writes are atomic: the new directory is written and fsynced beside the old one,
then renamed into place, so a crash at any moment leaves either the old checkpoint
or the new one, never a half-written mix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import torch

from .config import GlassformerError, ModelConfig
from .model import Transformer
from .tokenizer import Tokenizer, tokenizer_from_json

FORMAT = "glassformer"
VERSION = 1
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"


# --- atomic directories -------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_dir_atomically(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_dir)`, then put tmp_dir at `target` in one rename.

    If `target` already exists it is first renamed aside (`.NAME.old-*`), so between the
    two renames the last good copy still exists on disk and `find_dir` finds it.
    """
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is an ordinary directory
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o644)
                _fsync(f)
        _fsync(tmp)
        if target.exists():
            old = parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
            os.rename(tmp, target)
        else:
            os.rename(tmp, target)
        _fsync(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # leftovers of this save and of earlier interrupted ones
    for stale in parent.glob(f".{target.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return target


def find_dir(target: str | Path) -> Path | None:
    """`target` if it exists, else the copy an interrupted save left renamed aside."""
    target = Path(target)
    if target.exists():
        return target
    aside = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    return aside[-1] if aside else None


# --- checkpoints ----------------------------------------------------------------------
def is_checkpoint(path: str | Path) -> bool:
    config = Path(path) / CONFIG
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


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
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not is_checkpoint(path))):
        raise GlassformerError(
            f"{path} exists and is not a glassformer checkpoint; choose another directory"
        )
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer

    def write(tmp: Path) -> None:
        header = {"format": FORMAT, "version": VERSION, "model": model.config.to_dict()}
        if meta:
            header["meta"] = meta
        (tmp / CONFIG).write_text(json.dumps(header, indent=2) + "\n")
        save_file(weights_to_save(model), str(tmp / WEIGHTS), metadata={"format": "pt"})
        if tokenizer is not None:
            (tmp / TOKENIZER).write_text(tokenizer.to_json(), encoding="utf-8")
        if extra is not None:
            extra(tmp)

    return write_dir_atomically(path, write)


def read_config(path: str | Path) -> tuple[ModelConfig, dict]:
    path = Path(path)
    try:
        header = json.loads((path / CONFIG).read_text())
    except FileNotFoundError:
        raise GlassformerError(f"{path} has no {CONFIG}; is it a checkpoint directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GlassformerError(f"{path / CONFIG} is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise GlassformerError(f"{path / CONFIG} is not a glassformer config")
    if header.get("version", 0) > VERSION:
        raise GlassformerError(
            f"{path} was written by a newer glassformer (format {header['version']}); upgrade"
        )
    return ModelConfig.from_dict(header["model"]), header


def read_safetensors(file: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, with a one-line error if it is damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(file)
    if not file.is_file():
        raise GlassformerError(f"no weights file at {file}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise GlassformerError(f"{file} is corrupt or truncated ({err})") from None


def build_with_weights(config: ModelConfig, state: dict[str, torch.Tensor]) -> Transformer:
    """A model of `config` holding exactly `state` (our key names); every key checked.

    The model is built on the meta device, so no time is spent on random init that
    the loaded weights would overwrite.
    """
    with torch.device("meta"):
        model = Transformer(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if config.causal and config.tied_unembedding:
        expected.pop("unembed.weight")
    missing = sorted(set(expected) - set(state))
    if missing:
        raise GlassformerError(f"weights are missing tensor {missing[0]!r} ({len(missing)} missing)")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise GlassformerError(f"weights have unexpected tensor {unexpected[0]!r}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != tuple(shape):
            raise GlassformerError(
                f"tensor {key!r} has shape {list(state[key].shape)}, expected {list(shape)}"
            )
    model.load_state_dict(state, strict=False, assign=True)
    if config.causal and config.tied_unembedding:
        model.unembed.weight = model.embed.W_E.weight
    # tensors that are not parameters (none today) would still be on meta: make them real
    for name, buf in model.named_buffers():
        if buf.is_meta:
            raise GlassformerError(f"buffer {name!r} was not loaded")
    return model.eval()


def load(path: str | Path) -> Transformer:
    """Load a checkpoint directory written by `save`; the tokenizer comes attached."""
    found = find_dir(path)
    if found is None:
        raise GlassformerError(f"no checkpoint at {path}")
    config, _ = read_config(found)
    model = build_with_weights(config, read_safetensors(found / WEIGHTS))
    if (found / TOKENIZER).is_file():
        model.tokenizer = tokenizer_from_json((found / TOKENIZER).read_text(encoding="utf-8"))
    return model
