"""Hugging Face GPT-2 state dict -> ours. A pure function: tensors in, tensors out.

Key map (i = layer; Hugging Face names may carry a leading "transformer."):

    ours                          Hugging Face                 change
    embed.W_E.weight              wte.weight                   -
    embed.W_pos.weight            wpe.weight                   -
    blocks.i.ln1.{weight,bias}    h.i.ln_1.{weight,bias}       -
    blocks.i.attn.query.weight    h.i.attn.c_attn.weight       columns 0..H·D ([in, out], see below)
    blocks.i.attn.key.weight      h.i.attn.c_attn.weight       the next H·D columns
    blocks.i.attn.value.weight    h.i.attn.c_attn.weight       the last H·D columns
    blocks.i.attn.{query,key,value}.bias   h.i.attn.c_attn.bias   split the same way
    blocks.i.attn.output.weight   h.i.attn.c_proj.weight       -
    blocks.i.attn.output.bias     h.i.attn.c_proj.bias         -
    blocks.i.ln2.{weight,bias}    h.i.ln_2.{weight,bias}       -
    blocks.i.mlp.up.weight        h.i.mlp.c_fc.weight          -
    blocks.i.mlp.up.bias          h.i.mlp.c_fc.bias            -
    blocks.i.mlp.down.weight      h.i.mlp.c_proj.weight        -
    blocks.i.mlp.down.bias        h.i.mlp.c_proj.bias          -
    ln_final.{weight,bias}        ln_f.{weight,bias}           -
    unembed.weight                lm_head.weight               only when not tied

Why no transpose here when every other GPT-2 port needs one: OpenAI's GPT-2 code used
a "Conv1D" layer that stores its weight as [in, out] and computes x @ W, while
torch.nn.Linear stores [out, in] and computes x @ Wᵀ, so ports built on nn.Linear
transpose these four matrices. glassformer's Linear keeps [in, out] (E·W_Q, as the
video writes it; see linear.py), so they are taken as they are, and it is BERT's
nn.Linear weights that get transposed (bert.py). c_attn holds W_Q | W_K | W_V side by
side, each with the heads side by side, so splitting its columns in three gives ours.
"""

from __future__ import annotations

import torch

from ..config import GlassformerError, ModelConfig
from ._common import Converter

ACTIVATION_NAMES = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
# causal-mask buffers that old GPT-2 checkpoints saved alongside the weights; not parameters
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def config_from_hf(hf: dict) -> ModelConfig:
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag):
            raise GlassformerError(f"GPT-2 variant with {flag}=true is not supported")
    if hf.get("scale_attn_weights") is False:
        raise GlassformerError("GPT-2 variant with scale_attn_weights=false is not supported")
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATION_NAMES:
        raise GlassformerError(f"GPT-2 activation {act!r} is not supported; supported: {', '.join(ACTIVATION_NAMES)}")
    d_model = hf["n_embd"]
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf.get("n_positions", hf.get("n_ctx", 1024)),
        d_model=d_model,
        n_heads=hf["n_head"],
        n_layers=hf["n_layer"],
        d_mlp=hf.get("n_inner") or 4 * d_model,
        causal=True,
        norm="pre",
        activation=ACTIVATION_NAMES[act],
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        tied_unembedding=hf.get("tie_word_embeddings", True),
        bias=True,
    )


def convert(config: ModelConfig, hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict from a Hugging Face GPT-2 state dict, for `config_from_hf`'s config."""
    state = {
        (k.removeprefix("transformer.") if k.startswith("transformer.") else k): v
        for k, v in hf_state.items()
        if not k.endswith(IGNORED_SUFFIXES)
    }
    c = Converter(state, "GPT-2")
    C, V = config.d_model, config.vocab_size
    ours = {
        "embed.W_E.weight": c.take("wte.weight", (V, C)),
        "embed.W_pos.weight": c.take("wpe.weight", (config.context_length, C)),
        "ln_final.weight": c.take("ln_f.weight", (C,)),
        "ln_final.bias": c.take("ln_f.bias", (C,)),
    }
    M, HD = config.d_mlp, config.n_heads * config.d_head
    for i in range(config.n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        W_Q, W_K, W_V = c.take(h + "attn.c_attn.weight", (C, 3 * HD)).split(HD, dim=1)
        b_Q, b_K, b_V = c.take(h + "attn.c_attn.bias", (3 * HD,)).split(HD)
        ours |= {
            b + "ln1.weight": c.take(h + "ln_1.weight", (C,)),
            b + "ln1.bias": c.take(h + "ln_1.bias", (C,)),
            b + "attn.query.weight": W_Q,
            b + "attn.key.weight": W_K,
            b + "attn.value.weight": W_V,
            b + "attn.query.bias": b_Q,
            b + "attn.key.bias": b_K,
            b + "attn.value.bias": b_V,
            b + "attn.output.weight": c.take(h + "attn.c_proj.weight", (HD, C)),
            b + "attn.output.bias": c.take(h + "attn.c_proj.bias", (C,)),
            b + "ln2.weight": c.take(h + "ln_2.weight", (C,)),
            b + "ln2.bias": c.take(h + "ln_2.bias", (C,)),
            b + "mlp.up.weight": c.take(h + "mlp.c_fc.weight", (C, M)),
            b + "mlp.up.bias": c.take(h + "mlp.c_fc.bias", (M,)),
            b + "mlp.down.weight": c.take(h + "mlp.c_proj.weight", (M, C)),
            b + "mlp.down.bias": c.take(h + "mlp.c_proj.bias", (C,)),
        }
    return c.finish(ours, config, V, C)
