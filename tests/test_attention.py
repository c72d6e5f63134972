"""The attention math: explicit path == fast path, masks, causality, per-head views."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import glassformer as gf
from conftest import build, tiny_decoder, tiny_encoder


def maxdiff(a, b) -> float:
    return (a - b).abs().max().item()


def padded_mask(B: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    return (torch.arange(T)[None] < lengths[:, None]).long()


@settings(max_examples=25, deadline=None)
@given(
    causal=st.booleans(),
    T=st.integers(1, 24),
    B=st.integers(1, 3),
    heads=st.sampled_from([1, 2, 3, 4]),
    d_head=st.integers(2, 20),
    pad=st.booleans(),
)
def test_explicit_equals_fast(causal, T, B, heads, d_head, pad):
    make = tiny_decoder if causal else tiny_encoder
    model = build(make(n_heads=heads, d_head=d_head, d_model=24))
    ids = torch.randint(0, 97, (B, T))
    mask = padded_mask(B, T) if pad else None
    with torch.no_grad():
        fast = model(ids, attention_mask=mask)
        explicit = model(ids, attention_mask=mask, explicit=True)
    if mask is not None:  # padded query positions are not compared (no one reads them)
        fast, explicit = fast[mask.bool()], explicit[mask.bool()]
    assert maxdiff(fast, explicit) <= 1e-5, f"max |Δ| = {maxdiff(fast, explicit)}"


@pytest.mark.parametrize("make", [tiny_decoder, tiny_encoder])
def test_pattern_rows_sum_to_one_and_masked_cells_are_zero(make):
    model = build(make())
    ids = torch.randint(0, 97, (3, 12))
    mask = padded_mask(3, 12, seed=1)
    _, cache = model.run_with_cache(ids, names="blocks.*.attn.pattern", attention_mask=mask)
    for name in cache.names():
        pattern = cache[name]  # [B, H, T, S]
        real_queries = mask.bool()[:, None, :].expand(-1, pattern.shape[1], -1)
        sums = pattern.sum(-1)[real_queries]
        assert maxdiff(sums, torch.ones_like(sums)) < 1e-6
        # padding keys get exactly zero weight
        assert (pattern.transpose(-1, -2)[~mask.bool()[:, None, :].expand_as(real_queries)] == 0).all()
        if model.config.causal:
            later = torch.triu(torch.ones(12, 12, dtype=torch.bool), diagonal=1)
            assert (pattern[..., later] == 0).all(), "a query attended to a later key"


def test_scores_are_minus_infinity_where_masked(decoder):
    ids = torch.randint(0, 97, (1, 8))
    _, cache = decoder.run_with_cache(ids, names="blocks.0.attn.scores")
    scores = cache["blocks.0.attn.scores"][0, 0]
    later = torch.triu(torch.ones(8, 8, dtype=torch.bool), diagonal=1)
    assert torch.isneginf(scores[later]).all() and torch.isfinite(scores[~later]).all()


@pytest.mark.parametrize("explicit", [False, True])
def test_later_tokens_never_change_earlier_outputs(decoder, explicit):
    ids = torch.randint(0, 97, (1, 16))
    changed = ids.clone()
    changed[0, 10:] = (changed[0, 10:] + 5) % 97
    with torch.no_grad():
        a = decoder(ids, explicit=explicit)
        b = decoder(changed, explicit=explicit)
    assert maxdiff(a[:, :10], b[:, :10]) <= 1e-6
    assert maxdiff(a[:, 10:], b[:, 10:]) > 1e-3  # and the later ones did change


def test_encoder_sees_both_directions(encoder):
    ids = torch.randint(0, 97, (1, 10))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 97
    with torch.no_grad():
        assert maxdiff(encoder(ids)[:, 0], encoder(changed)[:, 0]) > 1e-4


def test_d_head_independent_of_d_model():
    config = tiny_decoder(d_model=48, n_heads=4, d_head=20)  # 4 × 20 = 80 ≠ 48
    model = build(config)
    attn = model.blocks[0].attn
    assert attn.W_Q.shape == (4, 48, 20) and attn.W_O.shape == (4, 20, 48)
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        assert model(ids).shape == (2, 9, 97)
        assert maxdiff(model(ids), model(ids, explicit=True)) <= 1e-5


def test_per_head_matrices_reproduce_q_k_v_and_delta_e(decoder):
    ids = torch.randint(0, 97, (1, 7))
    names = ["blocks.1.ln1", "blocks.1.attn.q", "blocks.1.attn.k", "blocks.1.attn.v",
             "blocks.1.attn.z", "blocks.1.attn.out"]  # fmt: skip
    _, c = decoder.run_with_cache(ids, names=names)
    attn = decoder.blocks[1].attn
    E = c["blocks.1.ln1"][0]
    with torch.no_grad():
        for h in range(4):
            for W, b, name in ((attn.W_Q, attn.b_Q, "q"), (attn.W_K, attn.b_K, "k"),
                               (attn.W_V, attn.b_V, "v")):  # fmt: skip
                assert maxdiff(E @ W[h] + b[h], c[f"blocks.1.attn.{name}"][0, h]) < 1e-5
        # ΔE is the sum over heads of z_h W_O[h], plus the output bias
        per_head = attn.head_outputs(c["blocks.1.attn.z"])  # [B, H, T, C]
        assert maxdiff(per_head.sum(1) + attn.b_O, c["blocks.1.attn.out"]) < 1e-5


def test_scores_are_scaled_dot_products(decoder):
    ids = torch.randint(0, 97, (1, 6))
    _, c = decoder.run_with_cache(ids, names=["blocks.0.attn.q", "blocks.0.attn.k",
                                              "blocks.0.attn.scores", "blocks.0.attn.pattern"])  # fmt: skip
    q, k = c["blocks.0.attn.q"], c["blocks.0.attn.k"]
    grid = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    grid = grid.masked_fill(torch.triu(torch.ones(6, 6, dtype=torch.bool), 1), float("-inf"))
    assert torch.equal(torch.isinf(grid), torch.isinf(c["blocks.0.attn.scores"]))
    assert maxdiff(torch.softmax(grid, -1), c["blocks.0.attn.pattern"]) < 1e-6


def test_fast_path_when_nothing_looks_inside(decoder, monkeypatch):
    calls = []
    orig = decoder.blocks[0].attn._explicit
    monkeypatch.setattr(decoder.blocks[0].attn, "_explicit", lambda *a: calls.append(1) or orig(*a))
    ids = torch.randint(0, 97, (1, 5))
    decoder.run_with_cache(ids, names="blocks.*.resid_post")
    assert calls == []  # the residual stream can be read without leaving the fast path
    decoder.run_with_cache(ids, names="blocks.0.attn.pattern")
    assert calls == [1]


def test_softmax_with_temperature():
    logits = torch.tensor([1.0, 3.0, 2.0])
    assert torch.equal(gf.softmax_with_temperature(logits, 0), torch.tensor([0.0, 1.0, 0.0]))
    p1 = gf.softmax_with_temperature(logits, 1.0)
    assert maxdiff(p1, torch.softmax(logits, -1)) < 1e-7
    hot = gf.softmax_with_temperature(logits, 100.0)
    assert hot.max() - hot.min() < 0.01  # flat at high temperature
    cold = gf.softmax_with_temperature(logits, 0.05)
    assert cold[1] > 0.999
    with pytest.raises(gf.GlassformerError):
        gf.softmax_with_temperature(logits, -1)


def test_kv_cache_gives_the_same_logits(decoder):
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        full = decoder(ids)
        cache = decoder.new_cache(2)
        parts = [decoder(ids[:, :5], cache=cache)] + [decoder(ids[:, t : t + 1], cache=cache) for t in range(5, 12)]
    assert maxdiff(torch.cat(parts, 1), full) < 1e-5


def test_context_length_enforced(decoder):
    with pytest.raises(gf.GlassformerError, match="context of 32"):
        decoder(torch.zeros(1, 33, dtype=torch.long))
