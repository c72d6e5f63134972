"""Our checkpoint directory: config.json + model.safetensors + tokenizer.json.

Nothing is ever unpickled: weights are safetensors, everything else is JSON.
Writes are atomic: the new directory is written and fsynced beside the old one,
then renamed into place, so a crash at any moment leaves either the old checkpoint
or the new one, never a half-written mix.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import torch

from .config import GlassformerError, ModelConfig
from .model import Transformer
from .params import check_fits
from .tokenizer import Tokenizer, tokenizer_from_json

FORMAT = "glassformer"
VERSION = 2  # 2: separate query/key/value matrices and a `positions` field (1: fused qkv)
# a training run's folder (train/state.py writes it; the loader reads a run by these names)
RUN_LOCK, RUN_LOG, LATEST, BEST = ".lock", "log.jsonl", "latest", "best"
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"


# --- atomic files and directories -------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def leftovers(parent: Path, name: str, kind: str) -> list[Path]:
    """Our own leftovers of `name` in `parent`: `.NAME.old-HEX8` (kind "old", a copy a save
    renamed aside) or `.NAME.tmp-PID-HEX8[-SUFFIX]` (kind "tmp", a write in progress).

    Matched exactly, never as a glob: a name like `ck[12]` or `*` is a name, and the
    leftovers of another name that merely starts the same way are not ours."""
    tail = r"-[0-9a-f]{8}" if kind == "old" else r"-\d{1,10}-[0-9a-f]{8}(?:-[a-z0-9_]{8})?"
    pattern = re.compile(rf"\.{re.escape(name)}\.{kind}{tail}")
    try:
        return [p for p in parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:  # no such folder, or one we may not list: nothing of ours to find
        return []


def remove_stale_temps(parent: Path, name: str) -> None:
    """Remove `.NAME.tmp-PID-*` left by processes that are no longer running, never a
    live process's work in progress."""
    for stale in leftovers(parent, name, "tmp"):
        pid = stale.name.removeprefix(f".{name}.tmp-").split("-")[0]
        if not _pid_alive(int(pid)):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _temp_name(target: Path) -> str:
    return f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_file_atomically(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_file)` beside `target`, fsync it, then rename it over `target`. On any
    failure the previous file is untouched and the temp file is gone."""
    target = Path(target)
    tmp = target.parent / _temp_name(target)
    try:
        write(tmp)
        _fsync(tmp)
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except OSError as err:
        _remove_quietly(tmp)
        raise GlassformerError(f"cannot write {target}: {err.strerror or err}") from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    remove_stale_temps(target.parent, target.name)  # those of earlier writes killed midway
    return target


def _mode_for(target: Path) -> int:
    """The permissions the file gets: those of the file it replaces (a private 0600 file
    stays private), else what the umask gives a new file."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        pass
    try:  # the umask, read without changing it (os.umask would, for every thread at once)
        with open("/proc/self/status") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = 0o022
    return 0o666 & ~umask


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def write_dir_atomically(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_dir)`, then put tmp_dir at `target` in one rename.

    If `target` already exists it is first renamed aside (`.NAME.old-*`), so between the
    two renames the last good copy still exists on disk and `find_dir` finds it.
    """
    target = Path(target)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_name(target) + "-", dir=parent))
    except OSError as err:
        raise GlassformerError(f"cannot write {target}: {err.strerror or err}") from None
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is an ordinary directory
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o644)
                _fsync(f)
        _fsync(tmp)
        if target.exists():
            os.rename(target, parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(tmp, target)
        _fsync(parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GlassformerError(f"cannot write {target}: {_reason(err)}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # the copy this save renamed aside, those of earlier interrupted saves, and temp
    # directories of processes that died mid-write (a live writer's are left alone)
    for stale in leftovers(parent, target.name, "old"):
        shutil.rmtree(stale, ignore_errors=True)
    remove_stale_temps(parent, target.name)
    return target


def find_dir(target: str | Path) -> Path | None:
    """`target` if it exists, else the copy an interrupted save left renamed aside."""
    target = Path(target)
    if target.exists():
        return target
    aside = sorted(leftovers(target.parent, target.name, "old"), key=lambda p: p.stat().st_mtime)
    return aside[-1] if aside else None


def _reason(err: OSError) -> str:
    return "no space left on the device" if err.errno == errno.ENOSPC else str(err.strerror or err)


# --- checkpoints ----------------------------------------------------------------------
def read_json(file: Path) -> object:
    """A JSON file's contents, or one line naming the file and what is wrong with it."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GlassformerError(f"{file} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GlassformerError(f"{file} is not valid JSON text ({err})") from None
    except RecursionError:
        raise GlassformerError(f"{file} nests its JSON too deeply to read; it is not a model file") from None
    except ValueError:  # an integer of more digits than Python converts (4300)
        raise GlassformerError(f"{file} holds a number of over 4,300 digits; it is not a model file") from None
    except OSError as err:
        raise GlassformerError(f"cannot read {file}: {err.strerror or err}") from None


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


