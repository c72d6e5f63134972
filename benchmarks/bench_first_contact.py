"""First contact with the real model: what a learner waits for, command after command,
measured as whole processes taking turns (each round runs every contender once, so drift
hits them alike). SmolLM2-135M (GGUF) against the shipped lesson model.

1. `glassformer explain "The capital of France is"` on smollm2 and on lesson:adjectives:
   wall time and peak resident size (ru_maxrss of the process);
2. `glassformer generate --model smollm2 -n 12 -t 0`: seconds to the first token on stdout;
3. the explorer (`glassformer serve`, the models `make demo` serves): the first analysis on
   the lesson, then the first on smollm2, then "score every head" on smollm2 twice, and the
   server's peak resident size after one smollm2 analysis (VmHWM).

The weights cache lives in a temporary GLASSFORMER_CACHE, warmed by one run first (the
first load, which fills it, is timed and printed apart). `--python` names the interpreter
(another checkout's, with PYTHONPATH, to measure the code before a change).

    .venv/bin/python benchmarks/bench_first_contact.py [--rounds 3]
"""

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The capital of France is"
LESSON_TEXT = "a fluffy blue creature roamed the verdant forest"


def glassformer(python: str) -> list[str]:
    return [python, "-m", "glassformer"]


def timed(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one whole process."""
    t = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {child.stderr.read().decode()[-400:] if child.stderr else ''}")
    return wall, usage.ru_maxrss / 1024


def first_token(argv: list[str], env: dict) -> float:
    """Seconds from the start of the process to its first bytes on stdout (the prompt and
    the first token are written together)."""
    t = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert child.stdout is not None
    child.stdout.read(1)
    seconds = time.perf_counter() - t
    child.stdout.read()
    if child.wait() != 0:
        raise SystemExit(f"{' '.join(argv)} failed")
    return seconds


def post(url: str, body: dict | None = None, timeout: float = 300) -> float:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()
        assert response.status == 200
    return time.perf_counter() - t


def vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def explorer(python: str, env: dict) -> dict[str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    models = ["--model", "lesson:adjectives", "--model", "smollm2", "--model", "minilm"]
    server = subprocess.Popen(
        [*glassformer(python), "serve", *models, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        start = time.perf_counter()
        while True:
            try:
                post(url + "/api/models", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - start > 120:
                    raise SystemExit("the explorer did not start") from None
                time.sleep(0.05)
        out = {"lesson_analysis": post(url + "/api/analyze", {"model": "lesson:adjectives", "text": LESSON_TEXT})}
        out["smollm2_analysis"] = post(url + "/api/analyze", {"model": "smollm2", "text": PROMPT})
        out["serve_rss_mb"] = vm_hwm_mb(server.pid)
        out["detectors_first"] = post(url + "/api/heads?model=smollm2")
        out["detectors_again"] = post(url + "/api/heads?model=smollm2")
        out["serve_rss_after_detectors_mb"] = vm_hwm_mb(server.pid)
        return out
    finally:
        server.terminate()
        server.wait()


BREAKDOWN_CHILD = r"""
import time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import glassformer
from glassformer import checkpoint
from glassformer.pretrained import builtin_path, gguf_file, weights_cache
t2 = time.perf_counter()
path = builtin_path("smollm2")
steps = {"import torch": t1 - t0, "import glassformer": t2 - t1}
for run in ("convert", "map"):
    t = time.perf_counter(); reader = gguf_file.open_file(path); config = gguf_file.config_of(reader, path)
    steps[f"{run}: GGUF header"] = time.perf_counter() - t
    t = time.perf_counter(); tokenizer = gguf_file.tokenizer_of(reader, path)
    steps[f"{run}: tokenizer"] = time.perf_counter() - t
    t = time.perf_counter(); state = gguf_file.state_of(reader, config)
    what = "dequantize, write the cache" if run == "convert" else "map, checksum"
    steps[f"{run}: weights ({what})"] = time.perf_counter() - t
    t = time.perf_counter(); model = checkpoint.build_with_weights(config, state, checked=True)
    steps[f"{run}: build the model"] = time.perf_counter() - t
    del model, state
for k, v in steps.items():
    print(f"  {k:<48} {v:6.2f} s")
"""


def load_breakdown(python: str, env: dict) -> None:
    """Where the time of one load goes, in a fresh process: first with an empty cache
    (dequantize and write it), then mapping what was written."""
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run(
            [python, "-c", BREAKDOWN_CHILD], env={**env, "GLASSFORMER_CACHE": cache}, capture_output=True, text=True
        )
    print("where a load of smollm2 goes (one process, an empty cache first):")
    print(out.stdout.rstrip() if out.returncode == 0 else f"  (not measured: {out.stderr.strip()[-200:]})")


def one_round(python: str, env: dict) -> dict[str, float]:
    g = glassformer(python)
    out = {}
    out["explain_lesson"], out["explain_lesson_rss_mb"] = timed(
        [*g, "explain", PROMPT, "--model", "lesson:adjectives"], env
    )
    out["explain_smollm2"], out["explain_smollm2_rss_mb"] = timed([*g, "explain", PROMPT, "--model", "smollm2"], env)
    gen = [*g, "generate", "--model", "smollm2", "--prompt", PROMPT, "-n", "12", "-t", "0"]
    out["generate_first_token"] = first_token(gen, env)
    _, out["generate_rss_mb"] = timed(gen, env)
    out |= explorer(python, env)
    return out


def cpu_line() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        have = set(next(line for line in info.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
        flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have)
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores, {flags or 'no AVX flags read'}; fp32"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--python", default=sys.executable, help="the interpreter that runs glassformer")
    p.add_argument("--breakdown", action="store_true", help="also time the steps of one load (this checkout only)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "GLASSFORMER_CACHE": cache, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        g = glassformer(args.python)
        cold, cold_rss = timed([*g, "explain", PROMPT, "--model", "smollm2"], env)
        print(f"{cpu_line()}; {args.rounds} rounds")
        print(f"first explain on smollm2 with an empty weights cache: {cold:.2f} s, peak {cold_rss:.0f} MB")
        rounds = [one_round(args.python, env) for _ in range(args.rounds)]
    figures = {k: [r[k] for r in rounds] for k in rounds[0]}

    def show(key: str, unit: str = "s") -> str:
        values = figures[key]
        return f"{statistics.median(values):.2f} {unit} (range {min(values):.2f}–{max(values):.2f})"

    ratio = [s / les for s, les in zip(figures["explain_smollm2"], figures["explain_lesson"])]
    first = [s / les for s, les in zip(figures["smollm2_analysis"], figures["lesson_analysis"])]
    print(f"explain, lesson:adjectives:          {show('explain_lesson')}, peak {show('explain_lesson_rss_mb', 'MB')}")
    print(
        f"explain, smollm2:                    {show('explain_smollm2')}, peak {show('explain_smollm2_rss_mb', 'MB')}"
    )
    print(f"  smollm2 / lesson wall time:        {statistics.median(ratio):.2f}x ({min(ratio):.2f}–{max(ratio):.2f})")
    print(f"generate -n 12, time to first token: {show('generate_first_token')}, peak {show('generate_rss_mb', 'MB')}")
    print(f"explorer first analysis, lesson:     {show('lesson_analysis')}")
    print(f"explorer first analysis, smollm2:    {show('smollm2_analysis')}")
    print(f"  smollm2 / lesson:                  {statistics.median(first):.2f}x ({min(first):.2f}–{max(first):.2f})")
    print(f"serve, peak after one smollm2 analysis: {show('serve_rss_mb', 'MB')}")
    print(f"score every head, smollm2, first:    {show('detectors_first')}")
    print(f"score every head, smollm2, again:    {show('detectors_again')}")
    print(f"serve, peak after scoring:           {show('serve_rss_after_detectors_mb', 'MB')}")
    if args.breakdown:
        load_breakdown(args.python, {**os.environ, "TOKENIZERS_PARALLELISM": "false"})


if __name__ == "__main__":
    main()
