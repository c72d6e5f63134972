"""Pictures with matplotlib (extra `viz`): one head's grid, the raw dot products beside
the pattern, all heads as thumbnails, and the next-token distribution.

Orientation: by default the video's — keys down the side, queries across the top, so
each COLUMN of a pattern sums to 1. `video=False` draws the usual rows-are-queries
way. Every picture says on itself which one it uses. Each function returns a Picture:
the figure and the exact matrix drawn (`.data`), so tests can check what is shown.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import GlassformerError
from ..files import write_file_atomically
from ..inputs import token_texts
from ..lab.explain import analyze
from ..lab.readings import pattern_note
from ..sampling import probabilities
from .text import USUAL, VIDEO, label  # the orientation, said in the same words everywhere


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files, not windows
        import matplotlib.pyplot as plt
    except ImportError:
        raise GlassformerError("pictures need matplotlib: pip install 'glassformer[viz]'") from None
    return plt


@dataclass
class Picture:
    figure: Any  # a matplotlib Figure
    data: np.ndarray  # what is drawn, in the orientation drawn

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix.lower() not in (".png", ".svg"):
            raise GlassformerError(f"pictures are written as .png or .svg, not {path.suffix or 'no extension'}")
        kind = path.suffix.lower().lstrip(".")

        def draw(tmp: Path) -> None:
            self.figure.savefig(tmp, format=kind, dpi=110 if kind == "png" else None, bbox_inches="tight")

        try:  # to a temp file, renamed into place: a full disk never leaves half a picture
            write_file_atomically(path, draw)
        finally:
            _plt().close(self.figure)
        return path


def _clean(tok: str, width: int = 12) -> str:
    return label(tok, width).replace("$", r"\$")  # matplotlib would read $...$ as maths


def _grid(ax, data: np.ndarray, tokens: list[str], *, video: bool, cmap: str, limits, masked=None, title: str = ""):
    n = len(tokens)
    shown = np.ma.masked_invalid(data) if masked is None else np.ma.array(data, mask=masked)
    cm = __import__("matplotlib").colormaps[cmap].with_extremes(bad="#d0d0d0")  # masked cells: −∞
    im = ax.imshow(shown, cmap=cm, vmin=limits[0], vmax=limits[1], aspect="equal", interpolation="nearest")
    labels = [_clean(t) for t in tokens]
    size = max(4, min(10, 220 / max(n, 1)))
    ax.set_xticks(range(n), labels, rotation=90 if n > 8 else 45, ha="center" if n > 8 else "right", fontsize=size)
    ax.set_yticks(range(n), labels, fontsize=size)
    ax.set_xlabel("query" if video else "key")
    ax.set_ylabel("key" if video else "query")
    if video:
        ax.xaxis.set_label_position("top")
        ax.xaxis.tick_top()
    lw = 0.6 if n <= 24 else 0.2  # thin lines when there are many tokens
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=lw)
    ax.tick_params(which="minor", length=0)
    if masked is not None and n <= 16:
        for r, c in zip(*np.nonzero(masked)):
            ax.text(c, r, "−∞", ha="center", va="center", fontsize=size, color="#606060")
    if title:
        ax.set_title(title, fontsize=10, pad=18 if video else 6)
    return im


def head_picture(pattern_TS, tokens: list[str], *, scores_TS=None, video: bool = True, title: str = "") -> Picture:
    """One head: the pattern, and (if given) the raw dot-product grid beside it with
    masked cells drawn as −∞."""
    plt = _plt()
    pattern = torch.as_tensor(pattern_TS).float().numpy()
    data = pattern.T if video else pattern
    n = len(tokens)
    side = max(4.0, min(16.0, 0.28 * n + 2))
    cols = 2 if scores_TS is not None else 1
    fig, axes = plt.subplots(1, cols, figsize=(side * cols + 1, side + 1.2), squeeze=False)
    if scores_TS is not None:
        scores = torch.as_tensor(scores_TS).float().numpy()
        raw = scores.T if video else scores
        masked = np.isneginf(raw)
        finite = raw[~masked]
        top = float(np.abs(finite).max()) if finite.size else 1.0
        im = _grid(
            axes[0, 0],
            np.where(masked, 0, raw),
            tokens,
            video=video,
            cmap="RdBu_r",
            limits=(-top, top),  # centred on zero: white is a dot product of 0, red agrees, blue disagrees
            masked=masked,
            title="Q·Kᵀ/√d: the grid of dot products (grey: masked, −∞)",
        )
        bar = fig.colorbar(im, ax=axes[0, 0], fraction=0.046, pad=0.04)
        bar.set_label("dot product (0 = white)")
    im = _grid(
        axes[0, -1],
        data,
        tokens,
        video=video,
        cmap="Blues",
        limits=(0.0, 1.0),
        title="pattern = softmax: " + ("columns" if video else "rows") + " sum to 1",
    )
    fig.colorbar(im, ax=axes[0, -1], fraction=0.046, pad=0.04).set_label("attention weight")
    fig.suptitle((title + "\n" if title else "") + (VIDEO if video else USUAL), fontsize=10)
    fig.tight_layout()
    return Picture(fig, data)


def all_heads_picture(patterns_LHTS, tokens: list[str], *, video: bool = True, title: str = "") -> Picture:
    """Every head of every layer as a thumbnail: rows are layers, columns heads."""
    plt = _plt()
    P = torch.as_tensor(patterns_LHTS).float().numpy()
    L, H = P.shape[:2]
    data = P.transpose(0, 1, 3, 2) if video else P
    fig, axes = plt.subplots(L, H, figsize=(1.3 * H + 1, 1.3 * L + 1), squeeze=False)
    for layer in range(L):
        for head in range(H):
            ax = axes[layer, head]
            ax.imshow(data[layer, head], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=8)
            if head == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=8)
    fig.suptitle(
        (title + "\n" if title else "") + f"all {L}×{H} heads on {len(tokens)} tokens; " + (VIDEO if video else USUAL),
        fontsize=9,
    )
    fig.tight_layout()
    return Picture(fig, data)


def next_token_picture(
    logits_V, token_texts: list[str], *, temperature: float = 1.0, k: int = 15, title: str = ""
) -> Picture:
    """The k likeliest next tokens under softmax(logits / T), as bars."""
    plt = _plt()
    probs = probabilities(torch.as_tensor(logits_V).float(), temperature)
    top = probs.topk(min(k, probs.numel()))
    values = top.values.numpy()
    labels = [_clean(token_texts[i], 16) for i in top.indices.tolist()]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(values) + 1.4))
    ax.barh(range(len(values))[::-1], values, color="#3b6fb6")
    ax.set_yticks(range(len(values))[::-1], labels, fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.set_title(
        (title + "\n" if title else "") + f"next token, softmax(logits / T) with T = {temperature:g}",
        fontsize=10,
    )
    fig.tight_layout()
    return Picture(fig, values)


def picture(
    model,
    text: str,
    kind: str,
    title: str,
    *,
    layer: int = 0,
    head: int = 0,
    video: bool = True,
    temperature: float = 1.0,
) -> Picture:
    """The picture `glassformer show` draws: "head" (one head's dot products beside its
    pattern), "all" (every head) or "next" (the next-token distribution)."""
    a = analyze(model, text, scores=True)
    if kind == "head":
        assert a.scores is not None
        return head_picture(
            a.patterns[layer, head],
            a.tokens,
            scores_TS=a.scores[layer, head],
            video=video,
            # what the detectors say it does, so a pattern is not read as something it is not
            title=f"{title} — layer {layer}, head {head}\n"
            + "\n".join(textwrap.wrap(pattern_note(a.patterns[layer, head], a.tokens), 110)),
        )
    if kind == "all":
        return all_heads_picture(a.patterns, a.tokens, video=video, title=title)
    if a.last_logits is None:
        raise GlassformerError(f"{title} is an encoder: it has no next-token distribution")
    vocab = token_texts(model, range(model.config.vocab_size))
    return next_token_picture(a.last_logits, vocab, temperature=temperature, title=title)
