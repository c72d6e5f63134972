"""The command line: the only module that parses argv or prints.

    glassformer params NAME|DIR|FILE
    glassformer explain TEXT [--model M] [--layer L] [--head H]
    glassformer train --data FILE|lesson:NAME --out DIR [...]   |   --resume DIR
    glassformer generate --model M --prompt TEXT [...]
    glassformer heads --model M            what each head does
    glassformer lens TEXT --model M        the logit lens
    glassformer neurons TEXT --model M     MLP neurons that fire, and what they write
    glassformer show TEXT --model M --out FILE.html|.png|.svg
    glassformer ablate TEXT --model M --layer L --head H | --mlp L   switch heads or MLPs off
    glassformer patch CLEAN CORRUPT --model M   which heads restore the answer
    glassformer circuit --model M --layer L --head H   a head's QK and OV circuits from weights
    glassformer serve [--model M ...] [--host H] [--port P]
    glassformer embed EXPRESSION --model M   word arithmetic on W_E; --direction, --pca
    glassformer angles [--model M]           nearly orthogonal directions
    glassformer superposition [...]          the toy model of superposition

Each command is a pair, side by side: `NAME_arguments(parser)` declares its flags, and
`NAME(args)`, registered by @command, runs it (its docstring is its --help description).
The library does the work and viz.text draws the tables; `main` is the one error
boundary: every failure a user can cause ends as one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import shutil
import signal
import sys
import threading
import typing
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from .config import PRESETS, GlassformerError
from .inputs import EXAMPLE

DEFAULT_MODEL = "lesson:adjectives"
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {}  # name -> (help, arguments, run)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command(arguments: Callable[[argparse.ArgumentParser], None], help: str):
    """Register the decorated function as the command of its own name."""

    def register(run: Callable[[argparse.Namespace], int]):
        COMMANDS[run.__name__] = (help, arguments, run)
        return run

    return register


# --- argument types: numbers are checked where they are read ---------------------------
def finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"give a finite number, not {text!r}")
    return value


def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def at_least(low: int) -> Callable[[str], int]:
    def read(text: str) -> int:
        value = whole(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"give a whole number of at least {low}, not {text!r}")
        return value

    return read


def between(low: int, high: int) -> Callable[[str], int]:
    def read(text: str) -> int:
        value = whole(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"give a whole number from {low} to {high}, not {text!r}")
        return value

    return read


def seed_value(text: str) -> int:
    """A random seed: a whole number that fits PyTorch's generator (0 to 2^63 − 1)."""
    value = whole(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"give a seed from 0 to 2^63 − 1, not {text!r}")
    return value


def yes_no(text: str) -> bool:  # the on/off model flags
    if text.lower() in ("yes", "no"):
        return text.lower() == "yes"
    raise argparse.ArgumentTypeError(f"give yes or no, not {text!r}")


def model_flag(p: argparse.ArgumentParser, **kwargs) -> None:
    """--model, and --precision: what the model's matrices are held and multiplied in."""
    from .pretrained import NAMES_HELP, PRECISIONS

    if kwargs.get("required"):
        note = ""
    elif kwargs.get("action") == "append":
        note = f" (repeat to serve several; default: {DEFAULT_MODEL})"
    else:
        note = f" (default: {DEFAULT_MODEL})"
    p.add_argument("--model", "-m", help=NAMES_HELP + note, **kwargs)
    p.add_argument(
        "--precision",
        "--dtype",  # the name it had before; one idea, one word
        dest="precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default), bf16 (matrices in bf16; stream, "
        "norms and attention pattern in fp32), or auto (bf16 where the chip computes it natively)",
    )


def load_model(args):
    """The model --model names, in the --precision asked; `auto` says on stderr what it chose
    (stdout stays the command's own, one JSON object with --json)."""
    from .pretrained import load

    asked = getattr(args, "precision", "fp32")
    model = load(DEFAULT_MODEL if args.model is None else args.model, precision=asked)
    if asked == "auto":
        why = "the chip multiplies bf16 natively" if model.precision == "bf16" else "the chip has no native bf16"
        print(f"--precision auto: {model.precision} ({why})", file=sys.stderr)
    return model


def say_unknown_words(model, text: str) -> None:
    """The one line naming the words a lesson's vocabulary does not know, if any."""
    from .inputs import unknown_note
    from .viz.text import visible

    note = unknown_note(model, text)
    if note:
        print(visible(note))


def terminal_style(video: bool = True):
    """The width of this terminal ($COLUMNS, else the terminal's, else 80) and colour when
    stdout is a terminal and NO_COLOR is unset (https://no-color.org)."""
    from .viz.text import Style

    width = shutil.get_terminal_size((80, 24)).columns
    return Style(width=max(40, width), colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ, video=video)


# --- params ------------------------------------------------------------------------------
def params_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="NAME|DIR|FILE", help=f"a preset ({', '.join(PRESETS)}) or any model name")


@command(params_arguments, "tally a model's parameters by matrix kind")
def params(args) -> int:
    """Tally parameters the way 3Blue1Brown does for GPT-3: Embedding, Key, Query, Value,
    Output, Up/Down-projection, Unembedding, then everything else, then the Total."""
    from .params import describe
    from .pretrained import config_of

    print(describe(args.model, config_of(args.model)))
    return 0


# --- explain -------------------------------------------------------------------------------
def explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", default=EXAMPLE, help=f"the sentence (default: {EXAMPLE!r})")
    model_flag(p)
    p.add_argument(
        "--layer",
        "-l",
        type=at_least(0),
        help="layer index, from 0 (default: the head that best "
        "shows the model's lesson, or the one whose last token looks most sharply at another)",
    )
    p.add_argument("--head", type=at_least(0), help="head index, from 0 (default: as for --layer)")
    p.add_argument(
        "--query",
        "-q",
        type=whole,
        help="the position whose attention the summary follows "
        "(negative counts from the end; default: the one that looks most sharply at another)",
    )
    p.add_argument("--usual", action="store_true", help="grids with queries down the side (rows sum to 1)")
    json_flag(p)


