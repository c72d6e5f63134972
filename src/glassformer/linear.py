"""Linear: y = x·W + b with W stored [in, out], the way the video writes Q = E·W_Q.

torch.nn.Linear stores [out, in] and computes x·Wᵀ. Keeping [in, out] (as GPT-2's
original Conv1D does) lets a head's matrix be read straight off the stored weight
(W_Q[h] is a column block of it). Matrices may be held in bf16 while the stream is float32
(`Transformer.set_precision`): `matmul` multiplies in the matrix's precision.
"""

from __future__ import annotations

import torch
from torch import nn


def matmul(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """x @ W, where W may be held in a lower precision than x (bf16 weights, fp32 stream):
    the product runs in W's precision and comes back in x's. Under autocast, autocast decides."""
    if x.dtype == W.dtype or torch.is_autocast_enabled(x.device.type):
        return x @ W
    return (x.to(W.dtype) @ W).to(x.dtype)


def on_meta() -> bool:
    """Whether modules are being built on the meta device, only to receive loaded weights.
    Then there is nothing to initialise, and a random init there is slow: torch runs it in
    Python (2 ms a matrix) after importing its compiler (about a second, once)."""
    return torch.empty(0).device.type == "meta"


class Linear(nn.Module):
    def __init__(self, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_in, d_out))  # [in, out]
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        if not on_meta():
            nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if self.bias is None:
            out = matmul(flat, self.weight)
        elif flat.dtype == self.weight.dtype or torch.is_autocast_enabled(flat.device.type):
            out = torch.addmm(self.bias, flat, self.weight)
        else:
            out = matmul(flat, self.weight) + self.bias.to(flat.dtype)
        return out.view(*x.shape[:-1], self.weight.shape[1])

    def extra_repr(self) -> str:
        d_in, d_out = self.weight.shape
        return f"in={d_in}, out={d_out}, bias={self.bias is not None}"
