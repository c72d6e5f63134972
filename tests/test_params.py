import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import glassformer as gf

# 3Blue1Brown's tally of GPT-3, matrix by matrix
VIDEO_GPT3 = {
    "Embedding": 617_558_016,
    "Key": 14_495_514_624,
    "Query": 14_495_514_624,
    "Value": 14_495_514_624,
    "Output": 14_495_514_624,
    "Up-projection": 57_982_058_496,
    "Down-projection": 57_982_058_496,
    "Unembedding": 617_558_016,
}


def test_gpt3_weight_rows_match_the_video():
    tally = gf.count_params(gf.PRESETS["gpt3-175b"])
    for kind, count in VIDEO_GPT3.items():
        assert tally[kind] == count, kind
    assert sum(VIDEO_GPT3.values()) == 175_181_291_520


@pytest.mark.parametrize("name", [n for n in gf.PRESETS if n not in gf.SHAPE_ONLY])
def test_total_equals_built_model(name):
    config = gf.PRESETS[name]
    with torch.device("meta"):  # shapes only: no memory, no time
        model = gf.Transformer(config)
    assert gf.count_params(config).total == sum(p.numel() for p in model.parameters())


def test_gpt2_total_equals_hugging_face():
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        hf = GPT2LMHeadModel(GPT2Config())
    assert gf.count_params(gf.PRESETS["gpt2"]).total == sum(p.numel() for p in hf.parameters())
    assert gf.count_params(gf.PRESETS["gpt2"]).total == 124_439_808


@settings(max_examples=60, deadline=None)
@given(
    causal=st.booleans(),
    norm=st.sampled_from(["pre", "post"]),
    normalization=st.sampled_from(["layernorm", "rmsnorm"]),
    mlp=st.sampled_from(["plain", "gated"]),
    positions=st.sampled_from(["learned", "rotary", "none"]),
    bias=st.booleans(),
    tied=st.booleans(),
    heads=st.sampled_from([(1, 1), (2, 1), (4, 2), (6, 3), (3, 3)]),
    d_head=st.integers(1, 6).map(lambda n: 2 * n),
    n_layers=st.integers(1, 3),
    d_mlp=st.integers(1, 40),
    type_vocab=st.integers(0, 3),
)
def test_total_equals_built_model_for_any_config(
    causal, norm, normalization, mlp, positions, bias, tied, heads, d_head, n_layers, d_mlp, type_vocab
):
    config = gf.ModelConfig(
        vocab_size=50,
        context_length=16,
        d_model=24,
        n_heads=heads[0],
        n_kv_heads=heads[1],
        d_head=d_head,
        n_layers=n_layers,
        d_mlp=d_mlp,
        causal=causal,
        norm=norm,
        normalization=normalization,
        mlp=mlp,
        positions=positions,
        bias=bias,
        tied_unembedding=tied,
        type_vocab_size=type_vocab,
    )
    with torch.device("meta"):
        model = gf.Transformer(config)
    assert gf.count_params(config).total == sum(p.numel() for p in model.parameters())


def test_smollm2_total():
    assert gf.count_params(gf.PRESETS["smollm2-135m"]).total == 134_515_008


def test_table_says_tied_and_total():
    table = gf.count_params(gf.PRESETS["gpt2"]).table()
    assert "counted once" in table
    assert table.splitlines()[-1].startswith("Total") and "124,439,808" in table
