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

import dataclasses
import hashlib
import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import LLAMA_FAMILY, GlassformerError, ModelConfig
from ..params import check_fits
from ..tokenizer import HFTokenizer
from . import dequant, weights_cache

ARCHITECTURES = ("llama",)
TOKENIZER_MODELS = ("gpt2",)  # byte-level BPE, as GPT-2 and SmolLM2 use

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


# The file's layout (GGUF v2 and v3, little-endian): magic, version u32, tensor count u64,
# metadata count u64; each metadata entry a key string, a value type u32 and the value;
# each tensor a name, a dimension count u32, the dimensions u64 (fastest first), a type u32
# and an offset u64 into the data, which starts at the next multiple of general.alignment.
# Strings are a length u64 and UTF-8 bytes. Every count and length is checked against the
# bytes the file has left before anything is read or allocated, and arrays of numbers are
# read in one piece: a crafted count cannot make the reader run or grow without bound.
_SCALARS = {
    0: "<u1",
    1: "<i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "<u1",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}
_STRING, _ARRAY, _BOOL = 8, 9, 7
MAX_DIMS = 4  # llama.cpp's GGML_MAX_DIMS


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type_id: int
    shape: tuple[int, ...]  # ours: slowest axis first ([out, in] for a matrix)
    start: int  # byte offset in the file
    n_bytes: int

    @property
    def n_numbers(self) -> int:
        return math.prod(self.shape)


class GGUFFile:
    """A GGUF file's metadata and tensor table, read and checked; the tensors' bytes are
    read only when asked for (`raw`), from a memory map."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                self.stat = os.fstat(f.fileno())
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.stat.st_size else None
        except (OSError, ValueError) as err:
            raise GlassformerError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
        self.size = self.stat.st_size
        self._buf = memoryview(self._map) if self._map is not None else memoryview(b"")
        if bytes(self._buf[:4]) != b"GGUF":
            raise GlassformerError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
        self.fields: dict[str, Any] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self._at = 4
        self._parse()
        self.header_digest = hashlib.sha256(self._buf[: self.data_start]).hexdigest()

    # --- reading, every size checked first ----------------------------------------------
    def _damaged(self, why: str) -> GlassformerError:
        return GlassformerError(f"{self.path} is a damaged or truncated GGUF file ({why})")

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self._at + n > self.size:
            raise self._damaged(f"{what} needs {n:,} bytes at byte {self._at:,}, past the end of its {self.size:,}")

    def _numbers(self, dtype: str, count: int, what: str) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        self._need(count * item, what)
        values = np.frombuffer(self._buf, dtype=dtype, count=count, offset=self._at)
        self._at += count * item
        return values

    def _u32(self, what: str) -> int:
        return int(self._numbers("<u4", 1, what)[0])

    def _u64(self, what: str) -> int:
        return int(self._numbers("<u8", 1, what)[0])

    def _string(self, what: str) -> str:
        n = self._u64(what)
        self._need(n, what)
        raw = bytes(self._buf[self._at : self._at + n])
        self._at += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._damaged(f"{what} is not UTF-8 text") from None

    def _strings(self, count: int, what: str) -> list[str]:
        """`count` strings in a row (a vocabulary: tens of thousands), in one tight loop."""
        buf, at, size, out = self._map, self._at, self.size, []
        assert buf is not None
        try:
            for _ in range(count):
                n = int.from_bytes(buf[at : at + 8], "little")
                if at + 8 + n > size:
                    raise self._damaged(f"{what} runs past the end of the file")
                out.append(buf[at + 8 : at + 8 + n].decode("utf-8"))
                at += 8 + n
        except UnicodeDecodeError:
            raise self._damaged(f"{what} holds text that is not UTF-8") from None
        self._at = at
        return out

    def _value(self, kind: int, what: str) -> Any:
        if kind == _STRING:
            return self._string(what)
        if kind in _SCALARS:
            value = self._numbers(_SCALARS[kind], 1, what)[0].item()
            return bool(value) if kind == _BOOL else value
        if kind != _ARRAY:
            raise self._damaged(f"{what} has an unknown value type {kind}")
        item, count = self._u32(what), self._u64(what)
        if item == _STRING:
            self._need(count * 8, what)  # each string is at least its 8-byte length
            return self._strings(count, what)
        if item not in _SCALARS:
            raise self._damaged(f"{what} is an array of value type {item}, which glassformer does not read")
        values = self._numbers(_SCALARS[item], count, what)
        return values.astype(bool) if item == _BOOL else values

    def _parse(self) -> None:
        version = self._u32("the version")
        if version not in (2, 3):
            raise GlassformerError(f"{self.path} is GGUF version {version}; glassformer reads versions 2 and 3")
        n_tensors, n_fields = self._u64("the tensor count"), self._u64("the metadata count")
        self._need(n_fields * 13 + n_tensors * 24, f"{n_fields:,} metadata entries and {n_tensors:,} tensors")
        for _ in range(n_fields):
            key = self._string("a metadata key")
            if key in self.fields:
                raise self._damaged(f"the metadata key {key} appears twice")
            self.fields[key] = self._value(self._u32(key), key)
        table = [self._tensor_entry() for _ in range(n_tensors)]
        alignment = self.fields.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
            raise self._damaged(f"general.alignment {alignment!r} is not a power of two")
        self.data_start = -(-self._at // alignment) * alignment
        for name, type_id, dims, offset in table:
            self._add_tensor(name, type_id, dims, offset)

    def _tensor_entry(self) -> tuple[str, int, list[int], int]:
        name = self._string("a tensor name")
        n_dims = self._u32(name)
        if not 1 <= n_dims <= MAX_DIMS:
            raise self._damaged(f"tensor {name} has {n_dims} dimensions")
        dims = [int(d) for d in self._numbers("<u8", n_dims, name)]
        return name, self._u32(name), dims, self._u64(name)

    def _add_tensor(self, name: str, type_id: int, dims: list[int], offset: int) -> None:
        if name in self.tensors:
            raise self._damaged(f"tensor {name} appears twice")
        shape = tuple(reversed(dims))  # GGUF lists the fastest axis first
        info = TensorInfo(name, type_id, shape, self.data_start + offset, 0)
        if type_id in dequant.TYPES:
            block = dequant.TYPES[type_id][1]
            if dims[0] % block:
                raise self._damaged(f"tensor {name}'s rows of {dims[0]} numbers are not whole blocks of {block}")
            info = dataclasses.replace(info, n_bytes=dequant.n_bytes(type_id, info.n_numbers))
            # Python integers: an offset near 2**64 is simply past the end, with no overflow
            if info.start + info.n_bytes > self.size:
                raise self._damaged(f"tensor {name} lies past the end of the file")
        self.tensors[name] = info

    def raw(self, info: TensorInfo) -> np.ndarray:
        """The tensor's bytes, read-only, straight from the memory map."""
        return np.frombuffer(self._buf, dtype=np.uint8, count=info.n_bytes, offset=info.start)


def open_file(path: Path) -> GGUFFile:
    """The file's metadata and tensor table, or one line on why it cannot be read."""
    return GGUFFile(path)


def _field(reader: GGUFFile, key: str, default=None):
    return reader.fields.get(key, default)


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

    embedding = reader.tensors.get("token_embd.weight")
    if embedding is None:
        raise GlassformerError(f"{path} has no token_embd.weight tensor")
    if len(embedding.shape) != 2:
        raise GlassformerError(f"{path}: token_embd.weight has shape {list(embedding.shape)}, not two axes")
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
            vocab_size=embedding.shape[0],  # [V, C]
            context_length=int(need("context_length")),
            d_model=d_model,
            n_heads=heads,
            n_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", heads)),
            d_head=d_head,
            n_layers=int(need("block_count")),
            d_mlp=int(need("feed_forward_length")),
            **LLAMA_FAMILY,
            rope_base=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
            tied_unembedding="output.weight" not in reader.tensors,
            norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        )
    except (TypeError, ValueError) as err:
        raise GlassformerError(f"{path}: its llama.* metadata does not describe a model ({err})") from None


