"""Looking inside: names, caches, hooks, ablation, patching, attribution, detectors, lens."""

import math

import pytest
import torch

import glassformer as gf
from glassformer.hooks import HOOK_TABLE
from glassformer.lab import heads
from glassformer.lab.attribution import final_norm_direction, head_logit_attribution
from glassformer.lab.edit import ablate_head, patch
from glassformer.lab.lens import logit_lens
from glassformer.lab.neurons import neuron_logit_attribution, neuron_tokens, neurons_toward_guess, top_neurons

from conftest import FAMILIES, RTOL_REORDERED, assert_close, build, maxdiff, tiny_decoder

B, T = 2, 7


def expected_shape(words: str, model) -> tuple:
    c = model.config
    size = {
        "batch": B,
        "1": 1,
        "head": c.n_heads,
        "kv_head": c.n_kv_heads,
        "query": T,
        "key": T,
        "d_head": c.d_head,
        "d_model": c.d_model,
        "d_mlp": c.d_mlp,
        "vocab": c.vocab_size,
    }
    return tuple(size[w.strip()] for w in words.split(","))


@pytest.mark.parametrize("family, kind", [("gpt", "GPT"), ("bert", "BERT"), ("llama", "Llama")])
def test_every_documented_name_fires_with_its_shape(family, kind):
    model = build(FAMILIES[family]())
    ids = torch.randint(0, 97, (B, T))
    _, cache = model.run_with_cache(ids, names=lambda n: True)
    documented = set()
    for pattern, shape, fires_on, _ in HOOK_TABLE:
        names = [pattern.format(i=i) for i in range(model.config.n_layers)] if "{i}" in pattern else [pattern]
        for name in names:
            if kind in fires_on:
                documented.add(name)
                assert name in cache, f"{name} did not fire on {kind}"
                assert tuple(cache[name].shape) == expected_shape(shape, model), name
            else:
                assert name not in cache, f"{name} fired on {kind} but is documented for {fires_on}"
    assert documented == set(cache.names()), "an activation fires that the table does not document"


def test_cached_pattern_equals_pattern_recomputed_from_q_and_k(decoder):
    ids = torch.randint(0, 97, (B, T))
    _, c = decoder.run_with_cache(ids, names=["blocks.1.attn.q", "blocks.1.attn.k", "blocks.1.attn.pattern"])
    q, k = c["blocks.1.attn.q"], c["blocks.1.attn.k"]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    assert (torch.softmax(scores, -1) - c["blocks.1.attn.pattern"]).abs().max() < 1e-6


def test_filtered_cache_holds_only_what_was_asked(decoder):
    ids = torch.randint(0, 97, (1, T))
    _, c = decoder.run_with_cache(ids, names="blocks.*.attn.pattern")
    assert c.names() == ["blocks.0.attn.pattern", "blocks.1.attn.pattern"]
    _, c = decoder.run_with_cache(ids, names=["embed", "blocks.1.mlp.*"])
    assert c.names() == ["embed", "blocks.1.mlp.pre", "blocks.1.mlp.post", "blocks.1.mlp.out"]
    _, c = decoder.run_with_cache(ids, names=lambda n: n.endswith("resid_mid"))
    assert c.names() == ["blocks.0.resid_mid", "blocks.1.resid_mid"]
    _, c = decoder.run_with_cache(ids)
    assert len(c) == 0
    with pytest.raises(gf.GlassformerError, match="no activation"):
        decoder.run_with_cache(ids, names="blocks.*.attn.weights")
    with pytest.raises(KeyError, match="was not kept"):
        c["embed"]
    _, c = decoder.run_with_cache(ids, names="embed", device="cpu")
    assert c["embed"].device.type == "cpu"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hooks_returning_none_leave_outputs_bit_identical(family):
    model = build(FAMILIES[family]())
    ids = torch.randint(0, 97, (B, T))
    inside = ("attn.dots", "attn.scores", "attn.pattern", "attn.z")
    outside = [n for n in model.hook_names() if not n.endswith(inside)]
    with torch.no_grad():
        plain, explicit = model(ids), model(ids, explicit=True)
        seen = []
        # listening outside the heads keeps the fused attention: bit-identical to a plain run
        with model.hooks({n: lambda t, name: seen.append(name) for n in outside}):
            assert torch.equal(model(ids), plain)
        # listening inside a head takes that layer's explicit path: bit-identical to it
        with model.hooks({"*": lambda t, name: seen.append(name)}):
            hooked = model(ids)
        after = model(ids)
    assert torch.equal(explicit, hooked) and torch.equal(plain, after)
    assert len(seen) == len(outside) + len(model.hook_names())
    assert all(not p.fns for p in model.hook_points.values()), "hooks must come off after the block"


