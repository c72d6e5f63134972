"""The explorer's full-analysis request (every layer's and head's pattern plus the
next-token distribution) on a gpt2-small-shaped model (random weights) at 32 tokens,
measured end to end over HTTP on loopback, against a Hugging Face GPT2LMHeadModel
eager forward with output_attentions=True on the same weights, same run.

Then the first analysis after the page loads, as the learner waits for it: from the
browser's navigation to the story being drawn (models, analysis, one head's walk), on a
fresh server and on warm reloads; and the same two API requests (/api/analyze, then
/api/head) cold from a script, for readers without Chromium.

    .venv/bin/python benchmarks/bench_explorer.py
"""

import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx
import torch

from glassformer.server.app import Registry, create_app

from _common import env_line, hf_gpt2_and_ours, race

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import running, serving

TEXT_TOKENS = 32
TEXT = "a fluffy blue creature roamed th"  # 32 bytes: 32 tokens
CHROMIUM = os.environ.get("GLASSFORMER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def explorer_app(model):
    registry = Registry()
    registry.add("gpt2-shape", lambda: model, example=TEXT)  # the page opens on this sentence
    return create_app(registry)


def api_cold(model) -> tuple[float, float]:
    """(analyze, head) seconds: the first two requests a fresh server answers."""
    with serving(explorer_app(model)) as url, httpx.Client(timeout=120) as client:
        t = time.perf_counter()
        r = client.post(f"{url}/api/analyze", json={"model": "gpt2-shape", "text": TEXT, "showcase": True})
        analyze = time.perf_counter() - t
        assert r.status_code == 200, r.text
        t = time.perf_counter()
        r = client.post(f"{url}/api/head", json={"model": "gpt2-shape", "text": TEXT, "layer": 0, "head": 0})
        assert r.status_code == 200, r.text
        return analyze, time.perf_counter() - t


def page_loads(model, reloads: int = 5) -> tuple[float, list[float]] | None:
    """Seconds from navigation to the drawn story: the first load on a fresh server, then reloads."""
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    story_drawn = f"() => document.querySelectorAll('#attend .key-row').length === {TEXT_TOKENS}"
    times = []
    with serving(explorer_app(model)) as url, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        for _ in range(1 + reloads):
            page.goto(url + "/")
            page.wait_for_function(story_drawn, timeout=120_000)
            times.append(page.evaluate("() => performance.now()") / 1e3)  # ms since navigation started
            page.wait_for_selector("#mlp .neuron", timeout=120_000)  # let the page settle before the next load
        browser.close()
    return times[0], times[1:]


def main() -> None:
    hf, ours = hf_gpt2_and_ours()
    hf.set_attn_implementation("eager")
    from glassformer.tokenizer import ByteTokenizer

    ours.tokenizer = ByteTokenizer()  # random weights: any 32 ids will do; bytes make them text
    ids = torch.tensor([ours.tokenizer.encode(TEXT)])
    assert ids.shape[1] == TEXT_TOKENS
    with running({"gpt2-shape": ours}) as url, httpx.Client(timeout=60) as client:

        def explorer():
            r = client.post(f"{url}/api/analyze", json={"model": "gpt2-shape", "text": TEXT})
            assert r.status_code == 200

        def hugging_face():
            with torch.inference_mode():
                hf(ids, output_attentions=True)

        t = race({"explorer": explorer, "hf": hugging_face}, repeats=15, warmup=3)
    print(f"gpt2 shape (124M), {TEXT_TOKENS} tokens, {env_line()}")
    print(
        f"explorer /api/analyze over HTTP {t['explorer'] * 1e3:.1f} ms   HF eager forward with attentions "
        f"{t['hf'] * 1e3:.1f} ms   ratio {t['explorer'] / t['hf']:.2f}"
    )
    analyze, head = api_cold(ours)
    print(
        f"first analysis, fresh server, from a script: /api/analyze {analyze * 1e3:.0f} ms, "
        f"then /api/head {head * 1e3:.0f} ms (total {(analyze + head) * 1e3:.0f} ms)"
    )
    loads = page_loads(ours)
    if loads is None:
        print(f"first analysis in the browser: skipped (no Chromium at {CHROMIUM})")
    else:
        first, again = loads
        print(
            f"first analysis in the browser, navigation to drawn story: {first * 1e3:.0f} ms on a fresh server, "
            f"median {statistics.median(again) * 1e3:.0f} ms over {len(again)} reloads"
        )


if __name__ == "__main__":
    main()
