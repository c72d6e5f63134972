"""Multi-head self-attention, in the order 3Blue1Brown draws it.

Dimension key (used in shape comments and suffixes throughout):
    B  batch                     T  query positions        S  key positions
    H  heads                     D  d_head (query/key/value size per head)
    C  d_model (embedding size)  V  vocabulary size

One head, step by step (the explicit path; every step is a hook point):
    Q = E W_Q                  queries: "is there an adjective in front of me?"
    K = E W_K                  keys:    "I am an adjective!"
    scores = Q Kᵀ / √D         the grid of dot products; big where a key answers a query
    mask                       −∞ where a later token would inform an earlier one (decoders)
                               and where a key is padding (encoders)
    pattern = softmax(scores)  each query's weights over the keys sum to 1
    z = pattern · (E W_V)      value-down: what each attended token has to say, weighted
    ΔE = z W_O                 value-up back to d_model; summed over heads, added to E

Tensors are stored the usual way, pattern[B, H, query, key] (rows are queries), so
they compare directly with Hugging Face's `output_attentions`.

The fast path computes the same thing with `scaled_dot_product_attention` and never
builds the T×S grid; it is taken whenever no hook inside the head is listening.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .hooks import HookPoint
from .linear import Linear


class LayerCache:
    """Keys and values of the positions seen so far, for one layer.

    Preallocated to the context length, so appending a token is a copy of one
    position rather than a concatenation of all of them.
    """

    def __init__(self, batch: int, heads: int, max_len: int, d_head: int, *, dtype, device) -> None:
        self.k_BHSD = torch.empty(batch, heads, max_len, d_head, dtype=dtype, device=device)
        self.v_BHSD = torch.empty(batch, heads, max_len, d_head, dtype=dtype, device=device)
        self.length = 0

    def append(self, k_BHTD: torch.Tensor, v_BHTD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = k_BHTD.shape[2]
        end = self.length + T
        self.k_BHSD[:, :, self.length : end] = k_BHTD
        self.v_BHSD[:, :, self.length : end] = v_BHTD
        self.length = end
        return self.k_BHSD[:, :, :end], self.v_BHSD[:, :, :end]


class KVCache:
    """One LayerCache per block; `len(cache)` is how many positions it holds."""

    def __init__(self, config: ModelConfig, batch: int, *, dtype, device, max_len: int | None = None):
        max_len = max_len or config.context_length
        self.layers = [
            LayerCache(batch, config.n_heads, max_len, config.d_head, dtype=dtype, device=device)
            for _ in range(config.n_layers)
        ]
        self.max_len = max_len

    def __len__(self) -> int:
        return self.layers[0].length


@functools.lru_cache(maxsize=16)
def _future_cells(T: int, S: int, device: torch.device) -> torch.Tensor:
    """Boolean [T, S], True where key s comes after query t. Queries are the last T of
    the S positions (with a cache, the earlier ones are already stored), so query t
    sits at position t + S - T. Cached: every layer of a forward asks for the same one."""
    return torch.ones(T, S, dtype=torch.bool, device=device).triu_(S - T + 1)


def blocked_cells(
    T: int, S: int, *, causal: bool, key_keep_BS: torch.Tensor | None, device
) -> torch.Tensor | None:
    """Boolean [B|1, 1, T, S]: True where query t may not look at key s (a later
    position in a decoder, padding in any model); None when nothing is blocked."""
    blocked = None
    if causal and T > 1:  # a single query is the newest position: every key is in its past
        blocked = _future_cells(T, S, torch.device(device))[None, None]
    if key_keep_BS is not None:
        padding = ~key_keep_BS.bool()[:, None, None, :]  # [B,1,1,S]
        blocked = padding if blocked is None else blocked | padding
    return blocked


class Attention(nn.Module):
    """All heads of one layer. Queries, keys and values share one matmul for speed;
    `W_Q[h]`, `W_K[h]`, `W_V[h]` ([C, D]) and `W_O[h]` ([D, C]) give each head's matrices."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.d_head, C = config.n_heads, config.d_head, config.d_model
        self.causal = config.causal
        self.dropout = config.dropout
        HD = self.n_heads * self.d_head
        self.qkv = Linear(C, 3 * HD, bias=config.bias)  # [C, 3·H·D]: W_Q | W_K | W_V side by side
        self.proj = Linear(HD, C, bias=config.bias)  # [H·D, C]: W_O, value-up, every head's at once
        self.pattern_dropout = nn.Dropout(config.dropout)
        self.hook_q = HookPoint()  # [B, H, T, D]
        self.hook_k = HookPoint()  # [B, H, S, D]
        self.hook_v = HookPoint()  # [B, H, S, D]
        self.hook_scores = HookPoint()  # [B, H, T, S], masked cells −∞
        self.hook_pattern = HookPoint()  # [B, H, T, S], rows sum to 1
        self.hook_z = HookPoint()  # [B, H, T, D], pattern-weighted values per head
        self.hook_out = HookPoint()  # [B, T, C], ΔE summed over heads (plus bias)
        self._inside = (self.hook_q, self.hook_k, self.hook_v, self.hook_scores,
                        self.hook_pattern, self.hook_z)  # fmt: skip

    # --- per-head views of the stored weights (no copies) ---------------------------
    def _split(self, which: int) -> torch.Tensor:
        H, D = self.n_heads, self.d_head
        cols = self.qkv.weight[:, which * H * D : (which + 1) * H * D]  # [C, H*D]
        return cols.view(-1, H, D).permute(1, 0, 2)  # [H, C, D], so that Q_h = E @ W_Q[h]

    @property
    def W_Q(self) -> torch.Tensor:
        return self._split(0)

    @property
    def W_K(self) -> torch.Tensor:
        return self._split(1)

    @property
    def W_V(self) -> torch.Tensor:
        return self._split(2)

    @property
    def W_O(self) -> torch.Tensor:
        return self.proj.weight.view(self.n_heads, self.d_head, -1)  # [H, D, C]: ΔE = Σ_h z_h @ W_O[h]

    def _split_bias(self, which: int) -> torch.Tensor | None:
        if self.qkv.bias is None:
            return None
        HD = self.n_heads * self.d_head
        return self.qkv.bias[which * HD : (which + 1) * HD].view(self.n_heads, self.d_head)

    @property
    def b_Q(self) -> torch.Tensor | None:
        return self._split_bias(0)

    @property
    def b_K(self) -> torch.Tensor | None:
        return self._split_bias(1)

    @property
    def b_V(self) -> torch.Tensor | None:
        return self._split_bias(2)

    @property
    def b_O(self) -> torch.Tensor | None:
        return self.proj.bias

    def head_outputs(self, z_BHTD: torch.Tensor) -> torch.Tensor:
        """Each head's own ΔE, [B, H, T, C], before summing (the output bias is not split)."""
        return torch.einsum("bhtd,hdc->bhtc", z_BHTD, self.W_O)

    # --- forward ------------------------------------------------------------------
    def wants_explicit(self) -> bool:
        return any(h.active for h in self._inside)

    def forward(
        self,
        E_BTC: torch.Tensor,
        *,
        key_keep_BS: torch.Tensor | None = None,
        cache: LayerCache | None = None,
        explicit: bool = False,
    ) -> torch.Tensor:
        B, T, C = E_BTC.shape
        H, D = self.n_heads, self.d_head
        qkv_BT3HD = self.qkv(E_BTC).view(B, T, 3, H, D)
        q_BHTD, k_BHTD, v_BHTD = qkv_BT3HD.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, D]

        if explicit or self.wants_explicit():
            z_BHTD = self._explicit(q_BHTD, k_BHTD, v_BHTD, key_keep_BS, cache)
        else:
            z_BHTD = self._fast(q_BHTD, k_BHTD, v_BHTD, key_keep_BS, cache)

        z_BTC = z_BHTD.transpose(1, 2).reshape(B, T, H * D)  # heads side by side
        return self.hook_out(self.proj(z_BTC))  # ΔE = Σ_h z_h W_O[h]

    def _explicit(self, q_BHTD, k_BHTD, v_BHTD, key_keep_BS, cache) -> torch.Tensor:
        """The textbook: every step the video draws, each through its hook point."""
        q_BHTD = self.hook_q(q_BHTD)  # queries Q = E W_Q
        k_BHTD = self.hook_k(k_BHTD)  # keys    K = E W_K
        v_BHTD = self.hook_v(v_BHTD)  # values  E W_V (value-down)
        if cache is not None:
            k_BHSD, v_BHSD = cache.append(k_BHTD, v_BHTD)
        else:
            k_BHSD, v_BHSD = k_BHTD, v_BHTD
        T, S = q_BHTD.shape[2], k_BHSD.shape[2]

        # the grid of dot products, scaled so its spread does not grow with D
        scores_BHTS = q_BHTD @ k_BHSD.transpose(-2, -1)
        scores_BHTS.div_(math.sqrt(self.d_head))  # in place: nothing else holds this grid yet
        blocked = blocked_cells(T, S, causal=self.causal, key_keep_BS=key_keep_BS,
                                device=q_BHTD.device)  # fmt: skip
        if blocked is not None:
            scores_BHTS.masked_fill_(blocked, float("-inf"))
        scores_BHTS = self.hook_scores(scores_BHTS)

        pattern_BHTS = torch.softmax(scores_BHTS, dim=-1)  # each row (query) sums to 1
        if key_keep_BS is not None:
            pattern_BHTS = pattern_BHTS.nan_to_num(0.0)  # a query with no visible key attends nowhere
        pattern_BHTS = self.hook_pattern(pattern_BHTS)

        z_BHTD = self.pattern_dropout(pattern_BHTS) @ v_BHSD  # weighted sum of values
        return self.hook_z(z_BHTD)

    def _fast(self, q_BHTD, k_BHTD, v_BHTD, key_keep_BS, cache) -> torch.Tensor:
        """The same numbers from a fused kernel that never stores the T×S grid."""
        if cache is not None:
            k_BHTD, v_BHTD = cache.append(k_BHTD, v_BHTD)
        dropout_p = self.dropout if self.training else 0.0
        if q_BHTD.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # bf16 training on a CPU: the fused kernel's bf16 backward ran 4x slower than its
            # fp32 one here, so attention itself stays in fp32 (the products around it do not)
            with torch.autocast("cpu", enabled=False):
                q, k, v = q_BHTD.float(), k_BHTD.float(), v_BHTD.float()
                return self._sdpa(q, k, v, key_keep_BS, dropout_p)
        return self._sdpa(q_BHTD, k_BHTD, v_BHTD, key_keep_BS, dropout_p)

    def _sdpa(self, q_BHTD, k_BHTD, v_BHTD, key_keep_BS, dropout_p) -> torch.Tensor:
        T, S = q_BHTD.shape[2], k_BHTD.shape[2]
        if self.causal and key_keep_BS is None and T == S:
            return F.scaled_dot_product_attention(
                q_BHTD, k_BHTD, v_BHTD, dropout_p=dropout_p, is_causal=True
            )
        blocked = blocked_cells(T, S, causal=self.causal, key_keep_BS=key_keep_BS,
                                device=q_BHTD.device)  # fmt: skip
        return F.scaled_dot_product_attention(
            q_BHTD, k_BHTD, v_BHTD, attn_mask=None if blocked is None else ~blocked, dropout_p=dropout_p
        )
