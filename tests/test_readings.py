"""Readings a learner can trust (issue 24): one vocabulary for E, ΔE read as a direction,
signed neurons, sinks and negative scores said out loud, a training time said up front."""

import re

import pytest
import torch

from conftest import run_cli

SMALL = dict(preset="lesson-tiny", d_model=32, n_layers=1, batch_size=8, lr=3e-3, warmup=2, eval_batches=2)


def text_file_for_training(tmp_path):
    from glassformer.lessons import adjectives

    path = tmp_path / "text.txt"
    path.write_text(adjectives.text(2000, seed=3))
    return path


def test_training_says_how_long_it_will_take_before_it_is_done(tmp_path, capsys):
    from glassformer.train import TrainConfig, train
    from glassformer.train.loop import ESTIMATE_STEPS

    seen = []
    settings = TrainConfig(
        data=str(text_file_for_training(tmp_path)), out=str(tmp_path / "run"), steps=20, eval_every=5, **SMALL
    )
    train(settings, progress=False, on_estimate=seen.append)
    assert len(seen) == 1, seen
    e = seen[0]
    # said early: after the first step and the timed ones, with the rest still to come
    assert e.after_step == 1 + ESTIMATE_STEPS and e.steps_left == 20 - e.after_step
    assert e.evaluations == 3  # at steps 10, 15 and 20 (the one at 5 came before the estimate)
    assert e.seconds_left >= e.steps_left * e.seconds_per_step > 0


