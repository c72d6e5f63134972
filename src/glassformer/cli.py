"""The command line: the only module that parses argv or prints.

    glassformer params NAME|DIR
    glassformer explain TEXT [--model M] [--layer L] [--head H]
    glassformer train --data FILE|lesson:NAME --out DIR [...]   |   --resume DIR
    glassformer generate --model M --prompt TEXT [...]
    glassformer heads --model M            what each head does
    glassformer lens TEXT --model M        the logit lens
    glassformer neurons TEXT --model M     MLP neurons that fire, and what they write
    glassformer show TEXT --model M --out FILE.html|.png|.svg
    glassformer serve [--model M ...] [--host H] [--port P]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from .config import PRESETS, GlassformerError

DEFAULT_TEXT = "a fluffy blue creature roamed the verdant forest"
MODEL_HELP = (
    "a checkpoint, training run or Hugging Face directory, a hub id (gpt2, bert-base-uncased, ...), "
    "minilm (offline all-MiniLM-L6-v2), lesson:adjectives or lesson:induction (trained on first "
    "use), or random:PRESET"
)


def yes_no(text: str) -> bool:  # argparse type of the on/off model flags
    if text.lower() in ("yes", "no"):
        return text.lower() == "yes"
    raise argparse.ArgumentTypeError(f"give yes or no, not {text!r}")


TRAIN_FIELDS = {  # flag -> (type, help); None defaults mean "the lesson's or TrainConfig's"
    "tokenizer": (str, "char or bpe:VOCAB_SIZE (trained on the training split); lessons bring their own"),
    "preset": (str, "model shape to start from (see glassformer params)"),
    "n_layers": (int, "blocks"), "n_heads": (int, "heads per layer"), "d_model": (int, "embedding size"),
    "d_head": (int, "query/key size per head"), "d_mlp": (int, "MLP hidden size"),
    "context_length": (int, "tokens per window"), "dropout": (float, "dropout probability"),
    "bias": (yes_no, "yes/no: biases in linear layers and norms"),
    "tied_unembedding": (yes_no, "yes/no: W_U = W_Eᵀ (GPT-2, nanoGPT) or W_U its own matrix"),
    "steps": (int, "optimizer steps"), "batch_size": (int, "sequences per micro-batch per process"),
    "grad_accum": (int, "micro-batches per step"), "lr": (float, "peak learning rate"),
    "min_lr": (float, "final learning rate of the cosine decay"), "warmup": (int, "linear warmup steps"),
    "weight_decay": (float, "AdamW weight decay on matrices"), "grad_clip": (float, "max gradient norm (0: off)"),
    "eval_every": (int, "steps between evaluations and checkpoints"),
    "eval_batches": (int, "validation batches per evaluation"),
    "ckpt_every": (int, "extra checkpoints every N steps"), "seed": (int, "random seed"),
    "val_fraction": (float, "share of a text file held out"), "device": (str, "auto, cpu or cuda"),
    "precision": (str, "auto, fp32 or bf16 autocast (auto: bf16 where the chip computes it natively)"),
    "stop_at": (int, "stop this process at step N (resume later)"),
}  # fmt: skip


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def default_model() -> str:
    return "lesson:adjectives"


def load_model(name: str | None):
    from . import load

    return load(name or default_model())


# --- commands ----------------------------------------------------------------------
def cmd_params(args) -> int:
    from .checkpoint import is_checkpoint, read_config
    from .params import count_params

    name = args.model
    path = Path(name)
    if name in PRESETS:
        config = PRESETS[name]
    elif path.is_dir():
        from .pretrained import CONVERTERS, load_dir, read_hf_config

        if is_checkpoint(path):
            config, _ = read_config(path)
        elif (path / "config.json").is_file() and read_hf_config(path).get("model_type") in CONVERTERS:
            hf = read_hf_config(path)
            config = CONVERTERS[hf["model_type"]].config_from_hf(hf)
        else:
            config = load_dir(path).config
    elif name == "minilm" or name.startswith("random:"):
        config = load_model(name).config
    else:
        raise GlassformerError(
            f"unknown preset or directory {name!r}; presets: {', '.join(PRESETS)}"
        )
    tally = count_params(config)
    kind = "decoder (GPT)" if config.causal else "encoder (BERT)"
    print(f"{name}: {kind}, {config.n_layers} layers, {config.n_heads} heads of {config.d_head}, "
          f"d_model {config.d_model}, d_mlp {config.d_mlp}, context {config.context_length}")  # fmt: skip
    print()
    print(tally.table())
    return 0


def cmd_explain(args) -> int:
    from .inspect.explain import walk_head
    from .viz.text import render_walk

    model = load_model(args.model or default_model())
    walk = walk_head(model, args.text, args.layer, args.head)
    print(render_walk(walk, video=not args.usual))
    return 0


def cmd_train(args) -> int:
    from . import lessons
    from .train import TrainConfig, resume, train
    from .train.trainer import MODEL_FIELDS

    given = {f: getattr(args, f) for f in TRAIN_FIELDS if getattr(args, f) is not None}
    if args.compile:
        given["compile"] = True
    progress = not args.quiet

    def on_eval(r: dict) -> None:
        from tqdm.auto import tqdm

        tqdm.write(f"step {r['step']}: train loss {r['train_loss']:.4f}  val loss {r['val_loss']:.4f}  "
                   f"lr {r['lr']:.2e}  {r['tokens_per_s']:,.0f} tokens/s")  # fmt: skip

    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise GlassformerError("--resume continues a run in its own directory; drop --out")
        expect = {f: given[f] for f in MODEL_FIELDS + ("preset",) if f in given}
        result = resume(args.resume, steps=given.get("steps"), stop_at=given.get("stop_at"),
                        expect=expect, data=args.data, progress=progress, on_eval=on_eval)  # fmt: skip
    else:
        if not args.data or not args.out:
            raise GlassformerError("give --data FILE|lesson:NAME and --out DIR (or --resume DIR)")
        defaults = {}
        if args.data.startswith("lesson:"):
            defaults = lessons.get(args.data).TRAIN_DEFAULTS
            if "tokenizer" in given:
                raise GlassformerError(f"{args.data} brings its own word tokenizer; drop --tokenizer")
        result = train(TrainConfig(data=args.data, out=args.out, **{**defaults, **given}), progress=progress,
                       on_eval=on_eval)  # fmt: skip
    last = result.history[-1] if result.history else None
    summary = f"; last val loss {last['val_loss']:.4f}" if last else ""
    print(f"trained to step {result.step} ({result.precision}){summary}; best val loss {result.best_val_loss:.4f}")
    print(f"model: {result.out} (glassformer generate --model {result.out} --prompt ...)")
    return 0


def cmd_generate(args) -> int:
    from .generate import stream

    model = load_model(args.model)
    if not model.config.causal:
        raise GlassformerError(f"{args.model} is an encoder; generation needs a decoder (GPT) model")
    if model.tokenizer is None:
        raise GlassformerError(f"{args.model} has no tokenizer to read the prompt with")
    if not args.prompt:
        raise GlassformerError("the prompt is empty; give --prompt TEXT")
    ids = model.tokenizer.encode(args.prompt)
    limit = model.config.context_length
    if len(ids) > limit:
        if not args.crop:
            raise GlassformerError(
                f"the prompt is {len(ids)} tokens; this model's context is {limit} tokens (--crop keeps the end)"
            )
        print(f"glassformer: prompt cropped from {len(ids)} to its last {limit} tokens", file=sys.stderr)
        ids = ids[-limit:]
    decode = model.tokenizer.decode
    shown = decode(ids)
    sys.stdout.write(shown)
    sys.stdout.flush()
    all_ids = list(ids)
    for new in stream(model, ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                      top_k=args.top_k, top_p=args.top_p, seed=args.seed, use_cache=not args.no_cache):  # fmt: skip
        all_ids.append(int(new[0]))
        text = decode(all_ids)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            continue
        sys.stdout.write(text[len(shown):] if text.startswith(shown) else "")
        sys.stdout.flush()
        shown = text
    sys.stdout.write("\n")
    return 0


def cmd_heads(args) -> int:
    from .inspect import heads

    model = load_model(args.model)
    ids = None
    if args.text:
        from .inspect.explain import encode_text

        ids = encode_text(model, args.text)
    tables = heads.detect_all(model, ids)
    print(f"{args.model}: {model.config.n_layers} layers x {model.config.n_heads} heads; "
          f"scores are attention weights in [0, 1]")  # fmt: skip
    for kind, table in tables.items():
        print()
        print(f"{kind}: {heads.DETECTORS[kind]}")
        print("layer " + " ".join(f"{f'h{h}':>5}" for h in range(table.shape[1])))
        for layer, row in enumerate(table.tolist()):
            print(f"{layer:>5} " + " ".join(f"{v:5.2f}" for v in row))
    print()
    for kind, table in tables.items():
        layer, head, score = heads.strongest(table)
        print(f"strongest {kind} head: layer {layer}, head {head} ({score:.2f})")
    return 0


def cmd_lens(args) -> int:
    from .inspect.explain import encode_text
    from .inspect.lens import logit_lens
    from .viz.text import label

    model = load_model(args.model)
    ids = encode_text(model, args.text)
    rows = logit_lens(model, ids, k=args.k)
    tokens = model.tokenizer.token_texts(ids[0].tolist())
    print("the residual stream read through the final norm and W_U after each layer "
          f"(top {args.k} next-token guesses, probability in brackets)")  # fmt: skip
    for pos, tok in enumerate(tokens):
        print(f"\nafter [{label(tok, 16)}] (position {pos})")
        for row in rows:
            guesses = "  ".join(f"{label(t, 10)}({p:.2f})" for t, p in zip(row.tokens[pos], row.probs[pos].tolist()))
            print(f"  {row.layer:>5}: {guesses}")
    return 0


def cmd_neurons(args) -> int:
    from .inspect.explain import encode_text
    from .inspect.lens import neuron_tokens, top_neurons
    from .viz.text import label

    model = load_model(args.model)
    if args.neuron:
        try:
            layer, index = (int(x) for x in args.neuron.split("."))
        except ValueError:
            raise GlassformerError(f"--neuron wants LAYER.INDEX, e.g. 3.1024, got {args.neuron!r}") from None
        pairs = [(layer, index, None)]
    else:
        if not args.text:
            raise GlassformerError("give a TEXT to find the neurons that fire on it, or --neuron LAYER.INDEX")
        ids = encode_text(model, args.text)
        T = ids.shape[1]
        if not -T <= args.position < T:
            raise GlassformerError(f"position {args.position} is out of range for {T} tokens")
        token = model.tokenizer.token_texts([int(ids[0, args.position])])[0]
        print(f"MLP neurons firing hardest at [{label(token, 16)}] (position {args.position % T})")
        pairs = top_neurons(model, ids, args.position, k=args.k)
    for layer, index, act in pairs:
        head = f"  neuron {layer}.{index}" + (f"  activation {act:+.2f}" if act is not None else "")
        if model.config.causal:
            pushes = ", ".join(f"{label(t, 12)}" for t, _ in neuron_tokens(model, layer, index, k=6))
            head += f"  pushes up: {pushes}"
        print(head)
    return 0


def cmd_show(args) -> int:
    from .inspect.explain import analyze, check_layer_head

    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".html", ".png", ".svg"):
        raise GlassformerError(f"--out must end in .html, .png or .svg, not {out.name!r}")
    if not out.parent.is_dir():
        raise GlassformerError(f"the folder {out.parent} does not exist")
    model = load_model(args.model)
    check_layer_head(model, args.layer, args.head)
    if suffix == ".html":
        from .viz.page import report_html

        page = report_html(model, args.text, title=f"glassformer: {args.text[:60]}", layer=args.layer, head=args.head)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(out)  # never leave half a file where the report should be
    else:
        from .viz import plots

        a = analyze(model, args.text, scores=True)
        title = f"{args.model} — layer {args.layer}, head {args.head}"
        if args.kind == "head":
            pic = plots.head_picture(a.patterns[args.layer, args.head], a.tokens,
                                     scores_TS=a.scores[args.layer, args.head], video=not args.usual, title=title)  # fmt: skip
        elif args.kind == "all":
            pic = plots.all_heads_picture(a.patterns, a.tokens, video=not args.usual, title=str(args.model))
        else:
            if a.last_logits is None:
                raise GlassformerError(f"{args.model} is an encoder: it has no next-token distribution")
            pic = plots.next_token_picture(a.last_logits, model.tokenizer.token_texts(range(model.config.vocab_size)),
                                           temperature=args.temperature, title=str(args.model))  # fmt: skip
        pic.save(out)
    print(f"wrote {out}")
    return 0


def cmd_serve(args) -> int:
    import webbrowser

    from .server.app import create_app, default_registry

    try:
        import uvicorn
    except ImportError:
        raise GlassformerError("the explorer needs uvicorn: pip install 'glassformer[serve]'") from None
    names = args.model or []
    registry = default_registry(names)
    first = next(iter(registry.slots))
    if first.startswith("lesson:"):
        from .train.lesson_models import is_cached

        if not is_cached(first):
            print(f"training the {first} model (first use only, about a minute on two cores) ...", flush=True)
    print(f"loading {first} ...", flush=True)
    registry[first].get()  # fail now, with one line, rather than on the first request
    app = create_app(registry)
    url = f"http://{args.host}:{args.port}/"
    print(f"glassformer explorer on {url}  (models: {', '.join(registry.slots)}; Ctrl-C stops)", flush=True)
    if args.open or (args.open is None and os.environ.get("DISPLAY")):
        threading.Timer(1.0, lambda: webbrowser.open(url)).start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    except OSError as err:
        raise GlassformerError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    return 0


# --- parser ------------------------------------------------------------------------
def build_parser() -> Parser:
    p = Parser(prog="glassformer", description="A transformer you can see through.")
    p.add_argument("--verbose", "-v", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    s = sub.add_parser("params", help="tally a model's parameters by matrix kind",
                       description="Tally parameters the way 3Blue1Brown does for GPT-3: "
                       "Embedding, Key, Query, Value, Output, Up/Down-projection, Unembedding, "
                       "then everything else, then the Total.")  # fmt: skip
    s.add_argument("model", metavar="NAME|DIR", help=f"a preset ({', '.join(PRESETS)}) or a directory")
    s.set_defaults(fn=cmd_params)

    s = sub.add_parser("explain", help="walk one attention head through a sentence, step by step",
                       description="Print E, W_Q, Q, W_K, K, the grid of dot products, the mask, "
                       "the pattern, the values and ΔE for one head, with what each means.")  # fmt: skip
    s.add_argument("text", nargs="?", default=DEFAULT_TEXT, help=f"the sentence (default: {DEFAULT_TEXT!r})")
    s.add_argument("--model", "-m", help=MODEL_HELP)
    s.add_argument("--layer", "-l", type=int, default=0, help="layer index, from 0")
    s.add_argument("--head", type=int, default=0, help="head index, from 0")
    s.add_argument("--usual", action="store_true",
                   help="draw grids with queries down the side (rows sum to 1) instead of the video's way")  # fmt: skip
    s.set_defaults(fn=cmd_explain)

    s = sub.add_parser("train", help="train a GPT on a text file or a built-in lesson",
                       description="Train with AdamW (decay on matrices only), linear warmup then "
                       "cosine decay, clipping and accumulation; evaluate on fixed validation batches; "
                       "checkpoint atomically to DIR/latest and DIR/best; log DIR/log.jsonl. "
                       "Under torchrun the same command runs DistributedDataParallel.")  # fmt: skip
    s.add_argument("--data", help="a UTF-8 text file, or lesson:adjectives / lesson:induction")
    s.add_argument("--out", help="run directory to create")
    s.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly where it stopped")
    for field, (kind, text) in TRAIN_FIELDS.items():
        s.add_argument("--" + field.replace("_", "-"), dest=field, type=kind, default=None, help=text,
                       metavar="yes|no" if kind is yes_no else None)  # fmt: skip
    s.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("generate", help="sample text from a decoder, streaming it as it comes",
                       description="Sample with temperature (0 = greedy), top-k and top-p, using a KV "
                       "cache so each new token costs one position.")  # fmt: skip
    s.add_argument("--model", "-m", required=True, help=MODEL_HELP)
    s.add_argument("--prompt", "-p", default="\n", help="text to continue")
    s.add_argument("--max-new-tokens", "-n", type=int, default=100)
    s.add_argument("--temperature", "-t", type=float, default=1.0, help="0 = always the likeliest token")
    s.add_argument("--top-k", type=int, help="sample only among the k likeliest tokens")
    s.add_argument("--top-p", type=float, help="sample only among the likeliest tokens covering p")
    s.add_argument("--seed", type=int, help="make sampling reproducible")
    s.add_argument("--crop", action="store_true", help="keep the end of a prompt longer than the context")
    s.add_argument("--no-cache", action="store_true", help="recompute every position each step (slow)")
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("heads", help="score every head: previous-token, duplicate, induction, sink, adjective",
                       description="Run the head detectors and print a [layer, head] table for each, "
                       "then the strongest head of each kind.")  # fmt: skip
    s.add_argument("--model", "-m", default=None, help=MODEL_HELP)
    s.add_argument("--text", help="score on this text instead of repeated random tokens")
    s.set_defaults(fn=cmd_heads)

    s = sub.add_parser("lens", help="the logit lens: what the stream predicts after each layer")
    s.add_argument("text", help="the text to read")
    s.add_argument("--model", "-m", default=None, help=MODEL_HELP)
    s.add_argument("-k", type=int, default=5, help="guesses per position")
    s.set_defaults(fn=cmd_lens)

    s = sub.add_parser("neurons", help="the MLP as a store of facts: neurons that fire, tokens they push")
    s.add_argument("text", nargs="?", help="the text to run")
    s.add_argument("--model", "-m", default=None, help=MODEL_HELP)
    s.add_argument("--position", type=int, default=-1, help="token position (default: the last)")
    s.add_argument("--neuron", help="LAYER.INDEX: show what one neuron writes instead")
    s.add_argument("-k", type=int, default=10, help="how many neurons")
    s.set_defaults(fn=cmd_neurons)

    s = sub.add_parser("show", help="write the attention of a sentence as a self-contained HTML report or a picture",
                       description="HTML: one file with its script, styles and data inside; opens from "
                       "file:// with no network. PNG/SVG: one head (dot products beside the pattern), "
                       "all heads, or the next-token distribution.")  # fmt: skip
    s.add_argument("text", help="the sentence")
    s.add_argument("--model", "-m", default=None, help=MODEL_HELP)
    s.add_argument("--out", "-o", required=True, help="FILE.html, FILE.png or FILE.svg")
    s.add_argument("--layer", "-l", type=int, default=0)
    s.add_argument("--head", type=int, default=0)
    s.add_argument("--kind", choices=["head", "all", "next"], default="head", help="what a picture shows")
    s.add_argument("--temperature", "-t", type=float, default=1.0, help="for --kind next")
    s.add_argument("--usual", action="store_true", help="rows are queries (default: the video's orientation)")
    s.set_defaults(fn=cmd_show)

    s = sub.add_parser("serve", help="the local web explorer",
                       description="Serve the explorer: type a sentence, pick a model, layer and head, and "
                       "see every step of attention. The JSON API is documented at /docs.")  # fmt: skip
    s.add_argument("--model", "-m", action="append", help=MODEL_HELP + " (repeatable)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--open", action=argparse.BooleanOptionalAction, default=None,
                   help="open a browser (default: when there is a display)")  # fmt: skip
    s.set_defaults(fn=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        return args.fn(args)
    except GlassformerError as err:
        print(f"glassformer: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("glassformer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
