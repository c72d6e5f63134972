"""The head detectors in one forward pass, and their scores kept per model version: the
same numbers as running each detector on its own, read back bit for bit."""

import pytest
import torch
from test_gguf_cache import tiny_llama_gguf

import glassformer as gf
from glassformer.lab import detector_cache, heads, survey
from glassformer.pretrained import weights_cache

from conftest import build, tiny_decoder, tiny_encoder


@pytest.mark.parametrize("family", [tiny_decoder, tiny_encoder])
def test_one_pass_gives_each_detectors_own_scores(family, monkeypatch):
    model = build(family(context_length=64))
    probe = heads.random_repeats(model)
    alone = {
        "previous-token": heads.previous_token(model, probe),
        "duplicate-token": heads.duplicate_token(model, probe),
        "induction": heads.induction(model, probe),
        "first-token": heads.first_token(model, probe),
    }
    passes = []
    real = heads._patterns
    monkeypatch.setattr(heads, "_patterns", lambda *a, **k: passes.append(1) or real(*a, **k))
    found = survey.detect_all(model)
    assert len(passes) == 1
    for kind, table in alone.items():
        assert torch.equal(found.tables[kind], table), kind


def test_a_text_without_repeats_still_skips_with_the_reason():
    model = build(tiny_decoder())
    found = survey.detect_all(model, torch.tensor([[1, 2, 3, 4]]))
    assert "no token repeats in this text" in found.skipped["duplicate-token"]
    assert set(found.tables) == {"previous-token", "first-token"}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSFORMER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def scorings(monkeypatch) -> list:
    seen: list = []
    real = survey.detect_all
    monkeypatch.setattr(survey, "detect_all", lambda *a, **k: seen.append(1) or real(*a, **k))
    return seen


def test_scores_are_kept_per_model_version_and_read_back_exactly(tmp_path, cache, scorings):
    path = tiny_llama_gguf(tmp_path / "m.gguf")
    first = detector_cache.detect_all(gf.load(path))
    again = detector_cache.detect_all(gf.load(path))
    assert len(scorings) == 1, "the second model of the same version was scored again"
    assert again.skipped == first.skipped and again.tables.keys() == first.tables.keys()
    for kind, table in first.tables.items():
        assert torch.equal(again.tables[kind], table), kind
    # another file is another version
    detector_cache.detect_all(gf.load(tiny_llama_gguf(tmp_path / "other.gguf", seed=1)))
    assert len(scorings) == 2


def test_a_damaged_scores_file_is_scored_again(tmp_path, cache, scorings):
    model = gf.load(tiny_llama_gguf(tmp_path / "m.gguf"))
    first = detector_cache.detect_all(model)
    (file,) = (cache / weights_cache.DETECTORS).iterdir()
    file.write_text(file.read_text()[:-20])
    again = detector_cache.detect_all(model)
    assert len(scorings) == 2
    assert all(torch.equal(again.tables[k], v) for k, v in first.tables.items())
    detector_cache.detect_all(model)
    assert len(scorings) == 2, "the rewritten file is not read"


def test_a_model_without_a_version_is_scored_each_time_and_nothing_is_written(cache, scorings):
    model = build(tiny_decoder(context_length=64))
    detector_cache.detect_all(model)
    detector_cache.detect_all(model)
    assert len(scorings) == 2 and not cache.exists()
