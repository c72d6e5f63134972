"""The whole transformer: W_E (+ positions) -> blocks of attention and MLP -> W_U.

    tokens -> W_E (+ positions) -> [ block: attention (+ΔE), MLP (+Δ) ] x L -> W_U -> softmax(T)

Decoders (GPT, Llama) return logits [B, T, V]; encoders (BERT) return the last hidden
states [B, T, C]. Nothing here knows about generation, files, pictures or servers: the
model imports only the layers below it (config, hooks, linear, attention).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, KVCache, Rotary
from .config import GlassformerError, ModelConfig
from .hooks import ActivationCache, HookFn, HookPoint, Names, attach, match, name_hook_points
from .hooks import run_with_cache as capture
from .linear import Linear, matmul, on_meta
from .tokenizer import Tokenizer

ACTIVATION_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact erf form (BERT)
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "relu": F.relu,
    "silu": F.silu,  # x·sigmoid(x), the "Swish" of SwiGLU (Llama)
}


class RMSNorm(nn.Module):
    """x / √(mean(x²) + eps) · weight: LayerNorm without the centring or the shift (Llama)."""

    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def make_norm(config: ModelConfig) -> nn.LayerNorm | RMSNorm:
    if config.normalization == "rmsnorm":
        return RMSNorm(config.d_model, config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)


def _embedding(n: int, C: int) -> nn.Embedding:
    if on_meta():  # built to receive loaded weights: no init to draw
        return nn.Embedding(n, C, _weight=torch.empty(n, C))
    return nn.Embedding(n, C)


class Embeddings(nn.Module):
    """Token rows of W_E, plus learned positions (GPT-2, BERT) and token types (BERT)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        C = config.d_model
        self.W_E = _embedding(config.vocab_size, C)
        learned = config.positions == "learned"
        self.W_pos = _embedding(config.context_length, C) if learned else None
        self.W_type = _embedding(config.type_vocab_size, C) if config.type_vocab_size else None
        # post-LN models (BERT) normalise the summed embedding before the first block
        self.ln = make_norm(config) if config.norm == "post" else None
        self.dropout = nn.Dropout(config.dropout)
        self.hook_embed = HookPoint(top_level=True)  # [B, T, C] rows of W_E
        if self.W_pos is not None:
            self.hook_pos_embed = HookPoint(top_level=True)  # [1, T, C]
        if self.W_type is not None:
            self.hook_type_embed = HookPoint(top_level=True)  # [B, T, C]
        if self.ln is not None:
            self.hook_ln_embed = HookPoint(top_level=True)  # [B, T, C] normalised sum

    def forward(self, ids_BT: torch.Tensor, type_ids_BT: torch.Tensor | None, start: int, dtype) -> torch.Tensor:
        """The residual stream's first value, in `dtype` (the stream's precision, which
        bf16-held embedding rows are lifted to)."""
        E_BTC = self.hook_embed(self.W_E(ids_BT).to(dtype))
        if self.W_pos is not None:
            positions = torch.arange(start, start + ids_BT.shape[1], device=ids_BT.device)
            E_BTC = E_BTC + self.hook_pos_embed(self.W_pos(positions)[None].to(dtype))
        if self.W_type is not None:
            if type_ids_BT is None:
                type_ids_BT = torch.zeros_like(ids_BT)
            E_BTC = E_BTC + self.hook_type_embed(self.W_type(type_ids_BT).to(dtype))
        if self.ln is not None:
            E_BTC = self.hook_ln_embed(self.ln(E_BTC))
        return self.dropout(E_BTC)


