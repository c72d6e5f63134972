"""A run directory: owned by one process, written atomically, resumable bit for bit.

    DIR/.lock        held (flock) by the process training here; the kernel frees it if it dies
    DIR/latest/      checkpoint + optimizer, schedule, RNG and data position (resume from here)
    DIR/best/        the model at its best validation loss (what `glassformer.load(DIR)` returns)
    DIR/log.jsonl    one JSON line per evaluation, appended before the checkpoint it belongs to

Nothing here is pickled: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import checkpoint
from ..config import GlassformerError, ModelConfig
from ..tokenizer import Tokenizer, tokenizer_from_json
from .config import TrainConfig

LOCK, LOG, LATEST, BEST = checkpoint.RUN_LOCK, checkpoint.RUN_LOG, checkpoint.LATEST, checkpoint.BEST
STATE_JSON, STATE_TENSORS = "train_state.json", "train_state.safetensors"


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
        """Take the directory for this process: a new run needs it empty or absent, a
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
        if not (self.path / LOCK).exists():
            self._made.insert(0, self.path / LOCK)
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise GlassformerError(f"cannot write in {self.path}: {err.strerror or err}") from None
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
        self._lock_fd = fd
        if new and self._holds_files():  # another process filled it between our look and our lock
            self.release()
            raise GlassformerError(f"{self.path} already holds files; choose a new --out")
        for name in (LATEST, BEST, LOG):  # temp files of earlier runs here that were killed mid-write
            checkpoint.remove_stale_temps(self.path, name)

    def check_new(self) -> None:
        """Refuse a directory that already holds anything (a run, or other files)."""
        if self.path.exists() and not self.path.is_dir():
            raise GlassformerError(f"{self.path} is a file, not a folder for a run; choose a new --out")
        if self._holds_files():
            raise GlassformerError(
                f"{self.path} already holds files; continue it with --resume {self.path} or choose a new --out"
            )

    def _holds_files(self) -> bool:
        return self.path.exists() and (not self.path.is_dir() or any(p.name != LOCK for p in self.path.iterdir()))

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
        """The log's records; a line cut short by a kill is dropped."""
        try:
            lines = (self.path / LOG).read_text().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
        return records

    def trim_log(self, step: int) -> None:
        """Keep the records up to `step` (a killed run may have logged past its last
        checkpoint), rewriting the log atomically: a kill mid-rewrite keeps the old one."""
        if not (self.path / LOG).exists():
            return
        kept = "".join(json.dumps(r) + "\n" for r in self.read_log() if r["step"] <= step)
        checkpoint.write_file_atomically(self.path / LOG, lambda tmp: tmp.write_text(kept))

    # --- checkpoints ---------------------------------------------------------------------
    def save_best(self, model, meta: dict) -> None:
        checkpoint.save(model, self.path / BEST, meta=meta)

    def save_latest(self, model, tensors: dict[str, torch.Tensor], loop: dict) -> None:
        def extra(tmp: Path) -> None:
            checkpoint.save_tensors(tensors, tmp / STATE_TENSORS)
            (tmp / STATE_JSON).write_text(json.dumps(loop, indent=1))

        checkpoint.save(model, self.path / LATEST, extra=extra, meta={"step": loop["step"]})

    def read_latest(self) -> Saved:
        latest = checkpoint.find_dir(self.path / LATEST)
        if latest is None or not (latest / STATE_JSON).is_file():
            raise GlassformerError(f"{self.path} has no resumable checkpoint (no {LATEST}/{STATE_JSON})")
        loop = checkpoint.read_json(latest / STATE_JSON)
        needed = ("step", "best_val", "loss_sum", "loss_count", "fingerprint", "optimizer", "train_config")
        if not isinstance(loop, dict) or any(k not in loop for k in needed):
            raise GlassformerError(f"{latest / STATE_JSON} is damaged (a field is missing); the run cannot resume")
        config, _ = checkpoint.read_config(latest)
        tokenizer_file = latest / checkpoint.TOKENIZER
        if not tokenizer_file.is_file():
            raise GlassformerError(f"{latest} has no {checkpoint.TOKENIZER}; the run cannot resume")
        tokenizer = tokenizer_from_json(tokenizer_file.read_text(encoding="utf-8"))
        return Saved(
            settings=TrainConfig.from_dict(loop["train_config"]),
            config=config,
            tokenizer=tokenizer,
            weights=checkpoint.read_safetensors(latest / checkpoint.WEIGHTS),
            tensors=checkpoint.read_safetensors(latest / STATE_TENSORS),
            loop=loop,
        )


# --- optimizer state without pickle ---------------------------------------------------
def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer's tensors by "param.name", and its JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    try:
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (KeyError, ValueError, TypeError) as err:
        raise GlassformerError(
            f"the saved optimizer state does not fit this model ({err}); the run cannot resume"
        ) from None
