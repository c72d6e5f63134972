"""The attention math: explicit path == fast path, masks, causality, rotation, grouped
heads, per-head views, the KV cache."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import glassformer as gf
from glassformer.attention import Rotary, allowed_cells, rotate

from conftest import EPS, FAMILIES, RTOL_REORDERED, assert_close, build, maxdiff, tiny_decoder, tiny_llama


def padded_mask(B: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    return (torch.arange(T)[None] < lengths[:, None]).long()


@settings(max_examples=40, deadline=None)
@given(
    family=st.sampled_from(sorted(FAMILIES)),
    T=st.integers(1, 24),
    B=st.integers(1, 3),
    heads_and_groups=st.sampled_from([(1, 1), (2, 1), (2, 2), (3, 1), (3, 3), (4, 2), (6, 3), (6, 2)]),
    d_head=st.integers(1, 10).map(lambda n: 2 * n),
    pad=st.booleans(),
)
def test_explicit_equals_fast(family, T, B, heads_and_groups, d_head, pad):
    heads, kv_heads = heads_and_groups
    if family != "llama":
        kv_heads = heads  # grouped heads are a Llama-family feature here, but any config may use them
    model = build(FAMILIES[family](n_heads=heads, n_kv_heads=kv_heads, d_head=d_head, d_model=24))
    ids = torch.randint(0, 97, (B, T))
    mask = padded_mask(B, T) if pad else None
    with torch.no_grad():
        fast = model(ids, attention_mask=mask)
        explicit = model(ids, attention_mask=mask, explicit=True)
    if mask is not None:  # padded query positions are not compared (no one reads them)
        fast, explicit = fast[mask.bool()], explicit[mask.bool()]
    assert_close(explicit, fast, rtol=RTOL_REORDERED, what="explicit against fused")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pattern_rows_sum_to_one_and_masked_cells_are_zero(family):
    model = build(FAMILIES[family]())
    ids = torch.randint(0, 97, (3, 12))
    mask = padded_mask(3, 12, seed=1)
    _, cache = model.run_with_cache(ids, names="blocks.*.attn.pattern", attention_mask=mask)
    for name in cache.names():
        pattern = cache[name]  # [B, H, T, S]
        real_queries = mask.bool()[:, None, :].expand(-1, pattern.shape[1], -1)
        sums = pattern.sum(-1)[real_queries]
        # 12 weights ≤ 1 added up: at most 12 roundings of EPS/2 each
        assert_close(sums, torch.ones_like(sums), rtol=0, atol=12 * EPS)
        # padding keys get exactly zero weight
        assert (pattern.transpose(-1, -2)[~mask.bool()[:, None, :].expand_as(real_queries)] == 0).all()
        if model.config.causal:
            later = torch.triu(torch.ones(12, 12, dtype=torch.bool), diagonal=1)
            assert (pattern[..., later] == 0).all(), "a query attended to a later key"


def test_dots_are_scaled_products_and_scores_mask_them(decoder):
    ids = torch.randint(0, 97, (1, 6))
    names = [
        "blocks.0.attn.q",
        "blocks.0.attn.k",
        "blocks.0.attn.dots",
        "blocks.0.attn.scores",
        "blocks.0.attn.pattern",
    ]
    _, c = decoder.run_with_cache(ids, names=names)
    q, k = c["blocks.0.attn.q"], c["blocks.0.attn.k"]
    # the same product another way round: d_head (12) terms, a few EPS of the scale
    assert_close(c["blocks.0.attn.dots"], q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), rtol=16 * EPS)
    later = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)
    scores = c["blocks.0.attn.scores"]
    assert torch.isneginf(scores[..., later]).all() and torch.equal(
        scores[..., ~later], c["blocks.0.attn.dots"][..., ~later]
    )
    assert_close(c["blocks.0.attn.pattern"], torch.softmax(scores, -1), rtol=0, atol=16 * EPS)  # weights ≤ 1


@pytest.mark.parametrize("family", ["gpt", "llama"])
@pytest.mark.parametrize("explicit", [False, True])
def test_later_tokens_never_change_earlier_outputs(family, explicit):
    model = build(FAMILIES[family]())
    ids = torch.randint(0, 97, (1, 16))
    changed = ids.clone()
    changed[0, 10:] = (changed[0, 10:] + 5) % 97
    with torch.no_grad():
        a = model(ids, explicit=explicit)
        b = model(changed, explicit=explicit)
    # the earlier positions see the same tokens: equal but for the kernels' summation order
    assert_close(a[:, :10], b[:, :10], rtol=RTOL_REORDERED, what="earlier positions")
    assert maxdiff(a[:, 10:], b[:, 10:]) > 0.01 * a.abs().max()  # and the later ones did change


def test_encoder_sees_both_directions(encoder):
    ids = torch.randint(0, 97, (1, 10))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 97
    with torch.no_grad():
        first, moved = encoder(ids)[:, 0], encoder(changed)[:, 0]
        assert maxdiff(first, moved) > 0.01 * first.abs().max()  # far above rounding (1e-5 of the scale)


def test_d_head_independent_of_d_model():
    model = build(tiny_decoder(d_model=48, n_heads=4, d_head=20))  # 4 × 20 = 80 ≠ 48
    attn = model.blocks[0].attn
    assert attn.W_Q.shape == (4, 48, 20) and attn.W_O.shape == (4, 20, 48)
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        assert model(ids).shape == (2, 9, 97)
        assert_close(model(ids, explicit=True), model(ids), rtol=RTOL_REORDERED)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_per_head_matrices_reproduce_q_k_v_and_delta_e(family):
    model = build(FAMILIES[family]())
    ids = torch.randint(0, 97, (1, 7))
    names = [
        "blocks.1.ln1",
        "blocks.1.attn.q",
        "blocks.1.attn.k",
        "blocks.1.attn.v",
        "blocks.1.attn.z",
        "blocks.1.attn.out",
    ]
    if model.config.positions == "rotary":
        names += ["blocks.1.attn.q_unrotated", "blocks.1.attn.k_unrotated"]
    E_name = "blocks.1.ln1" if model.config.norm == "pre" else "blocks.1.resid_pre"
    _, c = model.run_with_cache(ids, names=names + [E_name])
    attn = model.blocks[1].attn
    E = c[E_name][0]
    q_name, k_name = ("q_unrotated", "k_unrotated") if model.config.positions == "rotary" else ("q", "k")
    with torch.no_grad():
        for h in range(model.config.n_heads):
            g = attn.kv_head(h)  # a query head reads the key/value head of its group
            for W, b, name, head in (
                (attn.W_Q, attn.b_Q, q_name, h),
                (attn.W_K, attn.b_K, k_name, g),
                (attn.W_V, attn.b_V, "v", g),
            ):
                expected = E @ W[h] + (b[h] if b is not None else 0)
                assert_close(c[f"blocks.1.attn.{name}"][0, head], expected, rtol=RTOL_REORDERED, what=f"{name} {h}")
        # ΔE is the sum over heads of z_h W_O[h], plus the output bias
        per_head = attn.head_outputs(c["blocks.1.attn.z"])  # [B, H, T, C]
        bias = attn.b_O if attn.b_O is not None else 0
        assert_close(c["blocks.1.attn.out"], per_head.sum(1) + bias, rtol=RTOL_REORDERED, what="ΔE")


def test_grouped_heads_share_keys_and_the_cache_holds_only_the_groups(llama):
    c = llama.config
    attn = llama.blocks[0].attn
    assert (c.n_heads, c.n_kv_heads) == (4, 2)
    assert torch.equal(attn.W_K[0], attn.W_K[1]) and not torch.equal(attn.W_K[1], attn.W_K[2])
    assert [attn.kv_head(h) for h in range(4)] == [0, 0, 1, 1]
    cache = llama.new_cache(batch=2)
    assert cache.layers[0].k_BKSD.shape == (2, c.n_kv_heads, c.context_length, c.d_head)
    _, cached = llama.run_with_cache(torch.randint(0, 97, (1, 5)), names="blocks.0.attn.k")
    assert cached["blocks.0.attn.k"].shape == (1, 2, 5, c.d_head)


def test_rotation_turns_pairs_and_keeps_lengths():
    rot = Rotary(d_head=8, base=100.0)
    cos, sin = rot(0, 5, "cpu")
    x = torch.randn(1, 1, 5, 8)
    y = rotate(x, cos, sin)
    # each (i, i + D/2) pair keeps its length, and position 0 is not turned at all
    pair = lambda t: t[..., :4] ** 2 + t[..., 4:] ** 2  # noqa: E731
    assert_close(pair(y), pair(x), rtol=16 * EPS)  # cos² + sin² = 1 to a few EPS
    assert torch.equal(x[:, :, 0], y[:, :, 0])
    # a query and a key turned by positions m and n score as if only n - m mattered
    q, k = torch.randn(8), torch.randn(8)
    c, s = rot(0, 12, "cpu")
    at = lambda v, p: rotate(v[None, None, None], c[p : p + 1], s[p : p + 1])[0, 0, 0]  # noqa: E731
    assert_close(at(q, 10) @ at(k, 8), at(q, 3) @ at(k, 1), rtol=0, atol=64 * EPS * float(q.norm() * k.norm()))


def test_rotary_model_has_no_position_rows_and_sees_order():
    model = build(tiny_llama())
    assert model.embed.W_pos is None and "pos_embed" not in model.hook_names()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a, b = model(ids)[0, -1], model(ids.flip(1))[0, -1]
    assert maxdiff(a, b) > 0.01 * a.abs().max()  # the order of the same tokens changes the prediction


def test_allowed_cells_have_one_polarity():
    keys = torch.tensor([[1, 1, 0]])
    allowed = allowed_cells(3, 3, causal=True, keys_BS=keys, device="cpu")
    assert allowed[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    # with a cache the 2 queries are the last of 5 positions
    assert allowed_cells(2, 5, causal=True, keys_BS=None, device="cpu")[0, 0].tolist() == [
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]
    assert allowed_cells(1, 5, causal=True, keys_BS=None, device="cpu") is None


def test_fast_path_when_nothing_looks_inside(decoder, monkeypatch):
    calls = []
    orig = decoder.blocks[0].attn._explicit
    monkeypatch.setattr(decoder.blocks[0].attn, "_explicit", lambda *a: calls.append(1) or orig(*a))
    ids = torch.randint(0, 97, (1, 5))
    decoder.run_with_cache(ids, names=["blocks.*.resid_post", "blocks.0.attn.q", "blocks.0.attn.k"])
    assert calls == []  # the stream, the queries and keys can be read without leaving the fast path
    decoder.run_with_cache(ids, names="blocks.0.attn.pattern")
    assert calls == [1]


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_kv_cache_gives_the_same_logits(family):
    model = build(FAMILIES[family]())
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2)
        parts = [model(ids[:, :5], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(5, 12)]
        explicit_cache = model.new_cache(2)
        explicit = [
            model(ids[:, :7], cache=explicit_cache, explicit=True),
            model(ids[:, 7:], cache=explicit_cache, explicit=True),
        ]
    # a cached step multiplies [1 × S] where the full pass multiplies [T × S]: other kernels
    assert_close(torch.cat(parts, 1), full, rtol=RTOL_REORDERED, what="cached, fused")
    assert_close(torch.cat(explicit, 1), full, rtol=RTOL_REORDERED, what="cached, explicit")


def test_context_length_enforced(decoder):
    with pytest.raises(gf.GlassformerError, match="context of 32"):
        decoder(torch.zeros(1, 33, dtype=torch.long))


def test_hooks_work_after_inference_mode_and_with_gradients(decoder):
    """A forward with hooks, gradients on, after run_with_cache ran under inference_mode
    (the README's ablation line once failed here on a cached inference-mode mask)."""
    ids = torch.randint(0, 97, (1, 8))
    decoder.run_with_cache(ids, names="blocks.*.attn.pattern")
    with decoder.hooks({"blocks.0.attn.pattern": lambda p, n: p * 1.0}):
        loss = decoder(ids).sum()
    loss.backward()
    assert decoder.blocks[0].attn.query.weight.grad is not None
