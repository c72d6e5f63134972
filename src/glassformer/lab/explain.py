"""One head, walked through a sentence in the video's order, as data.

`walk_head` returns a HeadWalk: one typed field per step — E, W_Q, Q, W_K, K, the grid
of dot products, the mask, the pattern, the values, ΔE — each a Step holding its tensor
and one sentence on what it means. Every tensor comes from the model's own hook points:
nothing here recomputes the attention formula. Presenting the steps is someone else's
job (`viz.text` for the terminal, the explorer for the browser).

`analyze` runs a whole text once for the pictures and the explorer: every layer's and
head's pattern (and grid of dot products), and the next-token logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..inputs import check_layer_head, encode_batch, token_texts
from ..model import Transformer


@dataclass
class Step:
    symbol: str  # "Q = E·W_Q"
    title: str
    tensor: torch.Tensor  # 2-D, float32, on the CPU
    meaning: str
    rows: str = ""  # what the rows are: "token", "query", "d_model", ...
    cols: str = ""


@dataclass
class HeadWalk:
    tokens: list[str]
    layer: int
    head: int
    kv_head: int  # the key/value head this query head reads (= head unless heads are grouped)
    causal: bool
    E: Step  # the residual stream entering the block, that ΔE is added to [token, d_model]
    W_Q: Step  # [d_model, d_head]
    Q: Step  # [token, d_head]
    W_K: Step
    K: Step
    dots: Step  # Q·Kᵀ/√d before the mask [query, key]
    mask: Step  # 0 where allowed, −∞ where blocked [query, key]
    pattern: Step  # softmax, each row sums to 1 [query, key]
    V: Step  # [token, d_head]
    dE: Step  # this head's ΔE [token, d_model]
    stream: torch.Tensor  # [token, d_model] the residual stream ΔE is added to (= E.tensor)
    value_out: torch.Tensor  # [token, d_model] each token's value mapped up, V·W_O: what it would add
    final: torch.Tensor | None  # [token, d_model] the stream after the last block (decoders), for W_U
    rotated: bool = False  # Q and K were turned by position (rotary models) before the grid
    precision: str = "fp32"  # what computed these numbers (model.precision)
    normed: Step | None = None  # norm(E), what W_Q, W_K, W_V read (pre-norm models; None: they read E)

    @property
    def steps(self) -> list[Step]:
        """The steps in the video's order."""
        return [
            self.E,
            *([self.normed] if self.normed is not None else []),
            self.W_Q,
            self.Q,
            self.W_K,
            self.K,
            self.dots,
            self.mask,
            self.pattern,
            self.V,
            self.dE,
        ]


def sharpest_query(walk: HeadWalk) -> int:
    """The position whose query looks most sharply at one other token (the first token
    left out, where heads park attention they have no use for); the last if none does."""
    P = walk.pattern.tensor.clone()
    T = P.shape[0]
    if T < 3:
        return T - 1
    P.fill_diagonal_(0)
    P[:, 0] = 0
    return int(P.amax(-1).argmax())


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().cpu()


@torch.inference_mode()
def walk_head(model: Transformer, text: str, layer: int, head: int) -> HeadWalk:
    check_layer_head(model, layer, head)
    ids = encode_batch(model, text)
    b = f"blocks.{layer}."
    c = model.config
    pre = c.norm == "pre"
    names = [b + "resid_pre"] + [b + f"attn.{n}" for n in ("q", "k", "v", "dots", "scores", "pattern", "z")]
    names += [b + "ln1"] if pre else []
    names += [f"blocks.{c.n_layers - 1}.resid_post"] if c.causal else []
    _, cache = model.run_with_cache(ids, names=names, device="cpu")
    attn = model.block(layer).attn
    h, g = head, attn.kv_head(head)
    D = c.d_head
    rotated = c.positions == "rotary"
    scores = cache[b + "attn.scores"][0, h].float()
    mask = torch.where(torch.isinf(scores), float("-inf"), 0.0)
    read = "norm(E)" if pre else "E"
    W_O = _cpu(attn.W_O[h])  # [D, C]
    if c.causal:
        mask_meaning = "−∞ where a later token would inform an earlier one; those cells get weight 0"
    else:
        mask_meaning = "an encoder lets every token see every other: nothing is masked"
    return HeadWalk(
        tokens=token_texts(model, ids),
        layer=layer,
        head=head,
        kv_head=g,
        causal=c.causal,
        rotated=rotated,
        precision=model.precision,
        stream=cache[b + "resid_pre"][0].float(),
        value_out=cache[b + "attn.v"][0, g].float() @ W_O,
        final=cache[f"blocks.{c.n_layers - 1}.resid_post"][0].float() if c.causal else None,
        E=_stream_step(model, layer, cache[b + "resid_pre"][0].float()),
        normed=_normed_step(model, cache[b + "ln1"][0].float()) if pre else None,
        **_query_key_steps(model, cache, layer, head, "norm(E)" if pre else "E"),
        dots=Step(
            "Q·Kᵀ/√d",
            "the grid of dot products",
            cache[b + "attn.dots"][0, h].float(),
            f"how well each key answers each query; divided by √{D} to keep the spread steady",
            "query",
            "key",
        ),
        mask=Step("mask", "the causal mask" if c.causal else "the mask", mask, mask_meaning, "query", "key"),
        pattern=Step(
            "pattern = softmax",
            "the attention pattern",
            cache[b + "attn.pattern"][0, h].float(),
            "softmax of each query's scores: its weights over the keys, summing to 1",
            "query",
            "key",
        ),
        V=Step(
            f"V = {read}·W_V",
            "values (value-down)",
            cache[b + "attn.v"][0, g].float(),
            f"what each token would say if attended to, in {D} numbers",
            "token",
            "d_head",
        ),
        dE=Step(
            "ΔE = pattern·V·W_O",
            "the update (value-up)",
            cache[b + "attn.z"][0, h].float() @ W_O,
            "the weighted values mapped back up to the stream's size; added to E"
            + (" (the residual stream, not norm(E))" if pre else "")
            + " as this head's share of E ← E + ΣΔE",
            "token",
            "d_model",
        ),
    )


