"""The explorer under pressure: long texts (bounded before computing, answered in windows
and thumbnails), SIGTERM during a request, idle connections filling the server, uvicorn's
own refusals, and a server listening beyond loopback. Every test talks to loopback only."""

import base64
import queue
import signal
import socket
import threading
import time

import httpx
import numpy as np
import pytest

import glassformer as gf
from glassformer.tokenizer import ByteTokenizer

from conftest import build, tiny_decoder
from servers import registry_of, running, server_process, serving

pytest.importorskip("fastapi", reason="the explorer is a FastAPI app (extra serve)")
from glassformer.server import limits
from glassformer.server.app import create_app
from glassformer.server.connections import GRACE
from glassformer.server.serving import local_url, network_warning

TEXT = "a fluffy blue creature roamed the verdant forest"


def long_model(context: int = 512) -> gf.Transformer:
    """2 layers × 4 heads reading raw bytes, with room for a long text."""
    model = build(tiny_decoder(vocab_size=256, context_length=context))
    model.tokenizer = ByteTokenizer()
    return model


def post(url, path, body, **kw):
    return httpx.post(f"{url}{path}", json=body, timeout=60, **kw)


def unpack(packed: dict) -> np.ndarray:
    codes = np.frombuffer(base64.b64decode(packed["uint16_base64"]), dtype="<u2")
    return codes.reshape(packed["shape"]) / packed["scale"]


def has_our_headers(r: httpx.Response) -> bool:
    return "default-src 'self'" in r.headers.get("content-security-policy", "") and r.headers.get(
        "x-content-type-options"
    ) == ("nosniff")


# --- long texts ------------------------------------------------------------------------------------
def test_a_text_over_the_bound_is_refused_before_any_work(monkeypatch):
    """layers × heads × tokens² over MAX_WEIGHTS: 413 with a line naming this model's limit,
    on every route that runs the model, and nothing is computed."""
    monkeypatch.setattr(limits, "MAX_WEIGHTS", 2 * 4 * 40**2)  # 40 tokens on a 2 × 4 model
    model = long_model()
    ran = []
    model.hook_points["blocks.0.resid_pre"].fns.append(lambda x, name: ran.append(name))
    with running({"m": model}) as url:
        for path, extra in [("/api/analyze", {}), ("/api/head", {}), ("/api/next", {}), ("/api/mlp", {"position": 0})]:
            r = post(url, path, {"model": "m", "text": "x" * 41, **extra})
            assert r.status_code == 413, (path, r.text)
            detail = r.json()["detail"]
            assert "41 tokens" in detail and "at most 40 tokens" in detail and "\n" not in detail, detail
        r = post(url, "/api/showcase", {"model": "m", "text": "y" * 41})
        assert r.status_code == 413 and "at most 40 tokens" in r.json()["detail"]
        assert ran == [], "a refused text ran the model"
        assert post(url, "/api/analyze", {"model": "m", "text": "x" * 40}).status_code == 200
        assert httpx.get(f"{url}/api/models").json()[0]["max_tokens"] == 40


def test_smollm2_takes_about_500_tokens():
    """The bound as it falls on the real models: SmolLM2 (30 layers × 9 heads) 498 tokens,
    so " the"×600 and " the"×2000 are refused, not computed (4.3 GB of patterns)."""
    smollm2 = gf.ModelConfig(vocab_size=8, context_length=8192, d_model=576, n_heads=9, n_kv_heads=3, n_layers=30)
    assert limits.max_tokens(smollm2) == 498
    assert 30 * 9 * 498**2 <= limits.MAX_WEIGHTS < 30 * 9 * 499**2


