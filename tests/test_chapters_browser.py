"""The explorer's chapter 5 and 7 cards in a real browser (Chromium via Playwright), on a phone's width."""

import os
import shutil
from pathlib import Path

import pytest

import glassformer as gf

from servers import running

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("GLASSFORMER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "Chromium is not installed (apt-get install chromium; make test does it as root)", allow_module_level=True
    )
playwright = pytest.importorskip("playwright.sync_api", reason="the browser is driven by Playwright (dev extra)")


@pytest.fixture(scope="module")
def page():
    with running({"adjectives": gf.load("lesson:adjectives")}) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 390, "height": 844})
        pg.errors = []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        pg.goto(url + "/")
        yield pg
        browser.close()


def test_the_embeddings_card_shows_arithmetic_refusals_and_a_direction(page):
    page.select_option("#embed-kind", "arithmetic")
    page.fill("#embed-expression", "fluffy - blue + red")
    page.click("#embed-form button")
    page.wait_for_selector("#embed-out table.nearest")
    assert page.eval_on_selector_all("#embed-out table.nearest tr", "els => els.length") == 11  # header + 10
    assert "[fluffy]" in page.text_content("#embed-out")  # named as left out
    page.fill("#embed-expression", "king - man")
    page.click("#embed-form button")
    page.wait_for_selector("#embed-out .error")
    assert "not in this model's vocabulary" in page.text_content("#embed-out .error")
    page.select_option("#embed-kind", "direction")
    page.fill("#embed-expression", "red - blue")
    page.fill("#embed-words", "red blue fluffy")
    page.click("#embed-form button")
    page.wait_for_selector("#embed-out svg rect")
    assert page.eval_on_selector_all("#embed-out svg rect", "els => els.length") == 3
    assert page.errors == []


def test_the_superposition_card_draws_the_pentagon(page):
    page.fill("#toy-sparsity", "0.9")
    page.click("#toy-form button")
    page.wait_for_selector("#toy-out svg", timeout=120_000)
    assert "5 of 5 features kept" in page.text_content("#toy-out")
    assert page.eval_on_selector_all("#toy-out svg line", "els => els.length") == 5  # an arrow per feature
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    assert page.errors == []
