"""Generation: a KV cache, streaming, and the decode-speed tricks (kept out of the model).

With the cache, the prompt is run once and each new token costs one position: its
query meets the stored keys and values of everything before it. Greedy decoding
with and without the cache gives the same tokens. Which token comes next is the
sampler's business (sampling.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from . import cpu_decoder, sampling
from .config import GlassformerError
from .inputs import tokenizer_of
from .model import Transformer

MAX_SEED = 2**63 - 1  # torch.Generator takes a signed 64-bit seed


def check(model: Transformer, prompt_len: int, max_new_tokens: int, seed: int | None = None) -> None:
    """One-line errors for a generation that cannot run."""
    if not model.config.causal:
        raise GlassformerError("generation needs a decoder (GPT-style) model, not an encoder")
    if prompt_len == 0:
        raise GlassformerError("the prompt is empty; give at least one token")
    if prompt_len > model.config.context_length:
        raise GlassformerError(
            f"the prompt is {prompt_len} tokens; this model's context is "
            f"{model.config.context_length} tokens (crop it or use a shorter prompt)"
        )
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise GlassformerError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise GlassformerError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")


def as_ids(model: Transformer, tokens) -> torch.Tensor:
    """`tokens` (a list of ids, a [T] or [B, T] tensor) as [B, T] int64 ids on the model's
    device; anything else (text, floats, ragged rows, nothing) refused in one line."""
    if isinstance(tokens, str):
        raise GlassformerError("generation takes token ids; for text use model.tokenizer.encode(text) first")
    try:
        given = torch.as_tensor(tokens)
    except (TypeError, ValueError, RuntimeError) as err:
        raise GlassformerError(f"tokens must be a list of whole-number ids or a tensor of them ({err})") from None
    if given.numel() == 0:
        raise GlassformerError("the prompt is empty; give at least one token id (in each of at least one row)")
    if given.is_floating_point() or given.is_complex() or given.dtype == torch.bool or given.dim() not in (1, 2):
        raise GlassformerError(
            f"tokens must be whole-number ids in a [T] or [B, T] form, not {given.dtype} {list(given.shape)}"
        )
    ids = given.to(dtype=torch.long, device=model.device)
    return ids[None] if ids.dim() == 1 else ids


@torch.inference_mode()
def stream(
    model,
    tokens,
    *,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    stop_token: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield each new token, [B] ids, as soon as it is chosen.

    On a CPU at batch 1, once the prompt is cached, each step runs through the numpy
    decoder (cpu_decoder.py) with PyTorch held at one thread until the stream ends or is closed.
    """
    ids = as_ids(model, tokens)
    sampling.check(temperature, top_k, top_p)
    check(model, ids.shape[1], max_new_tokens, seed)
    greedy = temperature == 0
    generator = torch.Generator(device=model.device).manual_seed(seed) if seed is not None else None
    context = model.config.context_length
    # the cache holds only as many positions as this generation can reach
    cache = model.new_cache(ids.shape[0], max_len=min(context, ids.shape[1] + max_new_tokens)) if use_cache else None
    fresh = ids  # what the model has not seen yet
    fast: cpu_decoder.NumpyDecoder | None = None
    with contextlib.ExitStack() as one_thread:  # held while the numpy decoder runs
        for step in range(max_new_tokens):
            if cache is not None and len(cache) + fresh.shape[1] > cache.max_len:
                cache = fast = None  # full: positions are absolute, so slide the window without a cache
                one_thread.close()
            if cache is None:
                logits_BV = model(ids[:, -context:], last_only=True)[:, -1]
            elif fast is not None:
                logits_BV = fast.logits(int(fresh[0, 0]), len(cache))
            else:
                logits_BV = model(fresh, cache=cache, last_only=True)[:, -1]
            probs_BV = sampling.probabilities(logits_BV, temperature, top_k, top_p)
            new = sampling.draw(probs_BV, greedy=greedy, generator=generator)
            ids = torch.cat([ids, new[:, None]], dim=1)
            if step == 0 and cache is not None and cpu_decoder.suits(model, ids.shape[0]):
                one_thread.enter_context(cpu_decoder.one_torch_thread())  # the prompt is cached: numpy from here
                fast = cpu_decoder.NumpyDecoder(model, cache)
            fresh = new[:, None]
            yield new
            if stop_token is not None and bool((new == stop_token).all()):
                return


def stream_text(model: Transformer, ids: list[int], **kwargs) -> Iterator[str]:
    """The continuation of `ids` as text, piece by piece as `stream` chooses tokens; a
    piece that would end in half of a multi-byte character waits for the rest."""
    text_of = tokenizer_of(model).decode
    every, shown = list(ids), text_of(ids)
    for new in stream(model, ids, **kwargs):
        every.append(int(new[0]))
        text = text_of(every)
        if text.endswith("\ufffd"):
            continue
        yield text[len(shown) :] if text.startswith(shown) else ""
        shown = text


def generate(model: Transformer, tokens, *, max_new_tokens: int = 50, **kwargs):
    """The prompt followed by up to `max_new_tokens` new ids.

    `tokens`: a list of ids, a [T] or [B, T] tensor; the result has the same form.
    Keyword arguments: temperature (0 = greedy), top_k, top_p, seed, use_cache, stop_token.
    """
    as_list = isinstance(tokens, (list, tuple))
    ids_BT = as_ids(model, tokens)
    flat = torch.as_tensor(tokens).dim() == 1
    new = [n[:, None] for n in stream(model, ids_BT, max_new_tokens=max_new_tokens, **kwargs)]
    out = torch.cat([ids_BT, *new], dim=1)
    if flat:
        out = out[0]
    return out.tolist() if as_list else out
