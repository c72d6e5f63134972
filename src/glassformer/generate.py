"""Sampling: temperature, top-k, top-p, a KV cache, and streaming.

With the cache, the prompt is run once and each new token costs one position: its
query meets the stored keys and values of everything before it. Greedy decoding
with and without the cache gives the same tokens.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .config import GlassformerError
from .linear import vector_products


def next_token_probs(
    logits_BV: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:  # fmt: skip
    """The distribution to sample from: softmax(logits / T), cut to the top k tokens
    and then to the smallest set whose probability reaches top_p."""
    logits = logits_BV.float()
    if temperature == 0:
        probs = torch.zeros_like(logits)
        return probs.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the tokens ranked above each one
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)  # always keeps the first
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def decode_unembedding(model) -> torch.Tensor:
    """W_U as a contiguous [C, V] matrix, kept on the model until the weights change.

    At small batch each step is a vector times W_U, and BLAS streams a [C, V] matrix much
    faster than the stored [V, C] one (tied to W_E). Making the copy is itself slow (a
    transpose of V·C numbers), so it is made once and reused while the weight tensor and
    its version counter (bumped by every in-place update, e.g. an optimizer step) are the same.
    """
    weight = model.unembed.weight
    key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
    cached = model.__dict__.get("_decode_W_U")
    if cached is None or cached[0] != key:
        cached = (key, model.W_U.detach().contiguous())
        model.__dict__["_decode_W_U"] = cached
    return cached[1]


def _check(model, prompt_len: int, max_new_tokens, temperature, top_k, top_p) -> None:
    if not model.config.causal:
        raise GlassformerError("generation needs a decoder (GPT-style) model, not an encoder")
    if prompt_len == 0:
        raise GlassformerError("the prompt is empty; give at least one token")
    if prompt_len > model.config.context_length:
        raise GlassformerError(
            f"the prompt is {prompt_len} tokens; this model's context is "
            f"{model.config.context_length} tokens (crop it or use a shorter prompt)"
        )
    if max_new_tokens < 0:
        raise GlassformerError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise GlassformerError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise GlassformerError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise GlassformerError(f"top_p must be in (0, 1], got {top_p}")


@torch.inference_mode()
def stream(
    model, tokens, *, max_new_tokens: int = 50, temperature: float = 1.0,
    top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
    use_cache: bool = True, stop_token: int | None = None,
) -> Iterator[torch.Tensor]:  # fmt: skip
    """Yield each new token, [B] ids, as soon as it is chosen.

    On a CPU at batch 1, once the prompt is cached, PyTorch is held at one thread until
    the stream ends or is closed, and the one-row products go to numpy (see linear.py).
    """
    ids = torch.as_tensor(tokens, dtype=torch.long, device=model.device)
    if ids.dim() == 1:
        ids = ids[None]
    _check(model, ids.shape[1], max_new_tokens, temperature, top_k, top_p)
    gen = None
    if seed is not None:
        gen = torch.Generator(device=model.device).manual_seed(seed)
    ctx = model.config.context_length
    cache = model.new_cache(ids.shape[0]) if use_cache else None
    W_U = decode_unembedding(model) if ids.shape[0] <= 4 and max_new_tokens > 8 else None
    fresh = ids  # what the model has not seen yet
    with contextlib.ExitStack() as one_row:  # held while each step feeds the model a single row
        for step in range(max_new_tokens):
            if cache is not None and len(cache) + fresh.shape[1] > ctx:
                cache = None  # full: positions are absolute, so slide the window without a cache
                one_row.close()
            if cache is None:
                logits = model(ids[:, -ctx:], last_only=True, W_U=W_U)
            else:
                logits = model(fresh, cache=cache, last_only=True, W_U=W_U)
            probs = next_token_probs(logits[:, -1], temperature=temperature, top_k=top_k, top_p=top_p)
            if temperature == 0:
                new = probs.argmax(-1)
            else:
                new = torch.multinomial(probs, 1, generator=gen)[:, 0]
            ids = torch.cat([ids, new[:, None]], dim=1)
            if step == 0 and cache is not None and ids.shape[0] == 1 and ids.device.type == "cpu":
                one_row.enter_context(vector_products())  # the prompt is cached; one row per step from here
            fresh = new[:, None]
            yield new
            if stop_token is not None and bool((new == stop_token).all()):
                return


def generate(model, tokens, *, max_new_tokens: int = 50, **kwargs):
    """The prompt followed by up to `max_new_tokens` new ids.

    `tokens`: a list of ids, a [T] or [B, T] tensor; the result has the same form.
    Keyword arguments: temperature (0 = greedy), top_k, top_p, seed, use_cache, stop_token.
    """
    as_list = isinstance(tokens, (list, tuple))
    ids = torch.as_tensor(tokens, dtype=torch.long, device=model.device)
    flat = ids.dim() == 1
    ids2 = ids[None] if flat else ids
    new = list(stream(model, ids2, max_new_tokens=max_new_tokens, **kwargs))
    out = torch.cat([ids2] + [n[:, None] for n in new], dim=1)
    if flat:
        out = out[0]
    return out.tolist() if as_list else out
