"""Multi-head self-attention, in the order 3Blue1Brown draws it.

Dimension key (used in shape comments and suffixes throughout):
    B  batch                     T  query positions        S  key positions
    H  query heads               K  key/value heads (K = H unless grouped)
    D  d_head                    C  d_model (embedding size)
    V  vocabulary size

One head, step by step (the explicit path; every step is a hook point):
    Q = E W_Q                  queries: "is there an adjective in front of me?"
    K = E W_K                  keys:    "I am an adjective!"
    (Llama: Q and K are turned by an angle that grows with their position: rotary)
    dots = Q Kᵀ / √D           the grid of dot products; big where a key answers a query
    scores = dots, masked      −∞ where a later token would inform an earlier one (decoders)
                               and where a key is padding
    pattern = softmax(scores)  each query's weights over the keys sum to 1
    z = pattern · (E W_V)      value-down: what each attended token has to say, weighted
    ΔE = z W_O                 value-up back to d_model; summed over heads, added to E

Masks have one polarity everywhere: `allowed` is True where a query may look at a key
(the same as an attention_mask's 1 for a real token, and as scaled_dot_product_attention's
boolean mask). Tensors are stored the usual way, pattern[B, H, query, key] (rows are
queries), so they compare directly with Hugging Face's `output_attentions`.

Grouped-query attention (Llama, SmolLM2): K key/value heads are each shared by H / K
query heads, so the cache holds K heads, not H.

The fast path computes the same thing with `scaled_dot_product_attention` and never
builds the T×S grid; it is taken whenever no hook inside the head is listening.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .hooks import HookPoint
from .linear import Linear


# --- positions by rotation (RoPE, Su et al. 2021) -----------------------------------------
class Rotary(nn.Module):
    """The angles that turn queries and keys by position. Dimension i of the first half
    of a head pairs with dimension i of the second half (Hugging Face's layout), and the
    pair turns by position · base^(-2i/D): fast for the first pairs, slow for the last."""

    def __init__(self, d_head: int, base: float) -> None:
        super().__init__()
        self.d_head, self.base = int(d_head), base

    def forward(self, start: int, T: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each [T, D], for positions start .. start + T - 1, in float32."""
        D = self.d_head
        inv_freq = 1.0 / (self.base ** (torch.arange(0, D, 2, dtype=torch.int64, device=device).float() / D))
        positions = torch.arange(start, start + T, device=device).float()
        angles_TD = torch.outer(positions, inv_freq).repeat(1, 2)  # each angle used by both halves
        return angles_TD.cos(), angles_TD.sin()


def rotate(x_BHTD: torch.Tensor, cos_TD: torch.Tensor, sin_TD: torch.Tensor) -> torch.Tensor:
    """Turn each (first-half, second-half) pair of x by its angle: (a, b) -> (a cos - b sin,
    b cos + a sin)."""
    a, b = x_BHTD.chunk(2, dim=-1)
    turned_a_quarter = torch.cat((-b, a), dim=-1)  # each pair turned by 90°
    return x_BHTD * cos_TD.to(x_BHTD.dtype) + turned_a_quarter * sin_TD.to(x_BHTD.dtype)


# --- the cache of keys and values (generation) ---------------------------------------------
class LayerCache:
    """Keys and values of the positions seen so far, for one layer.

    Preallocated to the context length, so appending a token is a copy of one
    position rather than a concatenation of all of them.
    """

    def __init__(self, batch: int, kv_heads: int, max_len: int, d_head: int, *, dtype, device) -> None:
        self.k_BKSD = torch.empty(batch, kv_heads, max_len, d_head, dtype=dtype, device=device)
        self.v_BKSD = torch.empty(batch, kv_heads, max_len, d_head, dtype=dtype, device=device)
        self.length = 0

    def append(self, k_BKTD: torch.Tensor, v_BKTD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions; return the keys and values of every position so far."""
        end = self.length + k_BKTD.shape[2]
        self.k_BKSD[:, :, self.length : end] = k_BKTD
        self.v_BKSD[:, :, self.length : end] = v_BKTD
        self.length = end
        return self.k_BKSD[:, :, :end], self.v_BKSD[:, :, :end]


class KVCache:
    """One LayerCache per block; `len(cache)` is how many positions it holds."""

    def __init__(self, config: ModelConfig, batch: int, *, dtype, device, max_len: int | None = None):
        self.max_len = max_len or config.context_length
        self.layers = [
            LayerCache(batch, config.n_kv_heads, self.max_len, config.d_head, dtype=dtype, device=device)
            for _ in range(config.n_layers)
        ]

    def __len__(self) -> int:
        return self.layers[0].length


# --- masks -----------------------------------------------------------------------------------
def allowed_cells(T: int, S: int, *, causal: bool, keys_BS: torch.Tensor | None, device) -> torch.Tensor | None:
    """Boolean [B|1, 1, T, S], True where query t may look at key s; None when every query
    may look at every key. The queries are the last T of the S positions (with a cache the
    earlier ones are already stored), so query t sits at position t + S - T."""
    allowed = None
    if causal and T > 1:  # a single query is the newest position: every key is in its past
        allowed = torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)[None, None]
    if keys_BS is not None:
        real_keys = keys_BS.bool()[:, None, None, :]  # [B, 1, 1, S]
        allowed = real_keys if allowed is None else allowed & real_keys
    return allowed


# --- attention --------------------------------------------------------------------------------
class Attention(nn.Module):
    """All heads of one layer. `W_Q[h]`, `W_K[h]`, `W_V[h]` ([C, D]) and `W_O[h]` ([D, C])
    are head h's matrices; with grouped heads, W_K[h] and W_V[h] are those of the group h reads."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        # plain ints: a config's worked-out sizes (config.Derived) cost torch a slower argument parse
        self.n_heads, self.n_kv_heads, self.d_head = int(config.n_heads), int(config.n_kv_heads), int(config.d_head)
        self.group = config.group_size
        self.causal = config.causal
        self.dropout = config.dropout
        C, H, K, D = config.d_model, self.n_heads, self.n_kv_heads, self.d_head
        self.query = Linear(C, H * D, bias=config.bias)  # [C, H·D]: every head's W_Q side by side
        self.key = Linear(C, K * D, bias=config.bias)  # [C, K·D]
        self.value = Linear(C, K * D, bias=config.bias)  # [C, K·D]: value-down
        self.output = Linear(H * D, C, bias=config.bias)  # [H·D, C]: W_O, value-up
        self.pattern_dropout = nn.Dropout(config.dropout)
        self.rotary = config.positions == "rotary"
        if self.rotary:
            self.hook_q_unrotated = HookPoint()  # [B, H, T, D]
            self.hook_k_unrotated = HookPoint()  # [B, K, T, D]
        self.hook_q = HookPoint()  # [B, H, T, D]
        self.hook_k = HookPoint()  # [B, K, T, D]
        self.hook_v = HookPoint()  # [B, K, T, D]
        self.hook_dots = HookPoint()  # [B, H, T, S]
        self.hook_scores = HookPoint()  # [B, H, T, S], masked cells −∞
        self.hook_pattern = HookPoint()  # [B, H, T, S], rows sum to 1
        self.hook_z = HookPoint()  # [B, H, T, D], pattern-weighted values per head
        self.hook_out = HookPoint()  # [B, T, C], ΔE summed over heads (plus bias)
        self._inside = (self.hook_dots, self.hook_scores, self.hook_pattern, self.hook_z)

    # --- each head's matrices, read off the stored weights ----------------------------------
    def _per_head(self, linear: Linear, heads: int) -> torch.Tensor:
        W_HCD = linear.weight.view(-1, heads, self.d_head).permute(1, 0, 2)  # Q_h = E @ W[h]
        return W_HCD if heads == self.n_heads else W_HCD.repeat_interleave(self.group, dim=0)

    @property
    def W_Q(self) -> torch.Tensor:
        return self._per_head(self.query, self.n_heads)  # [H, C, D]

    @property
    def W_K(self) -> torch.Tensor:
        return self._per_head(self.key, self.n_kv_heads)  # [H, C, D] (a copy when grouped)

    @property
    def W_V(self) -> torch.Tensor:
        return self._per_head(self.value, self.n_kv_heads)  # [H, C, D] (a copy when grouped)

    @property
    def W_O(self) -> torch.Tensor:
        return self.output.weight.view(self.n_heads, self.d_head, -1)  # [H, D, C]: ΔE = Σ_h z_h W_O[h]

    def _per_head_bias(self, linear: Linear, heads: int) -> torch.Tensor | None:
        if linear.bias is None:
            return None
        b_HD = linear.bias.view(heads, self.d_head)
        return b_HD if heads == self.n_heads else b_HD.repeat_interleave(self.group, dim=0)

    @property
    def b_Q(self) -> torch.Tensor | None:
        return self._per_head_bias(self.query, self.n_heads)

    @property
    def b_K(self) -> torch.Tensor | None:
        return self._per_head_bias(self.key, self.n_kv_heads)

    @property
    def b_V(self) -> torch.Tensor | None:
        return self._per_head_bias(self.value, self.n_kv_heads)

    @property
    def b_O(self) -> torch.Tensor | None:
        return self.output.bias

    def head_outputs(self, z_BHTD: torch.Tensor) -> torch.Tensor:
        """Each head's own ΔE, [B, H, T, C], before summing (the output bias is not split)."""
        return torch.einsum("bhtd,hdc->bhtc", z_BHTD, self.W_O)

    def kv_head(self, head: int) -> int:
        """The key/value head that query head `head` reads."""
        return head // self.group

    # --- forward ------------------------------------------------------------------------------
    def listening(self) -> bool:
        """True when a hook past the projections wants the step-by-step grid."""
        return any(h.active for h in self._inside)

    def forward(
        self,
        E_BTC: torch.Tensor,
        *,
        keys_BS: torch.Tensor | None = None,
        rotation: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: LayerCache | None = None,
        explicit: bool = False,
    ) -> torch.Tensor:
        """ΔE [B, T, C] for embeddings E. `keys_BS`: True for real keys, False for padding.
        `rotation`: the (cos, sin) of each position (rotary models). `cache`: earlier
        positions' keys and values, which this call extends."""
        B, T, _ = E_BTC.shape
        H, K, D = self.n_heads, self.n_kv_heads, self.d_head
        Q_BHTD = self.query(E_BTC).view(B, T, H, D).transpose(1, 2)  # Q = E·W_Q, split into heads
        K_BKTD = self.key(E_BTC).view(B, T, K, D).transpose(1, 2)  # K = E·W_K
        V_BKTD = self.value(E_BTC).view(B, T, K, D).transpose(1, 2)  # E·W_V
        if rotation is not None:  # Llama: position enters here, by turning queries and keys
            Q_BHTD = rotate(self.hook_q_unrotated(Q_BHTD), *rotation)
            K_BKTD = rotate(self.hook_k_unrotated(K_BKTD), *rotation)
        Q_BHTD, K_BKTD, V_BKTD = self.hook_q(Q_BHTD), self.hook_k(K_BKTD), self.hook_v(V_BKTD)
        if cache is not None:
            K_BKSD, V_BKSD = cache.append(K_BKTD, V_BKTD)  # every position's keys and values so far
        else:
            K_BKSD, V_BKSD = K_BKTD, V_BKTD

        if explicit or self.listening():
            z_BHTD = self._explicit(Q_BHTD, K_BKSD, V_BKSD, keys_BS)
        else:
            z_BHTD = self._fast(Q_BHTD, K_BKSD, V_BKSD, keys_BS)

        z_BTC = z_BHTD.transpose(1, 2).reshape(B, T, H * D)  # the heads side by side
        return self.hook_out(self.output(z_BTC))  # ΔE = Σ_h z_h W_O[h]

    def _explicit(self, Q_BHTD, K_BKSD, V_BKSD, keys_BS) -> torch.Tensor:
        """The textbook: the grid, the mask, the softmax and the weighted values, each
        through its hook point."""
        if self.group > 1:  # each key/value head answers a group of query heads
            K_BHSD = K_BKSD.repeat_interleave(self.group, dim=1)
            V_BHSD = V_BKSD.repeat_interleave(self.group, dim=1)
        else:
            K_BHSD, V_BHSD = K_BKSD, V_BKSD
        T, S = Q_BHTD.shape[2], K_BHSD.shape[2]

        # the grid of dot products, scaled so its spread does not grow with D
        dots_BHTS = self.hook_dots(Q_BHTD @ K_BHSD.transpose(-2, -1) / math.sqrt(self.d_head))
        allowed = allowed_cells(T, S, causal=self.causal, keys_BS=keys_BS, device=Q_BHTD.device)
        scores_BHTS = dots_BHTS if allowed is None else torch.where(allowed, dots_BHTS, float("-inf"))
        scores_BHTS = self.hook_scores(scores_BHTS)

        pattern_BHTS = torch.softmax(scores_BHTS, dim=-1)  # each row (query) sums to 1
        if keys_BS is not None:
            pattern_BHTS = pattern_BHTS.nan_to_num(0.0)  # a query with no real key attends nowhere
        pattern_BHTS = self.hook_pattern(pattern_BHTS)

        z_BHTD = self.pattern_dropout(pattern_BHTS) @ V_BHSD  # weighted sum of values
        return self.hook_z(z_BHTD)

    def _fast(self, Q_BHTD, K_BKSD, V_BKSD, keys_BS) -> torch.Tensor:
        """The same numbers from a fused kernel that never stores the T×S grid."""
        dropout_p = self.dropout if self.training else 0.0
        if Q_BHTD.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # bf16 training on a CPU: the fused kernel's bf16 backward is several times slower
            # than its fp32 one, so attention itself stays in fp32 (the products around it do not)
            with torch.autocast("cpu", enabled=False):
                return self._sdpa(Q_BHTD.float(), K_BKSD.float(), V_BKSD.float(), keys_BS, dropout_p)
        return self._sdpa(Q_BHTD, K_BKSD, V_BKSD, keys_BS, dropout_p)

    def _sdpa(self, Q_BHTD, K_BKSD, V_BKSD, keys_BS, dropout_p) -> torch.Tensor:
        T, S = Q_BHTD.shape[2], K_BKSD.shape[2]
        grouped = self.group > 1
        if self.causal and keys_BS is None and T == S:  # the plain causal case needs no mask tensor
            return F.scaled_dot_product_attention(
                Q_BHTD, K_BKSD, V_BKSD, dropout_p=dropout_p, is_causal=True, enable_gqa=grouped
            )
        allowed = allowed_cells(T, S, causal=self.causal, keys_BS=keys_BS, device=Q_BHTD.device)
        return F.scaled_dot_product_attention(
            Q_BHTD, K_BKSD, V_BKSD, attn_mask=allowed, dropout_p=dropout_p, enable_gqa=grouped
        )
