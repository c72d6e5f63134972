"""Sentence embeddings from an encoder: mean of the last hidden states, L2-normalised.

    gf.embed_sentences(gf.load("minilm"), ["a fluffy blue creature"])   # [1, 384]

This is what sentence-transformers computes for all-MiniLM-L6-v2 (Transformer -> mean
Pooling -> Normalize), including its truncation at 256 tokens.
"""

from __future__ import annotations

import torch

from .config import GlassformerError
from .model import Transformer


def pad_batch(token_lists: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest: (input_ids [N, T], attention_mask [N, T] with 1 = real)."""
    T = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), T), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return ids, mask


def encode_padded(
    model: Transformer, texts: list[str], max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise `texts` with the model's tokenizer and right-pad them into a batch. Texts
    over `max_length` are cut (keeping the final [SEP], as Hugging Face does); with no
    `max_length`, a text over the context is refused."""
    if model.tokenizer is None:
        raise GlassformerError("this model has no tokenizer attached")
    tok = model.tokenizer
    lists = tok.encode_batch(texts) if hasattr(tok, "encode_batch") else [tok.encode(t) for t in texts]
    limit = max_length or model.config.context_length
    too_long = [i for i, t in enumerate(lists) if len(t) > limit]
    if too_long and max_length is None:
        i = too_long[0]
        raise GlassformerError(f"text {i} is {len(lists[i])} tokens; this model's context is {limit}")
    lists = [t if len(t) <= limit else t[: limit - 1] + t[-1:] for t in lists]
    pad_id = tok.token_id("[PAD]") if hasattr(tok, "token_id") else None
    return pad_batch(lists, pad_id or 0)


@torch.inference_mode()
def embed_sentences(model: Transformer, texts, *, batch_size: int = 32, max_length: int | None = None) -> torch.Tensor:
    """Mean of the last hidden states over real tokens, then L2-normalised: [N, C]."""
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
        hidden = model(ids, attention_mask=mask).float()
        weights = mask[..., None].to(hidden.dtype)
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(mean, p=2, dim=-1))
    return torch.cat(out)
