"""Batch-1 decoding on a CPU, in numpy: the fast path of generation.

Each new token multiplies one vector by every weight matrix, so decoding is as fast as
the weights stream from memory. numpy's BLAS streams those one-row products well, while
PyTorch spends as long again on the dozens of small operations around them in every
layer (the README's figures say how much). So once the prompt is in the KV cache,
`generate.stream` hands each step to `NumpyDecoder`, which runs the same blocks as
model.py for one position: the same weights (numpy views of the model's own tensors, no
copies), the same cache (it writes the model's KV cache tensors), the same rotary angles
and activation functions (SiLU written out in numpy, the others the model's own).

This is a second implementation of the forward pass, so it says exactly what it
implements: `IMPLEMENTS` lists every ModelConfig field with the values computed here, and
`suits` refuses any model outside it (and any field it does not know: a new field makes
tests/test_cpu_decoder.py fail until it is listed here). Those tests hold its logits to
the modules' over random configs. The modules stay the reference: with a hook listening,
on a GPU, in bf16, for post-norm models, encoders or batches of several, decoding runs
through them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from .attention import KVCache
from .config import ModelConfig
from .model import ACTIVATION_FNS, Transformer

ANY = None  # a size or a constant this decoder reads from the weights or the config as it is

# Every ModelConfig field, and the values NumpyDecoder computes correctly for it.
IMPLEMENTS: dict[str, frozenset | None] = {
    "vocab_size": ANY,
    "context_length": ANY,
    "d_model": ANY,
    "n_heads": ANY,
    "d_head": ANY,
    "n_layers": ANY,
    "d_mlp": ANY,
    "n_kv_heads": ANY,  # grouped queries: attend() groups them
    "causal": frozenset({True}),  # one new token attends to the cache: a decoder
    "norm": frozenset({"pre"}),  # x + f(norm(x)); post-norm is not written here
    "normalization": frozenset({"layernorm", "rmsnorm"}),
    "activation": frozenset({"gelu", "gelu_tanh", "relu", "silu"}),
    "mlp": frozenset({"plain", "gated"}),
    "positions": frozenset({"learned", "rotary", "none"}),
    "rope_base": ANY,  # read through the model's own rotary angles
    "bias": frozenset({True, False}),
    "tied_unembedding": frozenset({True, False}),
    "norm_eps": ANY,
    "type_vocab_size": frozenset({0}),  # token-type rows are not added here
    "dropout": ANY,  # never applied: `suits` refuses a model in training mode
}


def implements(config: ModelConfig) -> bool:
    """Whether every field of `config` is one this decoder knows, at a value it computes."""
    fields = config.to_dict()
    if set(fields) != set(IMPLEMENTS):
        return False  # a field added to ModelConfig and not yet decided on here
    return all(allowed is ANY or fields[name] in allowed for name, allowed in IMPLEMENTS.items())


def suits(model: Transformer, batch: int) -> bool:
    """Whether this path can decode for `model`: a config it implements, float32 on the
    CPU, one sequence, not training, and no hook attached anywhere."""
    return (
        batch == 1
        and implements(model.config)
        and model.device.type == "cpu"
        and model.W_E.dtype == torch.float32
        and model.stream_dtype == torch.float32
        and not model.training
        and not any(p.active for p in model.hook_points.values())
    )


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """PyTorch on one thread while numpy's BLAS runs its own: two thread pools spinning on
    two cores slowed every product down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def side_by_side(linears: list) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The one [in, Σ out] matrix (and bias) of these Linears' weights side by side: a
    decoding step then multiplies by W_Q|W_K|W_V (or W_gate|W_up) at once, one pass over
    memory instead of three (two). Where the model already stores them that way (the
    weights cache lays converted models out so), views of that storage; otherwise a joined
    copy that this decoder owns. The model itself is never changed."""
    weights = [linear.weight.detach() for linear in linears]
    biases = None if linears[0].bias is None else [linear.bias.detach() for linear in linears]
    W = _joined_view(weights, dim=1)
    b = None if biases is None else _joined_view(biases, dim=0)
    if W is None or (biases is not None and b is None):
        with torch.inference_mode(False):  # ordinary tensors, like the model's own
            W = torch.cat(weights, dim=1)
            b = None if biases is None else torch.cat(biases)
    return W, b


def _joined_view(parts: list[torch.Tensor], dim: int) -> torch.Tensor | None:
    """The tensor whose blocks along `dim` are exactly `parts`, as a view, when they lie
    side by side in one storage; else None."""
    first = parts[0]
    width = sum(p.shape[dim] for p in parts)
    shape: tuple[int, ...] = (first.shape[0], width) if dim == 1 else (width,)
    strides: tuple[int, ...] = (width, 1) if dim == 1 else (1,)
    offset = 0
    for p in parts:
        if p.stride()[-1] != 1 or (dim == 1 and p.stride()[0] != width):
            return None
        if p.data_ptr() != first.data_ptr() + offset * p.element_size():
            return None
        offset += p.shape[dim]
    return first.as_strided(shape, strides)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _np_or_none(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().numpy()


class NumpyDecoder:
    """One token at a time through every block, extending `cache` (filled by the prompt)."""

    def __init__(self, model: Transformer, cache: KVCache) -> None:
        c = self.config = model.config
        self.act = ACTIVATION_FNS[c.activation]
        # decided once, not on every layer of every token
        self.rms = c.normalization == "rmsnorm"
        self.rotary = c.positions == "rotary"
        self.gated = c.mlp == "gated"
        self.silu = c.activation == "silu"
        self.scale = np.float32(1 / np.sqrt(c.d_head))  # on the query (H·D numbers), not on every score
        self.W_E = _np(model.W_E)  # [V, C]
        self.W_pos = _np(model.embed.W_pos.weight) if model.embed.W_pos is not None else None
        self.W_U = _np(model.unembed.weight)  # [V, C]: logits = W_U_rows @ x streams the stored rows
        self.final = self._norm(model.ln_final)
        self.layers = [self._layer(model.block(i)) for i in range(c.n_layers)]
        self.cache = cache
        self.K = [layer.k_BKSD[0].numpy() for layer in cache.layers]  # [K, S, D] views of the cache
        self.V = [layer.v_BKSD[0].numpy() for layer in cache.layers]
        if model.rotary is not None:  # the attention module's own angles, for every position
            cos, sin = model.rotary(0, cache.max_len, "cpu")
            half = c.d_head // 2
            self.cos = cos.numpy()
            self.signed_sin = np.concatenate([-sin[:, :half].numpy(), sin[:, half:].numpy()], axis=1)
            self.quarter_turn = np.r_[half : c.d_head, 0:half]  # (a, b) -> (b, a); the sign is in signed_sin

    @staticmethod
    def _norm(norm) -> tuple:
        return (_np(norm.weight), _np_or_none(getattr(norm, "bias", None)), norm.eps)

    def _layer(self, block) -> dict:
        a, m = block.attn, block.mlp
        qkv_W, qkv_b = side_by_side([a.query, a.key, a.value])
        up = side_by_side([m.gate, m.up]) if m.gate is not None else (m.up.weight, m.up.bias)
        return {
            "ln1": self._norm(block.ln1),
            "ln2": self._norm(block.ln2),
            "qkv": (_np(qkv_W), _np_or_none(qkv_b)),
            "o": (_np(a.output.weight), _np_or_none(a.output.bias)),
            "up": (_np(up[0]), _np_or_none(up[1])),  # gated: W_gate|W_up side by side
            "down": (_np(m.down.weight), _np_or_none(m.down.bias)),
        }

    def normed(self, x: np.ndarray, norm: tuple) -> np.ndarray:
        weight, bias, eps = norm
        if self.rms:
            return x * (weight / np.sqrt(np.dot(x, x) / x.shape[0] + eps))
        centred = x - x.mean()
        out = centred * (weight / np.sqrt(np.dot(centred, centred) / x.shape[0] + eps))
        return out if bias is None else out + bias

    @staticmethod
    def linear(x: np.ndarray, Wb: tuple) -> np.ndarray:
        W, b = Wb
        return x @ W if b is None else x @ W + b

    def rotate(self, x_ND: np.ndarray, position: int) -> np.ndarray:
        """Turn each (first-half, second-half) pair of every row: (a, b) -> (a cos - b sin,
        b cos + a sin), as x·cos + (b, a)·(-sin, sin): attention.rotate's formula."""
        return x_ND * self.cos[position] + x_ND[:, self.quarter_turn] * self.signed_sin[position]

    def attend(self, i: int, L: dict, h: np.ndarray, position: int) -> np.ndarray:
        """This position's ΔE for layer i: its query against every cached key."""
        c = self.config
        H, K, D = c.n_heads, c.n_kv_heads, c.d_head
        qkv = self.linear(h, L["qkv"])  # Q = E·W_Q, K = E·W_K, V = E·W_V in one product
        qk = qkv[: (H + K) * D].reshape(H + K, D)  # the H query rows, then the K key rows
        if self.rotary:
            qk = self.rotate(qk, position)  # queries and keys turned together
        q, k, v = qk[:H], qk[H:], qkv[(H + K) * D :].reshape(K, D)
        self.K[i][:, position], self.V[i][:, position] = k, v
        keys, values = self.K[i][:, : position + 1], self.V[i][:, : position + 1]  # [K, S, D]
        q_KGD = q.reshape(K, H // K, D)  # each key/value head answers a group of query heads
        scores = (q_KGD * self.scale) @ keys.transpose(0, 2, 1)  # [K, G, S]: Q·Kᵀ/√d
        pattern = np.exp(scores - scores.max(-1, keepdims=True))
        pattern /= pattern.sum(-1, keepdims=True)
        z = (pattern @ values).reshape(H * D)
        return self.linear(z, L["o"])

    def mlp(self, L: dict, h: np.ndarray) -> np.ndarray:
        up = self.linear(h, L["up"])
        if self.gated:  # act(x·W_gate) * x·W_up, both halves from one product
            half = up.shape[0] // 2
            gate, up = up[:half], up[half:]
            if self.silu:  # gate·σ(gate) in numpy: the torch call cost 35 µs a layer
                with np.errstate(over="ignore"):  # exp(88+) is inf, and σ then 0, as it should be
                    post = gate / (1 + np.exp(-gate)) * up
            else:
                post = self.act(torch.from_numpy(gate)).numpy() * up
        else:
            post = self.act(torch.from_numpy(up)).numpy()
        return self.linear(post, L["down"])

    def logits(self, token: int, position: int) -> torch.Tensor:
        """[1, V] next-token logits after `token` at `position` (its KV written to the cache)."""
        x = self.W_E[token].copy()
        if self.W_pos is not None:
            x += self.W_pos[position]
        for i, L in enumerate(self.layers):
            x = x + self.attend(i, L, self.normed(x, L["ln1"]), position)
            x = x + self.mlp(L, self.normed(x, L["ln2"]))
        for layer in self.cache.layers:
            layer.length = position + 1
        logits = self.W_U @ self.normed(x, self.final)  # the stored [V, C] rows, read in order
        return torch.from_numpy(logits)[None]
