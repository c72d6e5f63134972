"""The training loop: AdamW, warmup + cosine, clipping, accumulation, evaluation,
atomic checkpoints with everything needed to resume bit-exactly, and DDP.

A run directory holds:
    latest/     checkpoint + optimizer, schedule, RNG and data position (resume from here)
    best/       the model at its best validation loss (what `glassformer.load(DIR)` returns)
    log.jsonl   one JSON object per evaluation
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import checkpoint
from ..config import PRESETS, GlassformerError, ModelConfig, preset
from ..model import Transformer
from .data import Batcher, Dataset, fixed_batches, prepare

log = logging.getLogger(__name__)

MODEL_FIELDS = ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "context_length", "dropout",
                "bias", "tied_unembedding")


@dataclass
class TrainConfig:
    data: str  # a UTF-8 text file or lesson:NAME
    out: str  # the run directory
    tokenizer: str = "char"  # char or bpe:VOCAB_SIZE (lessons bring their own)
    preset: str | None = None  # model shape; individual fields below override it
    n_layers: int | None = None
    n_heads: int | None = None
    d_model: int | None = None
    d_head: int | None = None
    d_mlp: int | None = None
    context_length: int | None = None
    dropout: float | None = None
    bias: bool | None = None
    tied_unembedding: bool | None = None  # W_U = W_Eᵀ, or W_U its own matrix
    steps: int = 2000  # optimizer steps
    batch_size: int = 12  # sequences per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # peak learning rate, reached after warmup
    min_lr: float = 1e-4  # floor of the cosine decay
    warmup: int = 100  # steps of linear warmup
    weight_decay: float = 0.1  # applied to matrices only, never to biases or norms
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    eval_every: int = 250  # steps between evaluations (and checkpoints)
    eval_batches: int = 20  # fixed validation batches per evaluation
    ckpt_every: int | None = None  # extra checkpoints between evaluations
    seed: int = 1337
    val_fraction: float = 0.1
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    precision: str = "auto"  # auto, fp32 or bf16 (autocast; weights and optimizer stay fp32)
    compile: bool = False  # torch.compile the model (CUDA)
    stop_at: int | None = None  # end this process early at this step (the run stays resumable)

    def lr_at(self, step: int) -> float:
        """Linear warmup to lr, then cosine decay to min_lr at the last step."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if step >= self.steps:
            return self.min_lr
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)

    def check(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise GlassformerError(f"{name.replace('_', '-')} must be at least 1")
        if self.lr <= 0 or self.min_lr < 0:
            raise GlassformerError("learning rates must be positive")
        if self.precision not in PRECISIONS:
            raise GlassformerError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        spec = self.tokenizer
        if isinstance(spec, str) and not (spec == "char" or (spec.startswith("bpe:") and spec[4:].isdigit())):
            raise GlassformerError(f"unknown tokenizer {spec!r}; use char or bpe:VOCAB_SIZE")


def model_config(cfg: TrainConfig, vocab_size: int) -> ModelConfig:
    base = preset(cfg.preset) if cfg.preset else PRESETS["lesson-small"]
    changes = {f: getattr(cfg, f) for f in MODEL_FIELDS if getattr(cfg, f) is not None}
    if "d_model" in changes or "n_heads" in changes:
        changes.setdefault("d_head", None)
        changes.setdefault("d_mlp", None)
    return base.replace(vocab_size=vocab_size, **changes)


# --- distributed ---------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, d: Dist) -> str:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GlassformerError("--device cuda asked for, but no CUDA GPU is available")
        if name == "cuda":
            name = f"cuda:{d.local_rank}"
        torch.cuda.set_device(name)
    elif name != "cpu":
        raise GlassformerError(f"unknown device {name!r}; use auto, cpu or cuda")
    return name


# --- precision -----------------------------------------------------------------------
PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX). Without those
    instructions bf16 is emulated and slower than fp32, so `auto` keeps fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to know, stay with fp32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: str) -> str:
    """`auto` is whatever trains fastest here: bf16 autocast on CUDA GPUs that support it
    and on CPUs with bf16 units (benchmarks/bench_train.py races both), else fp32."""
    cuda = device.startswith("cuda")
    supported = torch.cuda.is_bf16_supported() if cuda else cpu_has_bf16_units()
    if name == "auto":
        return "bf16" if supported else "fp32"
    if name == "bf16" and cuda and not supported:
        raise GlassformerError("this GPU has no bf16 support; use --precision fp32")
    return name


def autocast_for(precision: str, device: str):
    """What to wrap each forward in: a factory of bf16 autocast contexts, or of no-ops."""
    if precision != "bf16":
        return nullcontext
    kind = device.split(":")[0]
    return lambda: torch.autocast(kind, dtype=torch.bfloat16)


