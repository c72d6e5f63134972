"""The shipped lesson models teach what their lessons say, and were made from today's
lessons (a changed corpus without `make lessons` fails here)."""

import json

import pytest
import torch

import glassformer as gf
from glassformer import lessons
from glassformer.inputs import encode_batch
from glassformer.lab import heads, showcase, survey, switch_off
from glassformer.lab.edit import ablate_head
from glassformer.train.data import prepare

from conftest import run_cli


@pytest.mark.parametrize("name", sorted(lessons.LESSONS))
def test_shipped_model_was_trained_on_todays_lesson(name):
    meta = json.loads((lessons.model_dir(name) / "config.json").read_text())["meta"]
    assert meta["data"] == f"lesson:{name}"
    settings = lessons.get(name).TRAIN_DEFAULTS
    fresh = prepare(f"lesson:{name}", seed=meta.get("seed", 1337))
    assert meta["fingerprint"] == fresh.fingerprint, f"lesson:{name} changed since its model was made: make lessons"
    assert meta["step"] <= settings["steps"]


@pytest.fixture(scope="module")
def adjectives_model():
    return gf.load("lesson:adjectives")


def noun_shares(model, layer: int, head: int, seed: int) -> list[list[float]]:
    """For each noun with 2-3 adjectives in 300 held-out sentences, the weight head (layer,
    head) puts on each of its own adjectives."""
    sents = lessons.adjectives.sentences(300, seed)
    ids, _ = switch_off.lesson_nouns(model, 300, seed)
    _, cache = model.run_with_cache(ids, names=f"blocks.{layer}.attn.pattern")
    P = cache[f"blocks.{layer}.attn.pattern"][:, head]  # [B, T, S]
    shares = []
    for b, sent in enumerate(sents):
        for i, (_, pos, _) in enumerate(sent):
            adjs = [j for j, (_, p, owner) in enumerate(sent) if p == "ADJ" and owner == i]
            if pos == "NOUN" and len(adjs) >= 2:
                shares.append(P[b, i, adjs].tolist())
    return shares


# Measured on the shipped model (fp32, CPU), held-out sentence seeds 2024, 7 and 99: see
# each test for the spread; the thresholds are the issue's, well inside what was measured.
SEEDS = [2024, 7, 99]


@pytest.mark.parametrize("seed", SEEDS)
def test_the_head_shown_first_is_the_one_the_nouns_need(adjectives_model, seed):
    """Switched off, the showcase head moves the word after a noun at least half as much as
    the head that moves it most: measured KL 2.01-2.10 against 3.04-3.14 for layer 0 head
    2 (which looks mostly at the nearest adjective), a ratio of 0.66-0.67 over these seeds."""
    model = adjectives_model
    shown = showcase.showcase_head(model, encode_batch(model, lessons.adjectives.EXAMPLE))
    ids, nouns = switch_off.lesson_nouns(model, 300, seed)
    every = [(layer, head) for layer in range(model.config.n_layers) for head in range(model.config.n_heads)]
    kl = switch_off.switch_off_kl(model, ids, every, nouns).view(model.config.n_layers, -1)
    assert kl[shown.layer, shown.head] >= 0.5 * kl.max(), f"shown {kl[shown.layer, shown.head]:.3f}, max {kl.max():.3f}"
    assert "switched off it moves the word after the noun by KL" in shown.why  # it says both numbers


@pytest.mark.parametrize("seed", SEEDS)
def test_the_adjective_head_gathers_every_adjective_of_its_noun(adjectives_model, seed):
    """Nouns with 2-3 adjectives put >= 0.8 of the shown head's attention on their own
    adjectives (0.906-0.907 measured), and each adjective gets at least half an equal share
    (1/2k): on average by its place in the phrase (three: 0.36 / 0.32 / 0.26 first to
    last; two: 0.48 / 0.38), and for >= 90% of the nouns one by one (1.00 measured)."""
    model = adjectives_model
    shown = showcase.showcase_head(model, encode_batch(model, lessons.adjectives.EXAMPLE))
    shares = noun_shares(model, shown.layer, shown.head, seed)
    own = sum(sum(s) for s in shares) / len(shares)
    assert own >= 0.8, f"nouns put {own:.2f} of their attention on their own adjectives"
    fair = sum(min(s) * len(s) >= 0.5 for s in shares) / len(shares)
    assert fair >= 0.9, f"only {fair:.2f} of nouns give every adjective half an equal share"
    for k in (2, 3):  # by place in the phrase: the first adjective as much as the last
        rows = torch.tensor([s for s in shares if len(s) == k])
        assert (rows.mean(0) * k >= 0.5).all(), f"{k} adjectives: mean shares {rows.mean(0).tolist()}"


