"""GGUF tensor data -> float32, written straight into a destination array, in chunks.

A quantized tensor is a run of blocks: each holds `block` numbers in `size` bytes (a scale,
sometimes a minimum, and small integers). F32, F16, BF16, Q8_0, Q4_0 and Q4_1 are decoded
here in whole chunks of blocks with numpy (the same float32 operations, in the same order,
as the gguf package's reference decoder, so the numbers are the same bit for bit); the
other types go through the gguf package's decoder, also a chunk at a time. Chunks keep the
temporaries small: the largest tensor (the token embedding) never exists twice.
"""

from __future__ import annotations

import numpy as np

# type id -> (name, numbers per block, bytes per block), the ones glassformer reads
TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    30: ("BF16", 1, 2),
    8: ("Q8_0", 32, 34),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
}
CHUNK = 1 << 20  # numbers decoded at a time: 4 MB of float32 and a few temporaries of that size


def type_name(type_id: int) -> str:
    """The name llama.cpp gives a tensor type, for messages (also the ones we do not read)."""
    if type_id in TYPES:
        return TYPES[type_id][0]
    try:
        from gguf.constants import GGMLQuantizationType

        return GGMLQuantizationType(type_id).name
    except (ImportError, ValueError):
        return f"type {type_id}"


def n_bytes(type_id: int, n_numbers: int) -> int:
    _, block, size = TYPES[type_id]
    return n_numbers // block * size


def dequantize_into(raw: np.ndarray, type_id: int, out: np.ndarray) -> None:
    """Decode the bytes `raw` (uint8, exactly the tensor's data) into the float32 array
    `out` (any shape holding that many numbers, C-contiguous)."""
    name, block, size = TYPES[type_id]
    flat = out.reshape(-1)
    per_chunk = max(CHUNK // block, 1)  # blocks per chunk
    n_blocks = flat.size // block
    blocks = raw.reshape(n_blocks, size)
    decode = _DECODERS.get(name) or _gguf_decoder(type_id)
    for first in range(0, n_blocks, per_chunk):
        last = min(first + per_chunk, n_blocks)
        flat[first * block : last * block] = decode(blocks[first:last]).reshape(-1)


def _f32(b: np.ndarray) -> np.ndarray:
    return b.reshape(-1).view(np.float32)


def _f16(b: np.ndarray) -> np.ndarray:
    return b.reshape(-1).view(np.float16).astype(np.float32)


def _bf16(b: np.ndarray) -> np.ndarray:
    # bf16 is the top half of a float32: shift the 16 bits into place
    return (b.reshape(-1).view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def _scale(b: np.ndarray, at: int = 0) -> np.ndarray:
    """The fp16 number at byte `at` of each block, as a float32 column."""
    return np.ascontiguousarray(b[:, at : at + 2]).view(np.float16).astype(np.float32)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """[n, 16] bytes -> [n, 32] numbers 0..15: the low halves first, then the high ones."""
    return np.concatenate([q & np.uint8(0x0F), q >> np.uint8(4)], axis=1).astype(np.float32)


def _q8_0(b: np.ndarray) -> np.ndarray:
    return b[:, 2:].view(np.int8).astype(np.float32) * _scale(b)


def _q4_0(b: np.ndarray) -> np.ndarray:
    return (_nibbles(b[:, 2:]) - np.float32(8)) * _scale(b)


def _q4_1(b: np.ndarray) -> np.ndarray:
    return (_scale(b) * _nibbles(b[:, 4:])) + _scale(b, 2)


_DECODERS = {"F32": _f32, "F16": _f16, "BF16": _bf16, "Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_1": _q4_1}


def _gguf_decoder(type_id: int):
    from gguf import quants
    from gguf.constants import GGMLQuantizationType

    kind = GGMLQuantizationType(type_id)
    return lambda blocks: quants.dequantize(np.ascontiguousarray(blocks), kind)
