"""Terminal renderings of one head's walk: compact vectors and grids that fit the width
they are given, with colour only when asked for.

Grids are drawn in the video's orientation by default: keys down the side, queries
across the top, so each column of a pattern sums to 1. A grid wider than the terminal
shows the columns around the query the walk follows, and says which it left out.
"""

from __future__ import annotations

import textwrap
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..lab.explain import HeadWalk, Step, sharpest_query
from ..lab.heads import DETECTORS, STRONG, strongest
from ..lab.lens import LensRow
from ..lab.readings import DeltaReading, detector_note, scores_note, sink_note
from ..lab.survey import Detection

MAX_ROWS = 16  # rows of a grid or a vector list shown before the rest are left out
CELL = 6  # characters per grid cell: " +1.23" or "  0.96"

VIDEO = "video orientation: keys down the side, queries across the top; each column sums to 1"
USUAL = "usual orientation: queries down the side, keys across the top; each row sums to 1"


@dataclass
class Style:
    width: int = 80  # the terminal's columns: no line is longer
    colour: bool = False  # ANSI colours (a terminal that is a TTY, NO_COLOR unset)
    video: bool = True


def display_width(text: str) -> int:
    """Columns `text` takes in a terminal: wide East Asian characters and emoji take two,
    combining marks none."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def visible(text: str) -> str:
    """`text` with newlines and tabs drawn (⏎, ⇥) and every other control or invisible
    format character written out (\\x1b, \\u202e): a token or a word from the user's text
    can hold an escape, a bell or a right-to-left override, which a terminal would obey
    rather than show."""
    text = text.replace("\n", "⏎").replace("\t", "⇥")
    if all(ch.isprintable() or ch == " " for ch in text):
        return text
    return "".join(_written_out(ch) for ch in text)


def _written_out(ch: str) -> str:
    """A control character as \\x1b; an invisible format character (a right-to-left
    override, a zero-width space) as \\u202e, so it can neither reorder nor hide the text
    around it. The zero-width joiner stays: emoji sequences are built with it."""
    kind = unicodedata.category(ch)
    if kind == "Cc":
        return f"\\x{ord(ch):02x}"
    if kind == "Cf" and ch != "\u200d":
        return f"\\u{ord(ch):04x}"
    return ch


def label(token: str, width: int = 8) -> str:
    """A token as a short, visible label: control characters drawn, blanks quoted, long cut."""
    shown = visible(token)
    shown = shown if shown.strip() else repr(shown)
    if display_width(shown) <= width:
        return shown
    out = ""
    for ch in shown:
        if display_width(out + ch) > width - 1:
            break
        out += ch
    return out + "…"


def bracketed(token: str, width: int = 8) -> str:
    """A token to print between brackets, where its spaces show ([ Paris], [ ]): control
    characters drawn, long cut."""
    shown = "".join(ch if ch == " " or not ch.isspace() else ascii(ch)[1:-1] for ch in visible(token))
    return shown if display_width(shown) <= width else label(shown, width)


def pad(text: str, width: int, *, right: bool = True) -> str:
    gap = " " * max(0, width - display_width(text))
    return gap + text if right else text + gap


def fit(line: str, width: int) -> str:
    """Cut a plain line to `width` columns."""
    return line if display_width(line) <= width else label(line, width)


def wrap(text: str, width: int, indent: str = "") -> list[str]:
    """Prose wrapped at word boundaries to `width` columns (a word too long is cut)."""
    lines = textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False)
    return [fit(line, width) for line in lines] or [indent]


def number(v: float, signed: bool) -> str:
    """Five characters at most: +1.23, +12.3, +123, or 0.96 for weights."""
    if not signed:
        return f"{v:.2f}"
    return f"{v:+.2f}" if abs(v) < 9.995 else (f"{v:+.1f}" if abs(v) < 99.95 else f"{v:+.0f}")


PLURAL = {"token": "tokens", "query": "queries", "key": "keys"}
PRECISION = {
    "fp32": "every number computed in fp32",
    "bf16": "matrices held and multiplied in bf16; the stream, the norms and the pattern in fp32",
}


# --- colour --------------------------------------------------------------------------------
_BLUES = (231, 189, 153, 117, 75, 33, 20)  # 0 -> 1: white to deep blue (xterm 256 colours)
_REDS = (231, 224, 217, 210, 203, 196, 160)  # positive dot products
_COLDS = (231, 195, 159, 123, 81, 39, 27)  # negative dot products


def _paint(text: str, code: int) -> str:
    fg = 231 if code in (20, 27, 33, 39, 160, 196) else 16
    return f"\x1b[48;5;{code}m\x1b[38;5;{fg}m{text}\x1b[0m"


def _shade(value: float, top: float, ramp: tuple[int, ...]) -> int:
    level = 0 if top <= 0 else min(len(ramp) - 1, int(abs(value) / top * (len(ramp) - 1) + 0.5))
    return ramp[level]


def _dim(text: str) -> str:
    return f"\x1b[2m{text}\x1b[0m"


# --- pieces ------------------------------------------------------------------------------------
def vectors(tensor: torch.Tensor, row_labels: list[str] | None, style: Style) -> list[str]:
    """One line per row: its first numbers (as many as fit) and its length."""
    names = [label(t, 10) for t in row_labels] if row_labels else [f"[{r}]" for r in range(tensor.shape[0])]
    name_w = max(display_width(n) for n in names[:MAX_ROWS])
    room = style.width - name_w - 2 - 4 - 12  # "  name [" ... " …]  |·|=12.34"
    shown = max(1, min(tensor.shape[1], room // CELL))
    lines = []
    for r in range(min(tensor.shape[0], MAX_ROWS)):
        row = tensor[r]
        nums = " ".join(pad(number(v, signed=True), 5) for v in row[:shown].tolist())
        more = " …" if row.numel() > shown else ""
        lines.append(fit(f"  {pad(names[r], name_w)} [{nums}{more}]  |·|={row.norm().item():.2f}", style.width))
    if tensor.shape[0] > MAX_ROWS:
        lines.append(f"  … {tensor.shape[0] - MAX_ROWS} more rows")
    return lines


def _window(n: int, fits: int, around: int) -> range:
    """`fits` consecutive indices out of n, centred on `around` where possible."""
    if n <= fits:
        return range(n)
    start = min(max(0, around - fits // 2), n - fits)
    return range(start, start + fits)


def grid(values_TS: torch.Tensor, tokens: list[str], style: Style, *, query: int, kind: str) -> list[str]:
    """A query × key grid. kind: "weights" (unsigned, 0..1), "dots" (signed, −∞ masked)
    or "mask" (0 or −∞). Video orientation: keys down the side, queries across the top."""
    T = len(tokens)
    side_name, top_name = ("key", "query") if style.video else ("query", "key")
    names = [label(t, 10) for t in tokens]
    name_w = max(max(display_width(n) for n in names), display_width(f"{side_name} ↓ {top_name} →"))
    cols = _window(T, max(1, (style.width - name_w - 2) // CELL), query)
    rows = _window(T, MAX_ROWS, query)
    finite = values_TS[torch.isfinite(values_TS)]
    top = float(finite.abs().max()) if finite.numel() else 0.0

    def cell(q: int, k: int) -> str:
        v = float(values_TS[q, k])
        if v == float("-inf"):
            text = pad("−∞", CELL)
            return _dim(text) if style.colour else text
        if kind == "mask":
            text = pad("0", CELL)
        else:
            text = pad(number(v, signed=kind == "dots"), CELL)
        if not style.colour or kind == "mask":
            return text
        if kind == "weights":
            return _paint(text, _shade(v, 1.0, _BLUES))
        return _paint(text, _shade(v, top, _REDS if v >= 0 else _COLDS))

    header = "  " + pad(f"{side_name} ↓ {top_name} →", name_w, right=False)
    header += "".join(pad(label(tokens[c], CELL - 1), CELL) for c in cols)
    lines = [header]
    for r in rows:
        line = "  " + pad(names[r], name_w)
        for c in cols:
            q, k = (c, r) if style.video else (r, c)
            line += cell(q, k)
        lines.append(line)
    left = []
    if len(cols) < T:
        left.append(f"{PLURAL[top_name]} {cols.start}–{cols.stop - 1}")
    if len(rows) < T:
        left.append(f"{PLURAL[side_name]} {rows.start}–{rows.stop - 1}")
    if left:
        note = f"(showing {' and '.join(left)} of {T} tokens, around the query; a wider terminal shows more)"
        lines += wrap(note, style.width, "  ")
    return lines


def _shape(step: Step) -> str:
    dims = zip(step.tensor.shape, (step.rows, step.cols))
    return " × ".join(f"{n} {PLURAL.get(w, w) if n != 1 else w}" for n, w in dims)


def render_step(step: Step, walk: HeadWalk, style: Style, query: int, caption: str | None = None) -> list[str]:
    lines = wrap(f"{step.symbol}   {step.title}   [{_shape(step)}]", style.width)
    for text in (step.meaning, caption):
        if text:
            lines += wrap(text, style.width, "  ")
    if step is walk.mask and not walk.causal:
        return lines  # an encoder masks nothing: there is no grid of zeros to draw
    if step.rows == "query":
        kind = {"mask": "mask", "pattern = softmax": "weights"}.get(step.symbol, "dots")
        lines += grid(step.tensor, walk.tokens, style, query=query, kind=kind)
    elif step.rows == "token":
        lines += vectors(step.tensor, walk.tokens, style)
    else:  # a weight matrix: a corner of it
        lines += [*vectors(step.tensor[:4], None, style), "  …"]
    return lines


def render_walk(
    walk: HeadWalk,
    style: Style | None = None,
    *,
    query: int | None = None,
    why: str | None = None,
    questions: tuple[str, str] | None = None,
    notes: list[str] | None = None,
    reading: DeltaReading | None = None,
) -> str:
    """The whole walk as text. `query`: the position the summary follows (default: the
    one whose query looks most sharply at another token); `why`: why this head was
    chosen; `questions`: what this head's queries ask and its keys answer, when known (the
    adjective head's "is there an adjective in front of me?"); `notes`: lines to show
    first (unknown words); `reading`: the head's ΔE at the query read as a direction
    (lab.readings.read_delta), else only its size is compared with E."""
    style = style or Style()
    T = len(walk.tokens)
    q = sharpest_query(walk) if query is None else query % T
    W = style.width
    out = wrap(f"layer {walk.layer}, head {walk.head}" + (f": {visible(why)}" if why else ""), W)
    for line in notes or []:
        out += wrap(visible(line), W, "  ")
    out += wrap(f"{T} tokens: " + " ".join(f"[{label(t, 12)}]" for t in walk.tokens), W)
    out += wrap(f"following the query [{label(walk.tokens[q], 12)}] (position {q}); --query picks another", W)
    out += wrap(detector_note(walk, q), W)
    out += wrap(f"({VIDEO if style.video else USUAL}; {PRECISION[walk.precision]})", W) + [""]
    for step in walk.steps:
        caption = None
        if questions and step is walk.Q:
            caption = f"this head's queries ask: “{questions[0]}”"
        elif questions and step is walk.K:
            caption = f"its keys answer: “{questions[1]}”"
        elif step is walk.dots:
            caption = scores_note(walk, q)
        elif step is walk.pattern:
            caption = sink_note(walk, q)
        out += [*render_step(step, walk, style, q, caption), ""]
    out += summary(walk, q, style, reading)
    return "\n".join(out)


def summary(walk: HeadWalk, q: int, style: Style, reading: DeltaReading | None = None) -> list[str]:
    """What the followed query attends to, and what this head's ΔE does to its stream."""
    weights = walk.pattern.tensor[q]
    top = weights.topk(min(3, weights.numel()))
    looks = ", ".join(f"{label(walk.tokens[k], 12)} {w:.2f}" for w, k in zip(top.values.tolist(), top.indices.tolist()))
    if reading is None:
        normed = walk.normed.tensor[q].norm().item() if walk.normed is not None else None
        reading = DeltaReading(q, walk.stream[q].norm().item(), normed, walk.dE.tensor[q].norm().item())
    out = wrap(f"{label(walk.tokens[q], 12)} → {looks}", style.width)
    for line in reading.sentences(label(walk.tokens[q], 12)):
        out += wrap(visible(line), style.width)
    return out