@command(explain_arguments, "walk one attention head through a sentence, step by step")
def explain(args) -> int:
    """Print E, W_Q, Q, W_K, K, the grid of dot products, the mask, the pattern, the values
    and ΔE for one head, with what each means, fitted to the terminal."""
    from .inputs import encode_batch, unknown_note
    from .lab.explain import walk_head
    from .lab.readings import read_delta
    from .lab.showcase import choose_head, query_to_follow
    from .viz.text import render_walk

    model = load_model(args)
    ids = encode_batch(model, args.text)
    chosen = choose_head(model, ids, args.layer, args.head)
    walk = walk_head(model, args.text, chosen.layer, chosen.head)
    if args.query is not None and not -len(walk.tokens) <= args.query < len(walk.tokens):
        raise GlassformerError(f"--query {args.query} is out of range for {len(walk.tokens)} tokens")
    note = unknown_note(model, args.text)
    query = (args.query if args.query is not None else query_to_follow(model, walk)) % len(walk.tokens)
    if args.json:
        steps = {name: step_json(getattr(walk, name)) for name in ("E", "W_Q", "Q", "W_K", "K", "dots", "mask")}
        steps |= {name: step_json(getattr(walk, name)) for name in ("pattern", "V", "dE")}
        print_json(
            {"layer": walk.layer, "head": walk.head, "why": chosen.why, "tokens": walk.tokens, "query": query}
            | {"unknown": note, "steps": steps}
        )
        return 0
    print(
        render_walk(
            walk,
            terminal_style(not args.usual),
            query=query,
            why=chosen.why,
            questions=chosen.questions,
            notes=[note] if note else None,
            reading=read_delta(model, walk, query),
        )
    )
    return 0


# --- train ---------------------------------------------------------------------------------
def train_arguments(p: argparse.ArgumentParser) -> None:
    """Every TrainConfig field becomes a flag, typed and described by the field itself."""
    from .train import TrainConfig

    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR exactly where it stopped, with its own settings "
        "(--steps, --stop-at, --device and --compile may change; any other setting given must be the run's)",
    )
    readers: dict[type, Callable[[str], object]] = {int: whole, float: finite, bool: yes_no, str: str}
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag, kind = "--" + f.name.replace("_", "-"), hints[f.name]
        if kind is bool:
            p.add_argument(flag, dest=f.name, action="store_true", help=f.metadata["help"])
            continue
        base = next(t for t in typing.get_args(kind) or (kind,) if t is not type(None))
        p.add_argument(
            flag,
            dest=f.name,
            type=readers[base],
            default=None,
            help=f.metadata["help"],
            metavar="yes|no" if base is bool else None,
        )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


@command(train_arguments, "train a GPT on a text file or a built-in lesson")
def train(args) -> int:
    """Train with AdamW (decay on matrices only), linear warmup then cosine decay, clipping
    and accumulation; evaluate on fixed validation batches; checkpoint atomically to
    DIR/latest and DIR/best; log DIR/log.jsonl. Under torchrun the same command runs
    DistributedDataParallel."""
    from . import lessons
    from .train import TrainConfig, resume
    from .train import train as start
    from .train.loop import RESUME_MAY_CHANGE

    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"data", "out"}
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}

    def on_eval(r: dict) -> None:
        from tqdm.auto import tqdm

        tqdm.write(
            f"step {r['step']}: val loss {r['val_loss']:.4f} (fixed validation batches), train loss "
            f"{r['train_loss']:.4f} (mean of the steps since the last evaluation), lr {r['lr']:.2e}, "
            f"{r['tokens_per_s']:,.0f} tokens/s"
        )

    def on_estimate(e) -> None:  # said early, so a long run is never a surprise
        from tqdm.auto import tqdm

        tqdm.write(
            f"estimated time left: {duration(e.seconds_left)} for {e.steps_left:,} more steps and "
            f"{e.evaluations} evaluations ({e.seconds_per_step:.3g} s a step over the steps just taken; "
            "the progress bar's own estimate follows the pace as it goes)"
        )

    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise GlassformerError("--resume continues a run in its own directory; drop --out")
        # any other setting given must be the run's own: refused, never silently ignored
        expect = {f: v for f, v in given.items() if f not in RESUME_MAY_CHANGE}
        result = resume(
            args.resume,
            steps=given.get("steps"),
            stop_at=given.get("stop_at"),
            device=given.get("device"),
            compile=args.compile or None,
            expect=expect,
            data=args.data,
            progress=not args.quiet,
            on_eval=on_eval,
            on_estimate=on_estimate,
        )
    else:
        if not args.data or not args.out:
            raise GlassformerError("give --data FILE|lesson:NAME and --out DIR (or --resume DIR)")
        defaults = lessons.get(args.data).TRAIN_DEFAULTS if args.data.startswith("lesson:") else {}
        if defaults and "tokenizer" in given:
            raise GlassformerError(f"{args.data} brings its own word tokenizer; drop --tokenizer")
        settings = TrainConfig(data=args.data, out=args.out, **{**defaults, **given})
        result = start(settings, progress=not args.quiet, on_eval=on_eval, on_estimate=on_estimate)
    last = f"; last val loss {result.history[-1]['val_loss']:.4f}" if result.history else ""
    print(f"trained to step {result.step} ({result.precision}){last}; best val loss {result.best_val_loss:.4f}")
    print(f"model: {result.out} (glassformer generate --model {result.out} --prompt ...)")
    return 0


