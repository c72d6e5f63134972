"""The shipped lesson models teach what their lessons say, and were made from today's
lessons (a changed corpus without `make lessons` fails here)."""

import json

import pytest

import glassformer as gf
from glassformer import lessons
from glassformer.inspect import heads
from glassformer.train.data import prepare

from conftest import run_cli


@pytest.mark.parametrize("name", sorted(lessons.LESSONS))
def test_shipped_model_was_trained_on_todays_lesson(name):
    meta = json.loads((lessons.model_dir(name) / "config.json").read_text())["meta"]
    assert meta["data"] == f"lesson:{name}"
    settings = lessons.get(name).TRAIN_DEFAULTS
    fresh = prepare(f"lesson:{name}", seed=meta.get("seed", 1337))
    assert meta["fingerprint"] == fresh.fingerprint, f"lesson:{name} changed since its model was made: make lessons"
    assert meta["step"] <= settings["steps"]


def test_adjectives_model_has_its_adjective_head():
    model = gf.load("lesson:adjectives")
    own, far = heads.adjective_scores(model, n=300, seed=2024)  # held-out sentences
    layer, head, score = heads.strongest(own)
    assert score >= 0.8, f"best head puts only {score:.2f} of a noun's attention on its adjectives"
    assert far[layer, head] >= 0.5, f"and {far[layer, head]:.2f} on the ones not next to it"


@pytest.fixture(scope="module")
def induction_model():
    return gf.load("lesson:induction")


@pytest.mark.parametrize("segment", [5, 9, 13, 17, 23])
def test_induction_model_continues_second_copies_of_any_length(induction_model, segment):
    """Segments of one length at random places after random prefixes and gaps: no fixed
    offset finds the token to copy, only an induction head does."""
    accuracy = lessons.induction.copy_accuracy(induction_model, segment, n=200, seed=2024)
    assert accuracy >= 0.8, f"segments of {segment}: {accuracy:.2f} of second-copy tokens predicted"


def test_induction_model_has_a_previous_token_head_then_an_induction_head(induction_model, capsys):
    found = heads.detect_all(induction_model)
    layer, _, score = heads.strongest(found.tables["induction"])
    assert layer == 1 and score >= 0.5, f"induction head in layer {layer}, score {score:.2f}"
    prev_layer, _, prev = heads.strongest(found.tables["previous-token"])
    assert prev_layer == 0 and prev >= heads.STRONG, f"previous-token head in layer {prev_layer}, {prev:.2f}"
    code, out, _ = run_cli(capsys, "heads", "--model", "lesson:induction")
    assert code == 0 and "induction head: layer 1" in out and "previous-token head: layer 0" in out