def test_zero_ablation_equals_removing_that_heads_delta_e_by_hand(decoder):
    ids = torch.randint(0, 97, (B, T))
    layer, head = 1, 2
    with torch.no_grad():
        with decoder.hooks(ablate_head(decoder, layer, head)):
            ablated = decoder(ids)

        attn = decoder.blocks[layer].attn
        kept = {}

        def remove_by_hand(out, name):
            return out - attn.head_outputs(kept["z"])[:, head]  # ΔE minus this head's share

        with decoder.hooks(
            {
                f"blocks.{layer}.attn.z": lambda z, n: kept.update(z=z),
                f"blocks.{layer}.attn.out": remove_by_hand,
            }
        ):
            by_hand = decoder(ids)
        plain = decoder(ids)
    assert_close(ablated, by_hand, rtol=RTOL_REORDERED)
    assert maxdiff(ablated, plain) > 100 * RTOL_REORDERED * plain.abs().max()  # and the head mattered


def test_mean_ablation_uses_the_reference_mean(decoder):
    ids = torch.randint(0, 97, (B, T))
    hooks = ablate_head(decoder, 0, 1, mode="mean", reference=ids)
    _, c = decoder.run_with_cache(ids, names="blocks.0.attn.z")
    with decoder.hooks(hooks):
        _, c2 = decoder.run_with_cache(ids, names="blocks.0.attn.z")
    mean = c["blocks.0.attn.z"][:, 1].mean(dim=(0, 1))
    assert_close(c2["blocks.0.attn.z"][:, 1], mean.expand(B, T, -1), rtol=RTOL_REORDERED)
    assert torch.equal(c2["blocks.0.attn.z"][:, 0], c["blocks.0.attn.z"][:, 0])


@pytest.mark.parametrize("names", [lambda n: True, "blocks.0.resid_pre"])
def test_patching_from_run_b_reproduces_run_b(decoder, names):
    a, b = torch.randint(0, 97, (1, T)), torch.randint(0, 97, (1, T))
    logits_b, cache_b = decoder.run_with_cache(b, names=lambda n: True)
    with torch.no_grad(), decoder.hooks(patch(decoder, cache_b, names)):
        patched = decoder(a)
    assert_close(patched, logits_b, rtol=RTOL_REORDERED)


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_head_attribution_adds_up_to_the_logit(family):
    model = build(FAMILIES[family]())
    ids = torch.randint(0, 97, (1, T))
    token, L = 11, model.config.n_layers
    dla = head_logit_attribution(model, ids, token)  # [L, H]
    assert dla.shape == (L, model.config.n_heads)
    names = ["embed", f"blocks.{L - 1}.resid_post"] + [f"blocks.{i}.mlp.out" for i in range(L)]
    names += ["pos_embed"] if model.config.positions == "learned" else []
    logits, c = model.run_with_cache(ids, names=names)
    final = c[f"blocks.{L - 1}.resid_post"][0, -1]
    direction, centre = final_norm_direction(model, final, token)

    def through(x):
        return float(((x - x.mean()) if centre else x).detach() @ direction.detach())

    rest = through(c["embed"][0, -1] + (c["pos_embed"][0, -1] if "pos_embed" in c else 0))
    for i in range(L):
        b_O = model.blocks[i].attn.b_O
        rest += through(c[f"blocks.{i}.mlp.out"][0, -1] + (b_O if b_O is not None else 0))
    bias = getattr(model.ln_final, "bias", None)
    if bias is not None:
        rest += float((bias @ model.W_U[:, token]).detach())
    # a sum of L·H + L + 1 shares, each rounded at its own size: the tolerance scales with them
    assert_close(dla.sum().item() + rest, logits[0, -1, token].item(), rtol=RTOL_REORDERED,
                 atol=RTOL_REORDERED * float(dla.abs().sum()))  # fmt: skip


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_neuron_attributions_add_up_to_each_mlps_share_of_the_logit(family):
    """Summed over a layer's neurons, the attributions are that MLP's ΔE (less its output
    bias) read through the same frozen final norm."""
    model = build(FAMILIES[family]())
    ids = torch.randint(0, 97, (1, T))
    token, L = 11, model.config.n_layers
    per_neuron = neuron_logit_attribution(model, ids, token)  # [L, d_mlp]
    assert per_neuron.shape == (L, model.config.d_mlp)
    names = [f"blocks.{L - 1}.resid_post"] + [f"blocks.{i}.mlp.out" for i in range(L)]
    _, c = model.run_with_cache(ids, names=names)
    direction, centre = final_norm_direction(model, c[f"blocks.{L - 1}.resid_post"][0, -1], token)
    for i in range(L):
        out = c[f"blocks.{i}.mlp.out"][0, -1]
        bias = model.block(i).mlp.down.bias
        out = out - (bias if bias is not None else 0)
        share = float((((out - out.mean()) if centre else out) @ direction).detach())
        assert_close(per_neuron[i].sum().item(), share, rtol=RTOL_REORDERED,
                     atol=RTOL_REORDERED * float(per_neuron[i].abs().sum()))  # fmt: skip