def duration(seconds: float) -> str:
    """12 s, 3.4 min, 1.2 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


# --- generate ------------------------------------------------------------------------------
def generate_arguments(p: argparse.ArgumentParser) -> None:
    model_flag(p, required=True)
    p.add_argument("--prompt", "-p", default="\n", help="text to continue")
    p.add_argument(
        "--max-new-tokens", "-n", type=at_least(0), default=100, help="how many tokens to add (default: 100)"
    )
    p.add_argument("--temperature", "-t", type=finite, default=1.0, help="0 = always the likeliest token")
    p.add_argument("--top-k", type=at_least(1), help="sample only among the k likeliest tokens")
    p.add_argument("--top-p", type=finite, help="sample only among the likeliest tokens covering p")
    p.add_argument("--seed", type=seed_value, help="make sampling reproducible")
    p.add_argument("--crop", action="store_true", help="keep the end of a prompt longer than the context")
    p.add_argument("--no-cache", action="store_true", help="recompute every position each step (slow)")


@command(generate_arguments, "sample text from a decoder, streaming it as it comes")
def generate(args) -> int:
    """Sample with temperature (0 = greedy), top-k and top-p, using a KV cache so each new
    token costs one position."""
    from . import sampling
    from .generate import check, stream_text
    from .inputs import encode

    sampling.check(args.temperature, args.top_k, args.top_p)
    model = load_model(args)
    if not model.config.causal:
        raise GlassformerError(f"{args.model} is an encoder; generation needs a decoder (GPT) model")
    ids = encode(model, args.prompt, crop=args.crop, blank_ok=True)
    check(model, len(ids), args.max_new_tokens, args.seed)
    if args.crop and len(model.tokenizer.encode(args.prompt)) > len(ids):
        print(f"glassformer: prompt cropped to its last {len(ids)} tokens (--crop)", file=sys.stderr)
    sys.stdout.write(model.tokenizer.decode(ids))
    settings = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    for piece in stream_text(model, ids, max_new_tokens=args.max_new_tokens, use_cache=not args.no_cache, **settings):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


# --- heads, lens, neurons ------------------------------------------------------------------
def heads_arguments(p: argparse.ArgumentParser) -> None:
    model_flag(p)
    p.add_argument("--text", help="score on this text instead of repeated random segments")
    json_flag(p)


@command(heads_arguments, "score every head: previous-token, duplicate, induction, sink, adjective")
def heads(args) -> int:
    """Run the head detectors and print a [layer, head] table for each, then the heads
    whose scores reach the threshold."""
    from .inputs import encode_batch
    from .lab import detector_cache
    from .lab.survey import detect_all
    from .viz.text import render_detection

    model = load_model(args)
    given = args.text is not None  # "" is a text too: encode_batch refuses it in one line
    found = detect_all(model, encode_batch(model, args.text)) if given else detector_cache.detect_all(model)
    on = "this text" if given else "repeated random segments of 5, 9, 13 and 17 tokens"
    if args.json:
        tables = {kind: table.tolist() for kind, table in found.tables.items()}
        print_json(
            {"model": args.model or DEFAULT_MODEL, "on": on, "tables": tables}
            | {"skipped": found.skipped, "summary": found.summary()}
            | {"switch_off_kl": None if found.switch_off is None else found.switch_off.tolist()}
            | {"switch_off_on": found.switch_off_on}
        )
        return 0
    print(render_detection(found, args.model or DEFAULT_MODEL, model.config, on))
    return 0


def position_or_all(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a position (a whole number) or all, not {text!r}") from None


def lens_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the text to read")
    model_flag(p)
    p.add_argument("-k", type=at_least(1), default=5, help="guesses per position (default: 5)")
    p.add_argument(
        "--position",
        type=position_or_all,
        default=-1,
        help="the token position to read (negative counts from the end; default: the last, whose guess is "
        "the model's next token), or all",
    )
    json_flag(p)


@command(lens_arguments, "the logit lens: what the stream predicts after each layer")
def lens(args) -> int:
    """Read the residual stream after each layer through the final norm and W_U."""
    from .inputs import encode_batch, token_texts
    from .lab.lens import logit_lens
    from .viz.text import render_lens

    model = load_model(args)
    ids = encode_batch(model, args.text)
    if args.k > model.config.vocab_size:
        raise GlassformerError(
            f"-k {args.k} is more guesses than the {model.config.vocab_size} tokens this model knows"
        )
    T = ids.shape[1]
    if args.position is not None and not -T <= args.position < T:
        raise GlassformerError(f"--position {args.position} is out of range for {T} tokens")
    positions = None if args.position is None else [args.position % T]
    rows = logit_lens(model, ids, k=args.k)
    if args.json:
        shown = positions if positions is not None else list(range(T))
        layers = [
            {
                "layer": r.layer,
                "guesses": {str(t): [[w, p] for w, p in zip(r.tokens[t], r.probs[t].tolist())] for t in shown},
            }
            for r in rows
        ]
        print_json({"tokens": token_texts(model, ids), "k": args.k, "layers": layers})
        return 0
    say_unknown_words(model, args.text)
    print(render_lens(rows, token_texts(model, ids), args.k, positions))
    return 0


def neurons_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", help="the text to run")
    model_flag(p)
    p.add_argument("--position", type=whole, default=-1, help="token position (default: the last)")
    p.add_argument("--neuron", help="LAYER.INDEX: show what one neuron writes instead")
    p.add_argument("-k", type=at_least(1), default=10, help="how many neurons (default: 10)")
    json_flag(p)


@command(neurons_arguments, "the MLP as a store of facts: neurons that fire, tokens they push")
def neurons(args) -> int:
    """The MLP neurons that fire hardest at a position, and the tokens each one's output
    pushes up through W_U (3Blue1Brown's chapter 7)."""
    from .inputs import check_neuron, encode_batch, token_texts
    from .lab.neurons import neuron_tokens, neurons_toward_guess, top_neurons
    from .viz.text import label, render_neurons

    model = load_model(args)
    if args.neuron:
        try:
            layer, index = (int(x) for x in args.neuron.split("."))
        except ValueError:
            raise GlassformerError(f"--neuron wants LAYER.INDEX, e.g. 3.1024, got {args.neuron!r}") from None
        check_neuron(model, layer, index)  # an encoder's never reaches neuron_tokens
        found: list[tuple[int, int, float | None]] = [(layer, index, None)]
    else:
        if not args.text:
            raise GlassformerError("give a TEXT to find the neurons that fire on it, or --neuron LAYER.INDEX")
        ids = encode_batch(model, args.text)
        T, every = ids.shape[1], model.config.n_layers * model.config.d_mlp
        if not -T <= args.position < T:
            raise GlassformerError(f"position {args.position} is out of range for {T} tokens")
        if args.k > every:
            raise GlassformerError(f"-k {args.k} is more than the {every} MLP neurons this model has")
        token = token_texts(model, [int(ids[0, args.position])])[0]
        if not args.json:
            say_unknown_words(model, args.text)
            print(
                f"MLP neurons firing hardest at [{label(token, 16)}] (position {args.position % T}), by the size of "
                "their signed activation (a neuron at −2 writes its row of W_out twice, negated)"
            )
        found = list(top_neurons(model, ids, args.position, k=args.k))
    rows = []
    for L, i, act in found:
        pushes = [t for t, _ in neuron_tokens(model, L, i, k=6, sign=act or 1.0)] if model.config.causal else None
        rows.append((L, i, act, pushes))
    if args.json:
        print_json(neurons_json(model, args, ids if not args.neuron else None, rows))
        return 0
    print(render_neurons(rows))
    if model.config.causal:
        print(PIECES_NOTE)
    if model.config.causal and not args.neuron:  # what all of them, and everything else, add up to
        best, toward = neurons_toward_guess(model, ids, position=args.position, k=args.k)
        names = token_texts(model, [i for i, _ in best])
        guesses = ", ".join(f"[{label(t, 16)}] {p:.2f}" for t, (_, p) in zip(names, best))
        print(f"the model's own next-token guess here: {guesses}")
        print(
            f"the neurons that push hardest toward [{label(names[0], 16)}]: how much each adds to its logit "
            "(activation × its row of W_out, read through the final norm and W_U; the direct path only)"
        )
        along = [(L, i, a, [t for t, _ in neuron_tokens(model, L, i, k=6, sign=a)]) for L, i, _, a in toward]
        print(render_neurons(along, shares=[v for _, _, v, _ in toward], target=names[0]))
    return 0


PIECES_NOTE = (
    "(tokens are word pieces, shown in brackets with their spaces: [ strugg] is the start of a longer word, "
    "not a word of its own; pushes: the tokens whose logits the neuron raises directly, given its sign)"
)


def neurons_json(model, args, ids, rows) -> dict:
    """`neurons --json`: the neurons that fire (or the one asked for), what each pushes up,
    and, for a decoder and a text, the model's guess and the neurons that push toward it."""
    from .inputs import token_texts
    from .lab.neurons import neuron_tokens, neurons_toward_guess

    value: dict = {"neurons": [{"layer": L, "neuron": i, "activation": a, "pushes": p} for L, i, a, p in rows]}
    if ids is not None:
        value["position"] = args.position % ids.shape[1]
        value["tokens"] = token_texts(model, ids)
    if model.config.causal and ids is not None:
        best, toward = neurons_toward_guess(model, ids, position=args.position, k=args.k)
        names = token_texts(model, [i for i, _ in best])
        value["guess"] = [{"token": t, "p": p} for t, (_, p) in zip(names, best)]
        value["toward_guess"] = [
            {
                "layer": L,
                "neuron": i,
                "logit": v,
                "activation": a,
                "pushes": [t for t, _ in neuron_tokens(model, L, i, k=6, sign=a)],
            }
            for L, i, v, a in toward
        ]
    return value


def step_json(step) -> dict:
    """One step of the walk: its numbers (−∞ becomes null in print_json) and what its rows
    and columns are."""
    values = step.tensor.tolist()
    return {"symbol": step.symbol, "title": step.title, "rows": step.rows, "cols": step.cols, "values": values}


# --- show ----------------------------------------------------------------------------------
def show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the sentence")
    model_flag(p)
    p.add_argument("--out", "-o", required=True, help="FILE.html, FILE.png or FILE.svg")
    p.add_argument(
        "--layer", "-l", type=at_least(0), help="layer index, from 0 (default: the head explain would start on)"
    )
    p.add_argument("--head", type=at_least(0), help="head index, from 0 (default: as for --layer)")
    p.add_argument(
        "--kind",
        choices=["head", "all", "next"],
        default="head",
        help="what a picture shows: one head (default), every head, or the next-token distribution",
    )
    p.add_argument("--temperature", "-t", type=finite, default=1.0, help="for --kind next")
    p.add_argument("--usual", action="store_true", help="rows are queries (default: the video's orientation)")


@command(show_arguments, "write the attention of a sentence as a self-contained HTML report or a picture")
def show(args) -> int:
    """HTML: one file with its script, styles and data inside; opens from file:// with no
    network. PNG/SVG: one head (dot products beside the pattern), all heads, or the
    next-token distribution."""
    from . import sampling
    from .files import write_file_atomically
    from .inputs import check_layer_head, encode_batch
    from .lab.showcase import choose_head

    out = picture_path(args.out, (".html", ".png", ".svg"))
    assert out is not None  # --out is required
    sampling.check(args.temperature)
    model = load_model(args)
    if out.suffix.lower() == ".html" or args.kind == "head":
        chosen = choose_head(model, encode_batch(model, args.text), args.layer, args.head)
        layer, head = chosen.layer, chosen.head
    else:  # every head, or the next token: no head is drawn, but a given one must exist
        layer, head = args.layer or 0, args.head or 0
        check_layer_head(model, layer, head)
    if out.suffix.lower() == ".html":
        from .viz.page import report_html

        page = report_html(model, args.text, title=f"glassformer: {args.text[:60]}", layer=layer, head=head)
        write_file_atomically(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    else:
        from .viz.plots import picture

        name = f"{args.model or DEFAULT_MODEL} ({model.precision})"
        picture(
            model,
            args.text,
            args.kind,
            name,
            layer=layer,
            head=head,
            video=not args.usual,
            temperature=args.temperature,
        ).save(out)
    print(f"wrote {out}")
    return 0


# --- serve ---------------------------------------------------------------------------------
def serve_arguments(p: argparse.ArgumentParser) -> None:
    model_flag(p, action="append")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=whole, default=8000, help="port, 1-65535 (default 8000)")
    p.add_argument(
        "--open",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="open a browser (default: when there is a display)",
    )


@command(serve_arguments, "the local web explorer")
def serve(args) -> int:
    """Serve the explorer: type a sentence, pick a token to be the query, and follow every
    step of attention. The JSON API is documented at /docs."""
    import webbrowser

    from .pretrained import config_of
    from .server.app import create_app, default_registry, run
    from .server.serving import network_warning

    registry = default_registry(args.model or [DEFAULT_MODEL], precision=args.precision)
    first = next(iter(registry.slots))
    print(f"loading {first} ...", flush=True)
    registry[first].get()  # fail now, with one line, rather than on the first request
    for name in list(registry.slots)[1:]:  # the others load on first use; their files must be there now
        config_of(name)

    def load_the_others() -> None:
        # in the background, so that switching model does not wait for a load; a model that
        # fails here fails again, in one line, when a request asks for it
        for name in list(registry.slots)[1:]:
            try:
                registry[name].get()
            except Exception as err:
                logging.getLogger(__name__).info("%s not loaded ahead: %s", name, err)

    def ready(url: str) -> None:  # called only once the port is ours
        print(f"glassformer explorer on {url}  (models: {', '.join(registry.slots)}; Ctrl-C stops)", flush=True)
        threading.Thread(target=load_the_others, name="load-ahead", daemon=True).start()
        warning = network_warning(args.host)
        if warning:
            print(f"glassformer: warning: {warning}", file=sys.stderr, flush=True)
        if args.open or (args.open is None and os.environ.get("DISPLAY")):
            threading.Timer(1.0, lambda: webbrowser.open(url)).start()

    run(create_app(registry, allowed_hosts=[args.host]), args.host, args.port, ready=ready)
    return 0


# --- cache ---------------------------------------------------------------------------------
def cache_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clear", action="store_true", help="remove the converted weights and detector scores")


@command(cache_arguments, "where converted weights are kept, how big they are; --clear removes them")
def cache(args) -> int:
    """SmolLM2 and other GGUF models are dequantized once and kept as float32 safetensors
    files, mapped on later loads; head-detector scores are kept beside them. The folder is
    $GLASSFORMER_CACHE, else $XDG_CACHE_HOME/glassformer, else ~/.cache/glassformer
    (GLASSFORMER_CACHE=off: no cache)."""
    from .pretrained import weights_cache

    def size(n_files: int, n_bytes: int) -> str:
        return f"{n_files} file{'s' if n_files != 1 else ''}, {n_bytes / 1e6:.1f} MB"

    if args.clear:
        folder, n_files, n_bytes = weights_cache.clear()
        print(
            f"removed {size(n_files, n_bytes)} from {folder}" if folder else "the cache is off (GLASSFORMER_CACHE=off)"
        )
        return 0
    folder, files, n_bytes = weights_cache.summary()
    if folder is None:
        print("the cache is off (GLASSFORMER_CACHE=off)")
    elif not files:
        print(f"cache directory: {folder} (empty)")
    else:
        print(f"cache directory: {folder}: {size(len(files), n_bytes)}")
        for f in files:
            print(f"  {f.relative_to(folder)}  {f.stat().st_size / 1e6:.1f} MB")
    return 0


# --- cause: switch off, patch, read weights --------------------------------------------------
def print_json(value) -> None:
    """One JSON object on stdout, for notebooks and scripts: a number that is not one (NaN,
    infinity: a head not measured, an overflow) is written as null, which every parser reads."""
    from .json_text import to_text

    print(to_text(value, nulls=True))


def json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object on stdout instead of text")


def picture_path(out: str | None, suffixes: tuple[str, ...] = (".png", ".svg")) -> Path | None:
    """--out checked before any work: a file with one of `suffixes` in a folder that exists."""
    if out is None:
        return None
    path = Path(out)
    if path.suffix.lower() not in suffixes:
        *first, last = suffixes
        raise GlassformerError(f"--out must end in {', '.join(first)} or {last}, not {path.name!r}")
    if not path.parent.is_dir():
        raise GlassformerError(f"the folder {path.parent} does not exist")
    if path.is_dir():
        raise GlassformerError(f"{path} is a directory; give a file name")
    return path


def ablate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the sentence whose next token is read")
    model_flag(p)
    p.add_argument("--layer", "-l", type=at_least(0), action="append", default=[], help="a head's layer (repeat)")
    p.add_argument("--head", type=at_least(0), action="append", default=[], help="its head index (repeat, in pairs)")
    p.add_argument("--mlp", type=at_least(0), action="append", default=[], help="switch off this layer's MLP (repeat)")
    p.add_argument("--neuron", type=at_least(0), action="append", default=[], help="only this neuron of the one --mlp")
    p.add_argument(
        "--mode",
        choices=["zero", "mean"],
        default="zero",
        help="zero (default), or mean: the activation's average over this text's positions",
    )
    p.add_argument(
        "--position", type=whole, default=-1, help="where the next token is read (negative counts from the end)"
    )
    p.add_argument("-k", type=at_least(1), default=5, help="tokens shown before and after (default: 5)")
    json_flag(p)


@command(ablate_arguments, "switch heads or MLPs off and see what the next token does")
def ablate(args) -> int:
    """Switch off attention heads (their z set to zero or to its mean) or MLPs (the whole
    layer's output, or single neurons) at every position, and compare the next-token
    distribution before and after: KL and the top token's probability. With --mlp, also
    each layer's MLP push on the top token's logit."""
    from .inputs import encode_batch, token_texts
    from .lab.attribution import mlp_logit_attribution
    from .lab.edit import ablate_head, ablate_mlp, combine, compare_next_token
    from .viz.text import bracketed

    if len(args.layer) != len(args.head):
        raise GlassformerError(f"give --layer and --head in pairs: {len(args.layer)} --layer, {len(args.head)} --head")
    if args.neuron and len(args.mlp) != 1:
        raise GlassformerError("--neuron picks neurons inside one layer: give exactly one --mlp L with it")
    if not args.layer and not args.mlp:
        raise GlassformerError("say what to switch off: --layer L --head H, or --mlp L [--neuron N]")
    model = load_model(args)
    if not model.config.causal:
        raise GlassformerError(f"{args.model} is an encoder; ablate reads the next token, which needs a decoder")
    ids = encode_batch(model, args.text)
    T = ids.shape[1]
    if not -T <= args.position < T:
        raise GlassformerError(f"--position {args.position} is out of range for {T} tokens")
    if args.k > model.config.vocab_size:
        raise GlassformerError(f"-k {args.k} is more than the {model.config.vocab_size} tokens this model knows")
    reference = ids if args.mode == "mean" else None
    edits = [ablate_head(model, L, H, mode=args.mode, reference=reference) for L, H in zip(args.layer, args.head)]
    off = [f"layer {L} head {H}" for L, H in zip(args.layer, args.head)]
    for L in args.mlp:
        for n in args.neuron or [None]:
            edits.append(ablate_mlp(model, L, n, mode=args.mode, reference=reference))
            off.append(f"layer {L} MLP" + ("" if n is None else f" neuron {n}"))
    result = compare_next_token(model, ids, combine(*edits), position=args.position, k=args.k)
    pushes = mlp_logit_attribution(model, ids, result.top, position=args.position).tolist() if args.mlp else None
    names = token_texts(model, [i for i, _ in result.before] + [i for i, _ in result.after] + [result.top])
    before, after, top = names[: args.k], names[args.k : -1], names[-1]
    if args.json:
        print_json(
            {
                "model": args.model or DEFAULT_MODEL,
                "tokens": token_texts(model, ids),
                "position": result.position,
                "switched_off": off,
                "mode": args.mode,
                "before": [{"token": t, "id": i, "p": p} for t, (i, p) in zip(before, result.before)],
                "after": [{"token": t, "id": i, "p": p} for t, (i, p) in zip(after, result.after)],
                "kl": result.kl,
                "top": {"token": top, "id": result.top, "before": result.top_before, "after": result.top_after},
                **({"mlp_logit": pushes} if pushes is not None else {}),
            }
        )
        return 0
    say_unknown_words(model, args.text)
    print(f"switched off ({args.mode}, at every position): {', '.join(off)}")
    print(f"next token after position {result.position}:   before                after")
    for (bt, (_, bp)), (at, (_, ap)) in zip(zip(before, result.before), zip(after, result.after)):
        print(f"  [{bracketed(bt, 14)}] {bp:.3f}".ljust(40) + f"[{bracketed(at, 14)}] {ap:.3f}")
    change = result.top_after - result.top_before
    print(f"[{bracketed(top, 14)}] {result.top_before:.3f} -> {result.top_after:.3f} ({change:+.3f})")
    print(f"KL(before ‖ after) = {result.kl:.4f} nats")
    if pushes is not None:
        print(f"each layer's MLP push on [{bracketed(top, 14)}]'s logit (read through the final norm and W_U):")
        for first in range(0, len(pushes), 10):  # ten layers a line: fits 80 columns
            print("  " + "  ".join(f"{i:>2}:{v:+6.2f}" for i, v in enumerate(pushes) if first <= i < first + 10))
    return 0


def patch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("clean", help="the clean text (the model gets it right)")
    p.add_argument("corrupt", help="the corrupted text, same number of tokens")
    model_flag(p)
    p.add_argument("--answer", help="the clean answer token, e.g. ' Mary' (default: the clean run's top token)")
    p.add_argument("--wrong", help="the wrong token (default: the corrupted run's top token)")
    p.add_argument("--top", type=at_least(1), default=10, help="heads listed (default: 10)")
    p.add_argument("--out", "-o", help="draw the [layer × head] map to FILE.png or FILE.svg")
    json_flag(p)


@command(patch_arguments, "patch each head from a clean run into a corrupted one: which heads restore the answer")
def patch(args) -> int:
    """Activation patching: each head's z (every position) is taken from the clean run and
    put into the corrupted one; the share of the logit difference (answer - wrong) it
    brings back, (patched - corrupt) / (clean - corrupt), for every layer and head."""
    from .inputs import encode_batch, single_token, token_texts
    from .lab.edit import patch_heads

    out = picture_path(args.out)
    model = load_model(args)
    clean, corrupt = encode_batch(model, args.clean), encode_batch(model, args.corrupt)
    answer = single_token(model, args.answer, "--answer") if args.answer is not None else None
    wrong = single_token(model, args.wrong, "--wrong") if args.wrong is not None else None
    found = patch_heads(model, clean, corrupt, answer, wrong, progress=not args.json)
    answer, wrong = found.answer, found.wrong
    a, w = token_texts(model, [answer, wrong])
    table = found.restored.tolist()
    ranked = sorted(((v, i, h) for i, row in enumerate(table) for h, v in enumerate(row)), reverse=True)
    if out is not None:
        from .viz.cause import patching_picture

        patching_picture(found.restored, f"{args.model or DEFAULT_MODEL}: patching [{a}] vs [{w}]").save(out)
    if args.json:
        print_json(
            {
                "model": args.model or DEFAULT_MODEL,
                "answer": {"token": a, "id": answer},
                "wrong": {"token": w, "id": wrong},
                "clean_diff": found.clean_diff,
                "corrupt_diff": found.corrupt_diff,
                "restored": table,
            }
        )
        return 0
    from .viz.text import bracketed

    print(f"logit([{bracketed(a, 14)}]) - logit([{bracketed(w, 14)}]) at the last position:")
    print(f"  clean {found.clean_diff:+.2f}, corrupted {found.corrupt_diff:+.2f}")
    note = found.caution()
    if note:
        print(f"  note: {note}")
    print("share restored when one head's z (every position) comes from the clean run, by layer (rows) and head:")
    print("layer " + " ".join(f"{f'h{h}':>6}" for h in range(len(table[0]))))
    print("\n".join(f"{i:>5} " + " ".join(f"{v:+6.2f}" for v in row) for i, row in enumerate(table)))
    print("heads that restore most: " + "; ".join(f"{i}.{h} {v:+.2f}" for v, i, h in ranked[: args.top]))
    if out is not None:
        print(f"wrote {out}")
    return 0


def circuit_arguments(p: argparse.ArgumentParser) -> None:
    model_flag(p)
    p.add_argument("--layer", "-l", type=at_least(0), required=True, help="layer index, from 0")
    p.add_argument("--head", type=at_least(0), required=True, help="head index, from 0")
    p.add_argument("-k", type=between(1, 1000), default=15, help="top pairs listed, 1 to 1000 (default: 15)")
    p.add_argument("--token", action="append", default=[], help="also list this token's best keys and outputs (repeat)")
    p.add_argument("--out", "-o", help="draw the whole QK and OV grids to FILE.png or .svg (vocabularies ≤ 1000)")
    json_flag(p)


@command(circuit_arguments, "read one head's QK and OV circuits from its weights alone")
def circuit(args) -> int:
    """The QK circuit (which tokens' queries match which tokens' keys) and the OV circuit
    (which output tokens a token pushes up when attended to), from the weights alone, with
    no sentence; it says what that leaves out. Whole grids for a small vocabulary, the top
    pairs (searched in chunks) for a large one."""
    from .inputs import check_layer_head, single_token, token_texts
    from .lab.circuit import SMALL_VOCAB, by_token, circuit_json, read_circuits

    out = picture_path(args.out)
    model = load_model(args)
    check_layer_head(model, args.layer, args.head)
    if out is not None and model.config.vocab_size > SMALL_VOCAB:
        raise GlassformerError(
            f"a picture of the whole grid is for vocabularies of at most {SMALL_VOCAB} tokens; "
            f"this one has {model.config.vocab_size}: drop --out (or use --json for the top pairs)"
        )
    asked = [single_token(model, t, "--token") for t in args.token]
    found = read_circuits(model, args.layer, args.head, k=args.k)
    per_token = by_token(model, args.layer, args.head, asked, args.k)
    if out is not None:
        from .viz.cause import circuit_picture

        circuit_picture(found, f"{args.model or DEFAULT_MODEL}").save(out)
    if args.json:
        print_json(circuit_json(model, found, asked, per_token))
        return 0
    from .viz.cause import render_circuit

    print(render_circuit(found, lambda ids: token_texts(model, ids), args.k, asked, per_token))
    if out is not None:
        print(f"wrote {out}")
    return 0


# --- chapters 5 and 7: embeddings, nearly orthogonal directions, superposition -----------------
def embed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "words",
        nargs="*",
        metavar="EXPRESSION|WORD",
        help="an expression such as 'king - man + woman' or '0.5*walked + 0.5*swam' "
        "(with --direction or --pca: the words to place)",
    )
    model_flag(p, required=True)
    p.add_argument("-k", type=at_least(1), default=10, help="how many nearest tokens (default: 10)")
    p.add_argument(
        "--matrix", choices=["W_E", "W_U"], default="W_E", help="read rows of W_E (default) or W_U's columns"
    )
    p.add_argument("--direction", metavar="EXPRESSION", help="project the words on this direction, e.g. 'woman - man'")
    p.add_argument("--pca", action="store_true", help="place the words in their own 2-D PCA plane")
    p.add_argument("--out", "-o", help="also draw it: FILE.png or FILE.svg")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


