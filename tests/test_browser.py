"""The explorer and the report in a real browser: Debian's Chromium, headless, via Playwright."""

import os
import shutil
from pathlib import Path

import httpx
import pytest

import glassformer as gf
from glassformer.tokenizer import CharTokenizer
from glassformer.viz.page import report_html

from servers import running

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("GLASSFORMER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "Chromium is not installed (apt-get install chromium; make test does it as root)",
        allow_module_level=True,
    )
playwright = pytest.importorskip("playwright.sync_api")

DEFAULT = "a fluffy blue creature roamed the verdant forest"
NASTY = 'a <script>alert("x")</script> "q" \'s\' 🐉 & <b>bold</b>'
OUT = Path(os.environ.get("GLASSFORMER_TEST_OUTPUT", Path(__file__).resolve().parents[1] / "test-output"))


@pytest.fixture(scope="module")
def server():
    chars = gf.load("random:lesson-tiny")
    chars.tokenizer = CharTokenizer.from_text(NASTY + DEFAULT + "abcdefghijklmnopqrstuvwxyz ")
    with running({"tiny": gf.load("random:lesson-tiny"), "chars": chars}) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-gpu",
                "--disable-component-update",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    pg = browser.new_page(viewport={"width": 1300, "height": 1600})
    pg.errors, pg.requests, pg.dialogs = [], [], []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    yield pg
    pg.close()


def grid_tokens(pg) -> list[str]:
    return pg.eval_on_selector_all("#grid .side-label", "els => els.map(e => e.textContent)")


def drawn_pattern(pg) -> list[list[float]]:
    """The pattern the page drew, as pattern[query][key], read back from the cells."""
    cells = pg.eval_on_selector_all(
        "#grid .cell", "els => els.map(e => [+e.dataset.q, +e.dataset.k, e.dataset.weight])"
    )
    n = int(len(cells) ** 0.5)
    out = [[0.0] * n for _ in range(n)]
    for q, k, w in cells:
        out[q][k] = float(w) if w not in (None, "") else 0.0
    return out


def wait_for_head(pg, layer, head):
    pg.wait_for_selector(f'#grid .grid[data-layer="{layer}"][data-head="{head}"]')


def test_explorer_loads_clean_and_stays_local(page, server):
    page.goto(server + "/")
    wait_for_head(page, 0, 0)
    page.wait_for_timeout(300)
    assert page.input_value("#text") == DEFAULT
    assert "".join(grid_tokens(page)).replace('" "', " ") == DEFAULT
    assert page.errors == [], page.errors
    leaving = [u for u in page.requests if not u.startswith(server) and not u.startswith("data:")]
    assert leaving == [], f"requests left localhost: {leaving}"
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / "explorer.png"), full_page=True)


def test_typing_a_sentence_redraws_everything(page, server):
    page.goto(server + "/")
    wait_for_head(page, 0, 0)
    page.fill("#text", "the cat sat")
    page.press("#text", "Enter")
    page.wait_for_function("document.querySelectorAll('#grid .side-label').length === 11")
    assert "".join(grid_tokens(page)).replace('" "', " ") == "the cat sat"
    assert page.eval_on_selector_all("#thumbs canvas", "els => els.length") == 8


def test_switching_layer_and_head_draws_what_the_api_returns(page, server):
    page.goto(server + "/")
    wait_for_head(page, 0, 0)
    first = drawn_pattern(page)
    page.select_option("#layer", "1")
    page.select_option("#head", "3")
    wait_for_head(page, 1, 3)
    api = httpx.post(f"{server}/api/head", json={"model": "tiny", "text": DEFAULT, "layer": 1, "head": 3}).json()
    drawn = drawn_pattern(page)
    assert drawn == api["pattern"]
    assert drawn != first
    page.click("#thumbs canvas >> nth=2")  # layer 0, head 2
    wait_for_head(page, 0, 2)
    api = httpx.post(f"{server}/api/head", json={"model": "tiny", "text": DEFAULT, "layer": 0, "head": 2}).json()
    assert drawn_pattern(page) == api["pattern"]


def test_temperature_slider_changes_the_distribution(page, server):
    page.goto(server + "/")
    wait_for_head(page, 0, 0)
    page.wait_for_selector("#next .bar-row")
    before = page.eval_on_selector_all("#next .bar-value", "els => els.map(e => e.textContent)")
    page.eval_on_selector("#temperature", "e => { e.value = '0.1'; e.dispatchEvent(new Event('input')); }")
    page.wait_for_function("document.querySelector('#sample').textContent.includes('0.10')")
    after = page.eval_on_selector_all("#next .bar-value", "els => els.map(e => e.textContent)")
    assert before != after and float(after[0]) > float(before[0])


def test_hostile_token_text_is_shown_as_text(page, server):
    page.goto(server + "/")
    wait_for_head(page, 0, 0)
    page.select_option("#model", "chars")
    wait_for_head(page, 0, 0)
    page.fill("#text", NASTY)
    page.press("#text", "Enter")
    page.wait_for_function(f"document.querySelectorAll('#grid .side-label').length === {len(NASTY)}")
    shown = "".join(grid_tokens(page)).replace('" "', " ")
    assert shown == NASTY
    assert page.dialogs == [] and page.query_selector("#grid b") is None and page.errors == []


def test_report_from_file_renders_its_grid(browser, tmp_path):
    model = gf.load("random:lesson-tiny")
    model.tokenizer = CharTokenizer.from_text(NASTY + DEFAULT)
    path = tmp_path / "report.html"
    path.write_text(report_html(model, NASTY), encoding="utf-8")
    pg = browser.new_page(viewport={"width": 1300, "height": 1400})
    errors, requests, dialogs = [], [], []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("request", lambda r: requests.append(r.url))
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.goto(path.as_uri())
    pg.wait_for_selector("#grid .cell")
    assert (
        "".join(pg.eval_on_selector_all("#grid .side-label", "els => els.map(e => e.textContent)")).replace('" "', " ")
        == NASTY
    )
    pg.hover("#grid .cell >> nth=5")
    assert "weight" in pg.text_content("#hover")
    pg.click("#heads button >> nth=2")
    assert pg.text_content("#which") == "layer 0, head 2"
    assert errors == [] and dialogs == [] and requests == [path.as_uri()]
    OUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(OUT / "report.png"), full_page=True)
    pg.close()
