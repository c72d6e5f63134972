"""Hugging Face BERT state dict -> ours, and sentence embeddings.

Key map (i = layer; Hugging Face names may carry a leading "bert."):

    ours                          Hugging Face                                    change
    embed.W_E.weight              embeddings.word_embeddings.weight               -
    embed.W_pos.weight            embeddings.position_embeddings.weight           -
    embed.W_type.weight           embeddings.token_type_embeddings.weight         -
    embed.ln.{weight,bias}        embeddings.LayerNorm.{weight,bias}              -
    blocks.i.attn.qkv.weight      encoder.layer.i.attention.self.{query,key,value}.weight  transpose, side by side
    blocks.i.attn.qkv.bias        encoder.layer.i.attention.self.{query,key,value}.bias    side by side
    blocks.i.attn.proj.weight     encoder.layer.i.attention.output.dense.weight   transpose
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
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}


def config_from_hf(hf: dict) -> ModelConfig:
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise GlassformerError(
            f"BERT position_embedding_type {hf['position_embedding_type']!r} is not supported"
        )
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise GlassformerError(
            f"BERT activation {act!r} is not supported; supported: {', '.join(ACTIVATIONS)}"
        )
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf.get("max_position_embeddings", 512),
        d_model=hf["hidden_size"],
        n_heads=hf["num_attention_heads"],
        n_layers=hf["num_hidden_layers"],
        d_mlp=hf["intermediate_size"],
        causal=False,
        norm="post",
        activation=ACTIVATIONS[act],
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        type_vocab_size=hf.get("type_vocab_size", 2),
        tied_unembedding=False,
        bias=True,
    )


def convert(hf_config: dict, hf_state: dict[str, torch.Tensor]) -> tuple[ModelConfig, dict]:
    config = config_from_hf(hf_config)
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
        ours |= {
            b + "attn.qkv.weight": torch.cat([c.take(s + f"{n}.weight", (HD, C)).T for n in ("query", "key", "value")], 1),
            b + "attn.qkv.bias": torch.cat([c.take(s + f"{n}.bias", (HD,)) for n in ("query", "key", "value")]),
            b + "attn.proj.weight": c.take(h + "attention.output.dense.weight", (C, HD)).T,
            b + "attn.proj.bias": c.take(h + "attention.output.dense.bias", (C,)),
            b + "ln1.weight": c.take(h + "attention.output.LayerNorm.weight", (C,)),
            b + "ln1.bias": c.take(h + "attention.output.LayerNorm.bias", (C,)),
            b + "mlp.up.weight": c.take(h + "intermediate.dense.weight", (M, C)).T,
            b + "mlp.up.bias": c.take(h + "intermediate.dense.bias", (M,)),
            b + "mlp.down.weight": c.take(h + "output.dense.weight", (C, M)).T,
            b + "mlp.down.bias": c.take(h + "output.dense.bias", (C,)),
            b + "ln2.weight": c.take(h + "output.LayerNorm.weight", (C,)),
            b + "ln2.bias": c.take(h + "output.LayerNorm.bias", (C,)),
        }  # fmt: skip
    c.check_all_used()
    return config, {k: v.contiguous() for k, v in ours.items()}


def pad_batch(token_lists: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest: (input_ids [N, T], attention_mask [N, T] with 1 = real)."""
    T = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), T), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return ids, mask


def encode_padded(model, texts: list[str], max_length: int | None = None):
    """Tokenise `texts` with the model's tokenizer and right-pad them into a batch."""
    if model.tokenizer is None:
        raise GlassformerError("this model has no tokenizer attached")
    tok = model.tokenizer
    lists = tok.encode_batch(texts) if hasattr(tok, "encode_batch") else [tok.encode(t) for t in texts]
    limit = max_length or model.config.context_length
    too_long = [i for i, t in enumerate(lists) if len(t) > limit]
    if too_long and max_length is None:
        raise GlassformerError(
            f"text {too_long[0]} is {len(lists[too_long[0]])} tokens; this model's context is {limit}"
        )
    # truncation keeps the final special token ([SEP]) the way Hugging Face does
    lists = [t if len(t) <= limit else t[: limit - 1] + t[-1:] for t in lists]
    pad_id = tok.token_id("[PAD]") if hasattr(tok, "token_id") else None
    return pad_batch(lists, pad_id or 0)


@torch.inference_mode()
def embed_sentences(model, texts, *, batch_size: int = 32, max_length: int | None = None) -> torch.Tensor:
    """Mean of the last hidden states over real tokens, then L2-normalised: [N, C].

    This is what sentence-transformers computes for all-MiniLM-L6-v2 (Transformer ->
    mean Pooling -> Normalize), including its truncation at 256 tokens.
    """
    if model.config.causal:
        raise GlassformerError("sentence embeddings need an encoder (BERT-style) model")
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise GlassformerError("no sentences to embed")
    max_length = max_length or getattr(model, "sentence_max_length", None)
    out = []
    for start in range(0, len(texts), batch_size):
        ids, mask = encode_padded(model, list(texts[start : start + batch_size]), max_length)
        ids, mask = ids.to(model.device), mask.to(model.device)
        hidden = model(ids, attention_mask=mask)
        weights = mask[..., None].to(hidden.dtype)
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(mean, p=2, dim=-1))
    return torch.cat(out)