class MLP(nn.Module):
    """The per-token "store of facts" (3Blue1Brown, chapter 7): up, non-linearity, down.

    plain (GPT-2, BERT):   post = act(x·W_up)
    gated (Llama SwiGLU):  post = act(x·W_gate) * (x·W_up)   — the gate decides how much
                                                             of each neuron's up value passes
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        C, M = config.d_model, config.d_mlp
        self.gated = config.mlp == "gated"
        self.gate = Linear(C, M, bias=config.bias) if self.gated else None  # [C, d_mlp]
        self.up = Linear(C, M, bias=config.bias)  # [C, d_mlp]
        self.down = Linear(M, C, bias=config.bias)  # [d_mlp, C]
        self.act = ACTIVATION_FNS[config.activation]
        self.hook_pre = HookPoint()  # [B, T, d_mlp] what goes into the non-linearity
        if self.gated:
            self.hook_pre_linear = HookPoint()  # [B, T, d_mlp] x·W_up, multiplied by the gate
        self.hook_post = HookPoint()  # [B, T, d_mlp] neuron activations
        self.hook_out = HookPoint()  # [B, T, C] what the MLP adds to the residual stream

    def forward(self, x_BTC: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            post = self.act(self.hook_pre(self.up(x_BTC)))
        else:
            post = self.act(self.hook_pre(self.gate(x_BTC))) * self.hook_pre_linear(self.up(x_BTC))
        return self.hook_out(self.down(self.hook_post(post)))


class Block(nn.Module):
    """Attention then MLP, each adding to the residual stream.

    pre-norm (GPT-2, Llama): x + attn(ln1(x)), then + mlp(ln2(·)) — the stream itself is never normalised
    post-norm (BERT):        ln1(x + attn(x)), then ln2(· + mlp(·)) — normalised after each sublayer
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = config.norm == "pre"
        # registered in the order the data reaches them, so hook_names() reads top to bottom
        self.hook_resid_pre = HookPoint()  # [B, T, C] the stream entering the block
        self.ln1 = make_norm(config)
        self.hook_ln1 = HookPoint()
        self.attn = Attention(config)
        self.hook_resid_mid = HookPoint()  # [B, T, C] after adding ΔE
        self.ln2 = make_norm(config)
        self.hook_ln2 = HookPoint()
        self.mlp = MLP(config)
        self.hook_resid_post = HookPoint()  # [B, T, C] after adding the MLP's output
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x_BTC: torch.Tensor, **attention_inputs) -> torch.Tensor:
        x = self.hook_resid_pre(x_BTC)
        if self.pre_norm:
            dE = self.attn(self.hook_ln1(self.ln1(x)), **attention_inputs)
            x = self.hook_resid_mid(x + self.dropout(dE))  # E <- E + ΔE
            return self.hook_resid_post(x + self.dropout(self.mlp(self.hook_ln2(self.ln2(x)))))
        dE = self.attn(x, **attention_inputs)
        x = self.hook_ln1(self.ln1(self.hook_resid_mid(x + self.dropout(dE))))
        x = self.hook_resid_post(x + self.dropout(self.mlp(x)))
        return self.hook_ln2(self.ln2(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = Embeddings(config)
        self.rotary = Rotary(config.d_head, config.rope_base) if config.positions == "rotary" else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        if config.causal:
            self.ln_final = make_norm(config)
            self.unembed = nn.Linear(config.d_model, config.vocab_size, bias=False)
            if config.tied_unembedding:
                self.unembed.weight = self.embed.W_E.weight  # W_U = W_Eᵀ
            self.hook_ln_final = HookPoint()  # [B, T, C]
            self.hook_logits = HookPoint()  # [B, T, V]
        self.tokenizer: Tokenizer | None = None  # attached by loaders (tokenizer.Tokenizer)
        self.weights_key: str | None = None  # converted weights: the version of their source file
        self.hook_points: dict[str, HookPoint] = name_hook_points(self)
        if on_meta():  # built only to receive loaded weights: nothing to draw
            return
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/√(2·layers) so the stream's variance
        # does not grow with depth (Radford et al. 2019, §2.3)
        for block in cast(list[Block], self.blocks):
            for linear in (block.attn.output, block.mlp.down):
                nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (Linear, nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, (Linear, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # --- the matrices by their video names ---------------------------------------
    @property
    def W_E(self) -> torch.Tensor:
        return self.embed.W_E.weight  # [V, C]

    @property
    def W_U(self) -> torch.Tensor:
        if not self.config.causal:
            raise GlassformerError("an encoder has no unembedding W_U")
        return self.unembed.weight.T  # [C, V]

    @property
    def device(self) -> torch.device:
        return self.W_E.device

    # --- precision -------------------------------------------------------------------
    @property
    def stream_dtype(self) -> torch.dtype:
        """The precision of the residual stream, the norms and the attention pattern: the
        norms' own (float32 unless the whole model was cast down)."""
        norm = self.ln_final if self.config.causal else self.block(0).ln1
        return norm.weight.dtype

    @property
    def precision(self) -> str:
        """ "fp32", or "bf16" when the matrices are held (and multiply) in bf16 while the
        stream, the norms, the softmax and the pattern stay float32."""
        return "bf16" if self.W_E.dtype == torch.bfloat16 and self.stream_dtype == torch.float32 else "fp32"

    def set_precision(self, precision: str) -> Transformer:
        """Hold every matrix (embeddings, W_Q/W_K/W_V/W_O, the MLP, W_U) in "bf16" or "fp32".
        Norms stay float32, and so do the residual stream, the softmax and the pattern: the
        numbers a learner reads are computed in float32 from bf16-rounded weights."""
        if precision not in ("fp32", "bf16"):
            raise GlassformerError(f"unknown precision {precision!r}; use fp32 or bf16")
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        for module in self.modules():
            if isinstance(module, (Linear, nn.Linear, nn.Embedding)):
                module.to(dtype)
        if self.config.causal and self.config.tied_unembedding:
            self.unembed.weight = self.embed.W_E.weight  # still one tensor after the cast
        return self

    def block(self, layer: int) -> Block:
        """Block `layer` (self.blocks[layer], typed as a Block)."""
        return cast(Block, self.blocks[layer])

    # --- forward -------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        explicit: bool = False,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits [B, T, V] (decoder) or last hidden states [B, T, C] (encoder).

        `attention_mask` [B, S]: 1 for real tokens, 0 for padding (keys that nobody
        may attend to). `explicit=True` forces the step-by-step attention path.
        `cache` holds past keys and values (generation). `last_only=True` unembeds only
        the last position, which is all that sampling needs.
        """
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        T = input_ids.shape[1]
        start = len(cache) if cache is not None else 0
        limit = cache.max_len if cache is not None else self.config.context_length
        if start + T > limit:
            raise GlassformerError(f"{start + T} tokens is more than this model's context of {limit} tokens")
        if T == 0:
            raise GlassformerError("no tokens to run the model on")
        # ids from outside are checked (a bad id would crash a GPU kernel); the one-token
        # steps of cached generation feed back the model's own choices, so skip the sync there
        if start == 0 and bool(((input_ids < 0) | (input_ids >= self.config.vocab_size)).any()):
            raise GlassformerError(
                f"token ids must lie in [0, {self.config.vocab_size}), "
                f"got {int(input_ids.min())}..{int(input_ids.max())}"
            )
        keys_BS = None
        if attention_mask is not None and not bool(attention_mask.all()):
            keys_BS = attention_mask.bool()
        rotation = self.rotary(start, T, input_ids.device) if self.rotary is not None else None
        x = self.embed(input_ids, token_type_ids, start, self.stream_dtype)
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layers[i] if cache is not None else None
            x = block(x, keys_BS=keys_BS, rotation=rotation, cache=layer_cache, explicit=explicit)
        if not self.config.causal:
            return x
        if last_only:
            x = x[:, -1:]
        x = self.hook_ln_final(self.ln_final(x))
        return self.hook_logits(matmul(x, self.W_U))

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        return KVCache(self.config, batch, dtype=self.stream_dtype, device=self.device, max_len=max_len)

    # --- looking inside --------------------------------------------------------------
    def hook_names(self) -> list[str]:
        """Every hook point's name, in the order the data reaches them."""
        return list(self.hook_points)

    def matching_hook_names(self, names: Names) -> list[str]:
        """Names chosen by an exact name, a glob, a list of them, or a predicate."""
        return match(self.hook_points, names)

    @contextlib.contextmanager
    def hooks(self, fns: Mapping[str, HookFn]) -> Iterator[Transformer]:
        """Attach `fn(tensor, name) -> tensor | None` to the named activations for the
        length of a `with` block; returning a tensor replaces the activation."""
        with attach(self.hook_points, fns):
            yield self

    def run_with_cache(
        self, input_ids, names: Names | None = None, *, device=None, **forward_kwargs
    ) -> tuple[torch.Tensor, ActivationCache]:
        """Run the model and keep the activations asked for: `(output, cache)`; see
        `glassformer.hooks.run_with_cache`."""
        return capture(self, input_ids, names, device=device, **forward_kwargs)