def test_a_long_text_sends_thumbnails_and_a_window_of_the_grids():
    """300 tokens: every head as a 64 × 64 thumbnail whose rows still sum to 1, and one
    head's grids only for 64 query rows around the query (each over every key)."""
    model = long_model()
    text = "the cat sat on the mat. " * 12 + "the cat"  # 295 tokens
    n = len(text)
    with running({"m": model}) as url:
        a = post(url, "/api/analyze", {"model": "m", "text": text})
        assert a.status_code == 200
        a = a.json()
        thumbs = unpack(a["patterns"])
        assert thumbs.shape == (2, 4, limits.THUMB, limits.THUMB)
        assert a["thumbnail_tokens"] == pytest.approx(n / limits.THUMB)
        # uint16 codes (1.5e-5 each) summed over the keys of a row: 64 blocks at most
        assert np.abs(thumbs.sum(-1) - 1).max() < 64 * 2e-5
        h = post(url, "/api/head", {"model": "m", "text": text, "layer": 1, "head": 2})
        assert h.status_code == 200 and len(h.content) < 1_000_000
        h = h.json()
        start, stop = h["rows"]
        assert stop - start == limits.WINDOW and start <= h["focus"] < stop and h["focus"] == h["query"]
        assert len(h["pattern"]) == len(h["dots"]) == len(h["mask"]) == limits.WINDOW
        assert all(len(row) == n for row in h["pattern"]) and len(h["k"]) == n
        # asking for a query moves the window there; the rows are the same numbers
        q = 10
        w = post(url, "/api/head", {"model": "m", "text": text, "layer": 1, "head": 2, "query": q}).json()
        assert w["focus"] == q and w["rows"] == [0, limits.WINDOW]
        for row in range(max(start, 0), min(stop, limits.WINDOW)):
            np.testing.assert_array_equal(w["pattern"][row], h["pattern"][row - start])
        far = post(url, "/api/head", {"model": "m", "text": text, "layer": 1, "head": 2, "query": n})
        assert far.status_code == 422 and "out of range" in far.json()["detail"]


def test_a_short_text_is_answered_whole():
    with running({"m": long_model()}) as url:
        h = post(url, "/api/head", {"model": "m", "text": TEXT, "layer": 0, "head": 1}).json()
        a = post(url, "/api/analyze", {"model": "m", "text": TEXT}).json()
    n = len(TEXT)
    assert h["rows"] == [0, n] and len(h["pattern"]) == n
    assert unpack(a["patterns"]).shape == (2, 4, n, n) and a["thumbnail_tokens"] == 1


# --- SIGTERM during a request -------------------------------------------------------------------------
# A server in its own process whose model takes a while (each block waits 1.5 s, in Python)
# and says on stdout when a forward pass has begun; SIGTERM ends it as the CLI does (143).
SLOW_SERVER = """
import signal, sys, time
import glassformer as gf
from glassformer.server.app import Registry, create_app, run

def stop(*_):
    raise SystemExit(143)

signal.signal(signal.SIGTERM, stop)
model = gf.load("random:lesson-tiny")
def slow(x, name):
    print("inside", flush=True)
    time.sleep(1.5)
for i in range(model.config.n_layers):
    model.hook_points[f"blocks.{i}.resid_pre"].fns.append(slow)
registry = Registry()
registry.add("slow", lambda: model)
registry["slow"].get()
app = create_app(registry, warm=False)
run(app, "127.0.0.1", int(sys.argv[1]), ready=lambda url: print("ready", url, flush=True))
"""


def test_sigterm_during_a_request_answers_503_json_and_exits_cleanly():
    with server_process(SLOW_SERVER) as server:
        answers: list = []
        asking = threading.Thread(
            target=lambda: answers.append(post(server.url, "/api/analyze", {"model": "slow", "text": TEXT}))
        )
        asking.start()
        assert server.lines.get(timeout=60).strip() == "inside"  # the forward pass has begun
        server.proc.send_signal(signal.SIGTERM)
        asking.join(timeout=20)
        rc = server.proc.wait(timeout=20)
        err = server.proc.stderr.read()
    assert answers, "the request got no answer"
    r = answers[0]
    assert r.status_code == 503 and r.headers["content-type"] == "application/json", (r.status_code, r.text)
    assert "stopping" in r.json()["detail"] and has_our_headers(r)
    assert rc == 143, (rc, err)
    assert "Traceback" not in err and "terminate called" not in err and "CancelledError" not in err, err


