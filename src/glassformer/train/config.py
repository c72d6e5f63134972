"""What a training run is asked to do: one dataclass, each field with its own help line.

The command line builds `glassformer train`'s flags from these fields (their types and
help), so a setting is described once, here.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

from ..config import PRESETS, GlassformerError, ModelConfig, preset
from ..hardware import PRECISIONS

MAX_SEED = 2**63 - 1
# the model-shape fields a run may set; a resume must not change them
MODEL_FIELDS = (
    "n_layers",
    "n_heads",
    "d_model",
    "d_head",
    "d_mlp",
    "context_length",
    "dropout",
    "bias",
    "tied_unembedding",
)


def setting(default, help: str):
    """A TrainConfig field with its help line (what `glassformer train --help` prints)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    data: str | None = setting(None, "a UTF-8 text file, or lesson:adjectives / lesson:induction")
    out: str | None = setting(None, "run directory to create")
    tokenizer: str = setting("char", "char or bpe:VOCAB_SIZE (trained on the training split); lessons bring their own")
    preset: str | None = setting(None, "model shape to start from (see glassformer params); fields below override it")
    n_layers: int | None = setting(None, "blocks")
    n_heads: int | None = setting(None, "heads per layer")
    d_model: int | None = setting(None, "embedding size")
    d_head: int | None = setting(None, "query/key size per head")
    d_mlp: int | None = setting(None, "MLP hidden size")
    context_length: int | None = setting(None, "tokens per window")
    dropout: float | None = setting(None, "dropout probability")
    bias: bool | None = setting(None, "biases in linear layers and norms")
    tied_unembedding: bool | None = setting(None, "W_U = W_Eᵀ (GPT-2, nanoGPT), or W_U its own matrix")
    steps: int = setting(2000, "optimizer steps")
    batch_size: int = setting(12, "sequences per micro-batch per process")
    grad_accum: int = setting(1, "micro-batches per optimizer step")
    lr: float = setting(1e-3, "peak learning rate, reached after warmup")
    min_lr: float = setting(1e-4, "floor of the cosine decay")
    warmup: int = setting(100, "steps of linear warmup")
    weight_decay: float = setting(0.1, "AdamW decay, applied to matrices only (never biases or norms)")
    beta1: float = setting(0.9, "AdamW's first-moment decay")
    beta2: float = setting(0.99, "AdamW's second-moment decay")
    grad_clip: float = setting(1.0, "max global gradient norm; 0 turns clipping off")
    eval_every: int = setting(250, "steps between evaluations (and checkpoints)")
    eval_batches: int = setting(20, "fixed validation batches per evaluation")
    ckpt_every: int | None = setting(None, "extra checkpoints every N steps between evaluations")
    seed: int = setting(1337, "random seed (initial weights, batches)")
    val_fraction: float = setting(0.1, "share of a text file held out to validate on")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    precision: str = setting(
        "auto",
        "auto, fp32 or bf16 autocast (auto: bf16 where the chip computes it natively); weights stay fp32",
    )
    compile: bool = setting(False, "torch.compile the model (CUDA)")
    stop_at: int | None = setting(None, "end this process at step N; the run stays resumable")

    def lr_at(self, step: int) -> float:
        """Linear warmup to lr, then cosine decay to min_lr at the last step."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if step >= self.steps:
            return self.min_lr
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)

    def check(self) -> None:
        """One-line errors for every setting that cannot train, before anything is written."""
        if not self.data or not self.out:
            raise GlassformerError("give --data FILE|lesson:NAME and --out DIR (or --resume DIR)")
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_batches"):
            _whole(name, getattr(self, name), 1)
        _whole("warmup", self.warmup, 0)
        for name in ("ckpt_every", "stop_at"):
            if getattr(self, name) is not None:
                _whole(name, getattr(self, name), 1)
        if not (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED):
            raise GlassformerError(f"seed must be a whole number from 0 to {MAX_SEED}, got {self.seed!r}")
        _number("lr", self.lr, low=0, low_open=True)
        _number("min_lr", self.min_lr, low=0)
        _number("weight_decay", self.weight_decay, low=0)
        _number("grad_clip", self.grad_clip, low=0)
        _number("beta1", self.beta1, low=0, high=1, high_open=True)
        _number("beta2", self.beta2, low=0, high=1, high_open=True)
        _number("val_fraction", self.val_fraction, low=0, high=1, low_open=True, high_open=True)
        if self.min_lr > self.lr:
            raise GlassformerError(f"min-lr {self.min_lr:g} is above lr {self.lr:g}; the decay would climb")
        if self.precision not in PRECISIONS:
            raise GlassformerError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        spec = self.tokenizer
        digits = spec[4:] if spec.startswith("bpe:") else ""
        # ASCII digits only: str.isdigit accepts '²⁵⁷', which int() then refuses
        if not (spec == "char" or (digits.isascii() and digits.isdigit())):
            raise GlassformerError(f"unknown tokenizer {spec!r}; use char or bpe:VOCAB_SIZE")
        size = int(digits) if 0 < len(digits) <= 9 else MAX_BPE_VOCAB + 1  # int() refuses 4,300+ digits
        if digits and not 257 <= size <= MAX_BPE_VOCAB:
            raise GlassformerError(
                f"a bpe vocabulary must hold 257 to {MAX_BPE_VOCAB:,} tokens (256 bytes and an end-of-text), "
                f"not {digits if len(digits) <= 12 else digits[:12] + '…'}"
            )
        if self.preset is not None and not preset(self.preset).causal:
            raise GlassformerError(
                f"{self.preset} is an encoder; glassformer trains decoders (next-token prediction): "
                "choose a decoder preset"
            )

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The model this run trains: the preset (lesson-small by default) with the
        fields given here, sized to the tokenizer's vocabulary."""
        base = preset(self.preset) if self.preset else PRESETS["lesson-small"]
        changes = {f: getattr(self, f) for f in MODEL_FIELDS if getattr(self, f) is not None}
        if "d_model" in changes or "n_heads" in changes:
            changes.setdefault("d_head", None)
            changes.setdefault("d_mlp", None)
        if "n_heads" in changes:
            changes.setdefault("n_kv_heads", None)
        return base.replace(vocab_size=vocab_size, **changes)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or not set(data) <= names:
            raise GlassformerError("the saved training settings are not a TrainConfig")
        hints = typing.get_type_hints(cls)
        for name, value in data.items():
            kinds = typing.get_args(hints[name]) or (hints[name],)
            if not any(_of_kind(value, kind) for kind in kinds):
                kind = getattr(hints[name], "__name__", str(hints[name]))  # int, or str | None
                raise GlassformerError(f"the saved training setting {name} is {value!r:.40}, not {kind}")
        return cls(**data)


MAX_BPE_VOCAB = 1_000_000  # the tokenizers library tries to allocate for the size asked


def _of_kind(value, kind: type) -> bool:
    """JSON's value has the type a field declares (bool is not an int; an int is a float)."""
    if kind is type(None):
        return value is None
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, (int, float) if kind is float else kind)


def _whole(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise GlassformerError(f"{name.replace('_', '-')} must be a whole number >= {low}, got {value!r}")


def _number(name, value, *, low=None, high=None, low_open=False, high_open=False) -> None:
    flag = name.replace("_", "-")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GlassformerError(f"{flag} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise GlassformerError(f"{flag} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and (value > high or (high_open and value == high)):
        raise GlassformerError(f"{flag} must be {'<' if high_open else '<='} {high:g}, got {value:g}")