def test_the_neurons_toward_the_guess_are_the_top_attributions_to_the_likeliest_token():
    model = build(FAMILIES["llama"]())
    ids = torch.randint(0, 97, (1, T))
    best, toward = neurons_toward_guess(model, ids, k=4)
    with torch.no_grad():
        probs = model(ids)[0, -1].softmax(-1)
    assert best[0][0] == int(probs.argmax())
    assert_close(best[0][1], float(probs.max()), rtol=0, atol=RTOL_REORDERED)  # a probability: scale 1
    shares = neuron_logit_attribution(model, ids, best[0][0])
    # compared as numbers, not rounded to 5 places (two values either side of a rounding edge differ)
    assert_close([v for _, _, v, _ in toward], shares.flatten().topk(4).values, rtol=RTOL_REORDERED)
    assert_close([v for _, _, v, _ in toward], [shares[layer, n] for layer, n, _, _ in toward], rtol=RTOL_REORDERED)


def test_detectors_find_planted_heads():
    model = build(tiny_decoder(n_layers=1, n_heads=3))
    ids = heads.random_repeats(model, n_each=2, lengths=(5, 9))
    T_ = ids.shape[1]
    targets = heads.induction_targets(ids)  # [B, T, S]

    def plant(pattern, name):  # head 0: the previous token; head 1: position 0; head 2: induction
        p = torch.zeros_like(pattern)
        p[:, 0, torch.arange(1, T_), torch.arange(T_ - 1)] = 1.0
        p[:, 0, 0, 0] = 1.0
        p[:, 1, :, 0] = 1.0
        p[:, 2] = torch.where(targets.any(-1, keepdim=True), targets.float(), torch.eye(T_))
        return p

    with model.hooks({"blocks.0.attn.pattern": plant}):
        prev = heads.previous_token(model, ids)
        first = heads.first_token(model, ids)
        induction = heads.induction(model, ids)
    assert prev[0, 0] > 0.95 and prev[0, 1] < 0.05
    assert first[0, 1] == 1.0 and first[0, 0] < 0.1  # only query 0 sees position 0 as "previous"
    assert induction[0, 2] == 1.0 and induction[0, 0] < 0.2
    assert heads.strongest(prev)[:2] == (0, 0) and heads.strongest(induction)[:2] == (0, 2)


def test_induction_targets_point_after_the_earlier_copy():
    ids = torch.tensor([[7, 1, 2, 3, 9, 1, 2, 3]])
    t = heads.induction_targets(ids)[0]
    assert [int(t[q].nonzero()[0]) if t[q].any() else None for q in range(8)] == [None] * 5 + [2, 3, 4]


def test_a_detector_that_cannot_be_scored_is_skipped_and_no_weak_head_is_named(capsys):
    from glassformer.cli import main

    assert main(["heads", "--model", "random:lesson-tiny", "--text", "abcdefg"]) == 0
    out = capsys.readouterr().out
    assert "duplicate-token: not scored (no token repeats in this text)" in out
    assert "induction: not scored" in out and "previous-token:" in out  # the others still ran
    assert "previous-token: no head reaches 0.4" in out  # a random model has no head that qualifies


