"""JSON as glassformer writes it, for the explorer, a page and `--json`: compact, and
never NaN or infinity, which JSON cannot carry. A number that overflowed is a
GlassformerError, or null where the caller asks for that (`nulls=True`: a head not
measured). A token's text can hold a lone surrogate (half of a character a byte-level
tokenizer split), which UTF-8 cannot encode: such an answer is written with \\u escapes."""

from __future__ import annotations

import json
import math

from .config import GlassformerError

OVERFLOW = "this model's numbers overflowed to NaN or infinity on this text; nothing can be shown"


def to_bytes(value, *, nulls: bool = False) -> bytes:
    """`value` as compact UTF-8 JSON."""
    try:
        return _dumps(value, nulls, ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate
        return _dumps(value, nulls, ascii=True).encode()


def to_text(value, *, nulls: bool = False) -> str:
    """`value` as compact JSON text that can always be encoded as UTF-8 (printed, written)."""
    return to_bytes(value, nulls=nulls).decode()


def _dumps(value, nulls: bool, ascii: bool) -> str:
    try:
        return json.dumps(finite(value) if nulls else value, ensure_ascii=ascii, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise GlassformerError(OVERFLOW) from None


def finite(value):
    """`value` with every float that is not a number (NaN, ±infinity) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
