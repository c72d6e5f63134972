"""Editing activations: switching heads, MLPs and neurons off, and activation patching.
(What each part writes, read without changing anything, is in attribution.py and neurons.py.)

Each helper returns a mapping for `model.hooks(...)`, so edits compose:

    with model.hooks(ablate_head(model, 1, 3) | patch(model, clean_cache, "blocks.0.*")):
        logits = model(ids)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attention import LayerCache
from ..config import GlassformerError
from ..hooks import ActivationCache
from ..inputs import check_layer_head, check_neuron, need_decoder
from ..linear import matmul
from ..model import Transformer


def ablate_head(
    model: Transformer, layer: int, head: int, *, mode: str = "zero", reference=None, position: int | None = None
) -> dict:
    """Remove head `head` of `layer`: its z (pattern-weighted values) is set to zero, or
    to its mean over `reference` token ids (mode="mean"), so its ΔE becomes 0 (or average).
    `position`: only there (default: at every position)."""
    check_layer_head(model, layer, head)
    name = f"blocks.{layer}.attn.z"
    replacement = _replacement(model, name, mode, reference, lambda t: t[:, head])

    def fn(z_BHTD: torch.Tensor, _name: str) -> torch.Tensor:
        z_BHTD = z_BHTD.clone()
        where = slice(None) if position is None else position
        z_BHTD[:, head, where] = 0.0 if replacement is None else replacement.to(z_BHTD)
        return z_BHTD

    return {name: fn}


def ablate_mlp(
    model: Transformer,
    layer: int,
    neuron: int | None = None,
    *,
    mode: str = "zero",
    reference=None,
    position: int | None = None,
) -> dict:
    """Remove the MLP of `layer` (what it adds to the stream set to zero, or its mean over
    `reference`), or only one neuron's activation when `neuron` is given."""
    if neuron is None:
        check_layer_head(model, layer, 0)
        name, pick = f"blocks.{layer}.mlp.out", (lambda t: t)
    else:
        check_neuron(model, layer, neuron)
        name, pick = f"blocks.{layer}.mlp.post", (lambda t: t[..., neuron])
    replacement = _replacement(model, name, mode, reference, pick)

    def fn(x_BTX: torch.Tensor, _name: str) -> torch.Tensor:
        x_BTX = x_BTX.clone()
        where = slice(None) if position is None else position
        value = 0.0 if replacement is None else replacement.to(x_BTX)
        if neuron is None:
            x_BTX[:, where] = value
        else:
            x_BTX[:, where, neuron] = value
        return x_BTX

    return {name: fn}


def _replacement(model: Transformer, name: str, mode: str, reference, pick) -> torch.Tensor | None:
    """None for zero ablation; for mean ablation, the activation `pick` chooses, averaged
    over the reference run's batch and positions."""
    if mode == "zero":
        return None
    if mode != "mean":
        raise GlassformerError(f"unknown ablation mode {mode!r}; use zero or mean")
    if reference is None:
        raise GlassformerError("mean ablation needs reference token ids to average over")
    _, cache = model.run_with_cache(reference, names=name)
    chosen = pick(cache[name])
    # z is [B, H, T, D]: after picking the head, positions are dim 1 as for [B, T, ...]
    return chosen.float().mean(dim=(0, 1))


def combine(*edits: dict) -> dict:
    """Several edits as one mapping for `model.hooks`: edits of the same activation run
    one after another (two heads of one layer both switched off)."""
    merged: dict = {}
    for edit in edits:
        for name, fn in edit.items():
            if name in merged:
                first = merged[name]
                merged[name] = lambda t, n, first=first, fn=fn: fn(first(t, n), n)
            else:
                merged[name] = fn
    return merged


@dataclass
class Ablation:
    """The next-token distribution at one position before and after an edit."""

    position: int
    before: list[tuple[int, float]]  # the k likeliest tokens before: (id, probability)
    after: list[tuple[int, float]]  # the k likeliest tokens after
    kl: float  # KL(before ‖ after) in nats
    top: int  # the likeliest token before the edit
    top_before: float  # its probability before
    top_after: float  # and after
    # with patterns=True, [layer, head]: the largest change of any attention weight. A head
    # switched off keeps its own pattern (its output is what goes): only heads downstream move
    moved: torch.Tensor | None = None


