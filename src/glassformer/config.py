"""The shape of a transformer, as one frozen dataclass, plus familiar presets.

No torch here: a config can be made, checked and tallied without building a model.
Two families share the one Transformer, chosen by these fields:

    GPT-2 / BERT   learned positions added to E, LayerNorm, MLP with GELU, biases
    Llama          rotary positions on Q and K, RMSNorm, gated MLP (SwiGLU), no biases,
                   fewer key/value heads than query heads (grouped-query attention)
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

ACTIVATION_FUNCTIONS = ("gelu", "gelu_tanh", "relu", "silu")
NORM_PLACES = ("pre", "post")
NORM_KINDS = ("layernorm", "rmsnorm")
POSITION_KINDS = ("learned", "rotary", "none")
MLP_KINDS = ("plain", "gated")


class GlassformerError(ValueError):
    """A mistake in what the user asked for; the CLI prints it as one line."""


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class Derived(int):
    """A size the config worked out (d_head = d_model / n_heads, d_mlp = 4·d_model,
    n_kv_heads = n_heads) rather than one it was given. It is an int everywhere, but handed
    back to the constructor, as dataclasses.replace and ModelConfig.replace do, it is worked
    out again, so `dataclasses.replace(PRESETS["gpt2"], n_heads=4, d_model=64)` gets d_head
    16 and 4 key/value heads instead of keeping GPT-2's 64 and 12. JSON writes it as a plain
    number, so a saved config reads back with every size given."""

    def __repr__(self) -> str:
        return int.__repr__(self)

    def __deepcopy__(self, memo) -> Derived:
        return self


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 50257  # rows of W_E (and columns of W_U); bigger = more words, more parameters
    context_length: int = 1024  # most tokens seen at once; attention costs grow as its square
    d_model: int = 768  # width of each embedding E: the residual stream every layer reads and writes
    n_heads: int = 12  # query heads per layer; each asks its own question of the context
    d_head: int = 0  # query/key size per head, d_head << d_model; 0 (or None): d_model // n_heads
    n_layers: int = 12  # blocks of attention + MLP; depth
    d_mlp: int = 0  # hidden width of each MLP; 0 (or None): 4 * d_model (GPT-2, BERT)
    n_kv_heads: int = 0  # key/value heads, shared by groups of query heads; 0 (or None): n_heads
    causal: bool = True  # decoder (GPT): later tokens never inform earlier ones; False: encoder
    norm: str = "pre"  # "pre": normalise before each sublayer (GPT-2, Llama); "post": after (BERT)
    normalization: str = "layernorm"  # "layernorm" (centre and scale) or "rmsnorm" (scale, Llama)
    activation: str = "gelu_tanh"  # "gelu_tanh" (GPT-2), "gelu" (BERT), "relu", "silu" (Llama)
    mlp: str = "plain"  # "plain": act(x·W_up); "gated": act(x·W_gate) * x·W_up (SwiGLU with silu)
    positions: str = "learned"  # "learned": rows added to E (GPT-2); "rotary": Q, K rotated (Llama)
    rope_base: float = 10000.0  # rotary: the slowest pair turns once per ~2π·base tokens
    bias: bool = True  # biases in linear layers and norms; off is slightly faster and smaller
    tied_unembedding: bool = True  # W_U = W_Eᵀ saves vocab·d_model parameters; False: own matrix
    norm_eps: float = 1e-5  # epsilon in the norms: 1e-5 for GPT-2 and Llama, 1e-12 for BERT
    type_vocab_size: int = 0  # BERT's token-type (segment) embeddings; 0 means none
    dropout: float = 0.0  # on embeddings, pattern and sublayer outputs; 0 for inference

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise GlassformerError(f"invalid model config: {msg}")

        for name in ("vocab_size", "context_length", "d_model", "n_heads", "n_layers"):
            if not _count(getattr(self, name)):
                bad(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        # given as 0 or None, or worked out for another config (Derived): follows the others
        follows = lambda name: getattr(self, name) in (0, None) or isinstance(getattr(self, name), Derived)  # noqa: E731
        if follows("d_head"):
            if self.d_model % self.n_heads:
                bad(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}; pass d_head explicitly")
            object.__setattr__(self, "d_head", Derived(self.d_model // self.n_heads))
        if follows("d_mlp"):
            object.__setattr__(self, "d_mlp", Derived(4 * self.d_model))
        if follows("n_kv_heads"):
            object.__setattr__(self, "n_kv_heads", Derived(self.n_heads))
        for name in ("d_head", "d_mlp", "n_kv_heads"):
            if not _count(getattr(self, name)):
                bad(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.n_heads % self.n_kv_heads:
            bad(f"n_kv_heads {self.n_kv_heads} must divide n_heads {self.n_heads}")
        type_vocab = self.type_vocab_size
        if not isinstance(type_vocab, int) or isinstance(type_vocab, bool) or type_vocab < 0:
            bad(f"type_vocab_size must be >= 0, got {type_vocab!r}")
        for name, allowed in (
            ("norm", NORM_PLACES),
            ("normalization", NORM_KINDS),
            ("activation", ACTIVATION_FUNCTIONS),
            ("mlp", MLP_KINDS),
            ("positions", POSITION_KINDS),
        ):
            if getattr(self, name) not in allowed:
                bad(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("norm_eps", "rope_base"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                bad(f"{name} must be a positive number, got {value!r}")
        if self.positions == "rotary" and self.d_head % 2:
            bad(f"rotary positions turn pairs of numbers: d_head must be even, got {self.d_head}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            bad(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("causal", "bias", "tied_unembedding"):
            if not isinstance(getattr(self, name), bool):
                bad(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def group_size(self) -> int:
        """How many query heads read each key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    def replace(self, **changes) -> ModelConfig:
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
    def from_dict(cls, data: dict) -> ModelConfig:
        if not isinstance(data, dict):
            raise GlassformerError(f"a model config is a JSON object, not {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise GlassformerError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as err:  # a comparison of a wrong type inside validation
            raise GlassformerError(f"invalid model config: {err}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


_GPT2: dict[str, Any] = dict(vocab_size=50257, context_length=1024, activation="gelu_tanh", norm="pre", causal=True)
_BERT: dict[str, Any] = dict(
    causal=False,
    norm="post",
    activation="gelu",
    tied_unembedding=False,
    norm_eps=1e-12,
    type_vocab_size=2,
    vocab_size=30522,
    context_length=512,
)
# what makes a Llama-family model (the converters of HF and GGUF files read the rest)
LLAMA_FAMILY: dict[str, Any] = dict(
    causal=True,
    norm="pre",
    normalization="rmsnorm",
    activation="silu",
    mlp="gated",
    positions="rotary",
    bias=False,
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
    # the Llama family: 9 query heads share 3 key/value heads in SmolLM2
    "smollm2-135m": ModelConfig(
        **LLAMA_FAMILY,
        vocab_size=49152,
        context_length=8192,
        d_model=576,
        n_heads=9,
        n_kv_heads=3,
        n_layers=30,
        d_mlp=1536,
        rope_base=100000.0,
    ),  # 135M
    # small sizes for lessons and experiments; vocab 256 so raw bytes fit until a tokenizer sets it
    "lesson-tiny": ModelConfig(vocab_size=256, context_length=64, d_model=64, n_heads=4, n_layers=2),  # 0.1M
    "lesson-llama": ModelConfig(
        **LLAMA_FAMILY, vocab_size=256, context_length=64, d_model=64, n_heads=4, n_layers=2
    ),  # 0.1M, the Llama family in small: both lessons (rotary positions let a previous-token
    # head form where learned position rows did not, in 8,000 steps; and let the adjectives
    # lesson's head find adjectives where learned rows averaged a fixed window of words)
    "lesson-small": ModelConfig(vocab_size=256, context_length=128, d_model=128, n_heads=4, n_layers=4),  # 0.8M
    "shakespeare-char": ModelConfig(
        vocab_size=65,
        context_length=64,
        d_model=128,
        n_heads=4,
        n_layers=4,
        bias=False,
        activation="gelu",
        tied_unembedding=False,
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
        raise GlassformerError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


__all__ = ["PRESETS", "SHAPE_ONLY", "Derived", "GlassformerError", "ModelConfig", "preset"]
