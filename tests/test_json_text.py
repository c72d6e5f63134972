"""json_text: the one way glassformer writes JSON for the explorer, pages and --json."""

import json
import math

import pytest

from glassformer.config import GlassformerError
from glassformer.json_text import finite, to_bytes, to_text


def test_compact_utf8_and_round_trips():
    value = {"tokens": ["Ġthe", "é", "日本"], "p": [0.25, 1e-30], "n": 3, "ok": True, "none": None}
    out = to_bytes(value)
    assert b" " not in out
    assert "日本".encode() in out  # UTF-8, not \u escapes, when it can be
    assert json.loads(out) == value


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_number_that_overflowed_is_one_line_of_ours(bad):
    with pytest.raises(GlassformerError, match="overflowed to NaN or infinity"):
        to_bytes({"grid": [[0.5, bad]]})


def test_nulls_writes_what_is_not_a_number_as_null():
    assert json.loads(to_text({"kl": [1.5, math.nan], "x": (math.inf, 2.0)}, nulls=True)) == {
        "kl": [1.5, None],
        "x": [None, 2.0],
    }
    assert finite([[-math.inf]]) == [[None]]


def test_a_lone_surrogate_is_escaped_not_a_crash():
    half = "\ud83d"  # the first half of an emoji, as a byte-level token can leave it
    text = to_text({"token": half + "é"})
    text.encode()  # always encodable
    assert "\\ud83d" in text
    assert json.loads(text) == {"token": half + "é"}
