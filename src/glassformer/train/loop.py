"""The training loop: AdamW, warmup + cosine, clipping, accumulation, evaluation,
atomic checkpoints with everything needed to resume bit-exactly, and DDP."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..config import GlassformerError, ModelConfig
from ..hardware import resolve_device, resolve_precision
from ..model import Transformer
from ..params import available_memory, count_params
from .config import MODEL_FIELDS, TrainConfig
from .data import Batcher, Dataset, fixed_batches, prepare
from .devices import autocast_for, pick_device, setup_distributed
from .state import RunDir, Saved, load_optimizer, optimizer_tensors

log = logging.getLogger(__name__)


ESTIMATE_STEPS = 5  # steps timed (after the first) before the time left is estimated


@dataclass
class Estimate:
    """How long the rest of a run should take, from its first steps' pace."""

    after_step: int  # the estimate was made after this step
    steps_left: int
    seconds_per_step: float
    seconds_left: float  # steps and evaluations
    evaluations: int


@dataclass
class TrainResult:
    out: Path
    step: int
    best_val_loss: float
    history: list[dict]
    precision: str  # what the run trained in (auto resolved)


def check_memory(config: ModelConfig, settings: TrainConfig) -> None:
    """Refuse, before allocating, a run whose weights, optimizer state and activations
    would not fit in the memory free here (a rough upper estimate, in float32)."""
    params = count_params(config).total
    B, T = settings.batch_size, config.context_length
    per_token = (
        config.n_layers * (16 * config.d_model + 4 * config.d_mlp + 2 * config.n_heads * T) + 3 * config.vocab_size
    )
    need = 4 * (4 * params + B * T * per_token)  # weights, gradients, two AdamW moments; activations
    need += settings.eval_batches * B * T * 2 * 8  # the fixed validation batches, inputs and targets
    have = available_memory()
    if have is not None and need > have:
        raise GlassformerError(
            f"this run would need about {need / 2**30:,.1f} GiB of memory (model {params:,} parameters, "
            f"batch {B} × {T} tokens), more than the {have / 2**30:,.1f} GiB free; choose a smaller shape or batch"
        )


