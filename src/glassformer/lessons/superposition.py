"""lesson:superposition — more features than dimensions (3Blue1Brown's chapter 7, "How
might LLMs store facts", on superposition; the model is Elhage et al. 2022, "Toy Models
of Superposition", section 2). It is not a transformer and has its own tiny trainer.

n features, each 0 with probability S (the sparsity) and otherwise uniform in [0, 1], are
squeezed into m < n dimensions by W [m, n] and read back out by the same W:

    h  = W x                 [m]   the compressed vector (a direction per feature: W's columns)
    x' = ReLU(Wᵀ h + b)      [n]   the features read back, the ReLU cutting small interference
    loss = Σ_i I_i (x_i - x'_i)²   feature i weighed by its importance I_i = decay**i

Dense features (S = 0): W keeps the m most important ones, at right angles, and drops
the rest. Sparse features: two rarely fire together, so more than m fit, at angles where
the ReLU and a negative bias remove the small interference: 5 features in 2 dimensions
at S = 0.9 form a pentagon, 72° apart.

Seeds are fixed. A single random start can settle in a worse arrangement (a square that
leaves one feature out at S = 0.9), so each sparsity trains RESTARTS starts side by side
and keeps the one with the lowest loss on a fixed held-out batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..config import GlassformerError

NAME = "superposition"
TOY = True  # not a transformer: lessons.get refuses it, `glassformer superposition` runs it
EXAMPLE = "5 features in 2 dimensions, at sparsities 0, 0.7, 0.9 and 0.97"
SPARSITIES = (0.0, 0.7, 0.9, 0.97)  # the paper's figure 1 runs from dense to very sparse
RESTARTS = 4  # random starts per sparsity; the lowest held-out loss is kept
REPRESENTED = 0.5  # a column this long or longer stands for its feature (trained ones are ≈1 or ≈0)
LIMITS = dict(features=64, dims=32, steps=50_000, sparsities=8)  # seconds, not minutes, on a CPU


@dataclass(frozen=True)
class Settings:
    features: int = 5  # n
    dims: int = 2  # m
    sparsities: tuple[float, ...] = SPARSITIES
    decay: float = 0.9  # importance I_i = decay**i, as in the paper's figure 1; 1: all alike
    steps: int = 2000
    batch: int = 1024
    lr: float = 1e-2  # AdamW, cosine decay to 0: fast, and restarts cover the odd bad start
    seed: int = 0

    def check(self) -> Settings:
        for name in ("features", "dims", "steps"):
            value, top = getattr(self, name), LIMITS[name]
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise GlassformerError(f"{name} must be a whole number from 1 to {top}, not {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise GlassformerError(f"seed must be a whole number of at least 0, not {self.seed!r}")
        if not self.sparsities or len(self.sparsities) > LIMITS["sparsities"]:
            raise GlassformerError(f"give 1 to {LIMITS['sparsities']} sparsities, not {len(self.sparsities)}")
        for s in self.sparsities:
            if not isinstance(s, (int, float)) or not (0 <= s < 1):
                raise GlassformerError(f"a sparsity is the chance a feature is 0: from 0 up to (not) 1, not {s!r}")
        if not isinstance(self.decay, (int, float)) or not (0 < self.decay <= 1):
            raise GlassformerError(
                f"importance decay must be in (0, 1] (feature i weighs decay**i), not {self.decay!r}"
            )
        return self

    def importance(self) -> torch.Tensor:
        return float(self.decay) ** torch.arange(self.features, dtype=torch.float64)


@dataclass
class Run:
    """One trained toy model: W [dims, features] and b [features] at one sparsity."""

    sparsity: float
    W: torch.Tensor  # [m, n]: column i is feature i's direction
    b: torch.Tensor  # [n]
    loss: float  # on the fixed held-out batch
    importance: torch.Tensor = field(repr=False)  # [n]

    @property
    def norms(self) -> torch.Tensor:
        return self.W.norm(dim=0)  # [n]

    def represented(self) -> list[int]:
        """Features whose column is long enough to stand for them (the rest are ≈0)."""
        return [int(i) for i in torch.nonzero(self.norms >= REPRESENTED).flatten()]

    def dimensionality(self) -> torch.Tensor:
        """Per feature, the share of a dimension it gets (Elhage et al. §4): ‖W_i‖² / Σ_j (Ŵ_i·W_j)².
        1: a dimension of its own; 2/5: a pentagon's corner; 0: not represented."""
        norms = self.norms
        unit = self.W / norms.clamp_min(1e-9)
        shared = ((unit.T @ self.W) ** 2).sum(dim=1)  # [n]
        return torch.where(norms >= REPRESENTED, norms**2 / shared.clamp_min(1e-12), torch.zeros_like(norms))

    def cosines(self) -> torch.Tensor:
        """[n, n] cosines between the features' directions."""
        unit = self.W / self.norms.clamp_min(1e-9)
        return unit.T @ unit

    def directions(self) -> list[float] | None:
        """With 2 dimensions: each column's direction in degrees (0 = along dimension 1)."""
        if self.W.shape[0] != 2:
            return None
        return [math.degrees(math.atan2(float(y), float(x))) for x, y in zip(self.W[0], self.W[1])]

    def gaps(self) -> list[float] | None:
        """With 2 dimensions: the angles between neighbouring represented features going
        round the circle (they sum to 360°; a pentagon's are all 72°)."""
        directions = self.directions()
        kept = sorted(directions[i] for i in self.represented()) if directions is not None else []
        if len(kept) < 2:
            return None
        return [(kept[(i + 1) % len(kept)] - kept[i]) % 360 for i in range(len(kept))]

    def to_dict(self) -> dict:
        gaps = self.gaps()
        return {
            "sparsity": self.sparsity,
            "W": self.W.tolist(),
            "b": self.b.tolist(),
            "loss": self.loss,
            "norms": self.norms.tolist(),
            "represented": self.represented(),
            "dimensionality": self.dimensionality().tolist(),
            "gaps_degrees": gaps,
        }


