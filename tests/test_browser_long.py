"""A long text in the explorer, in Chromium: the page stays a page (the story's keys scroll
in a box, the grids show a window of 64 tokens around the query with a way to move it,
thumbnails are small), and what it draws is what the API says."""

import os
import shutil
from pathlib import Path

import httpx
import pytest

from glassformer.server import limits
from glassformer.tokenizer import ByteTokenizer

from conftest import build, tiny_decoder
from servers import running

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("GLASSFORMER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="the browser is driven by Playwright (dev extra)")
OUT = Path(os.environ.get("GLASSFORMER_TEST_OUTPUT", Path(__file__).resolve().parents[1] / "test-output"))

# 381 tokens (bytes), as in the report of a 23,831-px page
TEXT = ("the fluffy blue creature roamed the verdant forest, and the cat sat on the mat. " * 5)[:381]


@pytest.fixture(scope="module")
def long_server():
    model = build(tiny_decoder(vocab_size=256, context_length=512))
    model.tokenizer = ByteTokenizer()
    with running({"long": model}) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update"],
        )
        yield b
        b.close()


def grid_window(pg) -> tuple[int, int, int]:
    """(first query, last query, cells) of the pattern grid as drawn."""
    cells = pg.eval_on_selector_all("#grid .cell", "els => els.map(e => +e.dataset.q)")
    return min(cells), max(cells), len(cells)


def story_query(pg) -> int:
    return pg.evaluate("() => +document.getElementById('story').dataset.query")


def test_a_long_text_is_drawn_in_windows(browser, long_server):
    assert len(TEXT) == 381
    pg = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(long_server + "/")
    pg.wait_for_selector("#attend .key-row")
    pg.fill("#text", TEXT)
    pg.click("#ask button[type=submit]")
    pg.wait_for_function("n => document.querySelectorAll('#attend .key-row').length === n", arg=len(TEXT))
    pg.wait_for_selector("#grid .cell")
    pg.wait_for_timeout(200)

    # the grids: a window of 64 × 64 around the query, said so, with a way to move it
    first, last, cells = grid_window(pg)
    assert cells == limits.WINDOW**2 and last - first == limits.WINDOW - 1
    q = story_query(pg)
    assert first <= q <= last
    note = pg.text_content("#grid-window")
    assert f"tokens {first}–{last} of {len(TEXT)}" in note
    # what the grid draws is the API's row of the query
    api = httpx.post(
        f"{long_server}/api/head",
        json={"model": "long", "text": TEXT, "layer": 0, "head": 0, "query": q},
        timeout=60,
    ).json()
    drawn = pg.eval_on_selector_all(
        f'#grid .cell[data-q="{q}"]', "els => els.map(e => [+e.dataset.k, e.dataset.weight ?? null])"
    )
    layer_head = pg.evaluate(
        "() => [+document.getElementById('story').dataset.layer, +document.getElementById('story').dataset.head]"
    )
    if layer_head == [0, 0]:
        row = api["pattern"][q - api["rows"][0]]
        for k, w in drawn:
            if w not in (None, ""):
                assert abs(float(w) - row[k]) < 1e-4

    # the story's keys scroll in a box of their own, the page stays a page
    box = pg.evaluate(
        "() => { const s = document.getElementById('attend').parentElement; return [s.clientHeight, s.scrollHeight]; }"
    )
    assert box[0] <= 32 * 16 + 2 and box[1] > box[0], box
    height = pg.evaluate("document.scrollingElement.scrollHeight")
    assert height < 5000, f"the page is {height} px tall"
    thumbs = pg.eval_on_selector_all("#thumbs canvas", "els => els.map(e => e.width)")
    assert thumbs and max(thumbs) <= limits.THUMB

    # "earlier" moves the window (and the query) back; the new window is drawn
    if first > 0:
        pg.click("#grid-window button:has-text('earlier')")
        pg.wait_for_function(
            "f => Math.min(...[...document.querySelectorAll('#grid .cell')].map(e => +e.dataset.q)) < f", arg=first
        )
        new_first, new_last, _ = grid_window(pg)
        assert new_first < first and new_first <= story_query(pg) <= new_last
    OUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(OUT / "explorer-long-text.png"), full_page=True)
    assert errors == []
    pg.close()
