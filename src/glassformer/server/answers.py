"""What the explorer's API answers, as plain JSON-ready dicts: no FastAPI in here, so each
shape can be read (and tested) on its own. Masked cells (−∞) travel as null."""

from __future__ import annotations

import base64

import torch

from .. import sampling
from ..config import GlassformerError
from ..inputs import encode_batch, need_decoder, token_texts, unknown_note, unknown_pieces, vocabulary
from ..lab import heads, neurons, readings, survey
from ..lab.explain import Analysis, HeadWalk
from ..viz.page import rounded
from .limits import THUMB, window


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
        **(head_notes(model, walk, range(start, stop)) if model is not None else {}),
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


def head_notes(model, walk: HeadWalk, queries: range) -> dict:
    """The sentences `explain` prints, the same words, for the story to show: what the
    detectors say (once), and for each of `queries` (the window the grids hold; null for
    the others) where it looks most, its sink and negative-score notes and what its ΔE does (against E, through
    W_U, along each adjective's value). A head whose numbers overflowed gets no notes."""
    if not bool(torch.isfinite(walk.dE.tensor).all()):
        return {}
    per_query: list[dict | None] = [None] * len(walk.tokens)
    for r in readings.read_deltas(model, walk, list(queries)):
        q = r.query
        per_query[q] = {
            "looks": readings.focus_note(walk, q),
            "sink": readings.sink_note(walk, q),
            "scores": readings.scores_note(walk, q),
            "delta": r.sentences(walk.tokens[q]),
            "up": [[t, round(v, 4)] for t, v in r.up],
            "down": [[t, round(v, 4)] for t, v in r.down],
            "cosines": [[p, w, round(c, 4)] for p, w, c in r.cosines],
        }
    return {"detectors": readings.detector_note(walk), "normed": walk.normed is not None, "per_query": per_query}


def mlp_step(model, text: str, position: int, k: int) -> dict:
    """The video's chapter 7 at one token: the neurons that fire hardest there and, for a
    decoder, the tokens each one's output pushes up directly through W_U."""
    ids = encode_batch(model, text)
    T = ids.shape[1]
    if not 0 <= position < T:
        raise GlassformerError(f"position {position} is out of range: the text has tokens 0..{T - 1}")
    found = []
    for layer, index, activation in neurons.top_neurons(model, ids, position, k):
        pushes = None
        if model.config.causal:
            pushes = [
                {"token": t, "score": round(s, 4)}
                for t, s in neurons.neuron_tokens(model, layer, index, 5, sign=activation)
            ]
        found.append({"layer": layer, "neuron": index, "activation": round(activation, 4), "pushes": pushes})
    return {
        "position": position,
        "token": token_texts(model, ids[0, position : position + 1])[0],
        "decoder": model.config.causal,
        "d_mlp": model.config.d_mlp,
        "neurons": found,
    }


def detection(found: survey.Detection) -> dict:
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


# --- the laboratory: switch off, patch, read weights ------------------------------------------
def ablation(model, name: str, text: str, heads_off, mlps_off, mode: str, position: int | None, rows: int) -> dict:
    """The next-token distribution before and after switching heads and MLPs off, which
    later heads' patterns moved, and the Python lines that do the same."""
    from ..lab import edit

    need_decoder(model, "switching heads off and reading the next token")
    ids = encode_batch(model, text)
    T = ids.shape[1]
    if position is not None and not 0 <= position < T:
        raise GlassformerError(f"position {position} is out of range: the text has tokens 0..{T - 1}")
    if not heads_off and not mlps_off:
        raise GlassformerError(
            "say what to switch off: heads [[layer, head], ...], mlps [layer, ...] or neurons [[layer, neuron], ...]"
        )
    reference = ids if mode == "mean" else None
    edits = [edit.ablate_head(model, L, H, mode=mode, reference=reference) for L, H in heads_off]
    edits += [edit.ablate_mlp(model, L, n, mode=mode, reference=reference) for L, n in mlps_off]
    where = -1 if position is None else position
    result = edit.compare_next_token(model, ids, edit.combine(*edits), position=where, k=rows, patterns=True)
    assert result.moved is not None  # asked for with patterns=True
    names = token_texts(model, [i for i, _ in result.before] + [i for i, _ in result.after] + [result.top])

    def listed(pairs, texts):
        return [{"token": t, "id": i, "prob": round(p, 6)} for t, (i, p) in zip(texts, pairs)]

    return {
        "position": result.position,
        "before": listed(result.before, names[:rows]),
        "after": listed(result.after, names[rows:-1]),
        "kl": round(result.kl, 6),
        "top": {"token": names[-1], "id": result.top, "before": result.top_before, "after": result.top_after},
        # [layer, head, largest change of any weight]: the heads whose pattern moved by more than 0.01
        "changed": [[L, H, round(float(v), 4)] for (L, H), v in _nonzero(result.moved, 0.01)],
        "python": ablation_python(name, heads_off, mlps_off, mode, text, where),
    }


