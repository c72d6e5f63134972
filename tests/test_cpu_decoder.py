"""The numpy decoder is a second forward pass: it must compute what the modules compute
for every config it says it implements, refuse every other, and know every config field."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import glassformer as gf
from glassformer.cpu_decoder import IMPLEMENTS, NumpyDecoder, implements, suits

from conftest import RTOL_REORDERED, assert_close, build


def test_every_config_field_is_decided_on():
    """A new ModelConfig field (another activation, norm placement, position kind...) must be
    listed in cpu_decoder.IMPLEMENTS before generation can take the fast path for it."""
    assert set(IMPLEMENTS) == {f.name for f in dataclasses.fields(gf.ModelConfig)}


@st.composite
def decoder_configs(draw) -> gf.ModelConfig:
    """Any decoder the numpy path says it implements: every listed value of every field."""
    kv_heads, group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    choices = {name: draw(st.sampled_from(sorted(allowed))) for name, allowed in IMPLEMENTS.items() if allowed}
    return gf.ModelConfig(
        **choices,
        vocab_size=draw(st.integers(5, 60)),
        context_length=24,
        n_heads=kv_heads * group,
        n_kv_heads=kv_heads,
        d_head=2 * draw(st.integers(1, 6)),
        d_model=draw(st.integers(4, 40)),
        n_layers=draw(st.integers(1, 3)),
        d_mlp=draw(st.integers(4, 50)),
        rope_base=draw(st.sampled_from([100.0, 10000.0])),
        norm_eps=draw(st.sampled_from([1e-5, 1e-6])),
    )


@settings(max_examples=40, deadline=None)
@given(config=decoder_configs(), prompt_len=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_the_decoder_computes_what_the_modules_compute(config, prompt_len, seed):
    model = build(config, seed=seed)
    assert suits(model, 1)
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, config.vocab_size, (1, prompt_len), generator=g)
    steps = torch.randint(0, config.vocab_size, (12,), generator=g).tolist()
    with torch.inference_mode():
        ours, theirs = model.new_cache(1), model.new_cache(1)
        model(prompt, cache=ours)
        model(prompt, cache=theirs)
        fast = NumpyDecoder(model, ours)
        for position, token in enumerate(steps, start=prompt_len):
            a = fast.logits(token, position)
            b = model(torch.tensor([[token]]), cache=theirs)[:, -1]
            # numpy's BLAS against PyTorch's kernels over random configs (up to 3 layers): the
            # same sums in another order; worst measured 3.8e-6 of the scale over `make
            # test-kernels`, so twice RTOL_REORDERED (5× that)
            assert_close(a, b, rtol=2 * RTOL_REORDERED, what=f"{config} step {position}:")


@pytest.mark.parametrize(
    "change",
    [{"norm": "post"}, {"causal": False, "type_vocab_size": 2}, {"type_vocab_size": 2}],
)
def test_what_it_does_not_implement_goes_through_the_modules(change):
    config = gf.ModelConfig(vocab_size=31, context_length=16, d_model=16, n_heads=2, n_layers=1, **change)
    assert not implements(config)
    assert not suits(build(config), 1)


def test_a_field_it_does_not_know_is_refused(monkeypatch):
    monkeypatch.delitem(IMPLEMENTS, "dropout")  # as if ModelConfig had grown a field
    assert not implements(gf.ModelConfig(vocab_size=31, context_length=16, d_model=16, n_heads=2, n_layers=1))


def test_not_on_a_batch_in_training_or_with_a_hook_listening():
    model = build(gf.ModelConfig(vocab_size=31, context_length=16, d_model=16, n_heads=2, n_layers=1))
    assert suits(model, 1) and not suits(model, 2)
    model.train()
    assert not suits(model, 1)
    model.eval()
    with model.hooks({"blocks.0.attn.q": lambda t, n: None}):
        assert not suits(model, 1)


def test_decoding_never_changes_the_models_own_tensors():
    """The joined W_Q|W_K|W_V and W_gate|W_up the numpy decoder multiplies by are its own
    copy (or a view where the model already stores them so): the model is not re-laid."""
    from glassformer.generate import generate

    from conftest import tiny_llama

    model = build(tiny_llama(context_length=40))
    before = {k: (v.data_ptr(), v.stride()) for k, v in model.state_dict().items()}
    generate(model, [1, 2, 3], max_new_tokens=5, temperature=0)
    assert {k: (v.data_ptr(), v.stride()) for k, v in model.state_dict().items()} == before