@command(embed_arguments, "word arithmetic, directions and a PCA plane on a model's own embeddings")
def embed(args) -> int:
    """Chapter 5 on real weights: 'king - man + woman' lists the tokens nearest the result by
    cosine (the expression's own words left out); --direction 'woman - man' WORDS places
    words along a direction; --pca WORDS draws them in a plane. Rows are centred on the mean
    of all rows and scaled to length 1, as word2vec's analogy test normalises them."""
    from .lab import embeddings

    if args.direction is not None and args.pca:
        raise GlassformerError("give --direction or --pca, not both")
    out = picture_path(args.out)
    if not args.words:
        raise GlassformerError("give an expression such as 'king - man + woman' (or words for --direction/--pca)")
    placing = args.direction is not None or args.pca
    expression = " ".join(args.words)
    if not placing:
        embeddings.parse(expression)  # a syntax error costs no model load
    elif args.direction is not None:
        embeddings.parse(args.direction)
    model = load_model(args)
    text, result, picture = embed_result(args, model, expression, terminal_style().width, out is not None)
    if picture is not None and out is not None:
        picture.save(out)
    if args.json:
        print_json(result)
    else:
        print(text)
        if out:
            print(f"wrote {out}")
    return 0


def embed_result(args, model, expression: str, width: int, draw: bool):
    """(terminal text, JSON value, picture or None) for the arithmetic, --direction or --pca."""
    from .lab import embeddings
    from .viz import chapters

    name = args.model
    if args.direction is not None:
        found = embeddings.project(model, args.direction, args.words, args.matrix)
        picture = chapters.projection_picture(found, f"{name}: words along ({args.direction})") if draw else None
        return chapters.render_projection(found, width), found.to_dict(), picture
    if args.pca:
        plane = embeddings.pca(model, args.words, args.matrix)
        picture = chapters.plane_picture(plane, f"{name}: {len(args.words)} words") if draw else None
        return chapters.render_plane(plane, width), plane.to_dict(), picture
    sums = embeddings.arithmetic(model, expression, k=args.k, matrix=args.matrix)
    picture = None
    if draw:
        plane, arrows = embeddings.analogy_plane(model, sums)
        picture = chapters.plane_picture(plane, f"{name}: {expression} ≈ [{sums.nearest[0].text}]", arrows)
    return chapters.render_arithmetic(sums, width), sums.to_dict(), picture