# --- the other commands' tables ----------------------------------------------------------------
def render_detection(found: Detection, name: str, config, on: str) -> str:
    """Every detector's [layer, head] table, then which heads qualify."""
    out = [
        f"{name}: {config.n_layers} layers × {config.n_heads} heads, scored on {on}; "
        "scores are attention weights in [0, 1]"
    ]
    for kind, table in found.tables.items():
        out += ["", f"{kind}: {DETECTORS[kind]}", "layer " + " ".join(f"{f'h{h}':>5}" for h in range(table.shape[1]))]
        out += [f"{layer:>5} " + " ".join(f"{v:5.2f}" for v in row) for layer, row in enumerate(table.tolist())]
    if found.switch_off is None:
        out += ["", f"switched off: {found.switch_off_on}"]
    else:
        table = found.switch_off
        out += ["", f"switched off (z set to zero): mean KL of the next-token distribution, over {found.switch_off_on}"]
        out += ["layer " + " ".join(f"{f'h{h}':>5}" for h in range(table.shape[1]))]
        out += [
            f"{layer:>5} " + " ".join("    ·" if v != v else f"{v:5.2f}" for v in row)  # NaN: not measured
            for layer, row in enumerate(table.tolist())
        ]
        layer, head, kl = strongest(table.nan_to_num(-1.0))
        out.append(f"  the head the next token needs most: layer {layer}, head {head} (KL {kl:.3f})")
    out += ["", f"the heads whose score reaches {STRONG}, strongest first:", *(f"  {line}" for line in found.summary())]
    return "\n".join(out)


