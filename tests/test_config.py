import dataclasses

import pytest

import glassformer as gf


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(d_model=50, n_heads=4), "not divisible"),
        (dict(n_heads=0), "n_heads"),
        (dict(vocab_size=-3), "vocab_size"),
        (dict(norm="middle"), "norm"),
        (dict(activation="swish"), "activation"),
        (dict(dropout=1.5), "dropout"),
        (dict(norm_eps=0), "norm_eps"),
        (dict(d_head=-1), "d_head"),
        (dict(causal="yes"), "causal"),
        (dict(context_length=2.5), "context_length"),
    ],
)
def test_invalid_values_raise_clear_errors(changes, words):
    with pytest.raises(ValueError, match=words):
        gf.ModelConfig(**changes)


def test_defaults_and_frozen():
    c = gf.ModelConfig(d_model=96, n_heads=6)
    assert c.d_head == 16 and c.d_mlp == 384
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.d_model = 3  # frozen


def test_presets_have_familiar_shapes():
    assert gf.PRESETS["gpt3-175b"].d_head == 128 and gf.PRESETS["gpt3-175b"].n_heads == 96
    assert gf.PRESETS["gpt2-xl"].n_layers == 48
    assert not gf.PRESETS["bert-base-uncased"].causal
    assert gf.PRESETS["minilm-l6"].d_model == 384
    for name in (
        "gpt2",
        "gpt2-medium",
        "gpt2-large",
        "gpt2-xl",
        "gpt3-175b",
        "bert-base-uncased",
        "minilm-l6",
        "lesson-tiny",
    ):
        assert isinstance(gf.PRESETS[name], gf.ModelConfig)


def test_round_trip_and_replace():
    c = gf.PRESETS["minilm-l6"]
    assert gf.ModelConfig.from_dict(c.to_dict()) == c
    assert c.replace(n_layers=2).n_layers == 2
    with pytest.raises(ValueError, match="unknown config field"):
        c.replace(layers=2)


def test_unknown_preset():
    with pytest.raises(gf.GlassformerError, match="known presets"):
        gf.preset("gpt5")


def test_a_changed_preset_works_its_sizes_out_again():
    """Sizes a preset worked out (d_head, d_mlp, n_kv_heads) follow a change; given ones stay."""
    import json

    from glassformer.config import PRESETS, ModelConfig

    changed = dataclasses.replace(PRESETS["gpt2"], n_heads=4, d_model=64)
    assert (changed.d_head, changed.d_mlp, changed.n_kv_heads) == (16, 256, 4)
    assert PRESETS["gpt2"].replace(n_heads=4, d_model=64) == changed
    # SmolLM2 gives its key/value heads and MLP width: they stay when the depth changes
    smaller = dataclasses.replace(PRESETS["smollm2-135m"], n_layers=2)
    assert (smaller.n_kv_heads, smaller.d_mlp, smaller.d_head) == (3, 1536, 64)
    assert dataclasses.replace(PRESETS["gpt2"], d_head=32).d_head == 32
    # written out and read back, every size is a plain given number
    again = ModelConfig.from_dict(json.loads(changed.to_json()))
    assert again == changed and type(again.d_head) is int


def test_the_modules_hold_plain_ints_for_the_sizes_a_config_worked_out():
    """torch parses an int subclass (config.Derived) more slowly, on every view of every step."""
    import glassformer as gf
    from glassformer.config import Derived

    for name in ("shakespeare-char", "lesson-llama"):
        config = gf.PRESETS[name]
        assert isinstance(config.d_head, Derived)
        model = gf.Transformer(config)
        attn = model.block(0).attn
        assert {type(attn.d_head), type(attn.n_kv_heads), type(attn.n_heads)} == {int}
        if model.rotary is not None:
            assert type(model.rotary.d_head) is int