def _query_key_steps(model: Transformer, cache, layer: int, h: int, read: str) -> dict[str, Step]:
    """W_Q, Q, W_K, K of head h: the question, and every token's answer."""
    c, attn, b = model.config, model.block(layer).attn, f"blocks.{layer}."
    g, D, C = attn.kv_head(h), c.d_head, c.d_model
    turned = ", then turned by its position (rotary)" if c.positions == "rotary" else ""
    group = f" (key head {g}, shared by a group of query heads)" if attn.group > 1 else ""
    return {
        "W_Q": Step(
            "W_Q",
            f"query matrix of head {h}",
            _cpu(attn.W_Q[h]),
            f"learned; turns a {C}-d {read} into a {D}-d question",
            "d_model",
            "d_head",
        ),
        "Q": Step(
            f"Q = {read}·W_Q",
            "queries",
            cache[b + "attn.q"][0, h].float(),
            f"what each token is looking for{turned}",
            "token",
            "d_head",
        ),
        "W_K": Step(
            "W_K",
            f"key matrix of head {h}{group}",
            _cpu(attn.W_K[h]),
            f"learned; turns a {C}-d {read} into a {D}-d answer",
            "d_model",
            "d_head",
        ),
        "K": Step(
            f"K = {read}·W_K",
            "keys",
            cache[b + "attn.k"][0, g].float(),
            f"what each token offers to the queries{turned}",
            "token",
            "d_head",
        ),
    }


def _stream_step(model: Transformer, layer: int, stream: torch.Tensor) -> Step:
    """E: the residual stream entering the block, that every head's ΔE is added to."""
    c = model.config
    position = "position included" if c.positions == "learned" else "position enters below, by rotation"
    meaning = f"one {c.d_model}-number vector per token: the meaning so far, {position}"
    if c.norm == "pre":
        meaning += "; each head's ΔE is added to it"
    else:  # post-norm (BERT): the stream was normalised at the end of the block before
        meaning += (
            ", already normalised by the previous block's norm; W_Q, W_K and W_V read it as it is, "
            "and ΔE is added to it"
        )
    return Step("E", f"the residual stream entering block {layer}", stream, meaning, "token", "d_model")


def _normed_step(model: Transformer, normed: torch.Tensor) -> Step:
    """norm(E): what a pre-norm block's W_Q, W_K and W_V read."""
    return Step(
        "norm(E)",
        "E through this block's norm: what W_Q, W_K and W_V read",
        normed,
        f"each token's E scaled to a steady size ({model.config.normalization}) and weighted; the head reads "
        "this, while its ΔE is added to E itself",
        "token",
        "d_model",
    )


@dataclass
class Analysis:
    """Everything the pictures and the explorer draw for one text."""

    tokens: list[str]
    ids: list[int]
    patterns: torch.Tensor  # [L, H, T, S] float32 on the CPU, rows (queries) sum to 1
    scores: torch.Tensor | None  # [L, H, T, S] scaled dot products, −∞ where masked (if asked)
    causal: bool
    last_logits: torch.Tensor | None  # [V] next-token logits after the last token (decoders)
    precision: str = "fp32"  # what computed these numbers (model.precision)


@torch.inference_mode()
def analyze(model: Transformer, text: str, *, scores: bool = False) -> Analysis:
    """All attention patterns of every layer and head (and with scores=True the grids of
    dot products), and the next-token logits."""
    ids = encode_batch(model, text)
    kinds = ["pattern", "scores"] if scores else ["pattern"]
    # only the last position's logits are needed: skip unembedding the rest
    out, cache = model.run_with_cache(ids, names=[f"blocks.*.attn.{k}" for k in kinds], device="cpu", last_only=True)

    def stack(kind: str) -> torch.Tensor:
        return torch.stack([cache[f"blocks.{i}.attn.{kind}"][0] for i in range(model.config.n_layers)]).float()

    logits = out[0, -1].float().cpu() if model.config.causal else None
    return Analysis(
        token_texts(model, ids),
        ids[0].tolist(),
        stack("pattern"),
        stack("scores") if scores else None,
        model.config.causal,
        logits,
        model.precision,
    )