def _batch(g: torch.Generator, size: int, keep: torch.Tensor, n: int) -> torch.Tensor:
    """[size, K, n] features: uniform in [0, 1] where a draw falls below `keep` (1 - S), else 0."""
    K = keep.shape[0]
    values = torch.rand(size, K, n, generator=g)
    return torch.where(torch.rand(size, K, n, generator=g) < keep[:, None], values, 0.0)


def _loss(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Per model, the importance-weighted squared error of ReLU(WᵀW x + b). x [B, K, n], W [K, m, n]."""
    h = torch.einsum("bkn,kmn->bkm", x, W)  # [B, K, m]
    out = torch.relu(torch.einsum("bkm,kmn->bkn", h, W) + b)  # [B, K, n]
    return (importance * (x - out) ** 2).sum(-1).mean(0)  # [K]


def train(settings: Settings, progress: bool = False) -> list[Run]:
    """One Run per sparsity, each the best of RESTARTS random starts, all trained at once."""
    s = settings.check()
    n, m, R = s.features, s.dims, RESTARTS
    g = torch.Generator().manual_seed(s.seed)
    keep = torch.tensor([1 - p for p in s.sparsities for _ in range(R)], dtype=torch.float32)  # [K]
    K = keep.shape[0]
    W = torch.empty(K, m, n)
    for k in range(K):
        torch.nn.init.xavier_normal_(W[k], generator=g)
    W.requires_grad_()
    b = torch.zeros(K, n, requires_grad=True)
    importance = s.importance().float()
    opt = torch.optim.AdamW([W, b], lr=s.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / s.steps)))
    steps = range(s.steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="superposition", unit="step", leave=False)
    with torch.enable_grad():
        for _ in steps:
            loss = _loss(_batch(g, s.batch, keep, n), W, b, importance).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
    with torch.no_grad():
        held_out = _loss(_batch(torch.Generator().manual_seed(s.seed + 1), 8192, keep, n), W, b, importance)
    return [_best(s, i, W.detach(), b.detach(), held_out) for i in range(len(s.sparsities))]


def _best(s: Settings, i: int, W: torch.Tensor, b: torch.Tensor, held_out: torch.Tensor) -> Run:
    starts = slice(i * RESTARTS, (i + 1) * RESTARTS)
    k = starts.start + int(held_out[starts].argmin())
    return Run(float(s.sparsities[i]), W[k].clone(), b[k].clone(), float(held_out[k]), s.importance())


def parse_sparsities(text: str) -> tuple[float, ...]:
    """'0.9' or '0,0.7,0.9,0.97' -> the sparsities, checked."""
    values = []
    for piece in text.split(","):
        try:
            value = float(piece)
        except ValueError:
            raise GlassformerError(
                f"a sparsity is a number from 0 up to (not) 1, or several with commas (0,0.7,0.9), "
                f"not {piece.strip()!r}"
            ) from None
        if not (0 <= value < 1):
            raise GlassformerError(
                f"a sparsity is the chance a feature is 0: from 0 up to (not) 1, not {piece.strip()}"
            )
        values.append(value)
    return tuple(values)


def summary(runs: Sequence[Run]) -> str:
    """One line per run: how many features fit, and how."""
    lines = []
    for run in runs:
        kept = run.represented()
        gaps = run.gaps()
        shape = f", neighbours {', '.join(f'{g:.0f}°' for g in gaps)} apart" if gaps else ""
        lines.append(f"sparsity {run.sparsity:g}: {len(kept)} of {run.W.shape[1]} features kept{shape}")
    return "\n".join(lines)
