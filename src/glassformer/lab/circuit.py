"""A head read from its weights alone, with no sentence: the QK and OV circuits
(Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits").

    QK: which tokens' queries match which tokens' keys
        scores[q, k] = (n(E_q) W_Q + b_Q) · (n(E_k) W_K + b_K) / √D
    OV: which output tokens a token pushes up when it is attended to
        push[s, o] = (n(E_s) W_V + b_V) W_O · (W_U read through the final norm's weight)[:, o]

n is the head's own norm (ln1) applied to the token's embedding row alone. What that
leaves out is said on every result (`leaves_out`): positions (learned position rows are
not added; rotary turns are not applied, as if query and key stood at the same place)
and everything earlier layers add to the stream.

Both circuits are V × V but of rank D (d_head): they are kept as two factors, as
TransformerLens's FactoredMatrix does, and a 49,152-token vocabulary is searched in
chunks of rows, so no V × V matrix is ever held.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..config import GlassformerError
from ..hardware import bf16_native
from ..inputs import check_layer_head, token_texts
from ..model import Transformer

SMALL_VOCAB = 1000  # up to this many tokens, the whole grid is given (the lessons)


@dataclass
class FactoredMatrix:
    """A @ B kept as its two factors: A [m, r], B [r, n], with r much smaller than m or n."""

    A: torch.Tensor
    B: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return self.A.shape[0], self.B.shape[1]

    @property
    def rank(self) -> int:
        return self.A.shape[1]

    @property
    def AB(self) -> torch.Tensor:
        """The whole product: only for small m × n."""
        return self.A @ self.B

    def row_chunks(
        self, chunk: int, dtype: torch.dtype | None = None, first: int = 0
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, rows [chunk, n]) of the product, a block at a time, in `dtype`
        (default: the factors'). Every block is written into one buffer (each is gone when
        the next comes): touching fresh memory for each block cost half as much as the
        product itself."""
        A, B = (self.A, self.B) if dtype is None else (self.A.to(dtype), self.B.to(dtype))
        buffer = torch.empty(min(chunk, A.shape[0]), B.shape[1], dtype=A.dtype, device=A.device)
        for start in range(first, A.shape[0], chunk):
            rows = A[start : start + chunk]
            yield start, torch.matmul(rows, B, out=buffer[: rows.shape[0]])

    def topk(self, k: int, chunk: int = 512) -> list[tuple[int, int, float]]:
        """The k largest entries as (row, column, value), best first, computed a block of
        rows at a time (memory chunk × n, not m × n).

        A full sort of each block cost more than its product, so each block only gives up
        the entries that could beat the k-th best value found so far (a threshold that only
        rises). Where the chip multiplies bf16 natively, blocks are screened in bf16 with a
        margin larger than bf16's rounding can move an entry, and the few entries that pass
        are scored again exactly: the result is the float32 one."""
        screen = torch.bfloat16 if self.A.dtype == torch.float32 and bf16_native(self.A.device) else None
        # |a·b − bf16 product| ≤ (2·2⁻⁹ + 2⁻⁹)·|a|·|b| (inputs, then the output, rounded);
        # twice that, per row, with the largest column norm
        margins = 2**-6 * self.A.norm(dim=1) * self.B.norm(dim=0).max() if screen is not None else None
        # the first block exactly: the k-th best of its rows' maxima is a first threshold
        block = self.A[:chunk] @ self.B
        maxima = block.max(dim=1).values
        threshold = float(maxima.topk(k).values[-1]) if maxima.numel() >= k else float(block.min())
        first_rows, first_cols = (block >= threshold).nonzero(as_tuple=True)
        best = self._keep(k, first_rows, first_cols, None)
        for start, block in self.row_chunks(chunk, screen, first=chunk):
            if best[0].numel() >= k:
                threshold = max(threshold, float(best[0].min()))
            limit = threshold - (margins[start : start + block.shape[0], None] if margins is not None else 0.0)
            rows, cols = (block >= torch.as_tensor(limit).to(block.dtype)).nonzero(as_tuple=True)
            best = self._keep(k, rows + start, cols, best)
        order = best[0].argsort(descending=True)
        return [(int(best[1][j]), int(best[2][j]), float(best[0][j])) for j in order]

    def _keep(self, k: int, rows: torch.Tensor, cols: torch.Tensor, best):
        """The k best of `best` and of the entries (rows, cols), scored exactly from the factors."""
        exact = (self.A[rows] * self.B[:, cols].T).sum(-1).cpu()
        if best is not None:
            exact, rows, cols = (torch.cat([b, x.cpu()]) for b, x in zip(best, (exact, rows, cols)))
        keep = exact.topk(min(k, exact.numel())).indices
        return exact[keep], rows.cpu()[keep], cols.cpu()[keep]

    def topk_per_row(self, rows: list[int], k: int) -> list[list[tuple[int, float]]]:
        """For each of `rows`, its k largest columns as (column, value)."""
        block = self.A[rows] @ self.B
        v, i = block.topk(min(k, block.shape[1]), dim=-1)
        return [[(int(c), float(x)) for c, x in zip(ci, vi)] for ci, vi in zip(i, v)]