# --- connections ------------------------------------------------------------------------------------------
def test_idle_connections_cannot_fill_the_server():
    """Twice as many idle connections as the bound: the oldest idle ones are closed to make
    room, and the API keeps answering (never uvicorn's plain 503)."""
    app = create_app(registry_of({"tiny": gf.load("random:lesson-tiny")}))
    with serving(app, max_connections=20) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        try:
            time.sleep(GRACE + 0.3)  # the server has taken them all, and they have sat idle
            for _ in range(5):
                r = httpx.get(f"{url}/api/models", timeout=10)
                assert r.status_code == 200 and has_our_headers(r), (r.status_code, r.text)
            r = post(url, "/api/analyze", {"model": "tiny", "text": TEXT})
            assert r.status_code == 200
            closed = 0
            for s in idle:
                s.settimeout(0.05)
                try:
                    closed += s.recv(1) == b""
                except (TimeoutError, ConnectionResetError):
                    closed += 0
            assert closed >= 20, f"only {closed} of 40 idle connections were closed"
        finally:
            for s in idle:
                s.close()


def test_uvicorns_own_400_is_json_with_our_headers(tmp_path):
    with serving(create_app(registry_of({}))) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"NOT A REQUEST\r\n\r\n")
            got = b""
            while chunk := s.recv(4096):
                got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), got[:200]
    assert b"content-type: application/json" in head.lower() and b"content-security-policy" in head.lower()
    assert b"detail" in body


# --- where it listens, and what it says -----------------------------------------------------------------
def test_every_interface_prints_a_url_that_works_and_warns():
    assert local_url("0.0.0.0", 8000) == "http://127.0.0.1:8000/"
    assert local_url("::", 8000) == "http://[::1]:8000/"
    assert local_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert local_url("::1", 8000) == "http://[::1]:8000/"
    assert network_warning("127.0.0.1") is None and network_warning("localhost") is None
    for host in ("0.0.0.0", "::", "192.168.1.5"):
        warning = network_warning(host)
        assert warning is not None and ("other machines" in warning or "anyone" in warning), host
    # the printed URL's Host is one the server answers (0.0.0.0 is not)
    with serving(create_app(registry_of({}), allowed_hosts=["0.0.0.0"])) as url:
        port = int(url.rsplit(":", 1)[1])
        shown = local_url("0.0.0.0", port).removeprefix("http://").rstrip("/")
        assert httpx.get(f"{url}/api/models", headers={"host": shown}).status_code == 200
        assert httpx.get(f"{url}/api/models", headers={"host": f"0.0.0.0:{port}"}).status_code == 421


def test_busy_503_is_in_the_docs():
    with serving(create_app(registry_of({}))) as url:
        spec = httpx.get(f"{url}/openapi.json").json()
    for path in ("/api/analyze", "/api/head", "/api/next", "/api/mlp", "/api/showcase", "/api/heads"):
        (op,) = spec["paths"][path].values()
        assert "Retry-After" in op["responses"]["503"]["description"], path
        assert "413" in op["responses"], path


def test_a_registry_served_again_answers():
    """Stopping one app stops its lanes; a second app over the same registry starts afresh."""
    registry = registry_of({"tiny": gf.load("random:lesson-tiny")})
    for _ in range(2):
        with serving(create_app(registry)) as url:
            assert post(url, "/api/analyze", {"model": "tiny", "text": TEXT}).status_code == 200


def test_more_requests_than_the_bound_get_json_503s():
    """Every connection busy (a model that takes a while): a request beyond the bound is
    answered 503 in JSON with Retry-After and our headers, never uvicorn's plain text."""
    model = gf.load("random:lesson-tiny")
    model.hook_points["blocks.0.resid_pre"].fns.append(lambda x, name: time.sleep(0.5))
    app = create_app(registry_of({"slow": model}), warm=False)
    with serving(app, max_connections=8) as url:
        answers: queue.Queue = queue.Queue()

        def ask() -> None:
            answers.put(post(url, "/api/analyze", {"model": "slow", "text": TEXT}))

        askers = [threading.Thread(target=ask) for _ in range(16)]
        for t in askers:
            t.start()
        for t in askers:
            t.join(timeout=60)
        got = [answers.get_nowait() for _ in range(answers.qsize())]
    assert len(got) == 16
    refused = [r for r in got if r.status_code == 503]
    assert refused and all(r.status_code in (200, 503) for r in got), [r.status_code for r in got]
    for r in refused:
        assert r.headers["content-type"] == "application/json" and r.headers["retry-after"] == "1"
        assert "try again" in r.json()["detail"] and has_our_headers(r)
