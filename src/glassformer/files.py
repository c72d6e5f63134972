"""Files written whole or not at all, and read with one-line errors: the lowest floor
under checkpoints, pictures, reports, run folders and the converted-weights cache.

Writes are atomic: the new file (or folder) is written and fsynced beside the old one,
then renamed into place, so a crash at any moment leaves either the old one or the new
one, never a half-written mix; leftovers of writes killed midway are removed by the next
write of the same name (only our own names, matched exactly, and never a live process's).
Reads name the file and what is wrong with it in one line; nothing is ever unpickled.
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

from .config import GlassformerError


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


# --- reading, with one line naming what is wrong ----------------------------------------
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


def read_text(file: Path) -> str:
    """A text file that must be UTF-8, or one line naming it."""
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GlassformerError(f"{file} is not UTF-8 text") from None


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
