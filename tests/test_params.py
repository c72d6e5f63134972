import pytest
import torch

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


def test_untied_and_biasless_variants_count_right():
    for changes in (dict(tied_unembedding=False), dict(bias=False), dict(learned_positions=False)):
        config = gf.ModelConfig(vocab_size=50, context_length=16, d_model=32, n_heads=2,
                                n_layers=3, **changes)  # fmt: skip
        model = gf.Transformer(config)
        assert gf.count_params(config).total == sum(p.numel() for p in model.parameters())


def test_table_says_tied_and_total():
    table = gf.count_params(gf.PRESETS["gpt2"]).table()
    assert "counted once" in table
    assert table.splitlines()[-1].startswith("Total") and "124,439,808" in table