@torch.inference_mode()
def compare_next_token(
    model: Transformer, ids, edits: dict, *, position: int = -1, k: int = 5, patterns: bool = False
) -> Ablation:
    """Run `ids` as they are and with `edits` hooked in; the next-token distribution at
    `position` both ways, their KL divergence and what happened to the top token. With
    `patterns`, the same two runs also keep every head's pattern, to say which moved."""
    need_decoder(model, "the next-token distribution")
    names = "blocks.*.attn.pattern"

    def run() -> tuple[torch.Tensor, ActivationCache | None]:
        return model.run_with_cache(ids, names=names) if patterns else (model(ids), None)

    clean_logits, before = run()
    with model.hooks(edits):
        edited_logits, after = run()
    clean = clean_logits[0, position].float().log_softmax(-1)
    edited = edited_logits[0, position].float().log_softmax(-1)
    kl = float((clean.exp() * (clean - edited)).sum())
    top = int(clean.argmax())
    k = min(k, clean.numel())

    def best(logp: torch.Tensor) -> list[tuple[int, float]]:
        values, indices = logp.exp().topk(k)
        return [(int(i), float(v)) for i, v in zip(indices, values)]

    moved = None
    if before is not None and after is not None:
        layers = range(model.config.n_layers)
        key = "blocks.{}.attn.pattern".format
        moved = torch.stack([(after[key(i)] - before[key(i)]).abs().amax(dim=(0, 2, 3)) for i in layers]).float()
    T = ids.shape[-1]
    top_after = float(edited[top].exp())
    return Ablation(
        position % T, best(clean), best(edited), max(kl, 0.0), top, float(clean[top].exp()), top_after, moved
    )


@dataclass
class Patching:
    """Head-by-head activation patching from a clean run into a corrupted one."""

    answer: int  # the token the clean run should give
    wrong: int  # the token the corrupted run gives instead
    clean_diff: float  # logit(answer) - logit(wrong), clean run
    corrupt_diff: float  # the same, corrupted run
    restored: torch.Tensor  # [layer, head]: (patched - corrupt) / (clean - corrupt)

    def caution(self) -> str | None:
        return patch_caution(self.clean_diff, self.corrupt_diff)


def patch_caution(clean: float, corrupt: float) -> str | None:
    """What a learner should know before reading the shares: they are fractions of the gap
    between the two runs, which mean little when the gap is small or the clean run does
    not prefer the answer."""
    if clean <= 0:
        return (
            "the clean run does not prefer the answer; pick an answer and a wrong token it gets right, "
            "or the shares mean little"
        )
    if abs(clean - corrupt) < 1:
        return f"the two runs differ by only {abs(clean - corrupt):.2f}: shares of so small a gap are mostly noise"
    return None