def angles_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dims", default="3,100,576,12288", help="dimensions, with commas (default: 3,100,576,12288)")
    p.add_argument("--vectors", type=at_least(2), default=1000, help="random directions per dimension (default: 1000)")
    p.add_argument("--model", "-m", help="also the angles between rows of this model's W_E (e.g. smollm2)")
    p.add_argument("--seed", type=seed_value, default=0, help="seed for the random directions (default: 0)")
    p.add_argument("--out", "-o", help="also draw the histograms: FILE.png or FILE.svg")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


@command(angles_arguments, "nearly orthogonal directions: angles in 3 to 12,288 dimensions")
def angles(args) -> int:
    """Chapter 7's claim that high dimensions hold far more nearly perpendicular directions
    than they have dimensions: the angles between random directions at each size (and
    between a model's own W_E rows), and how many directions fit within 89-91°."""
    from .lab import embeddings
    from .viz import chapters

    out = picture_path(args.out)
    try:
        dims = [int(d) for d in args.dims.split(",")]
    except ValueError:
        raise GlassformerError(f"--dims wants whole numbers with commas, e.g. 3,100,576, not {args.dims!r}") from None
    if not 1 <= len(dims) <= 8:
        raise GlassformerError(f"give 1 to 8 dimensions, not {len(dims)}")
    if args.vectors > 4000:
        raise GlassformerError(f"--vectors {args.vectors} is too many: at most 4000 (8 million pairs)")
    rows = [embeddings.random_angles(d, args.vectors, args.seed) for d in dims]
    if args.model:
        model = load_model(args)  # fp32: angles has no --precision
        rows.append(embeddings.row_angles(model, args.model, args.vectors, args.seed))
        rows.append(embeddings.row_angles(model, args.model, args.vectors, args.seed, centred=True))
    fits = [(d, embeddings.random_fit(d, 1.0), embeddings.random_fit(d, 5.0), embeddings.two_bases(d)) for d in dims]
    if out:
        chapters.angles_picture(rows, "angles between directions (random, and a model's own W_E rows)").save(out)
    if args.json:
        print_json(
            {
                "sets": [a.summary() for a in rows],
                "fit": [
                    {
                        "dims": d,
                        "random_within_1": one,
                        "random_within_5": five,
                        "built": built and {"count": built[0], "within": built[1]},
                    }
                    for d, one, five, built in fits
                ],
            }
        )
        return 0
    print(chapters.render_angles(rows, fits))
    if not args.model:
        print("(add --model smollm2 to see the angles between its own W_E rows)")
    if out:
        print(f"wrote {out}")
    return 0


