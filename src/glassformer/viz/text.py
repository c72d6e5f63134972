"""Terminal renderings: compact views of vectors and grids with token labels.

Grids are drawn in the video's orientation by default: keys down the side,
queries across the top, so each column of a pattern sums to 1.
"""

from __future__ import annotations

import torch

from ..inspect.explain import HeadWalk, Step

MAX_TOKENS = 16  # rows/columns shown before a grid is cut
MAX_NUMS = 6  # numbers shown per vector


def label(token: str, width: int = 8) -> str:
    shown = token.replace("\n", "⏎").replace("\t", "⇥")
    shown = shown if shown.strip() else repr(shown)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def fmt(x: float) -> str:
    if x == float("-inf"):
        return "-∞"
    return f"{x:+.2f}"


def vectors(tensor: torch.Tensor, row_labels: list[str] | None) -> list[str]:
    """One line per row: its first numbers and its length."""
    lines = []
    n_rows = tensor.shape[0]
    show = range(min(n_rows, MAX_TOKENS))
    for r in show:
        row = tensor[r]
        nums = " ".join(f"{v:+.2f}" for v in row[:MAX_NUMS].tolist())
        more = " …" if row.numel() > MAX_NUMS else ""
        name = label(row_labels[r]) if row_labels else f"[{r}]"
        lines.append(f"  {name:>8} [{nums}{more}]  |·|={row.norm().item():.2f}")
    if n_rows > MAX_TOKENS:
        lines.append(f"  … {n_rows - MAX_TOKENS} more rows")
    return lines


def grid(tensor_TS: torch.Tensor, tokens: list[str], *, video: bool = True) -> list[str]:
    """A query×key grid. video=True: keys down the side, queries across the top."""
    g = tensor_TS.T if video else tensor_TS
    n = min(len(tokens), MAX_TOKENS)
    g = g[:n, :n]
    side, top = ("key", "query") if video else ("query", "key")
    head = f"  {side + ' ↓ / ' + top + ' →':>16} " + " ".join(f"{label(t, 6):>6}" for t in tokens[:n])
    lines = [head]
    for r in range(n):
        cells = " ".join(f"{fmt(v):>6}" for v in g[r].tolist())
        lines.append(f"  {label(tokens[r]):>16} {cells}")
    if len(tokens) > MAX_TOKENS:
        lines.append(f"  … cut to the first {MAX_TOKENS} of {len(tokens)} tokens")
    return lines


def render_step(step: Step, walk: HeadWalk, *, video: bool = True) -> list[str]:
    shape = " × ".join(f"{n} {w}" for n, w in zip(step.tensor.shape, (step.rows, step.cols)))
    lines = [f"{step.symbol}   {step.title}   [{shape}]", f"  {step.meaning}"]
    if step.rows == "query":
        lines += grid(step.tensor, walk.tokens, video=video)
    elif step.rows == "token":
        lines += vectors(step.tensor, walk.tokens)
    else:  # a weight matrix: a corner of it
        lines += vectors(step.tensor[:4], None) + ["  …"]
    return lines


def render_walk(walk: HeadWalk, *, video: bool = True) -> str:
    orient = (
        "video orientation: keys down the side, queries across the top; columns sum to 1"
        if video
        else "usual orientation: queries down the side, keys across; rows sum to 1"
    )
    out = [
        f"layer {walk.layer}, head {walk.head}: {len(walk.tokens)} tokens "
        + " ".join(f"[{label(t, 12)}]" for t in walk.tokens),
        f"({orient})",
        "",
    ]
    for step in walk.steps:
        out += render_step(step, walk, video=video) + [""]
    dE = walk.dE.tensor.norm(dim=-1)
    E = walk.E.tensor.norm(dim=-1)
    moved = max(range(len(walk.tokens)), key=lambda i: (dE[i] / E[i].clamp(min=1e-9)).item())
    out.append(
        f"This head moves [{label(walk.tokens[moved], 12)}] the most: |ΔE|/|E| = "
        f"{(dE[moved] / E[moved].clamp(min=1e-9)).item():.2f}."
    )
    return "\n".join(out)
