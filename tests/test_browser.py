"""The explorer and the report in a real browser: Debian's Chromium, headless, via Playwright."""

import os
import shutil
import threading
from pathlib import Path

import httpx
import pytest

import glassformer as gf
from glassformer import lessons
from glassformer.inputs import encode_batch
from glassformer.lab import showcase
from glassformer.server.app import create_app
from glassformer.tokenizer import CharTokenizer
from glassformer.viz.page import report_html

from servers import registry_of, running, serving

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("GLASSFORMER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "Chromium is not installed (apt-get install chromium; make test does it as root)",
        allow_module_level=True,
    )
playwright = pytest.importorskip("playwright.sync_api", reason="the browser is driven by Playwright (dev extra)")

DEFAULT = "a fluffy blue creature roamed the verdant forest"
NASTY = 'a <script>alert("x")</script> "q" \'s\' 🐉 & <b>bold</b>'
WARMING: list[threading.Thread] = []
OUT = Path(os.environ.get("GLASSFORMER_TEST_OUTPUT", Path(__file__).resolve().parents[1] / "test-output"))


@pytest.fixture(scope="module")
def server():
    chars = gf.load("random:lesson-tiny")
    chars.tokenizer = CharTokenizer.from_text(NASTY + DEFAULT + "abcdefghijklmnopqrstuvwxyz ")
    models = {"tiny": gf.load("random:lesson-tiny"), "chars": chars, "adjectives": gf.load("lesson:adjectives")}
    with running(models) as url:
        # the showcase head is found in the background; asking now means the page finds it known
        httpx.post(f"{url}/api/showcase", json={"model": "tiny", "text": DEFAULT}, timeout=120)
        warm = threading.Thread(
            target=httpx.post,
            args=(f"{url}/api/showcase",),
            kwargs={"json": {"model": "adjectives", "text": DEFAULT}, "timeout": 300},
        )
        warm.start()  # slow (the lesson's own sentences); the screenshots, last, wait for it
        WARMING.append(warm)
        yield url
        warm.join(timeout=300)


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


def open_page(browser, viewport=None):
    pg = browser.new_page(viewport=viewport or {"width": 1300, "height": 1000})
    pg.errors, pg.requests, pg.dialogs, pg.events = [], [], [], []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: (pg.requests.append(r.url), pg.events.append(("start", r.url))))
    pg.on("requestfinished", lambda r: pg.events.append(("end", r.url)))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    return pg


@pytest.fixture
def page(browser):
    pg = open_page(browser)
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


def story(pg) -> dict:
    """The story as drawn: its head and query, each key row's weight, each line's weight."""
    return pg.evaluate(
        """() => {
        const s = document.getElementById("story");
        return {
          layer: +s.dataset.layer, head: +s.dataset.head, query: +s.dataset.query,
          rows: [...document.querySelectorAll("#attend .key-row")].map(r => [+r.dataset.key, +r.dataset.weight,
                 r.dataset.masked === "true", r.querySelector(".dot").textContent]),
          lines: [...document.querySelectorAll("#attend line")].map(l => [+l.dataset.key, +l.dataset.weight]),
        };
      }"""
    )


def wait_for_head(pg, layer, head):
    pg.wait_for_selector(f'#grid .grid[data-layer="{layer}"][data-head="{head}"]')


def count(pg, selector: str, n: int) -> None:
    """Wait until `selector` matches n elements (a function, not an expression string: the
    page's CSP forbids eval, which Playwright uses for expressions)."""
    pg.wait_for_function("([s, n]) => document.querySelectorAll(s).length === n", arg=[selector, n])


def wait_for_story(pg, n_tokens: int):
    count(pg, "#attend .key-row", n_tokens)


def api_head(server, model, text, layer, head):
    body = {"model": model, "text": text, "layer": layer, "head": head}
    return httpx.post(f"{server}/api/head", json=body, timeout=60).json()


def next_probs(pg) -> list[float]:
    return pg.eval_on_selector_all("#next .bar-row", "els => els.map(e => +e.dataset.prob)")


