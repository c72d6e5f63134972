"""GGUF files (llama.cpp's format) for the Llama family: tensors dequantized to float32,
the shape read from the metadata, the tokenizer rebuilt from the file's own vocabulary.

Read with the `gguf` package (llama.cpp's own Python reader; numpy only). Tensor map
(i = layer); GGUF stores each matrix as [out, in] rows, like torch.nn.Linear:

    ours                          GGUF                      change
    embed.W_E.weight              token_embd.weight         -
    blocks.i.ln1.weight           blk.i.attn_norm.weight    -
    blocks.i.attn.query.weight    blk.i.attn_q.weight       un-permute rows, transpose
    blocks.i.attn.key.weight      blk.i.attn_k.weight       un-permute rows, transpose
    blocks.i.attn.value.weight    blk.i.attn_v.weight       transpose
    blocks.i.attn.output.weight   blk.i.attn_output.weight  transpose
    blocks.i.ln2.weight           blk.i.ffn_norm.weight     -
    blocks.i.mlp.gate.weight      blk.i.ffn_gate.weight     transpose
    blocks.i.mlp.up.weight        blk.i.ffn_up.weight       transpose
    blocks.i.mlp.down.weight      blk.i.ffn_down.weight     transpose
    ln_final.weight               output_norm.weight        -
    unembed.weight                output.weight             absent when tied

Why un-permute: Hugging Face's rotary code pairs dimension j of a head with dimension
j + D/2; llama.cpp pairs neighbours (2j, 2j + 1). Its converter therefore reorders the
rows of W_Q and W_K, head by head, from [first half | second half] to interleaved pairs.
We put them back, so the rotation in attention.py reads the same as for a Hugging Face
Llama.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import GlassformerError, ModelConfig
from ..tokenizer import HFTokenizer
from ._common import Converter

ARCHITECTURES = ("llama",)
TOKENIZER_MODELS = ("gpt2",)  # byte-level BPE, as GPT-2 and SmolLM2 use
QUANT_TYPES = (
    "F32",
    "F16",
    "BF16",
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
)

# How each pre-tokenizer named by tokenizer.ggml.pre splits text before the merges apply.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {  # name -> (split digits one by one first, the split pattern)
    "default": (False, _GPT2_SPLIT),
    "gpt2": (False, _GPT2_SPLIT),
    "smollm": (True, _GPT2_SPLIT),  # SmolLM/SmolLM2: every digit its own piece, then GPT-2's split
    "llama-bpe": (False, _LLAMA3_SPLIT),
    "llama3": (False, _LLAMA3_SPLIT),
}


def open_file(path: Path):
    """The file's reader, or one line on why it cannot be read."""
    import gguf

    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise GlassformerError(f"cannot read {path}: {err.strerror or err}") from None
    if magic != b"GGUF":
        raise GlassformerError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as err:  # struct, numpy and memmap errors of a cut or damaged file
        raise GlassformerError(
            f"{path} is a damaged or truncated GGUF file ({type(err).__name__}: {str(err)[:120]})"
        ) from None


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    try:
        return field.contents()
    except Exception as err:
        raise GlassformerError(f"the GGUF metadata field {key} cannot be read ({err})") from None


