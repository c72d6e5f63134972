"""The command line: the only module that parses argv or prints.

    glassformer params NAME|DIR
    glassformer explain TEXT [--model M] [--layer L] [--head H]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import PRESETS, GlassformerError

DEFAULT_TEXT = "a fluffy blue creature roamed the verdant forest"
MODEL_HELP = (
    "a checkpoint or Hugging Face directory, a hub id (gpt2, bert-base-uncased, ...), "
    "minilm (offline all-MiniLM-L6-v2), or random:PRESET"
)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def default_model() -> str:
    return "random:lesson-tiny"


def load_model(name: str):
    from . import load

    return load(name)


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
