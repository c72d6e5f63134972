"""The whole transformer: W_E (+ positions) -> blocks of attention and MLP -> W_U.

    tokens -> W_E (+ positions) -> [ block: attention (+ΔE), MLP (+Δ) ] x L -> W_U -> softmax(T)

Decoders (GPT) return logits [B, T, V]; encoders (BERT) return the last hidden
states [B, T, C]. Nothing here knows about pictures, files or servers.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, KVCache
from .config import GlassformerError, ModelConfig
from .hooks import HookFn, HookPoint, name_hook_points
from .linear import Linear, wide_matmul

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact erf form (BERT)
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "relu": F.relu,
}


def softmax_with_temperature(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(logits / T) over the last axis. T -> 0 puts all weight on the argmax
    (ties split evenly), T = 1 is the plain softmax, large T flattens towards uniform."""
    if temperature < 0:
        raise GlassformerError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        top = logits == logits.max(dim=-1, keepdim=True).values
        return top.to(logits.dtype) / top.sum(dim=-1, keepdim=True)
    return torch.softmax(logits.float() / temperature, dim=-1).to(logits.dtype)


class Embeddings(nn.Module):
    """Token rows of W_E, plus learned positions (and token types for BERT)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        C = config.d_model
        self.W_E = nn.Embedding(config.vocab_size, C)
        self.W_pos = nn.Embedding(config.context_length, C) if config.learned_positions else None
        self.W_type = nn.Embedding(config.type_vocab_size, C) if config.type_vocab_size else None
        # post-LN models (BERT) normalise the summed embedding before the first block
        self.ln = nn.LayerNorm(C, eps=config.norm_eps, bias=config.bias) if config.norm == "post" else None
        self.dropout = nn.Dropout(config.dropout)
        self.hook_embed = HookPoint(top_level=True)  # [B, T, C] rows of W_E
        if self.W_pos is not None:
            self.hook_pos_embed = HookPoint(top_level=True)  # [1, T, C]
        if self.W_type is not None:
            self.hook_type_embed = HookPoint(top_level=True)  # [B, T, C]
        if self.ln is not None:
            self.hook_ln_embed = HookPoint(top_level=True)  # [B, T, C] normalised sum

    def forward(self, ids_BT: torch.Tensor, type_ids_BT: torch.Tensor | None, start: int) -> torch.Tensor:
        E_BTC = self.hook_embed(self.W_E(ids_BT))
        if self.W_pos is not None:
            positions = torch.arange(start, start + ids_BT.shape[1], device=ids_BT.device)
            E_BTC = E_BTC + self.hook_pos_embed(self.W_pos(positions)[None])
        if self.W_type is not None:
            if type_ids_BT is None:
                type_ids_BT = torch.zeros_like(ids_BT)
            E_BTC = E_BTC + self.hook_type_embed(self.W_type(type_ids_BT))
        if self.ln is not None:
            E_BTC = self.hook_ln_embed(self.ln(E_BTC))
        return self.dropout(E_BTC)


class MLP(nn.Module):
    """Up-projection, non-linearity, down-projection: the per-token "store of facts"."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.up = Linear(config.d_model, config.d_mlp, bias=config.bias)  # [C, d_mlp]
        self.down = Linear(config.d_mlp, config.d_model, bias=config.bias)  # [d_mlp, C]
        self.act = _ACTIVATIONS[config.activation]
        self.hook_pre = HookPoint()  # [B, T, d_mlp] before the non-linearity
        self.hook_post = HookPoint()  # [B, T, d_mlp] neuron activations
        self.hook_out = HookPoint()  # [B, T, C] what the MLP adds to the residual stream

    def forward(self, x_BTC: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(self.up(x_BTC))
        post = self.hook_post(self.act(pre))
        return self.hook_out(self.down(post))


class Block(nn.Module):
    """Attention then MLP, each adding to the residual stream.

    pre-LN (GPT-2):  x + attn(ln1(x)), then + mlp(ln2(·))   — the stream is never normalised
    post-LN (BERT):  ln1(x + attn(x)), then ln2(· + mlp(·)) — the stream is normalised after each
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = config.norm == "pre"
        # registered in the order the data reaches them, so hook_names() reads top to bottom
        self.hook_resid_pre = HookPoint()  # [B, T, C] the stream entering the block
        self.ln1 = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)
        self.hook_ln1 = HookPoint()
        self.attn = Attention(config)
        self.hook_resid_mid = HookPoint()  # [B, T, C] after adding ΔE
        self.ln2 = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)
        self.hook_ln2 = HookPoint()
        self.mlp = MLP(config)
        self.hook_resid_post = HookPoint()  # [B, T, C] after adding the MLP's output
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x_BTC, *, key_keep_BS=None, cache=None, explicit=False) -> torch.Tensor:
        x = self.hook_resid_pre(x_BTC)
        if self.pre_norm:
            dE = self.attn(self.hook_ln1(self.ln1(x)), key_keep_BS=key_keep_BS, cache=cache,
                           explicit=explicit)  # fmt: skip
            x = self.hook_resid_mid(x + self.dropout(dE))  # E <- E + ΔE
            x = self.hook_resid_post(x + self.dropout(self.mlp(self.hook_ln2(self.ln2(x)))))
            return x
        dE = self.attn(x, key_keep_BS=key_keep_BS, cache=cache, explicit=explicit)
        x = self.hook_ln1(self.ln1(self.hook_resid_mid(x + self.dropout(dE))))
        x = self.hook_resid_post(x + self.dropout(self.mlp(x)))
        return self.hook_ln2(self.ln2(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = Embeddings(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        if config.causal:
            self.ln_final = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)
            self.unembed = nn.Linear(config.d_model, config.vocab_size, bias=False)
            if config.tied_unembedding:
                self.unembed.weight = self.embed.W_E.weight  # W_U = W_Eᵀ
            self.hook_ln_final = HookPoint()  # [B, T, C]
            self.hook_logits = HookPoint()  # [B, T, V]
        self.tokenizer = None  # attached by loaders; encode(text) -> ids, decode(ids) -> text
        self.hook_points: dict[str, HookPoint] = name_hook_points(self)
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/√(2·layers) so the stream's variance
        # does not grow with depth (Radford et al. 2019, §2.3)
        for block in self.blocks:
            for linear in (block.attn.proj, block.mlp.down):
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
        W_U: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, T, V] (decoder) or last hidden states [B, T, C] (encoder).

        `attention_mask` [B, S]: 1 for real tokens, 0 for padding (keys that nobody
        may attend to). `explicit=True` forces the step-by-step attention path.
        `cache` holds past keys and values (generation). `last_only=True` unembeds only
        the last position, which is all that sampling needs. `W_U` [C, V], if given, is
        used instead of the stored unembedding (generation passes a contiguous copy).
        """
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        B, T = input_ids.shape
        start = len(cache) if cache is not None else 0
        limit = cache.max_len if cache is not None else self.config.context_length
        if start + T > limit:
            raise GlassformerError(
                f"{start + T} tokens is more than this model's context of {limit} tokens"
            )
        if T == 0:
            raise GlassformerError("no tokens to run the model on")
        # ids from outside are checked (a bad id would crash a GPU kernel); the one-token
        # steps of cached generation feed back the model's own choices, so skip the sync there
        if (cache is None or start == 0) and bool(((input_ids < 0) | (input_ids >= self.config.vocab_size)).any()):
            raise GlassformerError(
                f"token ids must lie in [0, {self.config.vocab_size}), "
                f"got {int(input_ids.min())}..{int(input_ids.max())}"
            )
        key_keep_BS = None
        if attention_mask is not None:
            if not bool(attention_mask.all()):
                key_keep_BS = attention_mask.bool()
        x = self.embed(input_ids, token_type_ids, start)
        for i, block in enumerate(self.blocks):
            x = block(x, key_keep_BS=key_keep_BS, cache=cache.layers[i] if cache is not None else None,
                      explicit=explicit)  # fmt: skip
        if not self.config.causal:
            return x
        if last_only:
            x = x[:, -1:]
        x = self.hook_ln_final(self.ln_final(x))
        logits = wide_matmul(x, self.W_U if W_U is None else W_U)
        return self.hook_logits(logits)

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        p = self.W_E
        return KVCache(self.config, batch, dtype=p.dtype, device=p.device, max_len=max_len)

    # --- looking inside --------------------------------------------------------------
    def hook_names(self) -> list[str]:
        """Every hook point's name, in the order the data reaches them."""
        return list(self.hook_points)

    def matching_hook_names(self, names) -> list[str]:
        """Names chosen by an exact name, a glob, a list of them, or a predicate."""
        from fnmatch import fnmatchcase

        if callable(names):
            return [n for n in self.hook_points if names(n)]
        patterns = [names] if isinstance(names, str) else list(names)
        chosen = []
        for pattern in patterns:
            hits = [n for n in self.hook_points if fnmatchcase(n, pattern)]
            if not hits:
                raise GlassformerError(
                    f"no activation is called {pattern!r}; see model.hook_names() for the list"
                )
            chosen += [h for h in hits if h not in chosen]
        return chosen

    @contextlib.contextmanager
    def hooks(self, fns: Mapping[str, HookFn]) -> Iterator["Transformer"]:
        """Attach `fn(tensor, name) -> tensor | None` to the named activations for the
        length of a `with` block; returning a tensor replaces the activation."""
        attached: list[tuple[HookPoint, HookFn]] = []
        try:
            for pattern, fn in fns.items():
                for name in self.matching_hook_names(pattern):
                    point = self.hook_points[name]
                    point.fns.append(fn)
                    attached.append((point, fn))
            yield self
        finally:
            for point, fn in attached:
                point.fns.remove(fn)

    def run_with_cache(self, input_ids, names=None, *, device=None, **forward_kwargs):
        """Run the model and keep the activations asked for: `(output, cache)`."""
        from .inspect.cache import run_with_cache

        return run_with_cache(self, input_ids, names=names, device=device, **forward_kwargs)

    def generate(self, tokens, **kwargs):
        """Continue `tokens`; see `glassformer.generate.generate` for the arguments."""
        from .generate import generate

        return generate(self, tokens, **kwargs)

    def embed_sentences(self, texts, **kwargs):
        """Mean-pooled, L2-normalised sentence embeddings [N, C] (encoders)."""
        from .pretrained.bert import embed_sentences

        return embed_sentences(self, texts, **kwargs)