def test_the_train_command_prints_the_estimate(tmp_path, capsys):
    argv = ["train", "--data", "lesson:adjectives", "--out", tmp_path / "run", "--preset", "lesson-tiny"]
    argv += ["--d-model", "32", "--n-layers", "1", "--steps", "10", "--eval-every", "5", "--eval-batches", "2", "-q"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "estimated time left:" in out + err and "for 4 more steps" in out + err


# --- one E, ΔE as a direction --------------------------------------------------------------------
def test_explain_names_the_stream_and_the_normed_copy_and_compares_delta_e_with_the_stream(capsys):
    import torch

    import glassformer as gf
    from glassformer.lab.explain import walk_head

    text = gf.lessons.adjectives.EXAMPLE
    code, out, _ = run_cli(capsys, "explain", text, "--model", "random:lesson-tiny", "--layer", "1", "--head", "0")
    assert code == 0
    flat = " ".join(out.split())
    model = gf.load("random:lesson-tiny")
    walk = walk_head(model, text, 1, 0)
    q = int(out.split("(position ")[1].split(")")[0])
    stream, normed, delta = (float(t[q].norm()) for t in (walk.stream, walk.normed.tensor, walk.dE.tensor))
    # the E rows are the stream ΔE is added to, and norm(E) rows are what the head reads
    torch.testing.assert_close(walk.E.tensor, walk.stream)
    assert "E the residual stream entering block 1" in flat and "norm(E) E through this block's norm" in flat
    assert f"|ΔE| = {delta:.2f} is added to the residual stream E of" in flat
    assert f"|E| = {stream:.2f}: {delta / stream:.2f} of its length" in flat
    assert f"|norm(E)| = {normed:.2f}" in flat


def test_delta_e_read_through_w_u_is_its_share_of_the_logits():
    """The direct effect adds up: every head's ΔE, the MLPs and the embeddings, read the
    same way, sum to the logits (an RMSNorm model has no bias to leave out)."""
    import torch

    from glassformer.lab.readings import direct_logit_effect

    from conftest import build, tiny_llama

    model = build(tiny_llama())
    ids = torch.randint(0, 97, (1, 9))
    L = model.config.n_layers
    names = ["blocks.0.resid_pre", *(f"blocks.{i}.{n}" for i in range(L) for n in ("attn.z", "mlp.out"))]
    logits, cache = model.run_with_cache(ids, names=names + [f"blocks.{L - 1}.resid_post"])
    final = cache[f"blocks.{L - 1}.resid_post"][0, -1]
    parts = [cache["blocks.0.resid_pre"][0, -1]] + [cache[f"blocks.{i}.mlp.out"][0, -1] for i in range(L)]
    with torch.no_grad():
        for i in range(L):
            z = cache[f"blocks.{i}.attn.z"][0, :, -1]  # [H, D]
            parts += [z[h] @ model.block(i).attn.W_O[h] for h in range(model.config.n_heads)]
        total = sum(direct_logit_effect(model, p, final) for p in parts)
    # each part is at most a few units; the sum is exact up to float32 rounding of 20 terms
    torch.testing.assert_close(total, logits[0, -1], rtol=1e-4, atol=1e-4)


def test_the_adjective_heads_delta_e_points_along_its_adjectives_value(capsys):
    """'What did fluffy add to creature?': ΔE is the weighted sum of the values, so its
    cosine with the value of the adjective that takes most of the weight is high, whatever
    head the retrained lesson model grows."""
    import glassformer as gf
    from glassformer.inputs import encode_batch
    from glassformer.lab.explain import walk_head
    from glassformer.lab.readings import read_delta
    from glassformer.lab.showcase import choose_head, query_to_follow

    model = gf.load("lesson:adjectives")
    text = gf.lessons.adjectives.EXAMPLE
    chosen = choose_head(model, encode_batch(model, text))
    walk = walk_head(model, text, chosen.layer, chosen.head)
    q = query_to_follow(model, walk)
    reading = read_delta(model, walk, q)
    cos = {word: c for _, word, c in reading.cosines}
    assert set(cos) == {"fluffy", "blue"}  # the adjectives up to "creature"; "verdant" comes later
    top = max(cos, key=lambda w: float(walk.pattern.tensor[q, walk.tokens.index(w)]))
    # a noun puts most of its weight on its adjectives, so ΔE leans toward the favourite's value
    assert cos[top] > 0.5, reading.cosines
    assert len(reading.up) == len(reading.down) == 5 and reading.up[0][1] > 0 > reading.down[0][1]
    code, out, _ = run_cli(capsys, "explain", text)
    flat = " ".join(out.split())
    assert code == 0 and "this ΔE pushes up" in flat and "and down" in flat
    assert f"“{top}” (position {walk.tokens.index(top)}) {cos[top]:+.2f}" in flat


# --- sinks, negative scores, detectors ---------------------------------------------------------------
def planted_walk(pattern, dots, tokens):
    """A HeadWalk whose pattern and grid are given (the notes read only those)."""
    import torch

    from glassformer.lab.explain import HeadWalk, Step

    T = len(tokens)
    mask = torch.zeros(T, T).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    s = Step("", "", torch.zeros(T, 4), "")
    grid = lambda t: Step("", "", t, "")  # noqa: E731
    return HeadWalk(tokens, 0, 0, 0, True, s, s, s, s, s, grid(dots), grid(mask), grid(pattern), s, s,
                    torch.ones(T, 4), torch.zeros(T, 4), None)  # fmt: skip


def test_a_query_parked_on_the_first_token_is_called_a_sink_and_negative_scores_are_explained():
    import torch

    from glassformer.lab.readings import detector_note, scores_note, sink_note

    tokens = ["The", " capital", " of", " France", " is"]
    pattern = torch.eye(5)
    pattern[1:] = 0
    pattern[1:, 0] = 0.9
    pattern[1:, 1] += 0.1
    dots = torch.full((5, 5), -10.0)
    walk = planted_walk(pattern, dots, tokens)
    assert "a first-token head (0.90" in detector_note(walk)
    note = sink_note(walk, 4)
    assert note and note.startswith("attention sink: 0.90 of this query's weight goes to “The”")
    assert sink_note(walk, 0) is None  # the first query has nowhere else to look: that is the mask
    walk.pattern.tensor[4] = torch.tensor([0.05, 0.05, 0.0, 0.9, 0.0])
    # the average over queries still says first-token; the query followed is said to look elsewhere
    assert "averaged over the queries: a first-token head" in detector_note(walk, 4)
    said = detector_note(walk, 4)
    assert said.endswith("The query followed, “ is”, puts most weight on “ France” (position 3): 0.90")
    assert detector_note(walk, 1).endswith("puts most weight on “The” (position 0): 0.90")
    walk.pattern.tensor[4] = torch.tensor([0.1, 0.1, 0.1, 0.6, 0.1])
    assert sink_note(walk, 4) is None
    assert "every one of this query's 5 dot products is negative" in scores_note(walk, 4)
    assert "softmax cares only about their differences" in scores_note(walk, 4)
    walk.dots.tensor[4, 3] = 2.0
    assert scores_note(walk, 4).startswith("4 of this query's 5")
    walk.dots.tensor[4] = 1.0
    assert scores_note(walk, 4) is None


def test_a_special_token_sink_in_an_encoder():
    import torch

    from glassformer.lab.readings import sink_note

    tokens = ["[CLS]", "a", "cat", "[SEP]"]
    pattern = torch.zeros(4, 4)
    pattern[:, 3] = 0.85
    pattern[:, 2] = 0.15
    walk = planted_walk(pattern, torch.zeros(4, 4), tokens)
    walk.causal = False
    walk.mask.tensor.zero_()
    assert "goes to “[SEP]”, the first or a special token" in sink_note(walk, 1)


def test_a_previous_token_head_is_named_by_the_detectors():
    import torch

    from glassformer.lab.readings import detector_note

    T = 6
    pattern = torch.zeros(T, T)
    pattern[0, 0] = 1
    for q in range(1, T):
        pattern[q, q - 1] = 1
    note = detector_note(planted_walk(pattern, torch.zeros(T, T), list("abcdef")))
    assert "a previous-token head (1.00" in note and "first-token" not in note.split(";")[0][-30:]


# --- neurons ----------------------------------------------------------------------------------------
def test_a_negative_neuron_pushes_what_its_row_would_push_down():
    import torch

    from glassformer.lab.neurons import neuron_tokens

    from conftest import build, tiny_llama

    model = build(tiny_llama())
    model.tokenizer = None
    row = model.block(1).mlp.down.weight[7].float() * model.ln_final.weight.float() @ model.W_U.float()  # [V]
    up = neuron_tokens(model, 1, 7, k=3, sign=+1.0)
    flipped = neuron_tokens(model, 1, 7, k=3, sign=-1.0)
    assert [int(t) for t, _ in up] == row.topk(3).indices.tolist()
    assert [int(t) for t, _ in flipped] == (-row).topk(3).indices.tolist()  # written negated: the bottom rises
    torch.testing.assert_close(torch.tensor([v for _, v in flipped]), (-row).topk(3).values)


def test_neurons_prints_signed_activations_and_each_ones_share_of_the_guess(capsys):
    code, out, err = run_cli(capsys, "neurons", "a fluffy blue creature", "--model", "random:lesson-tiny", "-k", "4")
    assert code == 0, err
    lines = out.splitlines()
    fired = [line for line in lines if line.startswith("  layer") and " adds " not in line]
    toward = [line for line in lines if line.startswith("  layer") and " adds " in line]
    assert len(fired) == len(toward) == 4
    assert all(re.search(r"activation +[+-]\d", line) for line in fired + toward)  # signed
    guess = out.split("the model's own next-token guess here: [")[1].split("]")[0]
    assert all(f"to [{guess}]" in line for line in toward)  # each one's share of the guess, named
    assert "tokens are word pieces" in out and "given its sign" in out


# --- what the README says about SmolLM2 --------------------------------------------------------------
@pytest.mark.slow
def test_the_readmes_smollm2_readings_hold(capsys):
    """The README quotes these numbers; they are held to the output (SmolLM2's weights are fixed)."""
    import glassformer as gf
    from glassformer.lab.explain import walk_head
    from glassformer.lab.neurons import neuron_tokens, neurons_toward_guess
    from glassformer.lab.readings import read_delta

    from conftest import ROOT

    readme = " ".join((ROOT / "README.md").read_text().split())
    model = gf.load("smollm2")
    walk = walk_head(model, "The capital of France is", 23, 4)
    r = read_delta(model, walk, 4)
    said = f'|ΔE| = {r.delta:.2f} added to " is"\'s |E| = {r.stream:.2f} ({r.delta / r.stream:.2f} of its length)'
    assert said in readme and f"|norm(E)| = {r.normed:.2f}" in readme
    assert r.up[0][0] == " France" and f"[ France] {r.up[0][1]:+.2f}" in readme
    ids = torch.tensor([model.tokenizer.encode("The largest planet in our solar system is")])
    best, toward = neurons_toward_guess(model, ids, k=5)
    assert model.tokenizer.token_texts([best[0][0]]) == [" Jupiter"] and f"(0.{round(best[0][1] * 100):02d})" in readme
    layer, neuron, share, act = toward[0]
    pushes = [t for t, _ in neuron_tokens(model, layer, neuron, 6, sign=act)]
    assert " Jupiter" in pushes and act < 0  # read with its sign, the neuron's story is astronomy
    assert f"layer {layer} neuron {neuron} at {act:.2f} ({share:+.2f} to the logit)".replace("-", "−") in readme
    ids = model.tokenizer.encode("Michael Jordan plays the sport of")
    out = model.tokenizer.decode(gf.generate(model, ids, max_new_tokens=6, temperature=0)[len(ids) :])
    assert f'continues "{out.strip()}"' in readme


def test_the_report_says_what_explain_ends_with_for_the_head_it_opens_on():
    import json

    import glassformer as gf
    from glassformer.lab.explain import walk_head
    from glassformer.lab.readings import read_delta
    from glassformer.lab.showcase import query_to_follow
    from glassformer.viz.page import report_html

    model = gf.load("random:lesson-tiny")
    text = "a fluffy blue creature"
    page = report_html(model, text, layer=1, head=2)
    data = json.loads(page.split('type="application/json">')[1].split("</script>")[0])
    walk = walk_head(model, text, 1, 2)
    q = query_to_follow(model, walk)
    assert data["reading"]["layer"] == 1 and data["reading"]["head"] == 2 and data["reading"]["query"] == q
    assert read_delta(model, walk, q).sentences(walk.tokens[q])[1] in data["reading"]["lines"]  # through W_U
    assert 'id="reading"' in page and "drawReading" in page


def test_a_low_temperature_underflows_rather_than_cuts_and_the_answer_says_which():
    import glassformer as gf
    from glassformer.server.answers import next_tokens

    model = gf.load("random:lesson-tiny")
    logits = torch.linspace(0, -40, model.config.vocab_size)  # a spread of 40 logits, like a real model's
    cold = next_tokens(model, logits, 0.1, None, None, rows=5)
    # exp(-x / 0.1) falls below float32's smallest number (~1e-45) once x > ~10.4
    assert cold["cut"] == 0 and cold["underflow"] > 0 and cold["kept"] + cold["underflow"] == cold["vocab_size"]
    cut = next_tokens(model, logits, 0.1, 3, None, rows=5)
    assert cut["kept"] == 3 and cut["cut"] == cold["kept"] - 3
    warm = next_tokens(model, logits, 1.0, None, None, rows=5)
    assert warm["underflow"] == warm["cut"] == 0
