"""The explorer's chapter 5 and 7 cards: /api/embed and /api/superposition, answers and refusals."""

import httpx
import pytest

import glassformer as gf

from servers import running

pytest.importorskip("fastapi", reason="the explorer needs FastAPI (extra serve)")


@pytest.fixture(scope="module")
def url():
    with running({"adjectives": gf.load("lesson:adjectives")}) as base:
        yield base


def post(url, path, body):
    return httpx.post(f"{url}{path}", json=body, timeout=120)


def test_embed_answers_arithmetic_direction_and_pca(url):
    a = post(url, "/api/embed", {"model": "adjectives", "expression": "fluffy - blue + red", "k": 3})
    assert a.status_code == 200, a.text
    found = a.json()
    assert len(found["nearest"]) == 3 and found["left_out"][:3] == ["fluffy", "blue", "red"]
    d = post(
        url,
        "/api/embed",
        {"model": "adjectives", "kind": "direction", "expression": "red - blue", "words": ["red", "blue"]},
    )
    values = [w["projection"] for w in d.json()["words"]]
    assert values[0] > 0 > values[1]
    p = post(url, "/api/embed", {"model": "adjectives", "kind": "pca", "words": ["red", "blue", "fluffy", "spiky"]})
    assert len(p.json()["words"]) == 4


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"model": "adjectives", "expression": "king - man"}, 422, "not in this model's vocabulary"),
        ({"model": "adjectives", "expression": "red -"}, 422, "ends without a word"),
        ({"model": "adjectives", "expression": "red", "matrix": "W_X"}, 422, "matrix"),
        ({"model": "adjectives", "expression": "red", "k": 0}, 422, "k"),
        ({"model": "nope", "expression": "red"}, 404, "unknown model"),
        ({"model": "adjectives", "kind": "pca", "words": ["red"]}, 422, "at least 3"),
    ],
)
def test_embed_refusals_are_one_line(url, body, status, words):
    r = post(url, "/api/embed", body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"] and "\n" not in r.json()["detail"]


def test_superposition_trains_and_refuses_bad_settings(url):
    r = post(url, "/api/superposition", {"sparsities": [0.9], "steps": 300})
    assert r.status_code == 200, r.text
    run = r.json()["runs"][0]
    assert len(run["W"]) == 2 and len(run["W"][0]) == 5 and len(run["represented"]) == 5
    for bad in ({"sparsities": [1.0]}, {"importance": 0}, {"features": 0}, {"steps": 10**6}, {"sparsities": []}):
        r = post(url, "/api/superposition", bad)
        assert r.status_code == 422, (bad, r.text)


def test_the_page_has_both_cards_and_serves_their_script(url):
    page = httpx.get(f"{url}/").text
    assert 'id="embed-card"' in page and 'id="toy-card"' in page and "/static/chapters.js" in page
    script = httpx.get(f"{url}/static/chapters.js")
    assert script.status_code == 200 and "/api/embed" in script.text and "/api/superposition" in script.text
    assert "innerHTML" not in script.text  # text reaches the page only through textContent
