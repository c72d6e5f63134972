"""What the explorer's API answers, as plain JSON-ready dicts: no FastAPI in here, so each
shape can be read (and tested) on its own. Masked cells (−∞) travel as null."""

from __future__ import annotations

import base64
import json

import torch

from .. import sampling
from ..config import GlassformerError
from ..inputs import encode_batch, token_texts, unknown_note, unknown_pieces, vocabulary
from ..inspect import heads, lens
from ..inspect.explain import Analysis, HeadWalk
from ..viz.page import rounded


def to_json(data: dict) -> bytes:
    """An answer as JSON bytes; json.dumps is many times faster than FastAPI's encoder on
    big nested lists of floats. NaN or infinity (which JSON cannot carry) is a
    GlassformerError: the model's numbers overflowed on this text."""
    try:
        try:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        except UnicodeEncodeError:  # a token text holding a lone surrogate
            return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        raise GlassformerError(
            "this model's numbers overflowed to NaN or infinity on this text; nothing can be shown"
        ) from None


def analysis(a: Analysis) -> dict:
    return {
        "tokens": a.tokens,
        "ids": a.ids,
        "decoder": a.causal,
        "n_layers": a.patterns.shape[0],
        "n_heads": a.patterns.shape[1],
        "patterns": packed(a.patterns),
    }


def packed(weights: torch.Tensor) -> dict:
    """Attention weights in [0, 1] as little-endian uint16 (weight × 65535), base64: a
    quarter of the bytes of JSON numbers and some forty times faster to write, at a
    resolution of 1.5e-5 (the page draws thumbnails from these; the head it explains
    comes exact from /api/head)."""
    codes = (weights.clamp(0, 1) * 65535).round().to(torch.int32).numpy().astype("<u2")
    return {"shape": list(weights.shape), "scale": 65535, "uint16_base64": base64.b64encode(codes.tobytes()).decode()}


def unknowns(model, text: str) -> dict:
    """Which tokens are the unknown token and the word each stands for, the one-line note,
    and a word-level model's vocabulary, so the page can show what the model does know."""
    pieces = unknown_pieces(model, text)
    return {
        "unknown": [{"position": p, "word": word} for p, word in pieces],
        "unknown_note": unknown_note(model, text, list(dict.fromkeys(w for _, w in pieces))) if pieces else None,
        "vocabulary": vocabulary(model),
    }


def next_tokens(
    model, logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, rows: int
) -> dict:
    """The `rows` likeliest tokens by logit (the same rows at every setting, so a cut shows
    as a row falling to 0), their probabilities under these settings, and one sample."""
    probs = sampling.probabilities(logits, temperature, top_k, top_p)
    order = logits.float().topk(min(rows, logits.numel())).indices.tolist()
    sample = int(sampling.draw(probs[None], greedy=temperature == 0)[0])
    texts = token_texts(model, [*order, sample])
    return {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "kept": int((probs > 0).sum()),
        "vocab_size": int(probs.numel()),
        "next": [
            {"token": t, "id": i, "prob": round(float(probs[i]), 6), "logit": round(float(logits[i]), 4)}
            for t, i in zip(texts, order)
        ],
        "sample": {"id": sample, "token": texts[-1], "prob": round(float(probs[sample]), 6)},
    }


def head_walk(walk: HeadWalk) -> dict:
    """One head for every token: the step-by-step tensors the page's story reads a query from."""
    return {
        "layer": walk.layer,
        "head": walk.head,
        "kv_head": walk.kv_head,
        "decoder": walk.causal,
        "rotated": walk.rotated,
        "tokens": walk.tokens,
        "d_head": int(walk.Q.tensor.shape[-1]),
        "q": rounded(walk.Q.tensor),
        "k": rounded(walk.K.tensor),
        "v": rounded(walk.V.tensor),
        "dots": rounded(walk.dots.tensor),  # before the mask: what each query and key make of each other
        "mask": torch.isinf(walk.mask.tensor).tolist(),  # True: −∞, the key comes after the query
        "pattern": rounded(walk.pattern.tensor),
        "e_norm": rounded(walk.E.tensor.norm(dim=-1)),  # the vector the head reads (normed first in pre-norm models)
        # the residual stream ΔE is added to: the length ΔE is measured against
        "stream_norm": rounded(walk.stream.norm(dim=-1)),
        "delta_e_norm": rounded(walk.dE.tensor.norm(dim=-1)),
        "steps": [
            {"symbol": s.symbol, "title": s.title, "meaning": s.meaning, "shape": list(s.tensor.shape)}
            for s in walk.steps
        ],
    }


def mlp_step(model, text: str, position: int, k: int) -> dict:
    """The video's chapter 7 at one token: the neurons that fire hardest there and, for a
    decoder, the tokens each one's output pushes up directly through W_U."""
    ids = encode_batch(model, text)
    T = ids.shape[1]
    if not 0 <= position < T:
        raise GlassformerError(f"position {position} is out of range: the text has tokens 0..{T - 1}")
    neurons = []
    for layer, index, activation in lens.top_neurons(model, ids, position, k):
        pushes = None
        if model.config.causal:
            pushes = [{"token": t, "score": round(s, 4)} for t, s in lens.neuron_tokens(model, layer, index, 5)]
        neurons.append({"layer": layer, "neuron": index, "activation": round(activation, 4), "pushes": pushes})
    return {
        "position": position,
        "token": token_texts(model, ids[0, position : position + 1])[0],
        "decoder": model.config.causal,
        "d_mlp": model.config.d_mlp,
        "neurons": neurons,
    }


def detection(found: heads.Detection) -> dict:
    return {
        "strong": heads.STRONG,
        "kinds": {
            kind: {
                "definition": heads.DETECTORS.get(kind, ""),
                # to 8 places: rounded to 3 first, 0.97500002 would then show as 0.97 beside the
                # terminal's 0.98 (its 3-place value 0.975 is 0.97499… in binary)
                "scores": rounded(table, 8),
                "strongest": list(heads.strongest(table)),
            }
            for kind, table in found.tables.items()
        },
        "skipped": dict(found.skipped),
        "summary": found.summary(),
    }