def superposition_arguments(p: argparse.ArgumentParser) -> None:
    from .lessons.superposition import SPARSITIES, Settings

    d = Settings()
    p.add_argument("--features", "-n", type=at_least(1), default=d.features, help=f"features (default: {d.features})")
    p.add_argument("--dims", "-d", type=at_least(1), default=d.dims, help=f"dimensions (default: {d.dims})")
    p.add_argument(
        "--sparsity",
        "-s",
        default=",".join(f"{s:g}" for s in SPARSITIES),
        help="the chance a feature is 0, or several with commas, side by side (default: 0,0.7,0.9,0.97)",
    )
    p.add_argument(
        "--importance", type=finite, default=d.decay, help=f"feature i weighs DECAY^i, in (0, 1] (default: {d.decay})"
    )
    p.add_argument("--steps", type=at_least(1), default=d.steps, help=f"training steps (default: {d.steps})")
    p.add_argument("--seed", type=seed_value, default=d.seed, help=f"random seed (default: {d.seed})")
    p.add_argument("--out", "-o", help="also draw W's columns: FILE.png or FILE.svg")
    p.add_argument("--json", action="store_true", help="print W as [dims][features] for each sparsity, as JSON")


@command(superposition_arguments, "the toy model of superposition: more features than dimensions")
def superposition(args) -> int:
    """Train ReLU(WᵀWx + b) on sparse features (Elhage et al. 2022) at a few sparsities and
    show W's columns: dense features keep as many as there are dimensions; sparse ones fit
    more, 5 in 2 dimensions as a pentagon."""
    from .lessons import superposition as toy
    from .viz import chapters

    out = picture_path(args.out)
    settings = toy.Settings(
        features=args.features,
        dims=args.dims,
        sparsities=toy.parse_sparsities(args.sparsity),
        decay=args.importance,
        steps=args.steps,
        seed=args.seed,
    ).check()
    runs = toy.train(settings, progress=sys.stderr.isatty() and not args.json)
    if out:
        chapters.superposition_picture(settings, runs).save(out)
    if args.json:
        found: dict[str, object] = {
            "features": settings.features,
            "dims": settings.dims,
            "importance_decay": settings.decay,
        }
        found |= {"seed": settings.seed, "steps": settings.steps, "runs": [r.to_dict() for r in runs]}
        if len(runs) == 1:
            found["W"] = runs[0].W.tolist()  # one sparsity: its W at the top too
        print_json(found)
        return 0
    print(chapters.render_superposition(settings, runs, terminal_style().width))
    if out:
        print(f"wrote {out}")
    return 0