def test_explorer_loads_clean_and_stays_local(page, server):
    page.goto(server + "/")
    wait_for_story(page, len(DEFAULT))
    page.wait_for_timeout(300)
    assert page.input_value("#text") == DEFAULT
    assert "".join(grid_tokens(page)).replace('" "', " ") == DEFAULT
    chips = page.eval_on_selector_all("#chips .chip .chip-text", "els => els.map(e => e.textContent)")
    assert "".join(chips).replace('" "', " ") == DEFAULT
    assert page.errors == [], page.errors
    leaving = [u for u in page.requests if not u.startswith(server) and not u.startswith("data:")]
    assert leaving == [], f"requests left localhost: {leaving}"
    # it starts on the showcase head, says why, and follows the query /api/head suggests
    # (the one `explain` follows)
    s = httpx.post(f"{server}/api/showcase", json={"model": "tiny", "text": DEFAULT}).json()
    suggested = api_head(server, "tiny", DEFAULT, s["layer"], s["head"])["query"]
    drawn = story(page)
    assert (drawn["layer"], drawn["head"], drawn["query"]) == (s["layer"], s["head"], suggested)
    assert s["why"] in page.text_content("#showcase")


def test_picking_a_query_token_redraws_the_story_for_it(page, server):
    page.goto(server + "/")
    wait_for_story(page, len(DEFAULT))
    page.click('#chips .chip[data-position="5"]')
    page.wait_for_selector('#story[data-query="5"]')
    drawn = story(page)
    api = api_head(server, "tiny", DEFAULT, drawn["layer"], drawn["head"])
    assert [w for _, w, _, _ in drawn["rows"]] == api["pattern"][5]
    assert [m for _, _, m, _ in drawn["rows"]] == api["mask"][5]
    assert all(dot == "−∞" for _, _, masked, dot in drawn["rows"] if masked)  # keys after the query
    assert dict(drawn["lines"]) == {k: api["pattern"][5][k] for k in range(6)}  # one line per visible key
    assert page.get_attribute('#chips .chip[data-position="5"]', "aria-pressed") == "true"
    assert "“f”" in page.text_content("#story-title") and "“f”" in page.text_content("#mlp-title")
    page.wait_for_selector("#mlp .neuron")
    # a cell of the grid picks its query too (video orientation: queries across the top)
    page.click('#grid .cell[data-q="2"][data-k="0"]')
    page.wait_for_selector('#story[data-query="2"]')
    assert [w for _, w, _, _ in story(page)["rows"]] == api["pattern"][2]


def test_the_mlp_card_follows_the_query_when_a_late_showcase_moves_it(browser):
    """The showcase head found after the first story (not warmed at start): the story moves
    to that head and to the query /api/head suggests for it, and the MLP card must follow.
    On the induction lesson layer 0 head 0 and the induction head suggest different queries."""
    model = gf.load("lesson:induction")
    text = gf.lessons.induction.EXAMPLE
    app = create_app(registry_of({"lesson:induction": model}), warm=False)
    s = showcase.showcase_head(model, encode_batch(model, text))  # asked here: the server must find it late
    with serving(app) as url:  # the page opens on the lesson's example
        queries = [api_head(url, "lesson:induction", text, *lh)["query"] for lh in [(0, 0), (s.layer, s.head)]]
        assert queries[0] != queries[1], "the showcase head does not move the query; the test cannot tell"
        pg = open_page(browser)
        pg.goto(url + "/")
        pg.wait_for_selector(f'#story[data-layer="{s.layer}"][data-head="{s.head}"][data-query="{queries[1]}"]')
        query = queries[1]
        token = pg.eval_on_selector(f'#chips .chip[data-position="{query}"] .chip-text', "e => e.textContent")
        pg.wait_for_function(
            "([t]) => document.getElementById('mlp-title').textContent.includes(t)", arg=[f"“{token}”"]
        )
        pg.close()


