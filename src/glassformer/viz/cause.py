"""Pictures and text for the laboratory: the patching map and a head's circuits.

Each picture says on itself what its rows and columns are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..lab.circuit import Circuit
from .plots import Picture, _plt
from .text import bracketed


def patching_picture(restored_LH: torch.Tensor, title: str) -> Picture:
    """The [layer × head] map of restored shares: layers down the side, heads across."""
    plt = _plt()
    data = restored_LH.float().numpy()
    L, H = data.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * H, 1.2 + 0.28 * L))
    top = max(1.0, float(np.abs(data).max()))
    image = ax.imshow(data, cmap="RdBu", vmin=-top, vmax=top, aspect="auto")
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"{title}\nrows: layers, columns: heads; share of the logit difference restored", fontsize=9)
    fig.colorbar(image, ax=ax, label="(patched − corrupt) / (clean − corrupt)")
    return Picture(fig, data)


def circuit_picture(found: Circuit, title: str) -> Picture:
    """The whole QK grid (queries across the top, keys down the side) and, for decoders,
    the OV grid (attended tokens across the top, output tokens down the side)."""
    assert found.tokens is not None and isinstance(found.qk, torch.Tensor)
    plt = _plt()
    grids = [("QK: query tokens across, key tokens down", found.qk)]
    if isinstance(found.ov, torch.Tensor):
        grids.append(("OV: attended tokens across, output tokens down", found.ov))
    V = len(found.tokens)
    side = min(14.0, 3 + 0.12 * V)
    fig, axes = plt.subplots(1, len(grids), figsize=(side * len(grids), side), squeeze=False)
    data = []
    for ax, (what, grid) in zip(axes[0], grids):
        shown = grid.T.float().numpy()  # transposed: the first index runs across the top
        data.append(shown)
        top = float(np.abs(shown).max()) or 1.0
        image = ax.imshow(shown, cmap="RdBu_r", vmin=-top, vmax=top)
        if V <= 80:
            labels = [bracketed(t, 10) for t in found.tokens]
            ax.set_xticks(range(V), labels, rotation=90, fontsize=6)
            ax.set_yticks(range(V), labels, fontsize=6)
        ax.set_title(f"{title}, layer {found.layer} head {found.head}\n{what}", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.7)
    fig.text(0.01, 0.005, "left out: " + "; ".join(found.leaves_out), fontsize=7)
    return Picture(fig, np.stack(data))


def render_circuit(
    found: Circuit, names: Callable[[list[int]], list[str]], k: int, asked: list[int], per_token: dict
) -> str:
    """The top pairs of each circuit (from the whole grid or the chunked search), the
    asked tokens' best partners, and what the reading leaves out."""
    out = [f"layer {found.layer}, head {found.head}, read from the weights alone (no sentence)"]
    sections = [("QK: the query-key pairs with the highest scores", "query", "key", found.qk)]
    if found.ov is not None:
        sections.append(("OV: attending to a token pushes up an output token's logit", "attended", "output", found.ov))
    for title, a, b, table in sections:
        pairs = _top_pairs(table, k)
        words = names([i for p in pairs for i in p[:2]])
        out += ["", f"{title} ({a} -> {b}, score):"]
        out += [
            f"  [{bracketed(words[2 * j], 14)}] -> [{bracketed(words[2 * j + 1], 14)}]  {s:+.2f}"
            for j, (_, _, s) in enumerate(pairs)
        ]
    for kind, rows in per_token.items():
        if rows is None:
            continue
        verb = "its best keys" if kind == "qk" else "what it pushes up when attended to"
        for token, row in zip(asked, rows):
            shown = " ".join(f"[{bracketed(t, 12)}] {s:+.2f}" for t, (_, s) in zip(names([c for c, _ in row]), row))
            out += ["", f"[{bracketed(names([token])[0], 14)}], {kind.upper()}, {verb}:", f"  {shown}"]
    out += ["", "left out: " + "; ".join(found.leaves_out)]
    if found.tokens is not None:
        out.append("the whole grids: --json (qk, ov, tokens) or --out FILE.png")
    return "\n".join(out)


def _top_pairs(table, k: int) -> list[tuple[int, int, float]]:
    if not isinstance(table, torch.Tensor):
        return table[:k]
    values, flat = table.flatten().topk(min(k, table.numel()))
    n = table.shape[1]
    return [(int(f) // n, int(f) % n, float(v)) for v, f in zip(values, flat)]