def make_optimizer(model: Transformer, settings: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (never biases or norms)."""
    matrices = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    others = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": matrices, "weight_decay": settings.weight_decay},
        {"params": others, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(settings.beta1, settings.beta2), fused=True)


class Trainer:
    def __init__(
        self,
        settings: TrainConfig,
        run: RunDir,
        *,
        saved: Saved | None = None,
        progress: bool = True,
        on_eval=None,
        on_estimate=None,
    ) -> None:
        settings.check()
        self.run_dir = run
        self.progress = progress
        self.on_eval = on_eval  # called with each evaluation's record (rank 0), e.g. to print it
        self.on_estimate = on_estimate  # called once with an Estimate of the time left (rank 0)
        self.dist = setup_distributed(settings.device)
        self.device = pick_device(settings.device, self.dist)
        # the resolved precision is what checkpoints record, so a resume trains the same way
        self.settings = settings = dataclasses.replace(
            settings, precision=resolve_precision(settings.precision, self.device)
        )
        torch.manual_seed(settings.seed)
        tokenizer = saved.tokenizer if saved else settings.tokenizer
        assert settings.data is not None  # check() refused it otherwise
        self.data: Dataset = prepare(settings.data, tokenizer, val_fraction=settings.val_fraction, seed=settings.seed)
        if saved is not None and saved.loop["fingerprint"] != self.data.fingerprint:
            raise GlassformerError(f"the data {settings.data} changed since this run started; resume refused")
        self.config = saved.config if saved else settings.model_config(self.data.tokenizer.vocab_size)
        check_memory(self.config, settings)
        self.model = Transformer(self.config).to(self.device)
        self.model.tokenizer = self.data.tokenizer
        self.opt = make_optimizer(self.model, settings)
        T = self.config.context_length
        self.batcher = Batcher(
            self.data.train,
            T,
            settings.batch_size,
            seed=settings.seed,
            rank=self.dist.rank,
            world=self.dist.world,
            stride=self.data.stride,
        )
        self.val_batches = fixed_batches(
            self.data.val,
            T,
            settings.batch_size,
            settings.eval_batches,
            seed=settings.seed + 1,
            stride=self.data.stride,
        )
        self.step, self.best_val = 0, float("inf")
        self.loss_sum, self.loss_count = 0.0, 0
        if saved is not None:
            self._restore(saved)
        self.net: Any = self.model  # the model, or its DDP / compiled wrapper that training calls
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device] if self.device.startswith("cuda") else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if settings.compile:
            self.net = torch.compile(self.net)
        self.autocast = autocast_for(settings.precision, self.device)

    def _restore(self, saved: Saved) -> None:
        weights = saved.weights
        missing = set(self.model.state_dict()) - set(weights) - {"unembed.weight"}
        if missing:
            raise GlassformerError(f"the saved weights do not match this model (missing {sorted(missing)[0]})")
        self.model.load_state_dict(weights, strict=False)
        opt = {k.removeprefix("opt."): v for k, v in saved.tensors.items() if k.startswith("opt.")}
        load_optimizer(
            self.opt, opt, saved.loop["optimizer"], where=str(self.run_dir.path / "latest" / "train_state.safetensors")
        )
        self.batcher.set_state(saved.tensors["rng.data"])
        torch.set_rng_state(saved.tensors["rng.torch"])
        if self.device.startswith("cuda") and "rng.cuda" in saved.tensors:
            torch.cuda.set_rng_state(saved.tensors["rng.cuda"])
        loop = saved.loop
        self.step, self.best_val = loop["step"], loop["best_val"]
        self.loss_sum, self.loss_count = loop["loss_sum"], loop["loss_count"]

    # --- checkpoints and evaluation --------------------------------------------------------
    def _save_latest(self) -> None:
        opt_tensors, opt_meta = optimizer_tensors(self.opt)
        tensors = {f"opt.{k}": v for k, v in opt_tensors.items()}
        tensors["rng.data"] = self.batcher.state()
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.startswith("cuda"):
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        loop = {
            "step": self.step,
            "best_val": self.best_val,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "fingerprint": self.data.fingerprint,
            "optimizer": opt_meta,
            "train_config": dataclasses.asdict(self.settings),
        }
        self.run_dir.save_latest(self.model, tensors, loop)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the fixed validation batches (the same ones every time)."""
        self.model.eval()
        losses = []
        for x, y in self.val_batches:
            with self.autocast():
                logits = self.model(x.to(self.device))
            losses.append(F.cross_entropy(logits.float().flatten(0, 1), y.to(self.device).flatten()).item())
        self.model.train()
        return sum(losses) / len(losses)

    def _stop_diverged(self, what: str, step: int) -> None:
        """Stop before a model of NaNs is saved: the last checkpoint stays the last good one."""
        raise GlassformerError(
            f"training diverged at step {step}: {what}; try a lower --lr (this run used {self.settings.lr:g})"
        )

    def _evaluate_and_save(self, lr: float, speed: float) -> dict:
        val = self.evaluate() if self.dist.main else float("nan")
        if self.dist.world == 1 and not math.isfinite(val):  # under torchrun the next step's check stops all
            self._stop_diverged(f"the validation loss is {val}", self.step)
        # train_loss: the mean of every optimizer step's loss since the last evaluation
        train_loss = self.loss_sum / max(1, self.loss_count)
        self.loss_sum, self.loss_count = 0.0, 0
        record = {
            "step": self.step,
            "train_loss": train_loss,
            "val_loss": val,
            "lr": lr,
            "tokens_per_s": speed,
        }
        if self.dist.main and math.isfinite(val):  # (a NaN model is never saved)
            # the record goes down before the checkpoint it belongs to: a kill in between
            # leaves a record past the last checkpoint, which resume trims and re-makes
            self.run_dir.append_log(record)
            if val < self.best_val:
                self.best_val = val
                self.run_dir.save_best(
                    self.model,
                    {
                        "step": self.step,
                        "val_loss": val,
                        "data": self.settings.data,
                        "seed": self.settings.seed,
                        "fingerprint": self.data.fingerprint,  # what the model learned from, to spot stale ones
                    },
                )
            self._save_latest()
        return record

    def _estimate(self, per_step: float, end: int) -> Estimate:
        """The time the rest of the run should take at `per_step` seconds a step, its
        evaluations included (each a forward pass over the fixed validation batches, taken
        as a third of a training step per batch: forward only, no backward or update)."""
        s = self.settings
        left = end - self.step
        evals = end // s.eval_every - self.step // s.eval_every + (end == s.steps and end % s.eval_every != 0)
        eval_seconds = evals * s.eval_batches * per_step / (3 * s.grad_accum)
        return Estimate(self.step, left, per_step, left * per_step + eval_seconds, evals)

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        s = self.settings
        history: list[dict] = []
        self.model.train()
        tokens_per_step = s.batch_size * s.grad_accum * self.dist.world * self.config.context_length
        end = min(s.steps, s.stop_at) if s.stop_at else s.steps
        bar = tqdm(
            total=s.steps,
            initial=self.step,
            disable=not (self.progress and self.dist.main),
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        clock, clock_tokens = time.perf_counter(), 0
        first_step, timed = self.step, 0.0  # seconds of training steps 2.. (the first pays for warm-up)
        while self.step < end:
            started = time.perf_counter()
            lr = s.lr_at(self.step)
            for group in self.opt.param_groups:
                group["lr"] = lr
            step_loss = 0.0
            for micro in range(s.grad_accum):
                x, y = self.batcher.next()
                x, y = x.to(self.device), y.to(self.device)
                sync = micro == s.grad_accum - 1 or self.dist.world == 1
                with nullcontext() if sync else self.net.no_sync(), self.autocast():
                    logits = self.net(x)
                    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten()) / s.grad_accum
                loss.backward()
                step_loss += loss.item()
            # the gradients' norm is the same on every rank (they are averaged by now), so
            # under torchrun every process stops together; a NaN loss makes it NaN too
            max_norm = s.grad_clip if s.grad_clip > 0 else math.inf  # inf: measured, not clipped
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
            if not math.isfinite(norm):
                self._stop_diverged(f"the loss is {step_loss} and the gradients' norm {norm}", self.step + 1)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            self.loss_sum += step_loss
            self.loss_count += 1
            clock_tokens += tokens_per_step
            elapsed = time.perf_counter() - clock
            speed = clock_tokens / elapsed if elapsed > 0 else 0.0
            if self.step > first_step + 1:
                timed += time.perf_counter() - started
            if self.step == first_step + 1 + ESTIMATE_STEPS and self.on_estimate is not None and self.dist.main:
                self.on_estimate(self._estimate(timed / ESTIMATE_STEPS, end))
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{speed:,.0f}", refresh=False)
            if self.step % s.eval_every == 0 or self.step == s.steps:
                record = self._evaluate_and_save(lr, speed)
                history.append(record)
                log.info("step %d: train %.4f val %.4f", record["step"], record["train_loss"], record["val_loss"])
                if self.on_eval is not None and self.dist.main:
                    self.on_eval(record)
            elif s.ckpt_every and self.step % s.ckpt_every == 0 and self.dist.main:
                self._save_latest()
        bar.close()
        saved_here = self.step % s.eval_every == 0 or (s.ckpt_every and self.step % s.ckpt_every == 0)
        if self.step == end and end != s.steps and self.dist.main and not saved_here:
            self._save_latest()  # stopped early between checkpoints: keep the place
        return TrainResult(self.run_dir.path, self.step, self.best_val, history, s.precision)


def train(settings: TrainConfig, *, progress: bool = True, on_eval=None, on_estimate=None) -> TrainResult:
    """Start a new run in `settings.out`, which must be empty or absent and is then held
    by this process until the run ends."""
    settings.check()
    assert settings.out is not None  # check() refused it otherwise
    run = RunDir(settings.out)
    if main_process():
        run.check_new()  # refused before anything is prepared or written
    trainer = Trainer(settings, run, progress=progress, on_eval=on_eval, on_estimate=on_estimate)
    return _run(trainer, new=True)


def resume(
    out: str | Path,
    *,
    steps: int | None = None,
    stop_at: int | None = None,
    expect: dict | None = None,
    data: str | None = None,
    device: str | None = None,
    compile: bool | None = None,
    progress: bool = True,
    on_eval=None,
    on_estimate=None,
) -> TrainResult:
    """Continue the run in `out` exactly where its last checkpoint left it.

    The run keeps its own settings; `steps` may lengthen it, `stop_at` end this process
    early, and `device` / `compile` say where and how it runs (not what it learns).
    Everything in `expect` (any other TrainConfig field) and `data`, when given, must
    match the run: a resume never silently mixes two set-ups.
    """
    run = RunDir(out)
    if main_process():
        run.claim(new=False)
    try:
        saved = run.read_latest()
        for name, asked in (expect or {}).items():
            _check_same(out, saved, name, asked)
        if data is not None and data != saved.settings.data:
            raise GlassformerError(f"{out} was trained on {saved.settings.data}, not {data}; resume refused")
        done = saved.loop["step"]
        for flag, value in (("--steps", steps), ("--stop-at", stop_at)):
            if value is not None and value <= done:
                raise GlassformerError(f"{out} is already at step {done}; {flag} {value} would train nothing")
        if steps is None and done >= saved.settings.steps:
            raise GlassformerError(f"{out} finished at step {done}; give --steps N (above {done}) to train it longer")
        settings = dataclasses.replace(
            saved.settings,
            out=str(out),
            stop_at=stop_at,
            steps=steps or saved.settings.steps,
            device=saved.settings.device if device is None else device,
            compile=saved.settings.compile if compile is None else compile,
        )
        trainer = Trainer(settings, run, saved=saved, progress=progress, on_eval=on_eval, on_estimate=on_estimate)
        run.trim_log(trainer.step)
    except BaseException:
        run.release()
        raise
    return _run(trainer, new=False)


RESUME_MAY_CHANGE = ("steps", "stop_at", "device", "compile")  # where and how long, not what is learned


def _check_same(out: str | Path, saved: Saved, name: str, asked) -> None:
    """Refuse a setting given with --resume that differs from the run's own."""
    if asked is None:
        return
    if name in MODEL_FIELDS + ("preset",):
        have = saved.settings.preset if name == "preset" else getattr(saved.config, name, None)
        if asked != have:
            raise GlassformerError(
                f"{out} holds a model with {name}={have}, not {asked}; resume with the same shape or start a new --out"
            )
        return
    have, shown = getattr(saved.settings, name), asked
    if name == "precision":  # the run recorded what "auto" became
        asked = resolve_precision(asked, resolve_device(saved.settings.device))
        shown = f"{shown} ({asked} here)" if shown != asked else shown
    if asked != have:
        flag = "--" + name.replace("_", "-")
        raise GlassformerError(
            f"{flag} {shown} differs from this run's {have}: a resume continues the run as it was set up "
            f"(only {', '.join('--' + n.replace('_', '-') for n in RESUME_MAY_CHANGE)} may change); "
            "drop the flag, or start a new --out"
        )


def main_process() -> bool:
    """False in the other ranks of a torchrun job: only rank 0 owns and writes the run."""
    return int(os.environ.get("RANK", "0")) == 0


def _run(trainer: Trainer, *, new: bool) -> TrainResult:
    try:
        if new and trainer.dist.main:
            trainer.run_dir.claim(new=True)
        return trainer.run()
    finally:
        trainer.run_dir.release()
        if trainer.dist.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
