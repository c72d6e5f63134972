"""One head, walked through a sentence in the video's order, as data.

`walk_head` returns the tensors of every step for one (layer, head) — E, W_Q, Q,
W_K, K, the grid of dot products, the mask, the pattern, the values, ΔE — each
with one sentence on what it means. Presenting them is someone else's job
(`viz.text` for the terminal, the explorer for the browser).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import GlassformerError


@dataclass
class Step:
    symbol: str  # "Q = E·W_Q"
    title: str
    tensor: torch.Tensor  # 2-D, float32, on the CPU
    meaning: str
    rows: str = ""  # what the rows are: "token", "key", "d_model", ...
    cols: str = ""


@dataclass
class HeadWalk:
    tokens: list[str]
    layer: int
    head: int
    causal: bool
    steps: list[Step]

    def step(self, symbol_prefix: str) -> Step:
        return next(s for s in self.steps if s.symbol.startswith(symbol_prefix))


def encode_text(model, text: str) -> torch.Tensor:
    """[1, T] token ids for `text`, refusing empty text and text over the context."""
    if not text or not text.strip():
        raise GlassformerError("the text is empty; give a sentence to look at")
    if model.tokenizer is None:
        raise GlassformerError("this model has no tokenizer attached")
    ids = model.tokenizer.encode(text)
    limit = model.config.context_length
    if len(ids) > limit:
        raise GlassformerError(
            f"the text is {len(ids)} tokens; this model's context is {limit} tokens"
        )
    if not ids:
        raise GlassformerError("the text has no tokens")
    return torch.tensor([ids], dtype=torch.long, device=model.device)


def check_layer_head(model, layer: int, head: int) -> None:
    L, H = model.config.n_layers, model.config.n_heads
    if not 0 <= layer < L:
        raise GlassformerError(f"layer {layer} is out of range: this model has layers 0..{L - 1}")
    if not 0 <= head < H:
        raise GlassformerError(f"head {head} is out of range: this model has heads 0..{H - 1}")


def token_texts(model, ids: torch.Tensor) -> list[str]:
    return model.tokenizer.token_texts(ids.flatten().tolist())


@torch.inference_mode()
def walk_head(model, text: str, layer: int, head: int) -> HeadWalk:
    check_layer_head(model, layer, head)
    ids = encode_text(model, text)
    b = f"blocks.{layer}."
    E_name = b + ("ln1" if model.config.norm == "pre" else "resid_pre")
    names = [E_name] + [b + f"attn.{n}" for n in ("q", "k", "v", "scores", "pattern", "z")]
    _, cache = model.run_with_cache(ids, names=names, device="cpu")
    attn = model.blocks[layer].attn
    h = head
    E = cache[E_name][0].float()  # [T, C]
    q, k, v = (cache[b + f"attn.{n}"][0, h].float() for n in ("q", "k", "v"))  # [T, D]
    raw = q @ k.T / math.sqrt(attn.d_head)  # [T, S] before the mask
    masked = cache[b + "attn.scores"][0, h].float()
    pattern = cache[b + "attn.pattern"][0, h].float()
    dE = cache[b + "attn.z"][0, h].float() @ attn.W_O[h].detach().float().cpu()  # [T, C]
    mask = torch.where(torch.isinf(masked), float("-inf"), 0.0)
    D, C = attn.d_head, model.config.d_model
    steps = [
        Step("E", "embeddings entering attention", E,
             f"one {C}-number vector per token: the meaning so far, position included"
             + (" (after this block's LayerNorm)" if model.config.norm == "pre" else ""),
             "token", "d_model"),
        Step("W_Q", f"query matrix of head {h}", attn.W_Q[h].detach().float().cpu(),
             f"learned; turns a {C}-d embedding into a {D}-d question", "d_model", "d_head"),
        Step("Q = E·W_Q", "queries", q,
             "what each token is looking for (\"is there an adjective in front of me?\")",
             "token", "d_head"),
        Step("W_K", f"key matrix of head {h}", attn.W_K[h].detach().float().cpu(),
             f"learned; turns a {C}-d embedding into a {D}-d answer", "d_model", "d_head"),
        Step("K = E·W_K", "keys", k,
             "what each token offers to the queries (\"I am an adjective!\")", "token", "d_head"),
        Step("Q·Kᵀ/√d", "the grid of dot products", raw,
             f"how well each key answers each query; divided by √{D} to keep the spread steady",
             "query", "key"),
        Step("mask", "the causal mask" if model.config.causal else "the mask", mask,
             "−∞ where a later token would inform an earlier one; those cells get weight 0"
             if model.config.causal else "an encoder lets every token see every other (0 everywhere)",
             "query", "key"),
        Step("pattern = softmax", "the attention pattern", pattern,
             "softmax of each query's scores: its weights over the keys, summing to 1",
             "query", "key"),
        Step("V = E·W_V", "values (value-down)", v,
             f"what each token would say if attended to, in {D} numbers", "token", "d_head"),
        Step("ΔE = pattern·V·W_O", "the update (value-up)", dE,
             "the weighted values mapped back to the embedding; added to E as this head's "
             "share of E ← E + ΣΔE", "token", "d_model"),
    ]  # fmt: skip
    return HeadWalk(token_texts(model, ids), layer, head, model.config.causal, steps)


@dataclass
class Analysis:
    """Everything the pictures and the explorer draw for one text."""

    tokens: list[str]
    ids: list[int]
    patterns: torch.Tensor  # [L, H, T, S] float32 on the CPU, rows (queries) sum to 1
    scores: torch.Tensor | None  # [L, H, T, S] scaled dot products, −∞ where masked (if asked)
    causal: bool
    last_logits: torch.Tensor | None  # [V] next-token logits after the last token (decoders)


@torch.inference_mode()
def analyze(model, text: str, *, scores: bool = False) -> Analysis:
    """All attention patterns of every layer and head (and with scores=True the grids of
    dot products), and the next-token logits."""
    ids = encode_text(model, text)
    kinds = ["pattern", "scores"] if scores else ["pattern"]
    # only the last position's logits are needed: skip unembedding the rest
    out, cache = model.run_with_cache(ids, names=[f"blocks.*.attn.{k}" for k in kinds], device="cpu",
                                      last_only=True)  # fmt: skip

    def stack(kind: str) -> torch.Tensor:
        return torch.stack([cache[f"blocks.{i}.attn.{kind}"][0] for i in range(model.config.n_layers)]).float()

    logits = out[0, -1].float().cpu() if model.config.causal else None
    return Analysis(token_texts(model, ids), ids[0].tolist(), stack("pattern"),
                    stack("scores") if scores else None, model.config.causal, logits)  # fmt: skip