def unpermute(W_OC: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of a query or key matrix's rows (see the module docstring):
    within each head, rows (0, 1), (2, 3), ... go back to (0, D/2), (1, D/2 + 1), ..."""
    out, C = W_OC.shape
    D = out // heads
    return W_OC.reshape(heads, D // 2, 2, C).swapaxes(1, 2).reshape(out, C)


# What a Llama's weights are stored as, in the cache and in memory: our tensors, except
# that each layer's W_Q|W_K|W_V and W_gate|W_up sit side by side in one [in, Σ out] matrix
# (cpu_decoder.side_by_side's layout), so the model's matrices are column blocks of them and the
# fast decoder multiplies by them without making a joined copy.
JOINED = {"attn.qkv": ("query", "key", "value"), "mlp.gate_up": ("gate", "up")}


def stored_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    V, C, M = config.vocab_size, config.d_model, config.d_mlp
    HD, KD = config.n_heads * config.d_head, config.n_kv_heads * config.d_head
    shapes: dict[str, tuple[int, ...]] = {"embed.W_E.weight": (V, C), "ln_final.weight": (C,)}
    for i in range(config.n_layers):
        b = f"blocks.{i}."
        shapes |= {
            b + "ln1.weight": (C,),
            b + "attn.qkv": (C, HD + 2 * KD),
            b + "attn.output.weight": (HD, C),
            b + "ln2.weight": (C,),
            b + "mlp.gate_up": (C, 2 * M),
            b + "mlp.down.weight": (M, C),
        }
    if not config.tied_unembedding:
        shapes["unembed.weight"] = (V, C)
    return shapes


Sources = dict[str, list[tuple[str, tuple[int, ...], int]]]


def _sources(config: ModelConfig) -> Sources:
    """Stored tensor -> its GGUF tensors: (name, GGUF shape [out, in] or [n], heads to
    un-permute or 0), in column order; a matrix is transposed into [in, out] on the way."""
    V, C, M = config.vocab_size, config.d_model, config.d_mlp
    H, K, D = config.n_heads, config.n_kv_heads, config.d_head
    out: Sources = {
        "embed.W_E.weight": [("token_embd.weight", (V, C), 0)],
        "ln_final.weight": [("output_norm.weight", (C,), 0)],
    }
    for i in range(config.n_layers):
        g, b = f"blk.{i}.", f"blocks.{i}."
        out |= {
            b + "ln1.weight": [(g + "attn_norm.weight", (C,), 0)],
            b + "attn.qkv": [(g + "attn_q.weight", (H * D, C), H), (g + "attn_k.weight", (K * D, C), K),
                             (g + "attn_v.weight", (K * D, C), 0)],
            b + "attn.output.weight": [(g + "attn_output.weight", (C, H * D), 0)],
            b + "ln2.weight": [(g + "ffn_norm.weight", (C,), 0)],
            b + "mlp.gate_up": [(g + "ffn_gate.weight", (M, C), 0), (g + "ffn_up.weight", (M, C), 0)],
            b + "mlp.down.weight": [(g + "ffn_down.weight", (C, M), 0)],
        }  # fmt: skip
    if not config.tied_unembedding:
        out["unembed.weight"] = [("output.weight", (V, C), 0)]
    return out


def _check_tensors(reader: GGUFFile, sources: dict) -> None:
    """Every tensor the model needs is there, of the right shape and a type we read, and
    nothing else is: checked before a single number is decoded."""
    wanted = {name: shape for parts in sources.values() for name, shape, _ in parts}
    for name, shape in wanted.items():
        info = reader.tensors.get(name)
        if info is None:
            raise GlassformerError(f"GGUF weights are missing tensor {name!r}")
        if info.shape != tuple(shape):
            raise GlassformerError(f"GGUF tensor {name!r} has shape {list(info.shape)}, expected {list(shape)}")
        if info.type_id not in dequant.TYPES:
            raise GlassformerError(
                f"tensor {name} is stored as {dequant.type_name(info.type_id)}, which glassformer cannot read; "
                f"supported: {', '.join(t[0] for t in dequant.TYPES.values())}"
            )
    unused = sorted(set(reader.tensors) - set(wanted))
    if unused:
        raise GlassformerError(
            f"GGUF weights have {len(unused)} tensor(s) this converter does not understand, e.g. {unused[0]!r}"
        )


def _fill(reader: GGUFFile, sources: dict, arrays: dict[str, np.ndarray]) -> None:
    """Decode every GGUF tensor into its place among the stored arrays."""
    from tqdm.auto import tqdm

    for stored, parts in tqdm(
        sources.items(), desc="converting the GGUF weights", unit="tensor", leave=False, disable=None
    ):
        dest = arrays[stored]
        if dest.ndim == 1 or stored in ("embed.W_E.weight", "unembed.weight"):  # stored as GGUF stores it
            ((name, _, _),) = parts
            _decode(reader, name, dest)
            continue
        column = 0
        for name, (rows, cols), heads in parts:
            tmp = np.empty((rows, cols), dtype=np.float32)  # one matrix: a few MB at most
            _decode(reader, name, tmp)
            if heads:
                tmp = unpermute(tmp, heads)
            # [out, in] -> columns of the [in, out] matrix: transposed whole first, then
            # copied row by row (a strided copy straight from tmp.T was 10x slower here)
            dest[:, column : column + rows] = np.ascontiguousarray(tmp.T)
            column += rows


def _decode(reader: GGUFFile, name: str, out: np.ndarray) -> None:
    info = reader.tensors[name]
    try:
        dequant.dequantize_into(reader.raw(info), info.type_id, out)
    except (ValueError, TypeError, OverflowError) as err:  # a block cut short
        raise GlassformerError(f"tensor {name} cannot be decoded ({type(err).__name__}); the file is damaged") from None
    # checked here, while the numbers are fresh in the CPU's cache; a NaN or ±inf survives
    # any sum, and only a sum that overflows needs the element-wise look
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(out.sum(dtype=np.float32)) or np.isfinite(out).all()
    if not finite:
        raise GlassformerError(f"tensor {name!r} holds NaN or infinite numbers: these weights cannot be run")


def state_of(reader: GGUFFile, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict: every tensor of the file dequantized (or mapped from the weights
    cache), renamed and checked. Joined matrices are split into column views."""
    sources = _sources(config)
    _check_tensors(reader, sources)
    check_fits(config)  # before any memory is taken: the shapes above are the config's
    key = weights_cache.source_key(reader.path, reader.header_digest)
    stored = weights_cache.load_or_build(
        reader.path, key, stored_shapes(config), lambda arrays: _fill(reader, sources, arrays)
    )
    ours = {}
    for name, tensor in stored.items():
        joined = next((j for j in JOINED if name.endswith(j)), None)
        if joined is None:
            ours[name] = tensor
            continue
        prefix, column = name.removesuffix(joined), 0
        parts = JOINED[joined]
        for part, width in zip(parts, _widths(config, joined)):
            ours[f"{prefix}{joined.split('.')[0]}.{part}.weight"] = tensor[:, column : column + width]
            column += width
    return ours


def _widths(config: ModelConfig, joined: str) -> tuple[int, ...]:
    HD, KD = config.n_heads * config.d_head, config.n_kv_heads * config.d_head
    return (HD, KD, KD) if joined == "attn.qkv" else (config.d_mlp, config.d_mlp)


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
    kinds = _field(reader, "tokenizer.ggml.token_type")
    kinds = [] if kinds is None else kinds
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


def read(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], HFTokenizer, str]:
    """(config, our state dict, tokenizer, the weights' cache key) of a GGUF file."""
    reader = open_file(path)
    config = config_of(reader, path)
    check_fits(config)
    tokenizer = tokenizer_of(reader, path)  # before the tensors: a bad tokenizer fails fast
    return config, state_of(reader, config), tokenizer, weights_cache.source_key(path, reader.header_digest)


def read_config(path: Path) -> ModelConfig:
    return config_of(open_file(path), path)
