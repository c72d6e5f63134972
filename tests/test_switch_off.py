"""Switching heads off: the `heads` column and the showcase rule (issue 23 item 4, issue 24
item 6). The lesson's own figures are in test_lessons.py."""

import pytest
import torch

from glassformer.lab import heads, showcase, survey, switch_off
from glassformer.lab.edit import ablate_head
from glassformer.viz.text import render_detection

from conftest import build, run_cli, tiny_decoder, tiny_encoder, tiny_llama


@pytest.mark.parametrize("family", [tiny_decoder, tiny_llama])
def test_one_batched_pass_equals_switching_each_head_off_alone(family):
    """Row block k of the stacked batch loses head k only: the same KL as a run of its own
    with ablate_head (float32 sums over 97 tokens: 1e-5 of a KL of order 0.1-1)."""
    model = build(family(n_layers=3))
    ids = torch.randint(0, 97, (3, 12), generator=torch.Generator().manual_seed(0))
    chosen = [(0, 1), (2, 3), (1, 0), (2, 1)]
    batched = switch_off.switch_off_kl(model, ids, chosen)
    with torch.inference_mode():
        clean = model(ids).log_softmax(-1)
        for (layer, head), kl in zip(chosen, batched):
            with model.hooks(ablate_head(model, layer, head)):
                off = model(ids).log_softmax(-1)
            direct = (clean.exp() * (clean - off)).sum(-1).mean()
            torch.testing.assert_close(kl, direct, rtol=1e-5, atol=1e-6)
    assert batched.min() > 0  # a random head always moves something


def test_heads_prints_the_switch_off_column_on_the_lesson(capsys):
    code, out, _ = run_cli(capsys, "heads", "--model", "lesson:adjectives")
    assert code == 0
    assert "switched off (z set to zero): mean KL of the next-token distribution, over 200 lesson sentences" in out
    # the shipped model: layer 0 heads 2 and 3 carry the adjectives (test_lessons.py)
    assert "the head the next token needs most: layer 0, head " in out


def test_a_model_with_many_heads_switches_off_only_the_detectors_best():
    model = build(tiny_decoder(n_layers=3, n_heads=12, d_model=48))  # 36 heads > FULL_SWEEP
    found = survey.detect_all(model)
    measured = ~found.switch_off.isnan()
    assert 0 < int(measured.sum()) <= switch_off.CANDIDATES * len(found.tables) < 36
    text = render_detection(found, "tiny", model.config, "repeated random segments")
    assert "    ·" in text and "only the 4 best heads of each detector" in text


def test_an_encoder_says_why_it_has_no_switch_off_column():
    found = survey.detect_all(build(tiny_encoder()))
    assert found.switch_off is None and "encoder predicts no next token" in found.switch_off_on


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_showcase_rule_picks_a_head_the_next_token_needs(seed):
    """One rule for every model: of the CANDIDATES best pattern heads, the best pattern
    among those that move the next token at least half as much as the one that moves it
    most; the same call answers the CLI and the explorer, so they cannot disagree."""
    model = build(tiny_decoder(n_layers=3), seed=seed)
    ids = torch.randint(0, 97, (1, 10), generator=torch.Generator().manual_seed(seed))
    shown = showcase.showcase_head(model, ids)
    P = heads._patterns(model, ids)[:, 0, :, -1, 1:-1].amax(-1)  # as the rule scores them
    top = [divmod(i, P.shape[1]) for i in P.flatten().argsort(descending=True)[: switch_off.CANDIDATES].tolist()]
    last = torch.zeros(ids.shape, dtype=torch.bool)
    last[:, -1] = True
    kls = switch_off.switch_off_kl(model, ids, top, last)
    k = top.index((shown.layer, shown.head))
    assert kls[k] >= kls.max() / 2 and "switched off it moves the next token by KL" in shown.why
    assert all(kls[j] < kls.max() / 2 for j in range(k))  # every better pattern matters less
    # the note names the query it is about: a first look may follow another
    key = int(heads._patterns(model, ids)[shown.layer, 0, shown.head, -1, 1:-1].argmax()) + 1
    assert f"last token, “<{int(ids[0, -1])}>”, looks sharply at one earlier token, “<{int(ids[0, key])}>”" in shown.why


def test_the_api_gives_the_switch_off_column_as_json():
    import json

    from glassformer.server import answers

    model = build(tiny_decoder(n_layers=3, n_heads=12, d_model=48))
    body = json.loads(json.dumps(answers.detection(survey.detect_all(model)), allow_nan=False))
    column = body["switch_off"]
    assert len(column) == 3 and len(column[0]) == 12 and "repeated random segments" in body["switch_off_on"]
    assert any(v is None for row in column for v in row) and any(v is not None for row in column for v in row)
