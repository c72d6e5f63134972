"""How much one request may ask of a model, judged before anything is computed, and how
much of it travels back.

A forward pass that keeps its attention patterns holds layers × heads × tokens² weights
(SmolLM2 on 2,000 tokens: 1.08 billion, 4.3 GB in fp32), so a text is refused (413) when
that product is over MAX_WEIGHTS, with a line naming the most tokens this model takes.
What is sent is what the page draws: each head's thumbnail at most THUMB × THUMB pixels,
and the grids of one head only for a window of WINDOW queries around the one followed.
"""

from __future__ import annotations

import math

from ..inputs import encode

MAX_WEIGHTS = 2**26  # 67 million weights, 256 MiB in fp32: SmolLM2 (30 × 9 heads) takes 498 tokens
THUMB = 64  # a thumbnail's side in pixels, at most
WINDOW = 64  # the query rows of one head's grids sent at once


class TooLong(Exception):
    """The text asks for more attention weights than MAX_WEIGHTS: 413."""


def max_tokens(config) -> int:
    """The longest text, in tokens, this model may be shown on."""
    return math.isqrt(MAX_WEIGHTS // (config.n_layers * config.n_heads))


def check_text(model, text: str) -> int:
    """The number of tokens in `text`, or TooLong (the text's cost and the limit)."""
    n = len(encode(model, text))
    c = model.config
    most = max_tokens(c)
    if n > most:
        raise TooLong(
            f"this text is {n} tokens; the explorer shows at most {most} tokens on this model "
            f"({c.n_layers} layers × {c.n_heads} heads × tokens² ≤ {MAX_WEIGHTS:,} attention weights): "
            "shorten the text"
        )
    return n


def window(n: int, focus: int, size: int = WINDOW) -> tuple[int, int]:
    """[start, stop): `size` positions of 0..n-1 around `focus` (all of them when n ≤ size)."""
    if n <= size:
        return 0, n
    start = min(max(0, focus - size // 2), n - size)
    return start, start + size
