"""Chapters 5 and 7 drawn: word arithmetic, a direction, a plane of words, angles between
directions, and the toy model of superposition — as terminal text (80 columns or the
width given) and as labelled matplotlib pictures (Picture, from plots.py).
"""

from __future__ import annotations

import math

import numpy as np

from ..lab.embeddings import BAND, METHOD, Angles, Arithmetic, Plane, Projection
from ..lessons.superposition import REPRESENTED, Run, Settings
from .plots import Picture, _clean, _plt
from .text import display_width, label, pad, wrap


# --- terminal ------------------------------------------------------------------------------
def render_arithmetic(found: Arithmetic, width: int = 80) -> str:
    terms = " ".join(
        f"{'-' if t.weight < 0 else '+'} {'' if abs(t.weight) == 1 else f'{abs(t.weight):g}·'}[{label(tok, 14)}]"
        for t, tok in zip(found.terms, found.tokens)
    ).removeprefix("+ ")
    lines = [f"{found.matrix}: {terms}"]
    lines += wrap(f"({METHOD}; nearest by cosine)", width)
    if found.matrix == "W_U" and found.tied:
        lines += wrap("(this model ties W_U to W_Eᵀ: the same vectors as W_E)", width)
    lines.append("")
    lines.append(f"{'rank':>4}  {'token':<18} cosine")
    for rank, n in enumerate(found.nearest, 1):
        bar = "█" * max(0, round(n.cosine * 30))
        lines.append(f"{rank:>4}  {pad('[' + label(n.text, 16) + ']', 18, right=False)} {n.cosine:+.3f} {bar}"[:width])
    lines.append("")
    left = ", ".join(f"[{label(t, 14)}]".replace(" ", "\xa0") for t in found.left_out)  # no break inside [ king]
    lines += wrap(f"left out as the expression's own words (any case, with or without the space): {left}", width)
    return "\n".join(lines)


