"""A run directory: owned by one process, written atomically, resumable bit for bit.

    DIR/.lock        held (flock) by the process training here; the kernel frees it if it dies
    DIR/latest/      checkpoint + optimizer, schedule, RNG and data position (resume from here)
    DIR/best/        the model at its best validation loss (what `glassformer.load(DIR)` returns)
    DIR/log.jsonl    one JSON line per evaluation, appended before the checkpoint it belongs to

Nothing here is pickled: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import checkpoint, files
from ..config import GlassformerError, ModelConfig
from ..pretrained.build import build_with_weights
from ..tokenizer import Tokenizer, tokenizer_from_json
from .config import TrainConfig

LOCK, LOG, LATEST, BEST = checkpoint.RUN_LOCK, checkpoint.RUN_LOG, checkpoint.LATEST, checkpoint.BEST
STATE_JSON, STATE_TENSORS = "train_state.json", "train_state.safetensors"
_PID = re.compile(rb"\d{0,10}\n?")  # all a lock file of ours ever holds (empty before its first write)


@dataclass
class Saved:
    """Everything `latest/` holds, read once."""

    settings: TrainConfig
    config: ModelConfig
    tokenizer: Tokenizer
    weights: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor]  # optimizer state ("opt.*") and RNG states ("rng.*")
    loop: dict  # step, best_val, loss sums, data fingerprint, optimizer groups


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._made: list[Path] = []  # what claim() created: removed again if the run leaves nothing

    # --- ownership ---------------------------------------------------------------------
    def claim(self, *, new: bool) -> None:
        """Take the directory for this process: a new run needs it empty or absent (or
        holding only a run killed before its first checkpoint, which starts over), a
        resumed one needs it to hold a run; either way no other process may hold it."""
        if new:
            self.check_new()
            if not self.path.exists():
                self._made.append(self.path)
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise GlassformerError(f"cannot create the run directory {self.path}: {err.strerror or err}") from None
        elif not self.path.is_dir():
            raise GlassformerError(f"{self.path} has no resumable checkpoint (no such directory)")
        self._lock_fd = self._open_lock()
        if new and self._holds_files():  # another process filled it between our look and our lock
            self.release()
            raise GlassformerError(f"{self.path} already holds files; choose a new --out")
        if new and (self.path / LOG).exists():  # a run killed before its first checkpoint: start over
            (self.path / LOG).unlink()
        for name in (LATEST, BEST, LOG):  # temp files of earlier runs here that were killed mid-write
            files.remove_stale_temps(self.path, name)

    def _open_lock(self) -> int:
        """DIR/.lock opened and flocked. Only a regular file of our own is ever written:
        a symlink (dangling or not), a hard link to another file, a folder, a FIFO or a
        file holding anything but a PID is refused, never followed or overwritten."""
        lock = self.path / LOCK
        if not os.path.lexists(lock):
            self._made.insert(0, lock)
        try:  # O_NOFOLLOW: a symlink fails (ELOOP); O_NONBLOCK: a FIFO does not hang the open
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise self._not_our_lock(lock) from None
            raise GlassformerError(f"cannot write in {self.path}: {err.strerror or err}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or not _PID.fullmatch(os.pread(fd, 64, 0)):
            os.close(fd)
            raise self._not_our_lock(lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise GlassformerError(
                f"another glassformer process (PID {holder}) is training in {self.path}; "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _not_our_lock(self, lock: Path) -> GlassformerError:
        self._made = [m for m in self._made if m != lock]
        for made in self._made:  # the folder claim() just made, if any
            with contextlib.suppress(OSError):
                made.rmdir()
        return GlassformerError(
            f"{lock} is not glassformer's lock file (a link, a folder or someone's data); "
            "it was left untouched: move it away or choose another --out"
        )

    def check_new(self) -> None:
        """Refuse a directory that already holds anything (a run, or other files); one
        holding only a run killed before its first checkpoint may start over."""
        if self.path.exists() and not self.path.is_dir():
            raise GlassformerError(f"{self.path} is a file, not a folder for a run; choose a new --out")
        if self._holds_files():
            raise GlassformerError(
                f"{self.path} already holds files; continue it with --resume {self.path} or choose a new --out"
            )

    def _holds_files(self) -> bool:
        """Anything here but the lock, the log of a run that never reached a checkpoint,
        and temp files of writers that died."""
        if not self.path.exists():
            return False
        if not self.path.is_dir():
            return True
        ours = {LOCK, LOG} | {p.name for n in (LATEST, BEST, LOG) for p in files.leftovers(self.path, n, "tmp")}
        if os.path.islink(self.path / LOG) or not (self.path / LOG).is_file():
            ours.discard(LOG)
        return any(p.name not in ours for p in self.path.iterdir())

    def release(self) -> None:
        """Let go of the directory; where this process left no run in it (a refused
        resume, a run stopped before its first record) it goes back to how it was."""
        if self._lock_fd is None:
            return
        if not any((self.path / name).exists() for name in (LATEST, BEST, LOG)):
            for made in self._made:
                with contextlib.suppress(OSError):
                    made.rmdir() if made == self.path else made.unlink()
        os.close(self._lock_fd)  # closing the descriptor drops the flock
        self._lock_fd = None

    # --- the log -----------------------------------------------------------------------
    def append_log(self, record: dict) -> None:
        """Add one whole line: a single write to a file opened for appending, then fsync."""
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_log(self) -> list[dict]:
        """The log's records; a line cut short by a kill is dropped. We write ASCII only,
        so a byte that is not UTF-8 is damage from outside: refused, with its line."""
        try:
            lines = (self.path / LOG).read_bytes().splitlines()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise GlassformerError(f"cannot read {self.path / LOG}: {err.strerror or err}") from None
        records = []
        for number, raw in enumerate(lines, 1):
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise GlassformerError(
                    f"{self.path / LOG} line {number} is not UTF-8 text: the run's log is damaged; "
                    "remove that line to resume"
                ) from None
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict) and type(record.get("step")) is int:
                records.append(record)
        return records

    def trim_log(self, step: int) -> None:
        """Keep the records up to `step` (a killed run may have logged past its last
        checkpoint), rewriting the log atomically: a kill mid-rewrite keeps the old one."""
        if not (self.path / LOG).exists():
            return
        kept = "".join(json.dumps(r) + "\n" for r in self.read_log() if r["step"] <= step)
        files.write_file_atomically(self.path / LOG, lambda tmp: tmp.write_text(kept))

    # --- checkpoints ---------------------------------------------------------------------
    def save_best(self, model, meta: dict) -> None:
        checkpoint.save(model, self.path / BEST, meta=meta)

    def save_latest(self, model, tensors: dict[str, torch.Tensor], loop: dict) -> None:
        def extra(tmp: Path) -> None:
            files.save_tensors(tensors, tmp / STATE_TENSORS)
            (tmp / STATE_JSON).write_text(json.dumps(loop, indent=1))

        checkpoint.save(model, self.path / LATEST, extra=extra, meta={"step": loop["step"]})

    def read_latest(self) -> Saved:
        """`latest/`, every file checked before any is used: a damaged one is named, with
        what is wrong with it, and nothing is trained or written."""
        latest = files.find_dir(self.path / LATEST)
        if latest is None or not (latest / STATE_JSON).is_file():
            raise GlassformerError(
                self._no_checkpoint_yet() or f"{self.path} has no resumable checkpoint (no {LATEST}/{STATE_JSON})"
            )
        self.read_log()  # refuses a damaged log now, not after the model is built
        state_json = latest / STATE_JSON
        loop = files.read_json(state_json)
        if not isinstance(loop, dict):
            raise GlassformerError(f"{state_json} is damaged (not a JSON object); the run cannot resume")
        for key, kinds in _LOOP_FIELDS.items():
            if key not in loop or isinstance(loop[key], bool) or not isinstance(loop[key], kinds):
                got = "missing" if key not in loop else f"{loop[key]!r}"[:40]
                raise GlassformerError(f'{state_json} is damaged ("{key}" is {got}); the run cannot resume')
        if loop["step"] < 0 or loop["loss_count"] < 0 or not isinstance(loop["optimizer"].get("param_groups"), list):
            raise GlassformerError(
                f"{state_json} is damaged (a negative count or no param_groups); the run cannot resume"
            )
        try:
            settings = TrainConfig.from_dict(loop["train_config"])
            settings.check()
        except GlassformerError as err:
            raise GlassformerError(f"{state_json}: {err}; the run cannot resume") from None
        config, _ = checkpoint.read_config(latest)
        tokenizer_file = latest / checkpoint.TOKENIZER
        if not tokenizer_file.is_file():
            raise GlassformerError(f"{latest} has no {checkpoint.TOKENIZER}; the run cannot resume")
        try:
            tokenizer = tokenizer_from_json(files.read_text(tokenizer_file), str(tokenizer_file))
        except GlassformerError as err:
            raise GlassformerError(f"{err}; the run cannot resume") from None
        weights = files.read_safetensors(latest / checkpoint.WEIGHTS)
        try:
            build_with_weights(config, weights)  # on the meta device: shapes only, no copy
        except GlassformerError as err:
            raise GlassformerError(
                f"{latest / checkpoint.WEIGHTS} does not fit {latest / checkpoint.CONFIG}: {err}; the run cannot resume"
            ) from None
        tensors = files.read_safetensors(latest / STATE_TENSORS)
        _check_rng(tensors, latest / STATE_TENSORS)
        return Saved(settings=settings, config=config, tokenizer=tokenizer, weights=weights, tensors=tensors, loop=loop)

    def _no_checkpoint_yet(self) -> str | None:
        """What to do with a run stopped (killed) before its first checkpoint, if it is one."""
        if (self.path / BEST).exists():
            return (
                f"{self.path} has no {LATEST}/ checkpoint to resume from, only {BEST}/ (the run was stopped "
                f"while saving its first checkpoint): move {self.path / BEST} away to keep it, then start "
                f"over with the same glassformer train command and --out {self.path}"
            )
        if (self.path / LOG).exists():
            return (
                f"{self.path} holds a run stopped before its first checkpoint: there is nothing to resume; "
                f"start it over with the same glassformer train command and --out {self.path} (its log is replaced)"
            )
        return None


_LOOP_FIELDS: dict[str, type | tuple[type, ...]] = {
    "step": int,
    "best_val": (int, float),
    "loss_sum": (int, float),
    "loss_count": int,
    "fingerprint": str,
    "optimizer": dict,
    "train_config": dict,
}


def _check_rng(tensors: dict[str, torch.Tensor], file: Path) -> None:
    """The random generators' states: torch refuses a wrong one with a traceback."""
    size = torch.get_rng_state().shape
    for key in ("rng.data", "rng.torch"):
        state = tensors.get(key)
        if state is None:
            raise GlassformerError(f"{file} has no {key!r} random state; the run cannot resume bit for bit")
        if state.dtype != torch.uint8 or state.shape != size:
            raise GlassformerError(
                f"{file}: the {key!r} random state is {state.dtype} {list(state.shape)}, "
                f"expected uint8 {list(size)}; the run cannot resume"
            )
    cuda = tensors.get("rng.cuda")
    if cuda is not None and (cuda.dtype != torch.uint8 or cuda.dim() != 1):
        raise GlassformerError(f"{file}: the 'rng.cuda' random state is damaged; the run cannot resume")


# --- optimizer state without pickle ---------------------------------------------------
def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer's tensors by "param.name", and its JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, where: str = "") -> None:
    """The saved state into `opt`, each tensor checked against the parameter it belongs
    to first (torch would take a wrong shape and fail mid-step)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        i, _, name = key.partition(".")
        if not (i.isascii() and i.isdigit() and int(i) < len(params)) or not name:
            raise GlassformerError(
                f"{where}: optimizer tensor {key!r} names no parameter of this model; the run cannot resume"
            )
        want = () if name == "step" else tuple(params[int(i)].shape)
        if tuple(value.shape) != want or not value.is_floating_point():
            raise GlassformerError(
                f"{where}: optimizer tensor {key!r} is {value.dtype} {list(value.shape)}, expected a float "
                f"tensor {list(want)}; the run cannot resume"
            )
        state.setdefault(int(i), {})[name] = value
    try:
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise GlassformerError(
            f"{where}: the saved optimizer state does not fit this model ({err}); the run cannot resume"
        ) from None
