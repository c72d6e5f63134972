"""Converted weights kept on disk, so that a model read from a quantized file is decoded once.

Dequantizing SmolLM2's GGUF file costs seconds on every load; its float32 weights (540 MB)
cost nothing to map. The first load writes them into a safetensors file in the cache
directory; later loads map that file (copy-on-write: pages are shared between processes
until someone writes to a weight, and nothing is read that is not used).

    $GLASSFORMER_CACHE, else $XDG_CACHE_HOME/glassformer, else ~/.cache/glassformer
    GLASSFORMER_CACHE=off    no cache: every load converts again, in memory

A cache file is named after its source and keyed by the source's size, modification time
and a hash of its header (the key is stored inside, too). It is trusted only when its
header is exactly the one this version writes for that key, its size is right and a
checksum of its data matches; anything else is deleted and written again. It is written
beside its final name and renamed into place, so no reader ever sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import mmap
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import GlassformerError

log = logging.getLogger(__name__)

FORMAT, VERSION = "glassformer-weights-cache", "1"
WEIGHTS = "weights"  # the cache directory's folder of weight files
SUFFIX = ".safetensors"
MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def cache_dir() -> Path | None:
    """Where glassformer keeps what it computed once (None: GLASSFORMER_CACHE=off)."""
    chosen = os.environ.get("GLASSFORMER_CACHE", "").strip()
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(chosen).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "glassformer"


def source_key(path: Path, header_digest: str) -> str:
    """What a cache file must have been made from: the file's size, mtime and header hash."""
    st = path.stat()
    return f"{st.st_size}-{st.st_mtime_ns}-{header_digest}"


def file_for(source: Path, key: str) -> Path | None:
    found = cache_dir()
    if found is None:
        return None
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.stem)[:80]
    origin = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    return found / WEIGHTS / f"{stem}-{origin}-{hashlib.sha256(key.encode()).hexdigest()[:16]}{SUFFIX}"


Shapes = dict[str, tuple[int, ...]]
Fill = Callable[[dict[str, np.ndarray]], None]


def load_or_build(source: Path, key: str, shapes: Shapes, fill: Fill) -> dict[str, torch.Tensor]:
    """Float32 tensors of these `shapes`: mapped from the cache when a sound file for `key`
    is there, else made by `fill(arrays)` (which writes every array in place) into a new
    cache file, or into memory when none can be written."""
    file = file_for(source, key)
    if file is None:
        return _in_memory(shapes, fill)
    if file.is_file():
        try:
            return _read(file, key, shapes)
        except _Unsound as err:
            log.warning("the cached weights %s are unsound (%s); converting %s again", file, err, source.name)
            _remove(file)
    try:
        _write(file, key, shapes, fill)
    except OSError as err:  # a read-only or full disk: load anyway, uncached
        log.warning("cannot write the weights cache %s (%s); converting in memory", file, err.strerror or err)
        return _in_memory(shapes, fill)
    _remove_older(file)
    try:
        return _read(file, key, shapes)
    except _Unsound as err:  # someone replaced it in between: convert in memory
        log.warning("the cache file %s changed while it was read (%s)", file, err)
        return _in_memory(shapes, fill)


class _Unsound(Exception):
    """A cache file that must not be trusted."""


