"""The explorer's story says what `explain` says (issue 24): E and norm(E) named, ΔE read as
a direction, the detectors' word on the head, sinks and underflow explained, and no note
left over from the previous sentence. Screenshots of the story card go to test-output/."""

import httpx
import pytest
from test_browser import OUT, browser, open_page, story, wait_for_story  # noqa: F401 (browser: a fixture)

import glassformer as gf
from glassformer.lab.explain import walk_head
from glassformer.lab.readings import detector_note, read_delta

from servers import running

pytestmark = pytest.mark.browser
LESSON = gf.lessons.adjectives.EXAMPLE
WIDTHS = {"1280": {"width": 1280, "height": 1000}, "390": {"width": 390, "height": 844}}


def snap(pg, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    pg.locator("#story").screenshot(path=str(OUT / name))


def says_what_explain_says(pg, model, text: str) -> None:
    """The story's notes are the library's sentences for the head and query it shows."""
    drawn = story(pg)
    walk = walk_head(model, text, drawn["layer"], drawn["head"])
    reading = read_delta(model, walk, drawn["query"])
    assert pg.text_content("#head-does") == detector_note(walk, drawn["query"])
    lines = pg.eval_on_selector_all("#delta p", "els => els.map(e => e.textContent)")
    assert lines == reading.sentences(walk.tokens[drawn["query"]])
    bars = " ".join(pg.eval_on_selector_all("#delta .bar-row", "els => els.map(e => e.textContent)"))
    assert "|E| stream" in bars and "|ΔE| this head" in bars
    assert ("|norm(E)| read" in bars) == (walk.normed is not None)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_adjective_lessons_story_reads_delta_e_as_explain_does(browser, width):  # noqa: F811
    model = gf.load("lesson:adjectives")
    with running({"adjectives": model}) as url:
        pg = open_page(browser, WIDTHS[width])
        pg.goto(url + "/")
        pg.wait_for_selector("#showcase >> text=adjective head", timeout=300_000)
        wait_for_story(pg, 8)
        pg.wait_for_selector("#delta-note >> text=creature")
        says_what_explain_says(pg, model, LESSON)
        assert "cosine of this ΔE with each adjective's own value direction" in pg.text_content("#delta")
        assert "|ΔE| / |E| for every token" in pg.text_content("#story")
        assert pg.errors == []
        snap(pg, f"story-adjectives-{width}.png")
        pg.close()


def test_a_new_sentence_gets_its_own_showcase_note(browser):  # noqa: F811
    """The note named the old sentence's position ("position 7" on a 7-token sentence);
    after "run" it must be the new sentence's own."""
    models = {"tiny": gf.load("random:lesson-tiny")}
    first, second = "a fluffy blue creature roamed the verdant forest", "the cat"
    with running(models) as url:
        ask = [
            httpx.post(f"{url}/api/showcase", json={"model": "tiny", "text": t}, timeout=120).json()
            for t in (first, second)
        ]
        assert ask[0]["why"] != ask[1]["why"], "the two sentences share a note; the test cannot tell"
        pg = open_page(browser)
        pg.goto(url + "/")
        wait_for_story(pg, len(first))
        pg.wait_for_selector(f"#showcase >> text={ask[0]['why']}")
        pg.fill("#text", second)
        pg.press("#text", "Enter")
        wait_for_story(pg, len(second))
        pg.wait_for_selector(f"#showcase >> text={ask[1]['why']}")
        assert ask[0]["why"] not in pg.text_content("#showcase")
        drawn = story(pg)
        assert (drawn["layer"], drawn["head"]) == (ask[1]["layer"], ask[1]["head"])  # nobody picked a head
        says_what_explain_says(pg, models["tiny"], second)
        assert pg.errors == []
        pg.close()


@pytest.mark.slow
@pytest.mark.parametrize("width", WIDTHS)
def test_smollm2s_story_reads_delta_e_through_w_u_and_says_what_underflow_is(browser, width):  # noqa: F811
    model = gf.load("smollm2")
    text = "The capital of France is"
    with running({"smollm2": model}) as url:
        pg = open_page(browser, WIDTHS[width])
        pg.goto(url + "/")
        wait_for_story(pg, 5)
        pg.wait_for_selector("#showcase >> text=Showcase head", timeout=300_000)
        pg.wait_for_selector("#delta p >> text=read through the final norm and W_U")
        pg.wait_for_timeout(500)  # a late showcase answer may still move the story
        says_what_explain_says(pg, model, text)
        snap(pg, f"story-smollm2-{width}.png")
        pg.eval_on_selector("#temperature", "e => { e.value = '0.1'; e.dispatchEvent(new Event('input')); }")
        pg.wait_for_selector("#sample >> text=underflows to 0 in float32")
        assert "cut" not in pg.text_content("#sample").split("·")[0]  # no top-k or top-p: nothing was cut
        assert pg.errors == []
        pg.close()
