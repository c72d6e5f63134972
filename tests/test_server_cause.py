"""The laboratory's API: /api/ablate, /api/patch, /api/circuit answer what the library
computes, and refuse bad input with a 4xx and one line."""

import contextlib
import io
import re

import httpx
import pytest
import torch

import glassformer as gf
from glassformer.inputs import encode_batch
from glassformer.lab.edit import ablate_head, compare_next_token, patch_caution

pytest.importorskip("fastapi", reason="the explorer is a FastAPI app (extra serve)")
from servers import running

LESSON = "lesson:adjectives"
TEXT = "a fluffy blue creature roamed the verdant forest"


@pytest.fixture(scope="module")
def base():
    models = {LESSON: gf.load(LESSON), "bert": gf.load("random:minilm-l6")}
    with running(models) as url:
        yield url


def post(base, path, body):
    return httpx.post(f"{base}{path}", json=body, timeout=120)


def test_ablate_answers_what_the_library_computes_and_its_python_does_the_same(base):
    r = post(base, "/api/ablate", {"model": LESSON, "text": TEXT, "heads": [[0, 2]], "rows": 5})
    assert r.status_code == 200, r.text
    got = r.json()
    model = gf.load(LESSON)
    direct = compare_next_token(model, encode_batch(model, TEXT), ablate_head(model, 0, 2), k=5)
    assert got["kl"] == pytest.approx(direct.kl, rel=1e-3, abs=1e-6)
    assert [x["id"] for x in got["after"]] == [i for i, _ in direct.after]
    # only heads after the switched-off one can move: layer 0's patterns come before its output
    assert got["changed"] and all(layer > 0 for layer, _, _ in got["changed"])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(got["python"], {})  # the page's lines run as they stand and print the same numbers
    numbers = [float(x) for x in re.findall(r"\d+\.\d+(?:e-?\d+)?", printed.getvalue())]
    assert numbers[:2] == pytest.approx([direct.top_before, direct.top_after], rel=1e-4)


def test_patch_answers_a_layer_by_head_map(base):
    body = {"model": LESSON, "clean": TEXT, "corrupt": "a fluffy blue creature roamed the verdant lake"}
    r = post(base, "/api/patch", body)
    assert r.status_code == 200, r.text
    restored = r.json()["restored"]
    assert len(restored) == 2 and len(restored[0]) == 4
    # the defaults are each run's own top token, read from the runs patching makes anyway
    model = gf.load(LESSON)
    with torch.inference_mode():
        tops = [int(model(encode_batch(model, t))[0, -1].argmax()) for t in (body["clean"], body["corrupt"])]
    got = r.json()
    assert [got["answer"]["id"], got["wrong"]["id"]] == tops
    # the same caution the command line prints
    assert got["caution"] == patch_caution(got["clean_diff"], got["corrupt_diff"])


def test_circuit_answers_top_pairs_and_the_asked_tokens(base):
    model = gf.load(LESSON)
    creature = model.tokenizer.encode("creature")[0]
    r = post(base, "/api/circuit", {"model": LESSON, "layer": 0, "head": 3, "k": 5, "token_ids": [creature]})
    assert r.status_code == 200, r.text
    got = r.json()
    assert len(got["qk"]) == 5 and len(got["qk"][0]) == 3 and got["leaves_out"]
    assert "creature" in got["qk_by_token"]
    whole = post(base, "/api/circuit", {"model": LESSON, "layer": 0, "head": 3, "whole": True}).json()["whole"]
    assert len(whole["qk"]) == len(whole["tokens"]) == model.config.vocab_size


@pytest.mark.parametrize(
    "path, body, words",
    [
        ("/api/ablate", {"model": LESSON, "text": TEXT, "heads": [[0, 9]]}, ["head 9"]),
        ("/api/ablate", {"model": LESSON, "text": TEXT, "heads": [[5, 0]]}, ["layer 5"]),
        ("/api/ablate", {"model": LESSON, "text": TEXT, "neurons": [[0, 10**5]]}, ["out of range"]),
        ("/api/ablate", {"model": LESSON, "text": TEXT}, ["switch off"]),
        ("/api/ablate", {"model": LESSON, "text": TEXT, "mlps": [7]}, ["layer 7"]),
        ("/api/ablate", {"model": LESSON, "text": TEXT, "heads": [[0]]}, ["heads"]),
        ("/api/ablate", {"model": LESSON, "text": TEXT, "heads": [[0, 0]], "position": 40}, ["out of range"]),
        ("/api/ablate", {"model": "bert", "text": TEXT, "heads": [[0, 0]]}, ["decoder"]),
        ("/api/patch", {"model": LESSON, "clean": TEXT, "corrupt": "a fluffy creature"}, ["same token count"]),
        ("/api/patch", {"model": LESSON, "clean": TEXT, "corrupt": TEXT, "answer": "zebraxx"}, ["vocabulary"]),
        ("/api/patch", {"model": "bert", "clean": TEXT, "corrupt": TEXT}, ["decoder"]),
        ("/api/circuit", {"model": LESSON, "layer": 0, "head": 4}, ["head 4"]),
        ("/api/circuit", {"model": LESSON, "layer": 0, "head": 0, "token_ids": [10**6]}, ["token id"]),
    ],
)
def test_bad_requests_are_refused_in_one_line(base, path, body, words):
    r = post(base, path, body)
    assert 400 <= r.status_code < 500, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    for w in words:
        assert w in detail, detail