def _header(key: str, shapes: Shapes, checksum: int) -> bytes:
    """The safetensors header this version writes: tensors in order, then padded to 8 bytes."""
    entries: dict = {
        "__metadata__": {"format": FORMAT, "version": VERSION, "source": key, "checksum": f"{checksum:016x}"}
    }
    offset = 0
    for name, shape in shapes.items():
        end = offset + 4 * math.prod(shape)
        entries[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(entries, separators=(",", ":")).encode()
    return text + b" " * (-len(text) % 8)


def _data_bytes(shapes: Shapes) -> int:
    return sum(4 * math.prod(s) for s in shapes.values())


def _views(buffer, start: int, shapes: Shapes) -> dict[str, np.ndarray]:
    out, offset = {}, start
    for name, shape in shapes.items():
        n = math.prod(shape)
        out[name] = np.frombuffer(buffer, dtype=np.float32, count=n, offset=offset).reshape(shape)
        offset += 4 * n
    return out


def _checksum(buffer, start: int, n_bytes: int) -> int:
    """A wrapping 64-bit sum of the data's words (and its last bytes): any damaged byte
    changes it, at the speed memory is read."""
    words = n_bytes // 8
    total = int(np.frombuffer(buffer, dtype=np.uint64, count=words, offset=start).sum(dtype=np.uint64))
    tail = bytes(buffer[start + 8 * words : start + n_bytes])
    return (total + int.from_bytes(tail, "little")) % 2**64


def _in_memory(shapes: Shapes, fill: Fill) -> dict[str, torch.Tensor]:
    arrays = {name: np.empty(shape, dtype=np.float32) for name, shape in shapes.items()}
    fill(arrays)
    return {name: torch.from_numpy(a) for name, a in arrays.items()}


def _write(file: Path, key: str, shapes: Shapes, fill: Fill) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temps(file.parent)
    tmp = file.parent / f".{file.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    header, n_data = _header(key, shapes, 0), _data_bytes(shapes)
    start = 8 + len(header)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        # blocks reserved first: a full disk is an OSError here, not a crash (SIGBUS) mid-write
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, start + n_data)
        else:  # macOS: no reservation; a full disk may then stop the process mid-write
            os.ftruncate(fd, start + n_data)
        with mmap.mmap(fd, start + n_data, access=mmap.ACCESS_WRITE) as mm:
            fill(_views(mm, start, shapes))
            final = _header(key, shapes, _checksum(mm, start, n_data))
            mm[:start] = len(final).to_bytes(8, "little") + final  # the same length: only digits differ
            mm.flush()
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, file)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def _read(file: Path, key: str, shapes: Shapes) -> dict[str, torch.Tensor]:
    try:
        with open(file, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise _Unsound("shorter than a header")
            # private pages: writing to a loaded weight (training, an edit) never reaches the file
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except OSError as err:
        raise _Unsound(err.strerror or str(err)) from None
    n_header = int.from_bytes(mm[:8], "little")
    n_data = _data_bytes(shapes)
    if n_header > MAX_HEADER or size != 8 + n_header + n_data:
        raise _Unsound(f"{size:,} bytes where {8 + len(_header(key, shapes, 0)) + n_data:,} were expected")
    try:
        meta = json.loads(bytes(mm[8 : 8 + n_header]))["__metadata__"]
        checksum = int(meta["checksum"], 16)
    except (ValueError, KeyError, TypeError):
        raise _Unsound("its header is not what this version writes") from None
    if bytes(mm[8 : 8 + n_header]) != _header(key, shapes, checksum):
        raise _Unsound("made from another file, by another version, or its header is damaged")
    if _checksum(mm, 8 + n_header, n_data) != checksum:
        raise _Unsound("its data does not match its checksum")
    return {name: torch.from_numpy(a) for name, a in _views(mm, 8 + n_header, shapes).items()}


def _remove(file: Path) -> None:
    try:
        file.unlink(missing_ok=True)
    except OSError as err:
        log.warning("cannot remove %s: %s", file, err.strerror or err)


def _remove_older(file: Path) -> None:
    """Files made from earlier versions of the same source (same name and folder)."""
    prefix = file.name.rsplit("-", 1)[0] + "-"
    for other in file.parent.iterdir():
        if other.name.startswith(prefix) and other.name.endswith(SUFFIX) and other != file:
            _remove(other)


def _remove_dead_temps(folder: Path) -> None:
    """Temp files of writers that died mid-write (a live writer's are left alone)."""
    for entry in folder.iterdir():
        if ".tmp-" not in entry.name or not entry.name.startswith("."):
            continue
        pid = entry.name.rsplit(".tmp-", 1)[1].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(entry)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- what `glassformer cache` shows and clears -----------------------------------------
def ours(folder: Path) -> list[Path]:
    """The files glassformer made in the cache directory (nothing else is ever touched)."""
    found = []
    for sub, suffix in ((WEIGHTS, SUFFIX), (DETECTORS, ".json")):
        d = folder / sub
        if d.is_dir():
            found += [p for p in d.iterdir() if p.is_file() and not p.is_symlink() and p.name.endswith(suffix)]
    return sorted(found)


DETECTORS = "detectors"  # the cache directory's folder of head-detector scores


def summary() -> tuple[Path | None, list[Path], int]:
    """(the cache directory, its files, their total bytes)."""
    folder = cache_dir()
    if folder is None or not folder.is_dir():
        return folder, [], 0
    files = ours(folder)
    return folder, files, sum(p.stat().st_size for p in files)


def clear() -> tuple[Path | None, int, int]:
    """Remove glassformer's files from the cache directory: (directory, files, bytes freed)."""
    folder, files, total = summary()
    for p in files:
        try:
            p.unlink()
        except OSError as err:
            raise GlassformerError(f"cannot remove {p}: {err.strerror or err}") from None
    if folder is not None:
        for sub in (WEIGHTS, DETECTORS):
            try:
                (folder / sub).rmdir()
            except OSError:
                pass  # not empty (a file that is not ours) or not there
    return folder, len(files), total
