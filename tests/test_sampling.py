"""The one sampler: temperature, top-k, top-p, T = 0, and its refusals."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import glassformer as gf
from glassformer.sampling import check, draw, probabilities

from conftest import EPS, maxdiff


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([1.0, 3.0, 2.0])
    assert torch.equal(probabilities(logits, 0), torch.tensor([0.0, 1.0, 0.0]))
    assert maxdiff(probabilities(logits, 1.0), torch.softmax(logits, -1)) <= 4 * EPS  # probabilities: scale 1
    hot = probabilities(logits, 100.0)
    assert hot.max() - hot.min() < 0.01  # flat at high temperature
    assert probabilities(logits, 0.05)[1] > 0.999


def test_greedy_picks_one_token_on_a_tie():
    tie = torch.tensor([[2.0, 5.0, 5.0]])
    p = probabilities(tie, 0)
    assert p.tolist() == [[0.0, 1.0, 0.0]]  # the first of the tied, as argmax and generation choose
    assert draw(p, greedy=True).tolist() == [1]


def test_a_tiny_temperature_stays_finite():
    p = probabilities(torch.tensor([1.0, 3.0, 2.0]), 1e-320)  # subnormal: logits / T overflow without care
    assert torch.isfinite(p).all() and p.tolist() == [0.0, 1.0, 0.0]


def test_top_k_and_top_p_cut_the_distribution():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    p = probabilities(logits, top_k=2)
    assert (p[0, 2:] == 0).all() and abs(p.sum().item() - 1) < 1e-6
    full = torch.softmax(logits, -1)[0]
    p = probabilities(logits, top_p=float(full[0] + full[1] / 2))
    assert (p[0, :2] > 0).all() and (p[0, 2:] == 0).all()


@settings(max_examples=50, deadline=None)
@given(
    logits=st.lists(st.floats(-30, 30), min_size=2, max_size=40),
    temperature=st.sampled_from([0.0, 0.1, 0.7, 1.0, 2.5]),
    top_k=st.one_of(st.none(), st.integers(1, 50)),
    top_p=st.one_of(st.none(), st.floats(0.01, 1.0), st.sampled_from([5e-324, 1e-46, 1e-300, 1e-8])),
)
def test_always_a_distribution(logits, temperature, top_k, top_p):
    p = probabilities(torch.tensor(logits), temperature, top_k, top_p)
    assert torch.isfinite(p).all() and (p >= 0).all() and abs(p.sum().item() - 1) < 1e-5
    best = int(torch.tensor(logits).argmax())
    assert p[best] == p.max()  # the likeliest token is never cut


@pytest.mark.parametrize(
    "settings_, words",
    [
        (dict(temperature=-1), "between 0"),
        (dict(temperature=math.nan), "finite"),
        (dict(temperature=math.inf), "finite"),
        (dict(temperature=1e309), "finite"),
        (dict(temperature=1000), "between 0"),
        (dict(top_k=0), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(top_p=0), "top_p"),
        (dict(top_p=math.nan), "top_p"),
        (dict(top_p=1.5), "top_p"),
    ],
)
def test_bad_settings_are_refused(settings_, words):
    with pytest.raises(gf.GlassformerError, match=words):
        check(**settings_)


@pytest.mark.parametrize("top_p", [5e-324, 1e-46, 1e-300])
def test_a_top_p_below_float32s_smallest_keeps_the_likeliest_token(top_p):
    p = probabilities(torch.tensor([[0.5, 2.0, 1.0]]), top_p=top_p)
    assert p.tolist() == [[0.0, 1.0, 0.0]]