@torch.inference_mode()
def patch_heads(
    model: Transformer,
    clean_ids,
    corrupt_ids,
    answer: int | None = None,
    wrong: int | None = None,
    *,
    progress: bool = False,
) -> Patching:
    """For every head: its z from the clean run, at every position, put into the corrupted
    run, and the share of the logit difference (answer - wrong) that comes back.

    Only what can change is recomputed. Below a patched head's layer the run is the
    corrupted one, so a head's batch row joins the run at its own layer, from the
    corrupted stream entering it: one pass through the layers whose batch grows by a layer's
    heads at each (few large products, not one run per head). Before the first token where
    the two texts differ, every z is the same in both runs (a decoder looks only back), so
    those positions are read from the corrupted run's keys and values, as generation does.
    `answer` defaults to the clean run's top token, `wrong` to the corrupted run's."""
    need_decoder(model, "patching")
    clean_ids, corrupt_ids = _as_2d(clean_ids), _as_2d(corrupt_ids)
    if clean_ids.shape != corrupt_ids.shape:
        raise GlassformerError(
            f"the clean text is {clean_ids.shape[-1]} tokens and the corrupted one {corrupt_ids.shape[-1]}; "
            "patching goes position by position, so give texts of the same token count"
        )
    L, H = model.config.n_layers, model.config.n_heads
    clean_logits, clean_cache = model.run_with_cache(clean_ids, names=[f"blocks.{i}.attn.z" for i in range(L)])
    corrupt_logits, corrupt_cache = model.run_with_cache(
        corrupt_ids, names=["blocks.*.resid_pre", "blocks.*.attn.k", "blocks.*.attn.v"]
    )

    answer = int(clean_logits[0, -1].argmax()) if answer is None else answer
    wrong = int(corrupt_logits[0, -1].argmax()) if wrong is None else wrong
    if answer == wrong:
        raise GlassformerError("the answer and the wrong token are the same token; name the answer and the wrong one")

    def diff(logits_BV: torch.Tensor) -> torch.Tensor:
        return (logits_BV[:, answer] - logits_BV[:, wrong]).float()

    clean_diff, corrupt_diff = float(diff(clean_logits[:, -1])[0]), float(diff(corrupt_logits[:, -1])[0])
    if abs(clean_diff - corrupt_diff) < 1e-6:
        raise GlassformerError("the clean and corrupted texts give the same logit difference; nothing to restore")
    T = corrupt_ids.shape[1]
    start = int((clean_ids[0] != corrupt_ids[0]).nonzero()[0])  # the first position that differs
    rotation = model.rotary(start, T - start, model.device) if model.rotary is not None else None
    from tqdm.auto import tqdm

    x = corrupt_cache["blocks.0.resid_pre"][:0, start:]  # no rows yet: [0, T - start, C]
    for layer in tqdm(range(L), desc="patching heads, layer by layer", disable=not progress):
        joining = corrupt_cache[f"blocks.{layer}.resid_pre"][:, start:].expand(H, -1, -1)
        x = torch.cat([x, joining])  # rows layer·H + h: head h of this layer, patched here
        put = _patch_rows(clean_cache[f"blocks.{layer}.attn.z"][0, :, start:], [(layer * H + h, h) for h in range(H)])
        with model.hooks({f"blocks.{layer}.attn.z": put}):
            x = model.block(layer)(x, rotation=rotation, cache=_prefix(model, corrupt_cache, layer, start, x.shape[0]))
    # the end of Transformer.forward, at the last position only
    patched = diff(matmul(model.ln_final(x[:, -1]), model.W_U)).cpu().view(L, H)
    restored = (patched - corrupt_diff) / (clean_diff - corrupt_diff)
    return Patching(answer, wrong, clean_diff, corrupt_diff, restored)


def _prefix(model: Transformer, cache, layer: int, start: int, batch: int) -> LayerCache:
    """Layer `layer`'s keys and values of the positions before `start`, from a cached run,
    for `batch` rows."""
    c = model.config
    T = cache[f"blocks.{layer}.attn.k"].shape[2]
    past = LayerCache(batch, c.n_kv_heads, T, c.d_head, dtype=model.stream_dtype, device=model.device)
    past.append(cache[f"blocks.{layer}.attn.k"][:, :, :start], cache[f"blocks.{layer}.attn.v"][:, :, :start])
    return past


def _patch_rows(clean_HTD: torch.Tensor, rows: list[tuple[int, int]]):
    """A hook that puts the clean z of head h into batch row r, for each (r, h)."""

    def fn(z_BHTD: torch.Tensor, _name: str) -> torch.Tensor:
        z_BHTD = z_BHTD.clone()
        for r, h in rows:
            z_BHTD[r, h] = clean_HTD[h].to(z_BHTD)
        return z_BHTD

    return fn


def _as_2d(ids) -> torch.Tensor:
    ids = torch.as_tensor(ids)
    return ids[None] if ids.dim() == 1 else ids


def patch(model: Transformer, source, names) -> dict:
    """Replace activations with the ones in `source` (an ActivationCache from another
    run of the same length): activation patching."""
    chosen = model.matching_hook_names(names)
    missing = [n for n in chosen if n not in source]
    if missing:
        raise GlassformerError(f"the source cache does not hold {missing[0]!r}")

    def fn(tensor: torch.Tensor, name: str) -> torch.Tensor:
        patched = source[name].to(tensor.device, tensor.dtype)
        if patched.shape != tensor.shape:
            raise GlassformerError(f"cannot patch {name}: shape {list(patched.shape)} vs {list(tensor.shape)}")
        return patched

    return {name: fn for name in chosen}
