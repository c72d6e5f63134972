"""The logit lens and the MLP as a store of facts.

logit_lens: read the residual stream after each layer as if it were the last, through
the final norm and W_U, and see which tokens it already predicts.

top_neurons / neuron_tokens: the video's "Michael Jordan plays basketball" chapter —
which MLP neurons fire at a position, and which tokens a neuron's down-projection
column pushes up when it fires.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..inputs import need_decoder
from ..model import Transformer


@dataclass
class LensRow:
    layer: str  # "embed", "0", "1", ...
    tokens: list[list[str]]  # [position][rank]
    probs: torch.Tensor  # [T, k]
    ids: torch.Tensor  # [T, k]


@torch.inference_mode()
def logit_lens(model: Transformer, ids: torch.Tensor, k: int = 5) -> list[LensRow]:
    """Top-k next-token guesses at every position, after the embedding and each block."""
    need_decoder(model, "the logit lens")
    L = model.config.n_layers
    names = ["blocks.0.resid_pre"] + [f"blocks.{i}.resid_post" for i in range(L)]
    _, cache = model.run_with_cache(ids, names=names)
    W_U = model.W_U.float()  # the stream is fp32 also when the matrices are held in bf16
    rows = []
    for label, name in zip(["embed"] + [str(i) for i in range(L)], names):
        logits = model.ln_final(cache[name][0]).float() @ W_U  # [T, V]
        probs, top = torch.softmax(logits.float(), -1).topk(k, dim=-1)
        tokens = (
            [model.tokenizer.token_texts(row.tolist()) for row in top]
            if model.tokenizer
            else [[str(i) for i in row.tolist()] for row in top]
        )
        rows.append(LensRow(label, tokens, probs, top))
    return rows
