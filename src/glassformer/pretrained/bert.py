"""Hugging Face BERT state dict -> ours. A pure function: tensors in, tensors out.

Key map (i = layer; Hugging Face names may carry a leading "bert."):

    ours                          Hugging Face                                    change
    embed.W_E.weight              embeddings.word_embeddings.weight               -
    embed.W_pos.weight            embeddings.position_embeddings.weight           -
    embed.W_type.weight           embeddings.token_type_embeddings.weight         -
    embed.ln.{weight,bias}        embeddings.LayerNorm.{weight,bias}              -
    blocks.i.attn.{query,key,value}.weight   encoder.layer.i.attention.self.{query,key,value}.weight   transpose
    blocks.i.attn.{query,key,value}.bias     encoder.layer.i.attention.self.{query,key,value}.bias     -
    blocks.i.attn.output.weight   encoder.layer.i.attention.output.dense.weight   transpose
    blocks.i.ln1.*                encoder.layer.i.attention.output.LayerNorm.*    -
    blocks.i.mlp.up.weight        encoder.layer.i.intermediate.dense.weight       transpose
    blocks.i.mlp.down.weight      encoder.layer.i.output.dense.weight             transpose
    blocks.i.ln2.*                encoder.layer.i.output.LayerNorm.*              -
    (biases of the same layers)                                                   -

Why transpose: BERT uses torch.nn.Linear, which stores [out, in] and computes x·Wᵀ;
our Linear stores [in, out] and computes x·W (see linear.py). Old TensorFlow-era exports call the norm
parameters gamma/beta; they are renamed. Deliberately not used: the pooler (a tanh
layer on [CLS] for next-sentence prediction; sentence embeddings mean-pool instead),
the pre-training heads (cls.*) and the position_ids buffer.
"""

from __future__ import annotations

import torch

from ..config import GlassformerError, ModelConfig
from ._common import Converter

IGNORED_PREFIXES = ("pooler.", "cls.")
IGNORED_KEYS = ("embeddings.position_ids",)
ACTIVATION_NAMES = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}


def config_from_hf(hf: dict) -> ModelConfig:
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise GlassformerError(f"BERT position_embedding_type {hf['position_embedding_type']!r} is not supported")
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATION_NAMES:
        raise GlassformerError(f"BERT activation {act!r} is not supported; supported: {', '.join(ACTIVATION_NAMES)}")
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf.get("max_position_embeddings", 512),
        d_model=hf["hidden_size"],
        n_heads=hf["num_attention_heads"],
        n_layers=hf["num_hidden_layers"],
        d_mlp=hf["intermediate_size"],
        causal=False,
        norm="post",
        activation=ACTIVATION_NAMES[act],
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        type_vocab_size=hf.get("type_vocab_size", 2),
        tied_unembedding=False,
        bias=True,
    )


def convert(config: ModelConfig, hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict from a Hugging Face BERT state dict, for `config_from_hf`'s config."""
    state = {}
    for key, value in hf_state.items():
        key = key.removeprefix("bert.")
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        state[key] = value
    c = Converter(state, "BERT")
    for key in list(state):
        if key.startswith(IGNORED_PREFIXES) or key in IGNORED_KEYS:
            c.drop(key)
    C, M, HD = config.d_model, config.d_mlp, config.n_heads * config.d_head
    e = "embeddings."
    ours = {
        "embed.W_E.weight": c.take(e + "word_embeddings.weight", (config.vocab_size, C)),
        "embed.W_pos.weight": c.take(e + "position_embeddings.weight", (config.context_length, C)),
        "embed.W_type.weight": c.take(e + "token_type_embeddings.weight", (config.type_vocab_size, C)),
        "embed.ln.weight": c.take(e + "LayerNorm.weight", (C,)),
        "embed.ln.bias": c.take(e + "LayerNorm.bias", (C,)),
    }
    for i in range(config.n_layers):
        h, b = f"encoder.layer.{i}.", f"blocks.{i}."
        s = h + "attention.self."
        for name in ("query", "key", "value"):  # the same names on both sides
            ours[b + f"attn.{name}.weight"] = c.take(s + f"{name}.weight", (HD, C)).T
            ours[b + f"attn.{name}.bias"] = c.take(s + f"{name}.bias", (HD,))
        ours |= {
            b + "attn.output.weight": c.take(h + "attention.output.dense.weight", (C, HD)).T,
            b + "attn.output.bias": c.take(h + "attention.output.dense.bias", (C,)),
            b + "ln1.weight": c.take(h + "attention.output.LayerNorm.weight", (C,)),
            b + "ln1.bias": c.take(h + "attention.output.LayerNorm.bias", (C,)),
            b + "mlp.up.weight": c.take(h + "intermediate.dense.weight", (M, C)).T,
            b + "mlp.up.bias": c.take(h + "intermediate.dense.bias", (M,)),
            b + "mlp.down.weight": c.take(h + "output.dense.weight", (C, M)).T,
            b + "mlp.down.bias": c.take(h + "output.dense.bias", (C,)),
            b + "ln2.weight": c.take(h + "output.LayerNorm.weight", (C,)),
            b + "ln2.bias": c.take(h + "output.LayerNorm.bias", (C,)),
        }
    c.check_all_used()
    return {k: v.contiguous() for k, v in ours.items()}