# --- optimizer state without pickle ---------------------------------------------------
def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous()
               for i, st in sd["state"].items() for k, v in st.items()}  # fmt: skip
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def make_optimizer(model: Transformer, cfg: TrainConfig, device: str) -> torch.optim.AdamW:
    matrices = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    others = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": cfg.weight_decay},
              {"params": others, "weight_decay": 0.0}]  # fmt: skip
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


# --- the loop --------------------------------------------------------------------------
@dataclass
class TrainResult:
    out: Path
    step: int
    best_val_loss: float
    history: list[dict]
    precision: str  # what the run trained in (auto resolved)


class Trainer:
    def __init__(self, cfg: TrainConfig, *, progress: bool = True, state: dict | None = None,
                 on_eval=None) -> None:  # fmt: skip
        cfg.check()
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.progress = progress
        self.on_eval = on_eval  # called with each evaluation's record (rank 0), e.g. to print it
        self.dist = setup_distributed(cfg.device)
        self.device = pick_device(cfg.device, self.dist)
        # the resolved precision is what checkpoints record, so a resume trains the same way
        cfg = self.cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, self.device))
        torch.manual_seed(cfg.seed)
        tokenizer = checkpoint.load(state["dir"]).tokenizer if state else cfg.tokenizer
        self.data: Dataset = prepare(cfg.data, tokenizer, val_fraction=cfg.val_fraction, seed=cfg.seed)
        if state is not None and state["fingerprint"] != self.data.fingerprint:
            raise GlassformerError(f"the data {cfg.data} changed since this run started; resume refused")
        self.config = model_config(cfg, self.data.tokenizer.vocab_size)
        self.model = Transformer(self.config).to(self.device)
        self.model.tokenizer = self.data.tokenizer
        self.opt = make_optimizer(self.model, cfg, self.device)
        C = self.config.context_length
        self.batcher = Batcher(self.data.train, C, cfg.batch_size, seed=cfg.seed,
                               rank=self.dist.rank, world=self.dist.world)  # fmt: skip
        self.val_batches = fixed_batches(self.data.val, C, cfg.batch_size, cfg.eval_batches, seed=cfg.seed + 1)
        self.step, self.best_val = 0, float("inf")
        self.loss_sum, self.loss_count = 0.0, 0
        if state is not None:
            self._restore(state)
        self.net = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[self.device] if
                                               self.device.startswith("cuda") else None)  # fmt: skip
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.autocast = autocast_for(cfg.precision, self.device)

    def _restore(self, state: dict) -> None:
        latest = Path(state["dir"])
        weights = checkpoint.read_safetensors(latest / checkpoint.WEIGHTS)
        missing = set(self.model.state_dict()) - set(weights) - {"unembed.weight"}
        if missing:
            raise GlassformerError(f"{latest} does not match this model (missing {sorted(missing)[0]})")
        self.model.load_state_dict(weights, strict=False)
        extra = checkpoint.read_safetensors(latest / "train_state.safetensors")
        opt_tensors = {k.removeprefix("opt."): v for k, v in extra.items() if k.startswith("opt.")}
        load_optimizer(self.opt, opt_tensors, state["optimizer"])
        self.batcher.set_state(extra["rng.data"])
        torch.set_rng_state(extra["rng.torch"])
        if self.device.startswith("cuda") and "rng.cuda" in extra:
            torch.cuda.set_rng_state(extra["rng.cuda"])
        self.step = state["step"]
        self.best_val = state["best_val"]
        self.loss_sum, self.loss_count = state["loss_sum"], state["loss_count"]
        self._trim_log()

    def _trim_log(self) -> None:
        """Drop log lines written after the checkpoint we resume from (a killed run's)."""
        path = self.out / "log.jsonl"
        if not path.exists() or not self.dist.main:
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a line cut short by a kill
        path.write_text("".join(k + "\n" for k in kept))

    # checkpoints -------------------------------------------------------------------
    def _save_latest(self) -> None:
        from safetensors.torch import save_file

        opt_tensors, opt_meta = optimizer_tensors(self.opt)
        tensors = {f"opt.{k}": v for k, v in opt_tensors.items()}
        tensors["rng.data"] = self.batcher.state()
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.startswith("cuda"):
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        state = {"step": self.step, "best_val": self.best_val, "loss_sum": self.loss_sum,
                 "loss_count": self.loss_count, "fingerprint": self.data.fingerprint,
                 "optimizer": opt_meta, "train_config": dataclasses.asdict(self.cfg)}  # fmt: skip

        def extra(tmp: Path) -> None:
            save_file(tensors, str(tmp / "train_state.safetensors"))
            (tmp / "train_state.json").write_text(json.dumps(state, indent=1))

        checkpoint.save(self.model, self.out / "latest", extra=extra, meta={"step": self.step})

    # evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        losses = []
        for x, y in self.val_batches:
            with self.autocast():
                logits = self.model(x.to(self.device))
            losses.append(F.cross_entropy(logits.float().flatten(0, 1), y.to(self.device).flatten()).item())
        self.model.train()
        return sum(losses) / len(losses)

    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        cfg = self.cfg
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        history: list[dict] = []
        self.model.train()
        tokens_per_step = cfg.batch_size * cfg.grad_accum * self.dist.world * self.config.context_length
        end = min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (self.progress and self.dist.main),
                   desc="train", unit="step", dynamic_ncols=True)  # fmt: skip
        clock, clock_tokens = time.perf_counter(), 0
        while self.step < end:
            lr = cfg.lr_at(self.step)
            for group in self.opt.param_groups:
                group["lr"] = lr
            step_loss = 0.0
            for micro in range(cfg.grad_accum):
                x, y = self.batcher.next()
                x, y = x.to(self.device), y.to(self.device)
                sync = micro == cfg.grad_accum - 1 or self.dist.world == 1
                with (nullcontext() if sync else self.net.no_sync()), self.autocast():
                    logits = self.net(x)
                    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten()) / cfg.grad_accum
                loss.backward()
                step_loss += loss.item()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            self.loss_sum += step_loss
            self.loss_count += 1
            clock_tokens += tokens_per_step
            elapsed = time.perf_counter() - clock
            speed = clock_tokens / elapsed if elapsed > 0 else 0.0
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{speed:,.0f}", refresh=False)
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                record = self._eval_and_save(lr, speed)
                history.append(record)
                log.info("step %d: train %.4f val %.4f", record["step"], record["train_loss"], record["val_loss"])
                if self.on_eval is not None and self.dist.main:
                    self.on_eval(record)
            elif cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.dist.main:
                self._save_latest()
        bar.close()
        if self.step == end and end != cfg.steps and self.dist.main and not (
            self.step % cfg.eval_every == 0 or (cfg.ckpt_every and self.step % cfg.ckpt_every == 0)
        ):
            self._save_latest()  # stopped early between checkpoints: keep the place
        return TrainResult(self.out, self.step, self.best_val, history, self.cfg.precision)

    def _eval_and_save(self, lr: float, speed: float) -> dict:
        val = self.evaluate() if self.dist.main else float("nan")
        train_loss = self.loss_sum / max(1, self.loss_count)
        self.loss_sum, self.loss_count = 0.0, 0
        record = {"step": self.step, "train_loss": train_loss, "val_loss": val, "lr": lr,
                  "tokens_per_s": speed}  # fmt: skip
        if self.dist.main:
            if val < self.best_val:
                self.best_val = val
                checkpoint.save(self.model, self.out / "best",
                                meta={"step": self.step, "val_loss": val, "data": self.cfg.data})  # fmt: skip
            self._save_latest()
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        return record