def render_lens(rows: list[LensRow], tokens: list[str], k: int, positions: list[int] | None = None) -> str:
    """The logit lens: each position's (or those in `positions`) top-k guesses after the
    embedding and every layer."""
    out = wrap(
        f"the residual stream read through the final norm and W_U after each layer "
        f"(top {k} next-token guesses, each token in brackets, its probability after it)",
        80,
    )
    out += wrap(
        "the embed row reads the token's own embedding before any layer has run: it is no prediction, only "
        "the tokens whose W_U columns best match that vector once the final norm has weighted it (often the "
        "token itself where W_U is tied to W_E, sometimes an odd one such as [<filename>] or [ strugg]); "
        "the middle rows are the model's work in progress, and only the last row is its real guess",
        80,
    )
    for pos, tok in enumerate(tokens):
        if positions is not None and pos not in positions:
            continue
        out += ["", f"after [{label(tok, 16)}] (position {pos})"]
        cells = [
            [f"[{bracketed(t, 10)}] {p:.2f}" for t, p in zip(row.tokens[pos], row.probs[pos].tolist())] for row in rows
        ]
        widths = [max(display_width(r[i]) for r in cells) for i in range(len(cells[0]))]
        for row, guesses in zip(rows, cells):
            out.append(
                f"  {row.layer:>5}: " + "  ".join(pad(g, w, right=False) for g, w in zip(guesses, widths)).rstrip()
            )
    return "\n".join(out)


def render_neurons(
    found: Sequence[tuple[int, int, float | None, list[str] | None]],
    shares: list[float] | None = None,
    target: str = "",
) -> str:
    """(layer, index, signed activation or None, tokens it pushes up given that sign, or
    None) per neuron; `shares`: what each adds to `target`'s logit."""
    lines = []
    for n, (layer, index, act, pushes) in enumerate(found):
        line = f"  layer {layer:>2}, neuron {index:<5}" + (f"  activation {act:+7.2f}" if act is not None else "")
        if shares is not None:
            line += f"  adds {shares[n]:+.2f} to [{bracketed(target, 12)}]"
        if pushes is not None:
            line += "  pushes up: " + " ".join(f"[{bracketed(t, 12)}]" for t in pushes)
        lines.append(line)
    return "\n".join(lines)