def test_a_heads_weights_alone_say_nouns_look_for_adjectives(adjectives_model):
    """The QK circuit read from the weights, no sentence: token embeddings through the
    head's norm, times W_Q, times W_K transposed against the same for every key token
    (positions left out: the lesson model's rotary turn is not applied). Some head ranks
    adjectives as the 3 best keys of >= 90% of the nouns (the shipped model's layer 0
    head 3: all 8)."""
    model = adjectives_model
    words = lessons.adjectives
    tok = model.tokenizer
    nouns = [tok.token_id(w) for w in words.NOUNS]
    adjectives = {tok.token_id(w) for w in words.ADJECTIVES}
    known = torch.tensor([tok.token_id(w) for w in words.WORDS])  # not [UNK]
    best = 0.0
    for layer in range(model.config.n_layers):
        attn = model.block(layer).attn
        X = model.block(layer).ln1(model.embed.W_E.weight[known]).detach()
        for head in range(model.config.n_heads):
            q = X @ attn.W_Q[head].detach()
            k = X @ attn.W_K[attn.kv_head(head)].detach()
            if attn.b_Q is not None:
                q, k = q + attn.b_Q[head].detach(), k + attn.b_K[attn.kv_head(head)].detach()
            scores = q @ k.T  # [query word, key word]
            top = [known[scores[known.tolist().index(n)].topk(3).indices].tolist() for n in nouns]
            best = max(best, sum(set(t) <= adjectives for t in top) / len(nouns))
    assert best >= 0.9, f"the best head ranks adjectives top 3 for only {best:.0%} of nouns"


def test_only_a_head_that_reads_every_adjective_gets_the_next_word_right(adjectives_model):
    """The word after a noun follows the balance of ALL its adjectives: where three are
    mixed (two of one kind, one of the other), a rule that reads any one or two of them is
    right at most about 2/3 of the time. The model is right >= 0.9 of the time there
    (1.00 measured), and with the shown head switched off it does no better than such a
    rule (<= 0.75; 0.63 measured)."""
    model = adjectives_model
    A = lessons.adjectives
    shown = showcase.showcase_head(model, encode_batch(model, A.EXAMPLE))
    with_head = A.group_accuracy(model, n=600, seed=2024, mixed_three=True)
    assert with_head >= 0.9, f"the model is right on {with_head:.2f} of mixed three-adjective nouns"
    with model.hooks(ablate_head(model, shown.layer, shown.head)):
        without = A.group_accuracy(model, n=600, seed=2024, mixed_three=True)
    assert without <= 0.75, f"without layer {shown.layer} head {shown.head} still right on {without:.2f}"


@pytest.fixture(scope="module")
def induction_model():
    return gf.load("lesson:induction")


@pytest.mark.parametrize("segment", [5, 9, 13, 17, 23])
def test_induction_model_continues_second_copies_of_any_length(induction_model, segment):
    """Segments of one length at random places after random prefixes and gaps: no fixed
    offset finds the token to copy, only an induction head does."""
    accuracy = lessons.induction.copy_accuracy(induction_model, segment, n=200, seed=2024)
    assert accuracy >= 0.8, f"segments of {segment}: {accuracy:.2f} of second-copy tokens predicted"


def test_induction_model_has_a_previous_token_head_then_an_induction_head(induction_model, capsys):
    found = survey.detect_all(induction_model)
    layer, _, score = heads.strongest(found.tables["induction"])
    assert layer == 1 and score >= 0.5, f"induction head in layer {layer}, score {score:.2f}"
    prev_layer, _, prev = heads.strongest(found.tables["previous-token"])
    assert prev_layer == 0 and prev >= heads.STRONG, f"previous-token head in layer {prev_layer}, {prev:.2f}"
    code, out, _ = run_cli(capsys, "heads", "--model", "lesson:induction")
    assert code == 0 and "induction head: layer 1" in out and "previous-token head: layer 0" in out


@pytest.mark.parametrize("name", sorted(lessons.LESSONS))
def test_a_lesson_is_one_file_that_offers_the_protocol_and_its_shipped_model(name):
    """lessons.Lesson: what a new lesson file must define; the registry finds it, `make
    lessons` trains it, the explorer opens on its example, showcase.SHOWCASES finds its head."""
    from glassformer.lab.showcase import SHOWCASES
    from glassformer.server.slots import EXAMPLES

    lesson = lessons.get(name)
    assert lesson.NAME == name and lesson.EXAMPLE and lesson.WORDS
    assert lesson.SHOWCASE in SHOWCASES
    assert {"preset", "steps"} <= set(lesson.TRAIN_DEFAULTS)
    assert EXAMPLES[f"lesson:{name}"] == lesson.EXAMPLE
    assert (lessons.model_dir(name) / "model.safetensors").is_file()
    model = gf.load(f"lesson:{name}")
    assert lessons.spoken_by(model.tokenizer) is lesson
    assert lessons.spoken_by(gf.load("random:lesson-tiny").tokenizer) is None


def test_a_toy_lesson_is_found_and_refused_as_a_transformer():
    assert "superposition" in lessons.TOYS and "superposition" not in lessons.LESSONS
    with pytest.raises(gf.GlassformerError, match="glassformer superposition"):
        lessons.get("lesson:superposition")