def save_tensors(tensors: dict[str, torch.Tensor], file: Path, metadata: dict | None = None) -> None:
    """safetensors' save_file, its Rust-side write errors (a full disk) as an OSError, so
    that the directory write it is part of names its destination, never its temp folder."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(file), metadata=metadata)
    except SafetensorError as err:
        if "No space" in str(err) or "code: 28" in str(err):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
        raise OSError(errno.EIO, f"safetensors could not write {file.name}: {str(err)[:160]}") from None


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


def read_safetensors(file: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, with a one-line error if it is damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(file)
    if not file.is_file():
        raise GlassformerError(f"no weights file at {file}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GlassformerError(f"{file} is corrupt or truncated ({first[:200]})") from None


def check_against_weights(config: ModelConfig, state: dict[str, torch.Tensor]) -> None:
    """The sizes a config claims, checked against the weights it comes with, before a
    single module is built: a config may not ask for a billion layers that no file holds."""
    layers = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if len(layers) != config.n_layers or (layers and max(layers) != config.n_layers - 1):
        raise GlassformerError(f"the config says {config.n_layers} layers but the weights hold {len(layers)}")
    W_E = state.get("embed.W_E.weight")
    if W_E is None or tuple(W_E.shape) != (config.vocab_size, config.d_model):
        shape = "none" if W_E is None else list(W_E.shape)
        raise GlassformerError(
            f"the config says vocab {config.vocab_size} × d_model {config.d_model}, "
            f"but the token embedding in the weights is {shape}"
        )
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            raise GlassformerError(f"tensor {key!r} holds {tensor.dtype} numbers; weights must be floats")
    check_fits(config)


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN or infinity in `t`. A finite sum proves it (NaN and ±inf survive any sum) at
    the speed memory is read; only a sum that overflows needs the element-wise check."""
    with torch.no_grad():
        return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def build_with_weights(config: ModelConfig, state: dict[str, torch.Tensor], *, checked: bool = False) -> Transformer:
    """A model of `config` holding exactly `state` (our key names); every key checked
    (`checked`: the numbers were already found finite where they were made).

    The config is first checked against the weights, then the model is built on the
    meta device, so no time is spent on random init that the weights would overwrite.
    """
    check_against_weights(config, state)
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
            raise GlassformerError(f"tensor {key!r} has shape {list(state[key].shape)}, expected {list(shape)}")
        if not checked and state[key].is_floating_point() and not _all_finite(state[key]):
            raise GlassformerError(f"tensor {key!r} holds NaN or infinite numbers: these weights cannot be run")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False, assign=True)
    if config.causal and config.tied_unembedding:
        model.unembed.weight = model.embed.W_E.weight
    return model.eval()


def load(path: str | Path) -> Transformer:
    """Load a checkpoint directory written by `save`; the tokenizer comes attached."""
    found = find_dir(path)
    if found is None:
        raise GlassformerError(f"no checkpoint at {path}")
    config, header = read_config(found)
    state = read_safetensors(found / WEIGHTS)
    if header.get("version", 1) < 2:
        state = _state_v1(state, config)
    model = build_with_weights(config, state)
    if (found / TOKENIZER).is_file():
        model.tokenizer = tokenizer_from_json(read_text(found / TOKENIZER), str(found / TOKENIZER))
    return model


def read_text(file: Path) -> str:
    """A text file that must be UTF-8, or one line naming it."""
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GlassformerError(f"{file} is not UTF-8 text") from None
