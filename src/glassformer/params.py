"""Where the parameters are: 3Blue1Brown's tally by matrix kind.

The video counts GPT-3's 175 billion weights in eight kinds of matrix; we print those
eight rows first, then every other tensor (positions, biases, norms, token types),
and a Total that is exactly `sum(p.numel() for p in model.parameters())`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig


@dataclass(frozen=True)
class TallyRow:
    kind: str
    formula: str  # how the count is made, in the video's words
    count: int
    note: str = ""


@dataclass(frozen=True)
class ParamTally:
    rows: tuple[TallyRow, ...]

    @property
    def total(self) -> int:
        return sum(r.count for r in self.rows)

    def __getitem__(self, kind: str) -> int:
        for row in self.rows:
            if row.kind == kind:
                return row.count
        raise KeyError(kind)

    def as_dict(self) -> dict[str, int]:
        return {r.kind: r.count for r in self.rows} | {"Total": self.total}

    def table(self) -> str:
        lines = [(r.kind, r.formula, f"{r.count:,}", r.note) for r in self.rows]
        lines.append(("Total", "", f"{self.total:,}", ""))
        w0 = max(len(x[0]) for x in lines)
        w1 = max(len(x[1]) for x in lines)
        w2 = max(len(x[2]) for x in lines)
        out = []
        for i, (kind, formula, count, note) in enumerate(lines):
            if i == len(lines) - 1:
                out.append("-" * (w0 + w1 + w2 + 4))
            out.append(f"{kind:<{w0}}  {formula:<{w1}}  {count:>{w2}}  {note}".rstrip())
        return "\n".join(out)

    __str__ = table


def count_params(config: ModelConfig) -> ParamTally:
    """The tally for `config`, without building the model."""
    V, C, H, D, L, M = (config.vocab_size, config.d_model, config.n_heads, config.d_head,
                        config.n_layers, config.d_mlp)  # fmt: skip
    HD = H * D
    per_layer = f"d_model {C:,} × d_head {D:,} × heads {H:,} × layers {L:,}"
    rows = [
        TallyRow("Embedding", f"vocab {V:,} × d_model {C:,}", V * C),
        TallyRow("Key", per_layer, C * HD * L),
        TallyRow("Query", per_layer, C * HD * L),
        TallyRow("Value", per_layer, C * HD * L, "value-down"),
        TallyRow("Output", f"d_head {D:,} × d_model {C:,} × heads {H:,} × layers {L:,}", HD * C * L,
                 "value-up"),  # fmt: skip
        TallyRow("Up-projection", f"d_model {C:,} × d_mlp {M:,} × layers {L:,}", C * M * L),
        TallyRow("Down-projection", f"d_mlp {M:,} × d_model {C:,} × layers {L:,}", M * C * L),
    ]
    if not config.causal:
        rows.append(TallyRow("Unembedding", "encoder: none", 0, "an encoder has no W_U"))
    elif config.tied_unembedding:
        rows.append(
            TallyRow("Unembedding", f"d_model {C:,} × vocab {V:,}", 0,
                     "tied: W_U = W_Eᵀ, counted once under Embedding")  # fmt: skip
        )
    else:
        rows.append(TallyRow("Unembedding", f"d_model {C:,} × vocab {V:,}", C * V))

    norm_params = 2 * C if config.bias else C  # LayerNorm scale (and shift)
    n_norms = 2 * L + 1  # two per block, plus the final one (pre-LN) or the embedding one (post-LN)
    if config.learned_positions:
        rows.append(TallyRow("Positions", f"context {config.context_length:,} × d_model {C:,}",
                             config.context_length * C))  # fmt: skip
    if config.type_vocab_size:
        rows.append(TallyRow("Token types", f"types {config.type_vocab_size} × d_model {C:,}",
                             config.type_vocab_size * C))  # fmt: skip
    if config.bias:
        rows += [
            TallyRow("Query/Key/Value biases", f"3 × d_head {D:,} × heads {H:,} × layers {L:,}",
                     3 * HD * L),  # fmt: skip
            TallyRow("Output biases", f"d_model {C:,} × layers {L:,}", C * L),
            TallyRow("Up-projection biases", f"d_mlp {M:,} × layers {L:,}", M * L),
            TallyRow("Down-projection biases", f"d_model {C:,} × layers {L:,}", C * L),
        ]
    rows.append(
        TallyRow("LayerNorms", f"{n_norms} norms × {'2 × ' if config.bias else ''}d_model {C:,}",
                 n_norms * norm_params)  # fmt: skip
    )
    return ParamTally(tuple(rows))