def config_of(reader, path: Path) -> ModelConfig:
    """Our config from the file's llama.* metadata (and the embedding's shape)."""
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise GlassformerError(
            f"{path} holds a {arch!r} model; supported GGUF architectures: {', '.join(ARCHITECTURES)}"
        )
    scaling = _field(reader, f"{arch}.rope.scaling.type", "none")
    factor = _field(reader, f"{arch}.rope.scaling.factor", 1.0)
    if scaling not in ("none", "linear") or factor != 1.0:
        raise GlassformerError(
            f"{path}: rope scaling {scaling!r} with factor {factor!r} is not supported (only plain rotary positions)"
        )

    def need(key: str):
        value = _field(reader, f"{arch}.{key}")
        if value is None:
            raise GlassformerError(f"{path} lacks the metadata field {arch}.{key}")
        return value

    embedding = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embedding is None:
        raise GlassformerError(f"{path} has no token_embd.weight tensor")
    if len(embedding.shape) != 2:
        raise GlassformerError(f"{path}: token_embd.weight has shape {[int(n) for n in embedding.shape]}, not two axes")
    names = {t.name for t in reader.tensors}
    try:
        d_model, heads = int(need("embedding_length")), int(need("attention.head_count"))
        if d_model < 1 or heads < 1:
            raise ValueError(f"embedding_length {d_model} and head_count {heads} must be at least 1")
        d_head = int(_field(reader, f"{arch}.attention.key_length", d_model // heads))
        rotary_dims = int(_field(reader, f"{arch}.rope.dimension_count", d_head))
        if rotary_dims != d_head:
            raise GlassformerError(
                f"{path}: rotary positions on {rotary_dims} of {d_head} dimensions are not supported"
            )
        return ModelConfig(
            vocab_size=int(embedding.shape[1]),  # GGUF lists shapes fastest axis first: [C, V]
            context_length=int(need("context_length")),
            d_model=d_model,
            n_heads=heads,
            n_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", heads)),
            d_head=d_head,
            n_layers=int(need("block_count")),
            d_mlp=int(need("feed_forward_length")),
            causal=True,
            norm="pre",
            normalization="rmsnorm",
            activation="silu",
            mlp="gated",
            positions="rotary",
            rope_base=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
            bias=False,
            tied_unembedding="output.weight" not in names,
            norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        )
    except (TypeError, ValueError) as err:
        raise GlassformerError(f"{path}: its llama.* metadata does not describe a model ({err})") from None


def _dequantized(tensor) -> torch.Tensor:
    """One tensor as float32, [out, in] for matrices."""
    from gguf import quants

    kind = tensor.tensor_type.name
    if kind not in QUANT_TYPES:
        raise GlassformerError(
            f"tensor {tensor.name} is stored as {kind}, which glassformer cannot read; "
            f"supported: {', '.join(QUANT_TYPES)}"
        )
    try:
        values = quants.dequantize(tensor.data, tensor.tensor_type)
    except Exception as err:  # a block cut short
        raise GlassformerError(
            f"tensor {tensor.name} cannot be decoded ({type(err).__name__}); the file is damaged"
        ) from None
    # a copy: F32 tensors come as read-only views of the memory-mapped file
    return torch.from_numpy(np.array(values, dtype=np.float32))


def unpermute(W_OC: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of a query or key matrix's rows (see the module docstring):
    within each head, rows (0, 1), (2, 3), ... go back to (0, D/2), (1, D/2 + 1), ..."""
    out, C = W_OC.shape
    D = out // heads
    return W_OC.reshape(heads, D // 2, 2, C).transpose(1, 2).reshape(out, C)


def state_of(reader, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict: every tensor of the file dequantized, renamed and checked."""
    c = Converter({t.name: t for t in reader.tensors}, "GGUF", convert=_dequantized, shape_of=_shape)
    V, C, M = config.vocab_size, config.d_model, config.d_mlp
    H, K, D = config.n_heads, config.n_kv_heads, config.d_head
    ours = {
        "embed.W_E.weight": c.take("token_embd.weight", (V, C)),
        "ln_final.weight": c.take("output_norm.weight", (C,)),
    }
    for i in range(config.n_layers):
        g, b = f"blk.{i}.", f"blocks.{i}."
        ours |= {
            b + "ln1.weight": c.take(g + "attn_norm.weight", (C,)),
            b + "attn.query.weight": unpermute(c.take(g + "attn_q.weight", (H * D, C)), H).T,
            b + "attn.key.weight": unpermute(c.take(g + "attn_k.weight", (K * D, C)), K).T,
            b + "attn.value.weight": c.take(g + "attn_v.weight", (K * D, C)).T,
            b + "attn.output.weight": c.take(g + "attn_output.weight", (C, H * D)).T,
            b + "ln2.weight": c.take(g + "ffn_norm.weight", (C,)),
            b + "mlp.gate.weight": c.take(g + "ffn_gate.weight", (M, C)).T,
            b + "mlp.up.weight": c.take(g + "ffn_up.weight", (M, C)).T,
            b + "mlp.down.weight": c.take(g + "ffn_down.weight", (C, M)).T,
        }
    if not config.tied_unembedding:
        ours["unembed.weight"] = c.take("output.weight", (V, C))
    c.check_all_used()
    return {k: v.contiguous() for k, v in ours.items()}


def _shape(tensor) -> tuple[int, ...]:
    return tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists the fastest axis first


def tokenizer_of(reader, path: Path) -> HFTokenizer:
    """The byte-level BPE the file describes, built with the tokenizers library."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = _field(reader, "tokenizer.ggml.model")
    if kind not in TOKENIZER_MODELS:
        raise GlassformerError(
            f"{path} has a {kind!r} tokenizer; supported GGUF tokenizer models: {', '.join(TOKENIZER_MODELS)}"
        )
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise GlassformerError(
            f"{path}: pre-tokenizer {pre!r} is not supported; supported: {', '.join(PRE_TOKENIZERS)}"
        )
    tokens = _field(reader, "tokenizer.ggml.tokens")
    merges = _field(reader, "tokenizer.ggml.merges")
    if not isinstance(tokens, list) or not isinstance(merges, list):
        raise GlassformerError(f"{path} lacks tokenizer.ggml.tokens or tokenizer.ggml.merges")
    kinds = _field(reader, "tokenizer.ggml.token_type") or []
    if not all(isinstance(m, str) and m.count(" ") == 1 and " " not in (m[0], m[-1]) for m in merges):
        raise GlassformerError(f"{path}: tokenizer.ggml.merges holds an entry that is not two tokens and a space")
    try:
        tok = Tokenizer(
            models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(" ", 1)) for m in merges])
        )
    except Exception as err:  # the tokenizers library's own errors are plain Exceptions
        raise GlassformerError(f"{path}: its tokenizer cannot be built ({err})") from None
    digits, split = PRE_TOKENIZERS[pre]
    pieces = [
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]
    if digits:
        pieces.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(pieces)
    tok.decoder = decoders.ByteLevel()
    # control tokens (<|im_start|>, <|endoftext|>) are matched whole, never cut into bytes
    control = [t for t, k in zip(tokens, kinds) if k == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    if bos is not None and not (isinstance(bos, int) and 0 <= bos < len(tokens)):
        raise GlassformerError(f"{path}: tokenizer.ggml.bos_token_id {bos!r} is not one of its {len(tokens)} tokens")
    if _field(reader, "tokenizer.ggml.add_bos_token", False) and bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", pair=f"{tokens[bos]} $A $B", special_tokens=[(tokens[bos], bos)]
        )
    return HFTokenizer(tok)


def read(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], HFTokenizer]:
    """(config, our state dict, tokenizer) of a GGUF file."""
    reader = open_file(path)
    config = config_of(reader, path)
    tokenizer = tokenizer_of(reader, path)  # before the tensors: a bad tokenizer fails fast
    return config, state_of(reader, config), tokenizer


def read_config(path: Path) -> ModelConfig:
    return config_of(open_file(path), path)