def qk_weights(model: Transformer, layer: int, head: int) -> FactoredMatrix:
    """W_Q[h] · W_K[h]ᵀ as a factored d_model × d_model matrix of rank d_head."""
    check_layer_head(model, layer, head)
    attn = model.block(layer).attn
    return FactoredMatrix(attn.W_Q[head].float(), attn.W_K[head].float().T)


def ov_weights(model: Transformer, layer: int, head: int) -> FactoredMatrix:
    """W_V[h] · W_O[h] as a factored d_model × d_model matrix of rank d_head."""
    check_layer_head(model, layer, head)
    attn = model.block(layer).attn
    return FactoredMatrix(attn.W_V[head].float(), attn.W_O[head].float())


def leaves_out(model: Transformer, layer: int) -> list[str]:
    """What a circuit read from the weights does not include, in words."""
    c = model.config
    notes = []
    if c.positions == "rotary":
        notes.append("positions: rotary turns left unapplied (query and key read as if at the same place)")
    elif c.positions == "learned":
        notes.append("positions: the learned position rows are left out (token embeddings only)")
    if c.norm == "pre":
        notes.append("the head's norm (ln1) is applied to each token's embedding row alone")
    else:
        notes.append("the embedding's own norm and the block's post-norms are left out (raw token rows)")
    if layer > 0:
        notes.append(f"everything layers 0..{layer - 1} add to the stream is left out (token embeddings only)")
    if not c.causal:
        notes.append("the OV circuit: it reads what a head writes through W_U, and an encoder has no W_U")
    return notes


@torch.no_grad()
def _normed_tokens(model: Transformer, layer: int) -> torch.Tensor:
    """Every token's embedding row as the head sees it with nothing else in the stream:
    through ln1 in pre-norm models; raw rows in post-norm ones. [V, C] float32."""
    E_VC = model.W_E.float()
    block = model.block(layer)
    if block.pre_norm:
        return block.ln1(E_VC.to(block.ln1.weight.dtype)).float()
    return E_VC


@torch.no_grad()
def qk_circuit(model: Transformer, layer: int, head: int) -> FactoredMatrix:
    """[V queries, V keys] of the head's pre-softmax scores between bare tokens, factored
    as (queries [V, D]) @ (keysᵀ [D, V])."""
    check_layer_head(model, layer, head)
    attn = model.block(layer).attn
    E_VC = _normed_tokens(model, layer)
    Q_VD = E_VC @ attn.W_Q[head].float()
    K_VD = E_VC @ attn.W_K[head].float()
    if attn.b_Q is not None:
        Q_VD = Q_VD + attn.b_Q[head].float()
    if attn.b_K is not None:
        K_VD = K_VD + attn.b_K[head].float()
    return FactoredMatrix(Q_VD / math.sqrt(attn.d_head), K_VD.T.contiguous())


