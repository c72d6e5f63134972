"""The explorer's API: answers, refusals, and 200 requests from 20 clients at once."""

import concurrent.futures
import statistics
import subprocess
import sys
import time

import httpx
import pytest

import glassformer as gf
from glassformer.cli import build_parser

from servers import free_port, running

pytest.importorskip("fastapi")
TEXT = "a fluffy blue creature roamed the verdant forest"


@pytest.fixture(scope="module")
def base():
    with running({"tiny": gf.load("random:lesson-tiny"), "minilm": gf.load("minilm")}) as url:
        yield url


def test_analyze_head_next_and_detectors(base):
    a = httpx.post(f"{base}/api/analyze", json={"model": "tiny", "text": TEXT}).json()
    assert len(a["tokens"]) == len(TEXT) and a["decoder"]
    assert len(a["patterns"]) == 2 and len(a["patterns"][0]) == 4
    assert abs(sum(a["patterns"][1][2][-1]) - 1) < 1e-3 and len(a["next"]) == 12
    h = httpx.post(f"{base}/api/head", json={"model": "tiny", "text": TEXT, "layer": 1, "head": 2}).json()
    assert h["pattern"] == a["patterns"][1][2]
    assert h["mask"][0][1] is True and h["mask"][1][0] is False
    assert [s["symbol"] for s in h["steps"]][:3] == ["E", "W_Q", "Q = E·W_Q"]
    cold = httpx.post(f"{base}/api/next", json={"model": "tiny", "text": TEXT, "temperature": 0.1}).json()
    hot = httpx.post(f"{base}/api/next", json={"model": "tiny", "text": TEXT, "temperature": 3}).json()
    assert cold["next"][0]["prob"] > hot["next"][0]["prob"]
    d = httpx.get(f"{base}/api/heads", params={"model": "tiny"}).json()
    assert {"previous-token", "induction", "first-token"} <= set(d["kinds"])
    e = httpx.post(f"{base}/api/analyze", json={"model": "minilm", "text": TEXT}).json()
    assert e["tokens"][0] == "[CLS]" and not e["decoder"] and "next" not in e


def test_openapi_documents_the_api(base):
    spec = httpx.get(f"{base}/openapi.json").json()
    assert {"/api/models", "/api/analyze", "/api/head", "/api/next", "/api/heads"} <= set(spec["paths"])
    assert httpx.get(f"{base}/docs").status_code == 200


def test_refusals_are_clear_4xx(base):
    r = httpx.post(f"{base}/api/analyze", json={"model": "tiny", "text": "x" * 65})
    assert r.status_code == 422 and "65 tokens" in r.json()["detail"] and "64" in r.json()["detail"]
    r = httpx.post(f"{base}/api/analyze", json={"model": "tiny", "text": "  "})
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = httpx.post(f"{base}/api/head", json={"model": "tiny", "text": "hi", "layer": 9, "head": 0})
    assert r.status_code == 422 and "layer 9" in r.json()["detail"]
    r = httpx.post(f"{base}/api/next", json={"model": "minilm", "text": "hi"})
    assert r.status_code == 422 and "encoder" in r.json()["detail"]


@pytest.mark.parametrize("name", ["gpt2", "/etc/passwd", "../../README.md", "random:lesson-tiny", "minilm/../x"])
def test_no_request_can_open_a_model_or_file_it_was_not_started_with(base, name):
    r = httpx.post(f"{base}/api/analyze", json={"model": name, "text": "hi"})
    assert r.status_code == 404 and "unknown model" in r.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../cli.py",
        "/static/%2e%2e/%2e%2e/cli.py",
        "/static//etc/passwd",
        "/static/..%2f..%2fcli.py",
        "/etc/passwd",
    ],
)
def test_static_files_stay_in_their_folder(base, path):
    r = httpx.get(base + path)
    assert r.status_code in (400, 404) and "import" not in r.text and "root:" not in r.text


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