# --- the parser and the one error boundary -----------------------------------------------------
def build_parser() -> Parser:
    p = Parser(prog="glassformer", description="A transformer you can see through.")
    p.add_argument("--version", action="version", version=f"glassformer {version('glassformer')}")
    p.add_argument("--verbose", "-v", action="store_true", help="log what happens, and show other libraries' warnings")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name, (help, arguments, run) in COMMANDS.items():
        s = sub.add_parser(name, help=help, description=" ".join((run.__doc__ or help).split()))
        arguments(s)
        s.set_defaults(run=run)
    return p


def main(argv: list[str] | None = None) -> int:
    if sys.stdout is None:  # started with stdout closed (>&-): Python leaves sys.stdout None
        return fail("standard output is closed; give the command somewhere to write, e.g. > FILE or > /dev/null")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    with warnings.catch_warnings():
        # other libraries' warnings (torch, tokenizers, ...) are for developers: shown with
        # --verbose, through logging; otherwise each failure is our one line and nothing else
        if args.verbose:
            logging.captureWarnings(True)
        else:
            warnings.simplefilter("ignore")
        return _run(args)


# Commands that read one short text: a few forward passes of T × d_model rows. A second
# PyTorch thread saves little on products that small, and on a busy machine its spin-waiting
# made `explain` on SmolLM2 3-4× slower than on one thread (README, "Figures"). OMP_NUM_THREADS,
# when set, is the user's choice and is kept.
ONE_TEXT_COMMANDS = frozenset({"explain", "show", "lens", "neurons", "ablate", "embed"})


