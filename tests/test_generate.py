"""Generation: the KV cache gives the same tokens, sampling is reproducible, streaming."""

import pytest
import torch

import glassformer as gf
from glassformer.cli import main
from glassformer.generate import generate

from conftest import RTOL_REORDERED, assert_same_greedy, build, tiny_decoder, tiny_encoder, tiny_llama


@pytest.fixture(scope="module", params=["gpt", "llama"])
def model(request):
    make = tiny_decoder if request.param == "gpt" else tiny_llama
    return build(make(context_length=48))


@pytest.mark.parametrize("prompt_len", [1, 5, 20])
def test_cached_greedy_equals_uncached(model, prompt_len):
    prompt = torch.randint(0, 97, (prompt_len,)).tolist()
    a = generate(model, prompt, max_new_tokens=40, temperature=0, use_cache=True)  # runs past the context
    b = generate(model, prompt, max_new_tokens=40, temperature=0, use_cache=False)
    assert len(a) == len(b) == prompt_len + 40
    window = model.config.context_length  # uncached, each step reads the last `window` tokens

    def logits_of(ids):
        with torch.no_grad():
            return model(torch.tensor([ids[-window:]]))[0]

    # equal up to a near-tie: a cached step multiplies other shapes, so rounding differs
    assert_same_greedy(a, b, logits_of, start=prompt_len, margin=1e-4 * float(logits_of(b).abs().max()))


def test_cached_sampling_equals_uncached_with_a_seed(model):
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    a = generate(model, prompt, max_new_tokens=15, temperature=0.9, top_k=20, seed=7)
    b = generate(model, prompt, max_new_tokens=15, temperature=0.9, top_k=20, seed=7, use_cache=False)
    assert torch.equal(a, b) and a.shape == (2, 18)


def test_seeded_sampling_is_reproducible_and_seeds_differ(model):
    kw = dict(max_new_tokens=30, temperature=1.5, top_p=0.95)
    assert generate(model, [1, 2], seed=1, **kw) == generate(model, [1, 2], seed=1, **kw)
    assert generate(model, [1, 2], seed=1, **kw) != generate(model, [1, 2], seed=2, **kw)


def test_cache_makes_each_token_cost_one_position(model, monkeypatch):
    lengths = []
    original = model.forward

    def spy(ids, *a, **k):
        lengths.append(ids.shape[1])
        return original(ids, *a, **k)

    monkeypatch.setattr(model, "forward", spy)
    generate(model, [1, 2, 3, 4], max_new_tokens=6, temperature=0)
    assert lengths == [4]  # the prompt through the modules, then every step in numpy (decode.py)
    lengths.clear()
    with model.hooks({"blocks.0.ln1": lambda t, n: None}):  # listening: every step through the modules
        generate(model, [1, 2, 3, 4], max_new_tokens=6, temperature=0)
    assert lengths == [4, 1, 1, 1, 1, 1]


def test_generation_refuses_bad_requests(model):
    with pytest.raises(gf.GlassformerError, match="context is 48"):
        generate(model, list(range(49)), max_new_tokens=1)
    with pytest.raises(gf.GlassformerError, match="encoder"):
        generate(build(tiny_encoder()), [1, 2], max_new_tokens=1)
    with pytest.raises(gf.GlassformerError, match="top_p"):
        generate(model, [1], top_p=0)
    with pytest.raises(gf.GlassformerError, match="seed"):
        generate(model, [1], seed=10**20)
    with pytest.raises(gf.GlassformerError, match="max_new_tokens"):
        generate(model, [1], max_new_tokens=-1)


def test_cli_generate_streams_and_crops(capsys, tmp_path):
    m = gf.load("random:lesson-tiny")
    gf.save(m, tmp_path / "m")
    assert (
        main(
            [
                "generate",
                "--model",
                str(tmp_path / "m"),
                "--prompt",
                "hello",
                "-n",
                "10",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("hello")
    code = main(["generate", "--model", str(tmp_path / "m"), "--prompt", "x" * 70])
    err = capsys.readouterr().err
    assert code == 2 and "70 tokens" in err and "64" in err and len(err.strip().splitlines()) == 1
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt", "x" * 70, "--crop", "-n", "3"]) == 0
    assert "cropped" in capsys.readouterr().err


def test_cpu_decoding_restores_threads(model):
    """Cached batch-1 steps on a CPU run PyTorch on one thread beside numpy's BLAS; the
    thread count comes back when the stream ends or is dropped."""
    from glassformer.generate import stream as token_stream

    before = torch.get_num_threads()
    stream = token_stream(model, [1, 2, 3], max_new_tokens=5, temperature=0)
    next(stream), next(stream)
    assert torch.get_num_threads() == 1
    stream.close()
    assert torch.get_num_threads() == before
    generate(model, [1, 2, 3], max_new_tokens=5, temperature=0)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_generation_takes_the_same_greedy_tokens_through_numpy_or_the_modules(family):
    """tests/test_cpu_decoder.py holds the numpy decoder's logits to the modules'; here a whole
    greedy generation goes through each and takes the same tokens, up to a near-tie."""
    from glassformer.cpu_decoder import suits

    model = build((tiny_llama if family == "llama" else tiny_decoder)(context_length=40))
    prompt = torch.randint(0, 97, (5,)).tolist()
    assert suits(model, 1)
    greedy = generate(model, prompt, max_new_tokens=30, temperature=0)
    with model.hooks({"blocks.0.attn.q": lambda t, n: None}):  # a listening hook: the modules decode
        assert not suits(model, 1)
        by_modules = generate(model, prompt, max_new_tokens=30, temperature=0)

    def logits_of(ids):
        with torch.no_grad():
            return model(torch.tensor([ids]))[0]

    scale = float(logits_of(by_modules).abs().max())
    assert_same_greedy(greedy, by_modules, logits_of, start=5, margin=RTOL_REORDERED * scale)


@pytest.mark.parametrize(
    "tokens", [[[1.5]], "abc", [[1, 2], [3]], [True, False], [[[1]]], [], torch.zeros(0, 3, dtype=torch.long)]
)
def test_generate_refuses_what_is_not_token_ids(tokens):
    model = gf.load("random:lesson-tiny")
    with pytest.raises(gf.GlassformerError, match=r"token ids|whole-number ids|prompt is empty"):
        gf.generate(model, tokens, max_new_tokens=1)
