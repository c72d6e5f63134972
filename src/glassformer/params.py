"""Where the parameters are: 3Blue1Brown's tally by matrix kind.

The video counts GPT-3's 175 billion weights in eight kinds of matrix; we print those
rows first (plus the gate of a gated MLP), then every other tensor (positions, biases,
norms, token types), and a Total that is exactly `sum(p.numel() for p in model.parameters())`
for every config that ModelConfig accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import GlassformerError, ModelConfig

# bytes one parameter takes in memory, by the precision it is held in
DTYPE_BYTES = {"fp32": 4, "bf16": 2}


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

    def table(self) -> str:
        lines = [(r.kind, r.formula, f"{r.count:,}", r.note) for r in self.rows]
        lines.append(("Total", "", f"{self.total:,}", ""))
        w0, w1, w2 = (max(len(x[i]) for x in lines) for i in range(3))
        out = []
        for i, (kind, formula, count, note) in enumerate(lines):
            if i == len(lines) - 1:
                out.append("-" * (w0 + w1 + w2 + 4))
            out.append(f"{kind:<{w0}}  {formula:<{w1}}  {count:>{w2}}  {note}".rstrip())
        return "\n".join(out)

    __str__ = table


def count_params(config: ModelConfig) -> ParamTally:
    """The tally for `config`, without building the model."""
    V, C, H, K = config.vocab_size, config.d_model, config.n_heads, config.n_kv_heads
    D, L, M = config.d_head, config.n_layers, config.d_mlp
    gated = config.mlp == "gated"
    heads = f"heads {H:,}"
    kv_heads = heads if K == H else f"key/value heads {K:,}"
    rows = [
        TallyRow("Embedding", f"vocab {V:,} × d_model {C:,}", V * C),
        TallyRow("Key", f"d_model {C:,} × d_head {D:,} × {kv_heads} × layers {L:,}", C * K * D * L),
        TallyRow("Query", f"d_model {C:,} × d_head {D:,} × {heads} × layers {L:,}", C * H * D * L),
        TallyRow("Value", f"d_model {C:,} × d_head {D:,} × {kv_heads} × layers {L:,}", C * K * D * L, "value-down"),
        TallyRow("Output", f"d_head {D:,} × d_model {C:,} × {heads} × layers {L:,}", H * D * C * L, "value-up"),
    ]
    if gated:
        rows.append(TallyRow("Gate-projection", f"d_model {C:,} × d_mlp {M:,} × layers {L:,}", C * M * L))
    rows += [
        TallyRow("Up-projection", f"d_model {C:,} × d_mlp {M:,} × layers {L:,}", C * M * L),
        TallyRow("Down-projection", f"d_mlp {M:,} × d_model {C:,} × layers {L:,}", M * C * L),
    ]
    if not config.causal:
        rows.append(TallyRow("Unembedding", "encoder: none", 0, "an encoder has no W_U"))
    elif config.tied_unembedding:
        rows.append(
            TallyRow(
                "Unembedding",
                f"d_model {C:,} × vocab {V:,}",
                0,
                "tied: W_U = W_Eᵀ, counted once under Embedding",
            )
        )
    else:
        rows.append(TallyRow("Unembedding", f"d_model {C:,} × vocab {V:,}", C * V))

    if config.positions == "learned":
        rows.append(
            TallyRow("Positions", f"context {config.context_length:,} × d_model {C:,}", config.context_length * C)
        )
    elif config.positions == "rotary":
        rows.append(TallyRow("Positions", "rotary: angles, not weights", 0, "queries and keys are turned by position"))
    if config.type_vocab_size:
        rows.append(
            TallyRow("Token types", f"types {config.type_vocab_size} × d_model {C:,}", config.type_vocab_size * C)
        )
    if config.bias:
        rows += [
            TallyRow("Query biases", f"d_head {D:,} × {heads} × layers {L:,}", H * D * L),
            TallyRow("Key/Value biases", f"2 × d_head {D:,} × {kv_heads} × layers {L:,}", 2 * K * D * L),
            TallyRow("Output biases", f"d_model {C:,} × layers {L:,}", C * L),
        ]
        if gated:
            rows.append(TallyRow("Gate-projection biases", f"d_mlp {M:,} × layers {L:,}", M * L))
        rows += [
            TallyRow("Up-projection biases", f"d_mlp {M:,} × layers {L:,}", M * L),
            TallyRow("Down-projection biases", f"d_model {C:,} × layers {L:,}", C * L),
        ]
    # two per block, plus the one on the embedding (post-norm) and the final one (decoders)
    n_norms = 2 * L + (config.norm == "post") + config.causal
    with_shift = config.normalization == "layernorm" and config.bias
    kind = "RMSNorms" if config.normalization == "rmsnorm" else "LayerNorms"
    rows.append(
        TallyRow(
            kind,
            f"{n_norms} norms × {'2 × ' if with_shift else ''}d_model {C:,}",
            n_norms * C * (2 if with_shift else 1),
        )
    )
    return ParamTally(tuple(rows))


def describe(name: str, config: ModelConfig) -> str:
    """One line on the model's shape, then its tally."""
    kind = "decoder" if config.causal else "encoder"
    family = "Llama-style" if config.positions == "rotary" else ("GPT" if config.causal else "BERT")
    heads = f"{config.n_heads} heads of {config.d_head}"
    if config.n_kv_heads != config.n_heads:
        heads += f" sharing {config.n_kv_heads} key/value heads"
    shape = (
        f"{name}: {kind} ({family}), {config.n_layers} layers, {heads}, d_model {config.d_model}, "
        f"d_mlp {config.d_mlp}, context {config.context_length}"
    )
    return f"{shape}\n\n{count_params(config).table()}"


def check_fits(config: ModelConfig, *, precision: str = "fp32", available: int | None = None) -> None:
    """Refuse, before anything is allocated, a model whose weights alone would not fit in
    the memory this machine has free (`available` bytes; read from the OS when None)."""
    need = count_params(config).total * DTYPE_BYTES[precision]
    have = available if available is not None else available_memory()
    if have is not None and need > have:
        raise GlassformerError(
            f"this model needs {need / 2**30:,.1f} GiB for its weights alone ({precision}), "
            f"more than the {have / 2**30:,.1f} GiB of memory free here; choose a smaller shape"
        )


def available_memory() -> int | None:
    """Bytes of memory free for a new allocation (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