def train(cfg: TrainConfig, *, progress: bool = True, on_eval=None) -> TrainResult:
    """Start a new run in `cfg.out` (which must be empty or absent)."""
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GlassformerError(
            f"{out} already holds files; continue it with --resume {out} or choose a new --out"
        )
    return _run(Trainer(cfg, progress=progress, on_eval=on_eval))


def read_resume_state(out: str | Path) -> tuple[TrainConfig, ModelConfig, dict]:
    """The saved settings, model shape and loop state of the run in `out`."""
    out = Path(out)
    latest = checkpoint.find_dir(out / "latest")
    if latest is None or not (latest / "train_state.json").is_file():
        raise GlassformerError(f"{out} has no resumable checkpoint (no latest/train_state.json)")
    state = json.loads((latest / "train_state.json").read_text())
    state["dir"] = str(latest)
    saved_model, _ = checkpoint.read_config(latest)
    return TrainConfig(**state["train_config"]), saved_model, state


def resume(out: str | Path, *, steps: int | None = None, stop_at: int | None = None,
           expect: dict | None = None, data: str | None = None, progress: bool = True,
           on_eval=None) -> TrainResult:  # fmt: skip
    """Continue the run in `out` exactly where its last checkpoint left it.

    The run keeps its own settings; `steps` may lengthen it. `expect` (model fields) and
    `data`, when given, must match the run, so a resume never mixes two models.
    """
    saved, saved_model, state = read_resume_state(out)
    for field, asked in (expect or {}).items():
        have = getattr(saved_model, field, None) if field != "preset" else saved.preset
        if asked is not None and asked != have:
            raise GlassformerError(
                f"{out} holds a model with {field}={have}, not {asked}; resume with the same "
                "shape or start a new --out"
            )
    if data is not None and data != saved.data:
        raise GlassformerError(f"{out} was trained on {saved.data}, not {data}; resume refused")
    cfg = dataclasses.replace(saved, out=str(out), stop_at=stop_at, steps=steps or saved.steps)
    return _run(Trainer(cfg, progress=progress, state=state, on_eval=on_eval))


def _run(trainer: Trainer) -> TrainResult:
    try:
        return trainer.run()
    finally:
        if trainer.dist.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