def _threads_for(command: str | None) -> contextlib.AbstractContextManager:
    if command not in ONE_TEXT_COMMANDS or "OMP_NUM_THREADS" in os.environ:
        return contextlib.nullcontext()
    from .cpu_decoder import one_torch_thread

    return one_torch_thread()


def _run(args: argparse.Namespace) -> int:
    try:
        previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    except ValueError:  # not the main thread (main() called from a test's thread): leave it be
        previous = None
    try:
        with _threads_for(args.command):
            code = args.run(args)
        sys.stdout.flush()  # a full or closed stdout fails here, inside the boundary
        return code
    except GlassformerError as err:
        return fail(str(err))
    except KeyboardInterrupt:
        print("glassformer: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("glassformer: stopped (SIGTERM)", file=sys.stderr)
        return 143
    except BrokenPipeError:  # the reader went away (| head): nothing more to say
        _silence_broken_stdout()
        return 0
    except MemoryError:
        return fail("not enough memory for this; try a smaller model, batch or text")
    except OSError as err:  # a full disk, a read-only folder, /dev/full as stdout
        _silence_broken_stdout()
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        return fail(f"{err.strerror or err}{where}")
    except RuntimeError as err:  # torch's allocation failures; anything else is a bug worth a traceback
        if "alloc" in str(err).lower() or "out of memory" in str(err).lower():
            return fail(f"not enough memory: {str(err).strip().splitlines()[0][:200]}")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM arrived: unwound like Ctrl-C, so runs release their folders and say so."""


def _stop_on_sigterm(_signum, _frame) -> None:
    raise Terminated()


def _silence_broken_stdout() -> None:
    """If stdout itself cannot be written (a closed pipe, /dev/full), point it at /dev/null,
    so the interpreter's last flush does not print a second error on its way out."""
    try:
        sys.stdout.flush()
        return  # stdout is fine: the failure was elsewhere
    except (OSError, ValueError):
        pass
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def fail(message: str) -> int:
    from .viz.text import visible  # the message may quote the user's text, escapes and all

    if sys.stderr is None:  # started with stderr closed: the exit status is all we can say
        return 2
    try:
        print(f"glassformer: error: {visible(message)}", file=sys.stderr)
    except OSError:
        pass
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
