"""A model built around weights that were read: every key, shape and number checked.

Every loader ends here: our checkpoints, Hugging Face directories, GGUF files and the
lessons' shipped models. checkpoint.py reads our format; this is where a model is made.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import checkpoint
from ..config import GlassformerError, ModelConfig
from ..files import find_dir
from ..model import Transformer
from ..params import check_fits


def check_against_weights(config: ModelConfig, state: dict[str, torch.Tensor]) -> None:
    """The sizes a config claims, checked against the weights it comes with, before a
    single module is built: a config may not ask for a billion layers that no file holds."""
    layers = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if len(layers) != config.n_layers or (layers and max(layers) != config.n_layers - 1):
        raise GlassformerError(f"the config says {config.n_layers} layers but the weights hold {len(layers)}")
    W_E = state.get("embed.W_E.weight")
    if W_E is None or tuple(W_E.shape) != (config.vocab_size, config.d_model):
        shape = "none" if W_E is None else list(W_E.shape)
        raise GlassformerError(
            f"the config says vocab {config.vocab_size} × d_model {config.d_model}, "
            f"but the token embedding in the weights is {shape}"
        )
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            raise GlassformerError(f"tensor {key!r} holds {tensor.dtype} numbers; weights must be floats")
    check_fits(config)


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN or infinity in `t`. A finite sum proves it (NaN and ±inf survive any sum) at
    the speed memory is read; only a sum that overflows needs the element-wise check."""
    with torch.no_grad():
        return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def build_with_weights(config: ModelConfig, state: dict[str, torch.Tensor], *, checked: bool = False) -> Transformer:
    """A model of `config` holding exactly `state` (our key names); every key checked
    (`checked`: the numbers were already found finite where they were made).

    The config is first checked against the weights, then the model is built on the
    meta device, so no time is spent on random init that the weights would overwrite.
    """
    check_against_weights(config, state)
    with torch.device("meta"):
        model = Transformer(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if config.causal and config.tied_unembedding:
        expected.pop("unembed.weight")
    missing = sorted(set(expected) - set(state))
    if missing:
        raise GlassformerError(f"weights are missing tensor {missing[0]!r} ({len(missing)} missing)")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise GlassformerError(f"weights have unexpected tensor {unexpected[0]!r}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != tuple(shape):
            raise GlassformerError(f"tensor {key!r} has shape {list(state[key].shape)}, expected {list(shape)}")
        if not checked and state[key].is_floating_point() and not _all_finite(state[key]):
            raise GlassformerError(f"tensor {key!r} holds NaN or infinite numbers: these weights cannot be run")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False, assign=True)
    if config.causal and config.tied_unembedding:
        model.unembed.weight = model.embed.W_E.weight
    return model.eval()


def load_checkpoint(path: str | Path) -> Transformer:
    """A checkpoint directory written by `checkpoint.save`, as a model; the tokenizer comes attached."""
    found = find_dir(path)
    if found is None:
        raise GlassformerError(f"no checkpoint at {path}")
    config, state, tokenizer = checkpoint.read(found)
    model = build_with_weights(config, state)
    model.tokenizer = tokenizer
    return model