def test_switching_layer_and_head_draws_what_the_api_returns(page, server):
    page.goto(server + "/")
    wait_for_story(page, len(DEFAULT))
    first = drawn_pattern(page)
    # a head other than the one the page opened on (the showcase rule picks that one)
    opened = (int(page.input_value("#layer")), int(page.input_value("#head")))
    layer, head = (1, 3) if opened != (1, 3) else (1, 2)
    page.select_option("#layer", str(layer))
    page.select_option("#head", str(head))
    wait_for_head(page, layer, head)
    api = api_head(server, "tiny", DEFAULT, layer, head)
    drawn = drawn_pattern(page)
    assert drawn == api["pattern"]
    assert drawn != first
    page.click('#thumbs canvas[data-layer="0"][data-head="2"]')
    wait_for_head(page, 0, 2)
    assert drawn_pattern(page) == api_head(server, "tiny", DEFAULT, 0, 2)["pattern"]
    assert page.get_attribute("#grid .grid", "data-orientation") == "video"
    page.click("#flip")
    assert page.get_attribute("#grid .grid", "data-orientation") == "usual"
    assert "each row sums to 1" in page.text_content("#orientation")


def test_temperature_top_k_and_top_p_each_change_the_distribution(page, server):
    page.goto(server + "/")
    wait_for_story(page, len(DEFAULT))
    page.wait_for_selector("#next .bar-row")

    def move(selector, value):
        before = next_probs(page)
        page.eval_on_selector(selector, f"e => {{ e.value = '{value}'; e.dispatchEvent(new Event('input')); }}")
        page.wait_for_function(
            "before => JSON.stringify([...document.querySelectorAll('#next .bar-row')].map(e => +e.dataset.prob))"
            " !== JSON.stringify(before)",
            arg=before,
        )  # a function, not an expression: the page's CSP forbids eval, and Playwright would use it
        return before, next_probs(page)

    before, cold = move("#temperature", "0.1")
    assert cold[0] > before[0] and "0.10" in page.text_content("#temperature-value")
    _, cut = move("#top-k", "3")
    assert [p > 0 for p in cut] == [True] * 3 + [False] * (len(cut) - 3) and page.text_content("#top-k-value") == "3"
    assert page.eval_on_selector_all("#next .bar-row.cut", "els => els.length") == len(cut) - 3
    move("#temperature", "2")
    _, nucleus = move("#top-p", "0.1")
    assert 1 <= sum(p > 0 for p in nucleus) < 3 and abs(sum(nucleus) - 1) < 1e-3
    assert "have a probability above 0" in page.text_content("#sample")


def test_the_hover_line_clears_on_every_redraw(page, server):
    page.goto(server + "/")
    wait_for_story(page, len(DEFAULT))
    page.hover('#grid .cell[data-q="3"][data-k="1"]')
    assert "query “l” (3)" in page.text_content("#hover")
    page.fill("#text", "the cat sat")
    page.press("#text", "Enter")
    wait_for_story(page, len("the cat sat"))
    assert page.text_content("#hover") == ""
    page.hover('#scores .cell[data-q="2"][data-k="0"]')
    assert "dot product" in page.text_content("#hover")
    page.click('#chips .chip[data-position="1"]')  # a new query redraws the grids too
    page.wait_for_selector('#story[data-query="1"]')
    assert page.text_content("#hover") == ""
    assert page.eval_on_selector_all("#thumbs canvas", "els => els.length") == 8


def test_the_first_analysis_is_not_held_up_by_detectors(page, server):
    page.goto(server + "/")
    wait_for_story(page, len(DEFAULT))
    page.wait_for_selector("#mlp .neuron")
    page.wait_for_timeout(300)
    order = [(kind, url.split("/api/")[1].split("?")[0]) for kind, url in page.events if "/api/" in url]
    assert ("start", "heads") not in order, "detectors are scored on demand, not on load"
    assert order.index(("end", "analyze")) < order.index(("start", "head")) < order.index(("end", "head"))
    page.click("#detect")
    page.wait_for_selector("#detectors table.scores", timeout=120_000)
    order = [(kind, url.split("/api/")[1].split("?")[0]) for kind, url in page.events if "/api/" in url]
    assert order.index(("end", "head")) < order.index(("start", "heads"))
    kinds = page.eval_on_selector_all("#detectors h3", "els => els.map(e => e.textContent)")
    assert {"previous-token", "induction", "first-token"} <= set(kinds)
    page.click("#detectors table.scores td >> nth=5")  # layer 1, head 1: a score picks its head
    wait_for_head(page, 1, 1)


