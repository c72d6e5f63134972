"""What the explorer's API answers, as plain JSON-ready dicts: no FastAPI in here, so each
shape can be read (and tested) on its own. Masked cells (−∞) travel as null."""

from __future__ import annotations

import base64
import json

import torch

from .. import sampling
from ..config import GlassformerError
from ..inputs import encode_batch, token_texts, unknown_note, unknown_pieces, vocabulary
from ..inspect import heads, lens, readings
from ..inspect.explain import Analysis, HeadWalk
from ..viz.page import rounded
from .limits import THUMB, window


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
    """Tokens and every head's pattern as a thumbnail: the whole pattern up to THUMB
    tokens, pooled to THUMB × THUMB beyond (`thumbnail_tokens`: tokens per pixel)."""
    T = a.patterns.shape[-1]
    return {
        "tokens": a.tokens,
        "ids": a.ids,
        "decoder": a.causal,
        "n_layers": a.patterns.shape[0],
        "n_heads": a.patterns.shape[1],
        "patterns": packed(thumbnails(a.patterns)),
        "thumbnail_tokens": T / min(T, THUMB),
    }


def thumbnails(patterns: torch.Tensor, side: int = THUMB) -> torch.Tensor:
    """[..., T, T] patterns pooled to [..., side, side] when T > side: each pixel is the
    mean over its block of queries of the weight summed over its block of keys, so a row
    still sums to 1."""
    T = patterns.shape[-1]
    if T <= side:
        return patterns
    edges = torch.linspace(0, T, side + 1).round().long()
    block = torch.zeros(side, T, dtype=patterns.dtype)
    for i in range(side):
        block[i, edges[i] : edges[i + 1]] = 1
    keys = patterns @ block.T  # [..., T, side]: weight per block of keys
    return (block / block.sum(-1, keepdim=True)) @ keys  # [..., side, side]: mean per block of queries


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
    as a row falling to 0), their probabilities under these settings, and one sample.
    `cut`: tokens top-k/top-p set to 0; `underflow`: tokens whose probability at this
    temperature is too small for float32 and is 0 without any cut (T = 0.1 on a 49152-token
    vocabulary leaves a few hundred above 0)."""
    probs = sampling.probabilities(logits, temperature, top_k, top_p)
    uncut = sampling.probabilities(logits, temperature) if temperature > 0 else None
    underflow = int((uncut == 0).sum()) if uncut is not None else 0
    cut = int(((probs == 0) & (uncut > 0)).sum()) if uncut is not None else 0
    order = logits.float().topk(min(rows, logits.numel())).indices.tolist()
    sample = int(sampling.draw(probs[None], greedy=temperature == 0)[0])
    texts = token_texts(model, [*order, sample])
    return {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "kept": int((probs > 0).sum()),
        "cut": cut,
        "underflow": underflow,
        "vocab_size": int(probs.numel()),
        "next": [
            {"token": t, "id": i, "prob": round(float(probs[i]), 6), "logit": round(float(logits[i]), 4)}
            for t, i in zip(texts, order)
        ],
        "sample": {"id": sample, "token": texts[-1], "prob": round(float(probs[sample]), 6)},
    }


def head_walk(walk: HeadWalk, focus: int, model=None) -> dict:
    """One head for every token: the step-by-step tensors the page's story reads a query
    from, and (given the model) what `explain` says beside them, for every query. The
    grids (dots, mask, pattern) hold the rows of the WINDOW queries around `focus`, rows[0]
    to rows[1] − 1, each over every key: all of them on a short text."""
    start, stop = window(len(walk.tokens), focus)
    rows = slice(start, stop)
    return {
        **(head_notes(model, walk) if model is not None else {}),
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
        "focus": focus,
        "rows": [start, stop],
        "dots": rounded(walk.dots.tensor[rows]),  # before the mask: what each query and key make of each other
        "mask": torch.isinf(walk.mask.tensor[rows]).tolist(),  # True: −∞, the key comes after the query
        "pattern": rounded(walk.pattern.tensor[rows]),
        # |norm(E)|: what W_Q, W_K, W_V read (pre-norm models); post-norm models read E itself
        "e_norm": rounded((walk.normed or walk.E).tensor.norm(dim=-1)),
        # the residual stream ΔE is added to: the length ΔE is measured against
        "stream_norm": rounded(walk.stream.norm(dim=-1)),
        "delta_e_norm": rounded(walk.dE.tensor.norm(dim=-1)),
        "steps": [
            {"symbol": s.symbol, "title": s.title, "meaning": s.meaning, "shape": list(s.tensor.shape)}
            for s in walk.steps
        ],
    }


def head_notes(model, walk: HeadWalk) -> dict:
    """The sentences `explain` prints, the same words, for the story to show: what the
    detectors say (once), and for each query its sink and negative-score notes and what its
    ΔE does (against E, through W_U, along each adjective's value)."""
    per_query = []
    for q, r in enumerate(readings.read_deltas(model, walk)):
        per_query.append(
            {
                "sink": readings.sink_note(walk, q),
                "scores": readings.scores_note(walk, q),
                "delta": r.sentences(walk.tokens[q]),
                "up": [[t, round(v, 4)] for t, v in r.up],
                "down": [[t, round(v, 4)] for t, v in r.down],
                "cosines": [[p, w, round(c, 4)] for p, w, c in r.cosines],
            }
        )
    return {"detectors": readings.detector_note(walk), "normed": walk.normed is not None, "per_query": per_query}


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
            pushes = [
                {"token": t, "score": round(s, 4)}
                for t, s in lens.neuron_tokens(model, layer, index, 5, sign=activation)
            ]
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
        # [layer][head] mean KL on the next token with the head's z at zero; null where not measured
        "switch_off": None
        if found.switch_off is None
        else [[None if v != v else round(v, 6) for v in row] for row in found.switch_off.tolist()],
        "switch_off_on": found.switch_off_on,
    }