def render_projection(found: Projection, width: int = 80) -> str:
    lines = [f"{found.matrix}: each word's cosine with the direction ({found.direction})"]
    lines += wrap(f"({METHOD})", width)
    lines.append("")
    top = max(0.05, max(abs(v) for v in found.values))
    half = max(8, (width - 30) // 2)
    for tok, v in sorted(zip(found.tokens, found.values), key=lambda r: r[1]):
        n = round(abs(v) / top * half)
        bar = (" " * (half - n) + "█" * n + "│" + " " * half) if v < 0 else (" " * half + "│" + "█" * n)
        lines.append(f"{pad(label(tok, 14), 14)} {v:+.3f} {bar}".rstrip()[:width])
    lines.append(f"{'':14} {'':6} {'← less':<{half}}│{'more →':>{half}}"[:width])
    return "\n".join(lines)


def render_plane(found: Plane, width: int = 80, height: int = 17) -> str:
    """The words' two principal components as a scatter of labels on a character grid."""
    cols = max(30, width - 2)
    xs, ys = np.array([p[0] for p in found.xy]), np.array([p[1] for p in found.xy])
    span_x, span_y = float(np.ptp(xs)) or 1.0, float(np.ptp(ys)) or 1.0
    grid = [[" "] * cols for _ in range(height)]
    for tok, x, y in zip(found.tokens, xs, ys):
        name = "•" + label(tok.strip() or tok, 12)
        c = int((x - xs.min()) / span_x * (cols - display_width(name)))
        r = height - 1 - round((y - ys.min()) / span_y * (height - 1))
        for k, ch in enumerate(name):
            if c + k < cols:
                grid[r][c + k] = ch
    ex, ey = found.explained
    lines = [f"{found.matrix}: the words' two principal components (PCA)"]
    lines += wrap(f"({METHOD}; across: PC1, {ex:.0%} of the spread; up: PC2, {ey:.0%})", width)
    lines += ["┌" + "─" * cols + "┐"] + ["│" + "".join(row) + "│" for row in grid] + ["└" + "─" * cols + "┘"]
    return "\n".join(lines)


def render_angles(rows: list[Angles], fits: list[tuple[int, float, float, tuple[int, float] | None]]) -> str:
    """A table of angle statistics, then how many directions fit within 90° ± 1°."""
    lines = [f"angles between directions, in degrees ({len(rows)} sets)", ""]
    lines.append(f"{'directions':<30} {'mean':>6} {'std':>5} {'min':>6} {'max':>6} {'89-91°':>7}")
    for a in rows:
        s = a.summary()
        lines.append(
            f"{label(s['name'], 30):<30} {s['mean']:6.1f} {s['std']:5.2f} {s['min']:6.1f} {s['max']:6.1f} "
            f"{s['within_band']:7.1%}"
        )
    lines += ["", "how many directions fit with every pair within 90° ± 1° (or ± 5°):"]
    lines.append(f"{'dims':>7} {'random, ±1°':>12} {'random, ±5°':>13} {'built (two bases)':>22}")
    for dims, one, five, built in fits:
        made = f"{built[0]:,} within ±{built[1]:.2f}°" if built else "-"
        lines.append(f"{dims:>7,} {_count(one):>12} {_count(five):>13} {made:>22}")
    lines += wrap(
        "random: how many random directions can be drawn before one pair is expected to fall outside "
        "the band; it grows exponentially with the dimension (the Johnson-Lindenstrauss view). "
        "built: the axes plus the rows of a Hadamard matrix / √dims, more directions than dimensions.",
        78,
    )
    return "\n".join(lines)


def _count(n: float) -> str:
    return f"{n:,.0f}" if n < 1e7 else f"{n:.1e}"


def render_superposition(settings: Settings, runs: list[Run], width: int = 80) -> str:
    n, m = settings.features, settings.dims
    lines = [
        f"toy model of superposition: {n} features in {m} dimensions, x' = ReLU(WᵀW x + b)",
        *wrap(f"importance of feature i: {settings.decay:g}^i; best of 4 random starts; seed {settings.seed}", width),
        "",
    ]
    if m == 2:
        lines += _arrow_panels(runs, width)
        lines.append("")
    for run in runs:
        kept = run.represented()
        gaps = run.gaps()
        shape = f"; neighbours {', '.join(f'{g:.0f}°' for g in gaps)} apart" if gaps else ""
        lines += wrap(
            f"sparsity {run.sparsity:g}: {len(kept)} of {n} features kept{shape} (loss {run.loss:.4f})", width
        )
        norms = " ".join(f"{v:.2f}" for v in run.norms.tolist())
        lines += wrap(f"  |W_i|, feature 0 first: {norms}", width, "  ")
    lines += wrap(f"(a feature counts as kept when its column is at least {REPRESENTED} long)", width)
    return "\n".join(lines)


def _arrow_panels(runs: list[Run], width: int) -> list[str]:
    """One small character picture per sparsity, side by side: each column of W drawn as a
    line of dots from the centre with the feature's number at its tip."""
    per = max(13, min(23, (width - 1) // len(runs) - 1)) // 2 * 2 + 1  # odd, so there is a centre
    rows = per // 2 + 1 | 1
    panels = []
    for run in runs:
        grid = [[" "] * per for _ in range(rows)]
        cx, cy = per // 2, rows // 2
        grid[cy][cx] = "+"
        kept = run.represented()
        top = max(1.0, float(run.norms.max()))
        for i, (x, y) in enumerate(zip(run.W[0].tolist(), run.W[1].tolist())):
            length = math.hypot(x, y) / top
            if i not in kept:  # a feature the model dropped (its column ≈ 0) is listed, not drawn
                continue
            steps = max(2, int(length * cx))
            for s in range(1, steps + 1):
                c = cx + round(x / top * cx * s / steps)
                r = cy - round(y / top * cy * s / steps)
                grid[r][c] = str(i % 10) if s == steps else ("·" if grid[r][c] == " " else grid[r][c])
        title = f"S = {run.sparsity:g}"
        panels.append([pad(title, (per + len(title)) // 2, right=True).ljust(per)] + ["".join(r) for r in grid])
    return [" ".join(p[k] for p in panels) for k in range(len(panels[0]))]


# --- pictures ------------------------------------------------------------------------------
def plane_picture(found: Plane, title: str, arrows: list[tuple[int, int]] | None = None) -> Picture:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    xy = np.array(found.xy)
    ax.scatter(xy[:, 0], xy[:, 1], s=18, color="#1f5fbf")
    for tok, (x, y) in zip(found.tokens, xy):
        ax.annotate(_clean(tok, 16), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=9)
    for a, b in arrows or []:  # the video's parallel arrows: man -> woman beside king -> queen
        ax.annotate("", xy=xy[b], xytext=xy[a], arrowprops=dict(arrowstyle="->", color="#c0392b", lw=1.5))
    ex, ey = found.explained
    ax.set_xlabel(f"principal component 1 ({ex:.0%} of the spread)")
    ax.set_ylabel(f"principal component 2 ({ey:.0%} of the spread)")
    ax.axhline(0, color="#ccc", lw=0.5)
    ax.axvline(0, color="#ccc", lw=0.5)
    fig.suptitle(
        f"{title}\n{found.matrix} rows, centred and scaled to length 1, in their own 2-D PCA plane", fontsize=9
    )
    return Picture(fig, xy)


def projection_picture(found: Projection, title: str) -> Picture:
    plt = _plt()
    order = np.argsort(found.values)
    values = np.array(found.values)[order]
    names = [_clean(found.tokens[i], 16) for i in order]
    fig, ax = plt.subplots(figsize=(6.4, max(2.5, 0.3 * len(values) + 1.2)))
    ax.barh(range(len(values)), values, color=["#c0392b" if v < 0 else "#1f5fbf" for v in values])
    ax.set_yticks(range(len(values)), names, fontsize=9)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel(f"cosine with the direction ({found.direction}): right = more of it")
    fig.suptitle(f"{title}\n{found.matrix} rows, centred and scaled to length 1", fontsize=9)
    return Picture(fig, values)


def angles_picture(rows: list[Angles], title: str) -> Picture:
    plt = _plt()
    fig, axes = plt.subplots(len(rows), 1, figsize=(6.4, 1.5 * len(rows) + 0.8), sharex=True, squeeze=False)
    data = []
    for ax, a in zip(axes[:, 0], rows):
        counts, edges = np.histogram(a.degrees.numpy(), bins=180, range=(0, 180))
        data.append(counts)
        ax.bar(edges[:-1], counts / max(1, counts.sum()), width=1.0, align="edge", color="#1f5fbf")
        ax.axvspan(90 - BAND, 90 + BAND, color="#f5b041", alpha=0.5, lw=0, zorder=0)
        inside = a.summary()["within_band"]
        ax.set_ylabel("share", fontsize=8)
        ax.set_title(f"{a.name}: {a.vectors} directions, {inside:.1%} of pairs within 89-91°", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("angle between two directions (degrees); the orange band is 89-91°")
    axes[-1, 0].set_xticks(range(0, 181, 15))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return Picture(fig, np.array(data))


def superposition_picture(settings: Settings, runs: list[Run]) -> Picture:
    """W's columns as arrows, one panel per sparsity (2 dims); otherwise WᵀW as a grid."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(runs), figsize=(2.6 * len(runs) + 0.6, 3.2), squeeze=False)
    colours = plt.get_cmap("viridis")
    n = settings.features
    for ax, run in zip(axes[0], runs):
        W = run.W.numpy()
        if settings.dims == 2:
            for i in range(n):
                ax.annotate(
                    "",
                    xy=(W[0, i], W[1, i]),
                    xytext=(0, 0),
                    arrowprops=dict(arrowstyle="->", lw=1.6, color=colours(i / max(1, n - 1))),
                )
                ax.annotate(str(i), (W[0, i], W[1, i]), fontsize=8, textcoords="offset points", xytext=(3, 3))
            ax.set_xlim(-1.4, 1.4)
            ax.set_ylim(-1.4, 1.4)
            ax.set_aspect("equal")
            ax.set_xlabel("dimension 1", fontsize=8)
            ax.set_ylabel("dimension 2", fontsize=8)
        else:
            gram = W.T @ W
            top = float(np.abs(gram).max()) or 1.0
            ax.imshow(gram, cmap="RdBu_r", vmin=-top, vmax=top)
            ax.set_xlabel("feature j", fontsize=8)
            ax.set_ylabel("feature i", fontsize=8)
        ax.set_title(f"sparsity {run.sparsity:g}: {len(run.represented())} of {n} kept", fontsize=9)
    what = (
        "each arrow is a column of W (a feature's direction); colour: importance, darkest most"
        if settings.dims == 2
        else "WᵀW: a feature's overlap with every other (red +, blue −)"
    )
    fig.suptitle(
        f"toy model of superposition: {n} features in {settings.dims} dims, x' = ReLU(WᵀWx + b)\n{what}",
        fontsize=9,
    )
    fig.tight_layout()
    return Picture(fig, np.stack([r.W.numpy() for r in runs]))