def test_unknown_words_are_marked_and_the_vocabulary_is_shown(page, server):
    page.goto(server + "/")
    wait_for_story(page, len(DEFAULT))
    page.select_option("#model", "adjectives")
    wait_for_story(page, 8)
    page.fill("#text", "a fluffy zebra roamed the forest")
    page.press("#text", "Enter")
    page.wait_for_selector("#chips .chip.unk")
    assert page.text_content("#chips .chip.unk .chip-word") == "zebra"
    assert page.get_attribute("#chips .chip.unk", "data-position") == "2"
    assert "zebra" in page.text_content("#unknown") and page.is_visible("#unknown")
    page.click("#vocab summary")
    words = page.eval_on_selector_all("#vocab-words .word", "els => els.map(e => e.textContent)")
    assert (
        "fluffy" in words
        and "zebra" not in words
        and f"{len(lessons.adjectives.WORDS)} words" in page.text_content("#vocab-title")
    )


def test_hostile_token_text_is_shown_as_text(page, server):
    page.goto(server + "/")
    wait_for_story(page, len(DEFAULT))
    page.select_option("#model", "chars")
    wait_for_story(page, len(DEFAULT))
    page.fill("#text", NASTY)
    page.press("#text", "Enter")
    count(page, "#grid .side-label", len(NASTY))
    shown = "".join(grid_tokens(page)).replace('" "', " ")
    assert shown == NASTY
    chips = page.eval_on_selector_all("#chips .chip-text", "els => els.map(e => e.textContent)")
    assert "".join(chips).replace('" "', " ") == NASTY
    assert page.dialogs == [] and page.query_selector("#story b, #chips b, #grid b") is None
    assert page.errors == []


def test_docs_work_offline(page, server):
    page.goto(server + "/docs")
    page.wait_for_selector("text=every layer's and head's attention pattern", timeout=30_000)
    assert page.get_by_text("/api/analyze", exact=True).first.is_visible()
    page.wait_for_timeout(300)
    leaving = [u for u in page.requests if not u.startswith(server) and not u.startswith("data:")]
    assert leaving == [], f"requests left 127.0.0.1: {leaving}"
    assert page.errors == [], page.errors  # a CSP violation would show here


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
    assert pg.text_content("#hover") == ""
    # the same legends as the explorer: weights 0..1, dot products centred on 0, masked cells
    assert pg.eval_on_selector_all(".legend", "els => els.length") == 2
    ticks = pg.eval_on_selector_all("#scores-legend .legend-ticks span", "els => els.map(e => e.textContent)")
    assert ticks[1] == "0" and ticks[0] == "−" + ticks[2].lstrip("+")
    assert pg.eval_on_selector_all("#grid .cell.masked", "els => els.length") == len(NASTY) * (len(NASTY) - 1) // 2
    assert errors == [] and dialogs == [] and requests == [path.as_uri()]
    OUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(OUT / "report.png"), full_page=True)
    pg.close()


@pytest.mark.parametrize(
    "name, viewport", [("desktop", {"width": 1300, "height": 900}), ("phone", {"width": 390, "height": 844})]
)
def test_layouts_fit_and_are_saved(browser, server, name, viewport):
    for thread in WARMING:
        thread.join(timeout=300)  # the adjectives lesson's showcase head is known by now
    pg = open_page(browser, viewport)
    pg.goto(server + "/")
    wait_for_story(pg, len(DEFAULT))
    pg.select_option("#model", "adjectives")
    wait_for_story(pg, 8)
    pg.wait_for_selector("#mlp .neuron")
    pg.wait_for_selector("#showcase >> text=adjective head")
    pg.wait_for_timeout(200)
    width = pg.evaluate("document.scrollingElement.scrollWidth")
    assert width <= viewport["width"], f"the page is {width} px wide on a {viewport['width']} px screen"
    cards = pg.eval_on_selector_all(".card", "els => els.map(e => e.getBoundingClientRect().right)")
    assert max(cards) <= viewport["width"]
    assert pg.errors == []
    OUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(OUT / f"explorer-{name}.png"), full_page=True)
    pg.close()
