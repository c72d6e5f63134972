"""The shape of a transformer, as one frozen dataclass, plus familiar presets.

No torch here: a config can be made, checked and tallied without building a model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
NORMS = ("pre", "post")


class GlassformerError(ValueError):
    """A mistake in what the user asked for; the CLI prints it as one line."""


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 50257  # rows of W_E (and columns of W_U); bigger = more words, more parameters
    context_length: int = 1024  # most tokens the model sees at once; attention costs grow as its square
    d_model: int = 768  # width of each embedding E; the residual stream every layer reads and writes
    n_heads: int = 12  # heads per attention layer; each asks its own question of the context
    d_head: int | None = None  # query/key size per head, d_head << d_model; None means d_model // n_heads
    n_layers: int = 12  # blocks of attention + MLP; depth
    d_mlp: int | None = None  # hidden width of each MLP; None means 4 * d_model (GPT-2, BERT)
    causal: bool = True  # True: decoder (GPT), later tokens never inform earlier ones; False: encoder (BERT)
    norm: str = "pre"  # "pre": LayerNorm before each sublayer (GPT-2, trains easily); "post": after (BERT)
    activation: str = "gelu_tanh"  # MLP non-linearity: "gelu_tanh" (GPT-2), "gelu" (BERT, exact erf), "relu"
    learned_positions: bool = True  # learned position embedding added to W_E rows (GPT-2, BERT)
    bias: bool = True  # biases in linear layers and norms; off is slightly faster and smaller
    tied_unembedding: bool = True  # W_U = W_Eᵀ (GPT-2) saves vocab*d_model parameters; False: own matrix
    norm_eps: float = 1e-5  # LayerNorm epsilon: 1e-5 for GPT-2, 1e-12 for BERT
    type_vocab_size: int = 0  # BERT's token-type (segment) embeddings; 0 means none
    dropout: float = 0.0  # dropout on embeddings, pattern and sublayer outputs; 0 for small data or inference

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise GlassformerError(f"invalid model config: {msg}")

        for name in ("vocab_size", "context_length", "d_model", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(f"{name} must be a positive integer, got {value!r}")
        if self.d_head is None:
            if self.d_model % self.n_heads:
                bad(
                    f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}; "
                    "pass d_head explicitly"
                )
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        if self.d_mlp is None:
            object.__setattr__(self, "d_mlp", 4 * self.d_model)
        for name in ("d_head", "d_mlp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
            bad(f"type_vocab_size must be >= 0, got {self.type_vocab_size!r}")
        if self.norm not in NORMS:
            bad(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            bad(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if not (isinstance(self.norm_eps, (int, float)) and self.norm_eps > 0):
            bad(f"norm_eps must be > 0, got {self.norm_eps!r}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            bad(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("causal", "learned_positions", "bias", "tied_unembedding"):
            if not isinstance(getattr(self, name), bool):
                bad(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def is_decoder(self) -> bool:
        return self.causal

    def replace(self, **changes) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        fields = self.to_dict()
        unknown = set(changes) - set(fields)
        if unknown:
            raise GlassformerError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        fields.update(changes)
        return ModelConfig(**fields)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise GlassformerError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


_GPT2 = dict(vocab_size=50257, context_length=1024, activation="gelu_tanh", norm="pre", causal=True)
_BERT = dict(
    causal=False,
    norm="post",
    activation="gelu",
    tied_unembedding=False,
    norm_eps=1e-12,
    type_vocab_size=2,
    vocab_size=30522,
    context_length=512,
)

PRESETS: dict[str, ModelConfig] = {
    # the GPT-2 family (OpenAI, 2019); parameter counts as Hugging Face reports them
    "gpt2": ModelConfig(**_GPT2, d_model=768, n_heads=12, n_layers=12),  # 124M
    "gpt2-medium": ModelConfig(**_GPT2, d_model=1024, n_heads=16, n_layers=24),  # 355M
    "gpt2-large": ModelConfig(**_GPT2, d_model=1280, n_heads=20, n_layers=36),  # 774M
    "gpt2-xl": ModelConfig(**_GPT2, d_model=1600, n_heads=25, n_layers=48),  # 1.56B
    # GPT-3 as tallied in 3Blue1Brown's video: 96 heads of 128 = 12288; shape only, never built
    "gpt3-175b": ModelConfig(
        **{**_GPT2, "context_length": 2048},
        d_model=12288,
        n_heads=96,
        d_head=128,
        n_layers=96,
        d_mlp=49152,
        tied_unembedding=False,
    ),  # 175B
    # BERT-style encoders
    "bert-base-uncased": ModelConfig(**_BERT, d_model=768, n_heads=12, n_layers=12),  # 110M
    "minilm-l6": ModelConfig(**_BERT, d_model=384, n_heads=12, n_layers=6, d_mlp=1536),  # 22.7M
    # small sizes for lessons and experiments; vocab 256 so raw bytes fit until a tokenizer sets it
    "lesson-tiny": ModelConfig(
        vocab_size=256, context_length=64, d_model=64, n_heads=4, n_layers=2
    ),  # 0.1M: the adjectives lesson
    "lesson-small": ModelConfig(
        vocab_size=256, context_length=128, d_model=128, n_heads=4, n_layers=4
    ),  # 0.8M
    "shakespeare-char": ModelConfig(
        vocab_size=65, context_length=64, d_model=128, n_heads=4, n_layers=4, bias=False,
        activation="gelu", tied_unembedding=False,
    ),  # 0.8M: nanoGPT's CPU Shakespeare shape (no biases, exact GELU, as nanoGPT). Unlike
    # nanoGPT, W_U is its own matrix: for 65 characters that costs 8k parameters and lowers
    # the 2000-step val loss by ~0.04 (bench_train.py: 1.872 against 1.910 tied, 4 seeds)
}

# Presets whose tensors would not fit in memory here: tally them, never build them.
SHAPE_ONLY = frozenset({"gpt3-175b"})


def preset(name: str) -> ModelConfig:
    """The preset called `name`, or a one-line error listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise GlassformerError(
            f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}"
        ) from None


__all__ = ["ModelConfig", "PRESETS", "SHAPE_ONLY", "GlassformerError", "preset"]
