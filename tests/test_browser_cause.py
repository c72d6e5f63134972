"""The laboratory in a real browser (Debian's Chromium via Playwright): switching a head
off changes the next-token card, the patching map and the circuit card draw what the API
answers."""

import httpx
import pytest
from test_browser import count, next_probs, open_page

import glassformer as gf

from servers import running

pytestmark = pytest.mark.browser
BAR_PROBS = "els => els.map(e => +e.dataset.prob)"


@pytest.fixture(scope="module")
def browser():
    import playwright.sync_api

    with playwright.sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def lesson():
    with running({"adjectives": gf.load("lesson:adjectives")}) as url:
        yield url


def test_switching_a_head_off_changes_the_next_token_card(browser, lesson):
    example = httpx.get(f"{lesson}/api/models", timeout=60).json()[0]["example"]
    pg = open_page(browser)
    pg.goto(lesson + "/")
    pg.wait_for_selector("#attend .key-row")
    pg.wait_for_selector("#next .bar-row")
    shown_before = next_probs(pg)
    assert pg.is_hidden("#ablated")

    # the head that moves this text's next token most (the lesson's model may be retrained: ask, do not assume)
    def ablated(layer: int, head: int) -> dict:
        body = {"model": "adjectives", "text": example, "heads": [[layer, head]], "rows": 8}
        return httpx.post(f"{lesson}/api/ablate", json=body, timeout=60).json()

    answer, layer, head = max(((ablated(L, H), L, H) for L in range(2) for H in range(4)), key=lambda a: a[0]["kl"])
    pg.check("#off-mode")  # a click on a thumbnail now switches that head off
    thumb = f'#thumbs canvas[data-layer="{layer}"][data-head="{head}"]'
    pg.click(thumb)
    pg.wait_for_selector("#next-after .bar-row")
    after = pg.eval_on_selector_all("#next-after .bar-row", BAR_PROBS)
    before = pg.eval_on_selector_all("#next-before .bar-row", BAR_PROBS)
    assert after == [x["prob"] for x in answer["after"]]
    assert before[0] == pytest.approx(shown_before[0], abs=1e-4)  # "before" is the card's own distribution
    # the card really changed: the likeliest token's probability moved (KL > 0.001 nats)
    assert answer["kl"] > 1e-3 and abs(answer["top"]["after"] - before[0]) > 1e-3
    assert "off" in pg.get_attribute(thumb, "class")
    count(pg, "#thumbs canvas.changed", len(answer["changed"]))  # the later heads that moved are marked
    assert "compare_next_token" in pg.text_content("#python")

    pg.click("#all-on")  # and back on
    pg.wait_for_selector("#ablated", state="hidden")
    assert pg.errors == []
    pg.close()


def test_the_story_switch_and_the_patch_and_circuit_cards(browser, lesson):
    pg = open_page(browser)
    pg.goto(lesson + "/")
    pg.wait_for_selector("#attend .key-row")
    layer, head = int(pg.get_attribute("#story", "data-layer")), int(pg.get_attribute("#story", "data-head"))
    pg.click("#switch-off")
    pg.wait_for_selector("#next-after .bar-row")
    assert f"layer {layer} head {head}" in pg.text_content("#ablated-note")
    assert pg.text_content("#switch-off") == "switch this head back on"

    text = pg.input_value("#text")
    words = text.split()
    pg.fill("#corrupt", " ".join([*words[:-1], "lake" if words[-1] != "lake" else "forest"]))
    pg.click("#patch-run")
    pg.wait_for_selector("#patch-map td")
    count(pg, "#patch-map td", 2 * 4)  # the lesson's 2 layers × 4 heads

    pg.click("#circuit-run")
    pg.wait_for_selector("#circuit li")
    assert "left out" in pg.text_content("#circuit")
    assert pg.errors == []
    pg.close()