def _nonzero(table: torch.Tensor, floor: float):
    return [((int(i), int(j)), table[i, j]) for i, j in (table > floor).nonzero().tolist()]


def ablation_python(name: str, heads_off, mlps_off, mode: str, text: str, position: int) -> str:
    """The few lines of Python that do what the page just did."""
    calls = [f"ablate_head(model, {L}, {H}{', mode=m, reference=ids' if mode == 'mean' else ''})" for L, H in heads_off]
    calls += [
        f"ablate_mlp(model, {L}{'' if n is None else f', {n}'}{', mode=m, reference=ids' if mode == 'mean' else ''})"
        for L, n in mlps_off
    ]
    lines = [
        "import glassformer as gf",
        "from glassformer.inputs import encode_batch",
        "from glassformer.lab.edit import ablate_head, ablate_mlp, combine, compare_next_token",
        "",
        f"model = gf.load({name!r})",
        f"ids = encode_batch(model, {text!r})",
        *([f"m = {mode!r}"] if mode == "mean" else []),
        f"r = compare_next_token(model, ids, combine({', '.join(calls)}), position={position})",
        "print(model.tokenizer.token_texts([r.top]), r.top_before, '->', r.top_after, 'KL', r.kl)",
    ]
    return "\n".join(lines)


def patching(model, clean: str, corrupt: str, answer: str | None, wrong: str | None) -> dict:
    """Head-by-head patching from the clean text into the corrupted one: the share of the
    logit difference each head's z brings back, [layer][head]."""
    from ..inputs import single_token
    from ..lab import edit

    clean_ids, corrupt_ids = encode_batch(model, clean), encode_batch(model, corrupt)
    a = single_token(model, answer, "answer") if answer else None
    w = single_token(model, wrong, "wrong token") if wrong else None
    found = edit.patch_heads(model, clean_ids, corrupt_ids, a, w)
    a, w = found.answer, found.wrong
    texts = token_texts(model, [a, w])
    return {
        "answer": {"token": texts[0], "id": a},
        "wrong": {"token": texts[1], "id": w},
        "clean_diff": round(found.clean_diff, 4),
        "corrupt_diff": round(found.corrupt_diff, 4),
        "caution": found.caution(),
        "restored": rounded(found.restored, 4),
    }


def circuit(model, layer: int, head: int, k: int, token_ids: list[int], whole: bool) -> dict:
    """One head's QK and OV circuits from its weights: the top pairs, the asked tokens'
    best partners, what the reading leaves out (and the whole grids, if asked and small)."""
    from ..inputs import check_layer_head
    from ..lab import circuit as circuits

    check_layer_head(model, layer, head)
    V = model.config.vocab_size
    bad = [i for i in token_ids if not 0 <= i < V]
    if bad:
        raise GlassformerError(f"token id {bad[0]} is out of range: this model's ids are 0..{V - 1}")
    if whole and V > circuits.SMALL_VOCAB:
        raise GlassformerError(
            f"the whole grids are for vocabularies of at most {circuits.SMALL_VOCAB} tokens, not {V}"
        )
    found = circuits.read_circuits(model, layer, head, k=k, whole=False)
    value = circuits.circuit_json(model, found, token_ids, circuits.by_token(model, layer, head, token_ids, k))
    if whole:
        full = circuits.read_circuits(model, layer, head)
        value["whole"] = circuits.circuit_json(model, full, [], {})
    return value
