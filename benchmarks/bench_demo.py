"""How long `make demo` keeps a learner waiting once `.venv/` is set up: seconds from
`make demo` to the page being served, to the first analysis on the shipped lesson model,
and to the first analysis on SmolLM2 (loaded on first use). Each figure is also given as
a share of the 10-second budget issue 14 sets for the page.

    .venv/bin/python benchmarks/bench_demo.py [--runs 3]
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BUDGET_S = 10.0
ASKS = [
    ("lesson:adjectives", "a fluffy blue creature roamed the verdant forest"),
    ("smollm2", "The capital of France is"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answered(url: str, body: dict | None = None, timeout: float = 2.0) -> bool:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def one_run() -> list[float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    demo = subprocess.Popen(
        ["make", "-s", "demo", f"DEMO_ARGS=--port {port}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # make and the server it starts are stopped together
    )
    try:
        while not answered(url + "/"):
            if demo.poll() is not None or time.perf_counter() - start > 120:
                raise SystemExit(f"make demo did not serve a page (exit {demo.returncode})")
            time.sleep(0.05)
        times = [time.perf_counter() - start]
        for model, text in ASKS:
            if not answered(url + "/api/analyze", {"model": model, "text": text}, timeout=120):
                raise SystemExit(f"the first analysis on {model} failed")
            times.append(time.perf_counter() - start)
        return times
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not (ROOT / ".venv" / ".installed").exists():
        raise SystemExit("set up .venv/ first: make install")
    labels = ["page served", f"first analysis, {ASKS[0][0]}", f"first analysis, {ASKS[1][0]}"]
    runs = [one_run() for _ in range(args.runs)]
    for i, label in enumerate(labels):
        seconds = [r[i] for r in runs]
        print(
            f"{label:<36} {min(seconds):5.2f}–{max(seconds):5.2f} s after `make demo`"
            f"  ({max(seconds) / BUDGET_S:.2f}× the {BUDGET_S:.0f} s budget)"
        )


if __name__ == "__main__":
    main()