def test_the_induction_head_is_learned_not_built_in():
    """The shipped induction model scores high, the same shape freshly initialised does not."""
    trained = gf.load("lesson:induction")
    random = build(trained.config, seed=1)
    random.tokenizer = trained.tokenizer
    best_trained = heads.strongest(heads.induction(trained))[2]
    best_random = heads.strongest(heads.induction(random))[2]
    assert best_trained >= 0.5 and best_random < 0.1, (best_trained, best_random)


def test_logit_lens_last_layer_is_the_model_output(decoder):
    ids = torch.randint(0, 97, (1, T))
    rows = logit_lens(decoder, ids, k=3)
    assert [r.layer for r in rows] == ["embed", "0", "1"]
    with torch.no_grad():
        logits = decoder(ids)[0]
    probs = torch.softmax(logits, -1)
    # the lens reads the last layer another way round: its top 3 are the model's, up to a tie
    assert_close(rows[-1].probs, probs.topk(3, dim=-1).values, rtol=0, atol=RTOL_REORDERED)
    assert_close(rows[-1].probs, probs.gather(-1, rows[-1].ids), rtol=0, atol=RTOL_REORDERED)


def test_neurons_fire_and_write(decoder):
    ids = torch.randint(0, 97, (1, T))
    found = top_neurons(decoder, ids, position=-1, k=5)
    _, c = decoder.run_with_cache(ids, names="blocks.*.mlp.post")
    layer, index, act = found[0]
    assert act == pytest.approx(c[f"blocks.{layer}.mlp.post"][0, -1, index].item())
    # the hardest by size, with its sign: a SwiGLU/GELU neuron can fire negative
    assert abs(act) == max(c[f"blocks.{i}.mlp.post"][0, -1].abs().max().item() for i in range(2))
    writes = neuron_tokens(decoder, layer, index, k=4)
    assert len(writes) == 4 and writes[0][1] >= writes[-1][1]
    with pytest.raises(gf.GlassformerError, match="out of range"):
        neuron_tokens(decoder, 5, 0)


def test_cli_heads_lens_neurons(capsys, tmp_path):
    from glassformer.cli import main

    gf.save(gf.load("random:lesson-tiny"), tmp_path / "m")
    assert main(["heads", "--model", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    for kind in ("previous-token", "duplicate-token", "induction", "first-token"):
        assert f"\n{kind}: " in out  # its table
    assert "the heads whose score reaches 0.4, strongest first:" in out
    assert main(["lens", "hello", "--model", str(tmp_path / "m"), "-k", "2", "--position", "all"]) == 0
    out = capsys.readouterr().out
    assert "embed:" in out and out.count("after [") == 5
    assert main(["lens", "hello", "--model", str(tmp_path / "m")]) == 0  # the last position, by default
    out = capsys.readouterr().out
    assert out.count("after [") == 1 and "after [o] (position 4)" in out
    assert "the embed row reads the token's own embedding" in " ".join(out.split())  # why odd rows appear
    assert main(["neurons", "hello", "--model", str(tmp_path / "m"), "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count(", neuron ") == 6  # the 3 firing hardest, then the 3 pushing hardest toward the guess
    assert "the model's own next-token guess here: [" in out and "push hardest toward [" in out
    for command in ("lens", "neurons"):  # matrices held in bf16, the stream in fp32: products still meet
        assert main([command, "hello", "--model", str(tmp_path / "m"), "-k", "2", "--precision", "bf16"]) == 0
    assert "push hardest toward [" in capsys.readouterr().out
    assert main(["neurons", "--model", str(tmp_path / "m"), "--neuron", "x"]) == 2
    assert "LAYER.INDEX" in capsys.readouterr().err


def test_readme_documents_every_name():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, shape, fires_on, what in HOOK_TABLE:
        assert f"| `{name}` | {shape} | {fires_on} | {what} |" in readme, name


def test_every_head_over_the_threshold_is_named_strongest_first():
    from glassformer.lab.survey import Detection

    table = torch.tensor([[0.10, 0.456, 0.398], [0.975, 0.20, 0.428]])
    (line,) = Detection({"adjective-noun": table}).summary()
    assert line == "adjective-noun heads: layer 1, head 0 (0.975); layer 0, head 1 (0.456); layer 1, head 2 (0.428)"
    (line,) = Detection({"induction": table * 0.4}).summary()
    assert line == "induction: no head reaches 0.4 (best: layer 1, head 0, 0.390)"
