import pytest
import torch

import glassformer as gf
from glassformer.cli import main
from glassformer.generate import next_token_probs
from conftest import build, tiny_decoder, tiny_encoder


@pytest.fixture(scope="module")
def model():
    m = build(tiny_decoder(context_length=48))
    m.tokenizer = None
    return m


@pytest.mark.parametrize("prompt_len", [1, 5, 20])
def test_cached_greedy_equals_uncached(model, prompt_len):
    prompt = torch.randint(0, 97, (prompt_len,)).tolist()
    a = model.generate(prompt, max_new_tokens=40, temperature=0, use_cache=True)  # runs past the context
    b = model.generate(prompt, max_new_tokens=40, temperature=0, use_cache=False)
    assert a == b and len(a) == prompt_len + 40


def test_cached_sampling_equals_uncached_with_a_seed(model):
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    a = model.generate(prompt, max_new_tokens=15, temperature=0.9, top_k=20, seed=7)
    b = model.generate(prompt, max_new_tokens=15, temperature=0.9, top_k=20, seed=7, use_cache=False)
    assert torch.equal(a, b) and a.shape == (2, 18)


def test_seeded_sampling_is_reproducible_and_seeds_differ(model):
    kw = dict(max_new_tokens=30, temperature=1.5, top_p=0.95)
    assert model.generate([1, 2], seed=1, **kw) == model.generate([1, 2], seed=1, **kw)
    assert model.generate([1, 2], seed=1, **kw) != model.generate([1, 2], seed=2, **kw)


def test_cache_makes_each_token_cost_one_position(model, monkeypatch):
    lengths = []
    original = model.forward

    def spy(ids, *a, **k):
        lengths.append(ids.shape[1])
        return original(ids, *a, **k)

    monkeypatch.setattr(model, "forward", spy)
    model.generate([1, 2, 3, 4], max_new_tokens=6, temperature=0)
    assert lengths == [4, 1, 1, 1, 1, 1]


def test_top_k_and_top_p_cut_the_distribution():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    p = next_token_probs(logits, top_k=2)
    assert (p[0, 2:] == 0).all() and abs(p.sum().item() - 1) < 1e-6
    full = torch.softmax(logits, -1)[0]
    p = next_token_probs(logits, top_p=float(full[0] + full[1] / 2))
    assert (p[0, :2] > 0).all() and (p[0, 2:] == 0).all()
    assert torch.equal(next_token_probs(logits, temperature=0), torch.tensor([[1.0, 0, 0, 0, 0]]))


def test_generation_refuses_bad_requests(model):
    with pytest.raises(gf.GlassformerError, match="context is 48"):
        model.generate(list(range(49)), max_new_tokens=1)
    with pytest.raises(gf.GlassformerError, match="encoder"):
        build(tiny_encoder()).generate([1, 2], max_new_tokens=1)
    with pytest.raises(gf.GlassformerError, match="top_p"):
        model.generate([1], top_p=0)


def test_cli_generate_streams_and_crops(capsys, tmp_path):
    m = gf.load("random:lesson-tiny")
    gf.save(m, tmp_path / "m")
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt", "hello", "-n", "10",
                 "--temperature", "0"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("hello")
    code = main(["generate", "--model", str(tmp_path / "m"), "--prompt", "x" * 70])
    err = capsys.readouterr().err
    assert code == 2 and "70 tokens" in err and "64" in err and len(err.strip().splitlines()) == 1
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt", "x" * 70, "--crop", "-n", "3"]) == 0
    assert "cropped" in capsys.readouterr().err
    code = main(["generate", "--model", "minilm", "--prompt", "hi"])
    assert code == 2 and "encoder" in capsys.readouterr().err


def test_decode_copy_of_w_u_follows_weight_changes():
    from glassformer.generate import decode_unembedding

    m = build(tiny_decoder())
    first = decode_unembedding(m)
    assert decode_unembedding(m) is first  # reused while the weights stand still
    with torch.no_grad():
        m.embed.W_E.weight.add_(1.0)  # tied: this is W_U too
    again = decode_unembedding(m)
    assert again is not first and torch.equal(again, m.W_U)
    prompt = [1, 2, 3]
    assert m.generate(prompt, max_new_tokens=12, temperature=0) == \
        m.generate(prompt, max_new_tokens=12, temperature=0, use_cache=False)  # fmt: skip


def test_cpu_decoding_restores_threads_and_matches_plain_products(model):
    """Cached batch-1 steps on a CPU run PyTorch on one thread with numpy's products; the
    thread count comes back when the stream ends or is dropped, and the logits agree."""
    from glassformer.generate import stream as token_stream
    from glassformer.linear import vector_products

    before = torch.get_num_threads()
    stream = token_stream(model, [1, 2, 3], max_new_tokens=5, temperature=0)
    next(stream), next(stream)
    assert torch.get_num_threads() == 1
    stream.close()
    assert torch.get_num_threads() == before
    model.generate([1, 2, 3], max_new_tokens=5, temperature=0)
    assert torch.get_num_threads() == before
    ids = torch.tensor([[4]])
    with torch.inference_mode():
        plain = model(ids)
        with vector_products():
            routed = model(ids)
    torch.testing.assert_close(routed, plain, rtol=1e-4, atol=1e-5)  # another summation order
