"""Linear: y = x·W + b with W stored [in, out], the way the video writes Q = E·W_Q.

torch.nn.Linear stores [out, in] and computes x·Wᵀ. Keeping [in, out] (as GPT-2's
original Conv1D does) lets a head's matrix be read straight off the stored weight
(W_Q[h] is a column block of it). The module also holds the CPU speed path of the
model's products, one-row products through numpy while decoding, explained with its
measurement where it is defined.
"""

from __future__ import annotations

import contextlib
import contextvars

import numpy as np
import torch
from torch import nn

# Decoding at batch 1 multiplies one vector by every weight matrix per token, so its
# speed is how fast the weights stream from memory. On the CPUs we measured, PyTorch's
# MKL streams an [in, out] matrix at 11-16 GB/s whatever its thread count, while numpy's
# OpenBLAS streams the same matrix at 18-21 GB/s once PyTorch's own thread pool is idle;
# a plain single-core sum reads at 24 GB/s. So inside `vector_products()` (held by
# generate.stream from the first cached step on a CPU at batch 1) PyTorch runs on one
# thread and each one-row product goes to numpy; benchmarks/bench_generate.py measures
# the effect (1.45-1.76x Hugging Face generate, against 1.02-1.29x before).
_vector_products = contextvars.ContextVar("glassformer_vector_products", default=False)


@contextlib.contextmanager
def vector_products():
    """Route one-row float32 products on the CPU through numpy's BLAS for this block."""
    threads = torch.get_num_threads()
    token = _vector_products.set(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        _vector_products.reset(token)


def _one_row(flat: torch.Tensor, W: torch.Tensor) -> bool:
    return (
        flat.shape[0] == 1
        and _vector_products.get()
        and flat.dtype == torch.float32
        and W.dtype == torch.float32
        and flat.device.type == "cpu"
        and not torch.is_grad_enabled()
    )


def _numpy_product(flat: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    W = W.detach()
    if not W.is_contiguous() and W.T.is_contiguous():
        # a transposed view (the tied W_U = W_Eᵀ): asking BLAS for W_E·x streams the stored
        # rows directly, which measured ~15% faster here than x·(W_E)ᵀ on the view
        return torch.from_numpy(np.matmul(W.T.numpy(), flat[0].numpy()))[None]
    return torch.from_numpy(np.matmul(flat.numpy(), W.numpy()))


def matmul(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """x @ W, where W may be held in a lower precision than x (bf16 weights, fp32 stream):
    the product runs in W's precision and comes back in x's. Under autocast, autocast decides."""
    if x.dtype == W.dtype or torch.is_autocast_enabled(x.device.type):
        return x @ W
    return (x.to(W.dtype) @ W).to(x.dtype)


class Linear(nn.Module):
    def __init__(self, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_in, d_out))  # [in, out]
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if _one_row(flat, self.weight):
            out = _numpy_product(flat, self.weight)
            if self.bias is not None:
                out += self.bias
        elif self.bias is None:
            out = matmul(flat, self.weight)
        elif flat.dtype == self.weight.dtype or torch.is_autocast_enabled(flat.device.type):
            out = torch.addmm(self.bias, flat, self.weight)
        else:
            out = matmul(flat, self.weight) + self.bias.to(flat.dtype)
        return out.view(*x.shape[:-1], self.weight.shape[1])

    def extra_repr(self) -> str:
        d_in, d_out = self.weight.shape
        return f"in={d_in}, out={d_out}, bias={self.bias is not None}"


def product(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """x [..., K] @ W [K, N] for a matrix that is not a Linear's (the unembedding W_U = W_Eᵀ):
    one row at a time through numpy while decoding, else a plain product. (Cutting the
    wide unembedding into cache-sized tiles ran 1.4-2x faster on an earlier machine of
    this project and 0.8x as fast on the current one, so it is no longer done.)"""
    flat = x.reshape(-1, x.shape[-1])
    if _one_row(flat, W):
        return _numpy_product(flat, W).view(*x.shape[:-1], W.shape[1])
    return matmul(x, W)