@torch.no_grad()
def ov_circuit(model: Transformer, layer: int, head: int) -> FactoredMatrix:
    """[V attended tokens, V output tokens]: how much attending to a token raises each
    output token's logit, factored as (values [V, D]) @ (W_O·W_U [D, V]). The final norm's
    weight is applied and its centring for LayerNorm; its scale (set by the whole stream)
    is left out."""
    check_layer_head(model, layer, head)
    if not model.config.causal:
        raise GlassformerError("the OV circuit reads outputs through W_U; an encoder has none (the QK circuit works)")
    attn = model.block(layer).attn
    V_VD = _normed_tokens(model, layer) @ attn.W_V[head].float()
    if attn.b_V is not None:
        V_VD = V_VD + attn.b_V[head].float()
    O_DC = attn.W_O[head].float()
    if model.config.normalization != "rmsnorm":
        O_DC = O_DC - O_DC.mean(-1, keepdim=True)  # LayerNorm centres what it reads
    out_DV = (O_DC * model.ln_final.weight.float()) @ model.W_U.float()
    return FactoredMatrix(V_VD, out_DV)


@dataclass
class Circuit:
    """A head's circuits, as plain values: whole grids for a small vocabulary, else the
    top pairs."""

    layer: int
    head: int
    tokens: list[str] | None  # the vocabulary, when the grids are whole
    qk: torch.Tensor | list[tuple[int, int, float]]  # [V, V] (query, key) or top (query, key, score)
    ov: torch.Tensor | list[tuple[int, int, float]] | None  # [V, V] (attended, output) or top triples
    leaves_out: list[str]


def read_circuits(
    model: Transformer, layer: int, head: int, *, k: int = 20, chunk: int = 512, whole: bool = True
) -> Circuit:
    """The QK and OV circuits of one head: whole for a vocabulary of at most SMALL_VOCAB
    tokens (unless `whole` is False), else the k largest entries of each, searched in
    chunks of rows."""
    qk = qk_circuit(model, layer, head)
    ov = ov_circuit(model, layer, head) if model.config.causal else None
    notes = leaves_out(model, layer)
    V = model.config.vocab_size
    if whole and V <= SMALL_VOCAB:
        return Circuit(layer, head, token_texts(model, range(V)), qk.AB, None if ov is None else ov.AB, notes)
    return Circuit(layer, head, None, qk.topk(k, chunk), None if ov is None else ov.topk(k, chunk), notes)


def by_token(model: Transformer, layer: int, head: int, ids: list[int], k: int) -> dict:
    """For each token of `ids`: its k best keys (qk) and, for a decoder, the k output
    tokens it pushes up most when attended to (ov), as [(token id, score)]."""
    if not ids:
        return {}
    qk = qk_circuit(model, layer, head).topk_per_row(ids, k)
    ov = ov_circuit(model, layer, head).topk_per_row(ids, k) if model.config.causal else None
    return {"qk": qk, "ov": ov}


def circuit_json(model: Transformer, found: Circuit, asked: list[int], per_token: dict) -> dict:
    """The circuit as JSON: whole matrices with `tokens`, or [query, key, score] triples;
    and the asked tokens' best partners (`qk_by_token`, `ov_by_token`)."""

    def triples(pairs):
        if pairs is None:
            return None
        if found.tokens is not None:
            return pairs.tolist()
        names = token_texts(model, [i for p in pairs for i in p[:2]])
        return [[names[2 * j], names[2 * j + 1], s] for j, (_, _, s) in enumerate(pairs)]

    value = {"layer": found.layer, "head": found.head, "leaves_out": found.leaves_out, "qk": triples(found.qk)}
    if found.ov is not None:
        value["ov"] = triples(found.ov)
    if found.tokens is not None:
        value["tokens"] = found.tokens
    for kind, rows in per_token.items():
        if rows is not None:
            value[f"{kind}_by_token"] = {
                token_texts(model, [t])[0]: [[token_texts(model, [c])[0], s] for c, s in row]
                for t, row in zip(asked, rows)
            }
    return value
