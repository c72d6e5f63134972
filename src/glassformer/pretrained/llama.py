"""Hugging Face Llama-family state dict -> ours (LlamaForCausalLM: SmolLM2, TinyLlama, Llama).
A pure function: tensors in, tensors out.

Key map (i = layer; Hugging Face names carry a leading "model." except lm_head):

    ours                          Hugging Face                              change
    embed.W_E.weight              embed_tokens.weight                       -
    blocks.i.ln1.weight           layers.i.input_layernorm.weight           -
    blocks.i.attn.query.weight    layers.i.self_attn.q_proj.weight          transpose
    blocks.i.attn.key.weight      layers.i.self_attn.k_proj.weight          transpose
    blocks.i.attn.value.weight    layers.i.self_attn.v_proj.weight          transpose
    blocks.i.attn.output.weight   layers.i.self_attn.o_proj.weight          transpose
    blocks.i.ln2.weight           layers.i.post_attention_layernorm.weight  -
    blocks.i.mlp.gate.weight      layers.i.mlp.gate_proj.weight             transpose
    blocks.i.mlp.up.weight        layers.i.mlp.up_proj.weight               transpose
    blocks.i.mlp.down.weight      layers.i.mlp.down_proj.weight             transpose
    ln_final.weight               norm.weight                               -
    unembed.weight                lm_head.weight                            only when not tied

Why transpose: Hugging Face uses torch.nn.Linear, which stores [out, in]; ours stores
[in, out] so that Q = E·W_Q reads as written (linear.py). Hugging Face already keeps
each head's query and key rows in the "first half, second half" order that its rotary
code turns, and so does ours: no permutation here (GGUF files differ: see gguf_file.py).
Deliberately not used: `rotary_emb.inv_freq` buffers that old exports saved (the angles
are recomputed from rope_theta).
"""

from __future__ import annotations

import torch

from ..config import LLAMA_FAMILY, GlassformerError, ModelConfig
from ._common import Converter

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def rope_base(hf: dict) -> float:
    """rope_theta, wherever this version of transformers put it; other rope scalings refused."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise GlassformerError(
            f"rope scaling {kind!r} is not supported (only plain rotary positions); "
            "models such as Llama 3.1/3.2 that stretch their context this way cannot load yet"
        )
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def config_from_hf(hf: dict) -> ModelConfig:
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise GlassformerError(f"Llama activation {act!r} is not supported; supported: silu (SwiGLU)")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise GlassformerError("Llama variants with biases (attention_bias, mlp_bias) are not supported")
    heads = hf["num_attention_heads"]
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf.get("max_position_embeddings", 2048),
        d_model=hf["hidden_size"],
        n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        d_head=hf.get("head_dim") or hf["hidden_size"] // heads,
        n_layers=hf["num_hidden_layers"],
        d_mlp=hf["intermediate_size"],
        **LLAMA_FAMILY,
        rope_base=rope_base(hf),
        tied_unembedding=bool(hf.get("tie_word_embeddings", False)),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
    )


def convert(config: ModelConfig, hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict from a Hugging Face Llama state dict, for `config_from_hf`'s config."""
    state = {k.removeprefix("model."): v for k, v in hf_state.items()}
    c = Converter(state, "Llama")
    for key in state:
        if key.endswith(IGNORED_SUFFIXES):
            c.drop(key)
    V, C, M = config.vocab_size, config.d_model, config.d_mlp
    HD, KD = config.n_heads * config.d_head, config.n_kv_heads * config.d_head
    ours = {
        "embed.W_E.weight": c.take("embed_tokens.weight", (V, C)),
        "ln_final.weight": c.take("norm.weight", (C,)),
    }
    for i in range(config.n_layers):
        h, b = f"layers.{i}.", f"blocks.{i}."
        ours |= {
            b + "ln1.weight": c.take(h + "input_layernorm.weight", (C,)),
            b + "attn.query.weight": c.take(h + "self_attn.q_proj.weight", (HD, C)).T,
            b + "attn.key.weight": c.take(h + "self_attn.k_proj.weight", (KD, C)).T,
            b + "attn.value.weight": c.take(h + "self_attn.v_proj.weight", (KD, C)).T,
            b + "attn.output.weight": c.take(h + "self_attn.o_proj.weight", (C, HD)).T,
            b + "ln2.weight": c.take(h + "post_attention_layernorm.weight", (C,)),
            b + "mlp.gate.weight": c.take(h + "mlp.gate_proj.weight", (M, C)).T,
            b + "mlp.up.weight": c.take(h + "mlp.up_proj.weight", (M, C)).T,
            b + "mlp.down.weight": c.take(h + "mlp.down_proj.weight", (C, M)).T,
        }
    return c.finish(ours, config, V, C)
