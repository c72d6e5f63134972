"""Adding a model family touches several places (README, "How it is built": "Adding a
model family"). This table names every family; a family missing from a place fails here."""

import importlib
import re

import pytest

from glassformer.cpu_decoder import implements
from glassformer.hooks import HOOK_TABLE
from glassformer.pretrained import NAMES_HELP
from glassformer.pretrained.hf import CONVERTERS, SUPPORTED

from conftest import ROOT

# model_type -> (the label the names table uses, a small config.json of that family, decoded by numpy?)
FAMILIES = {
    "gpt2": ("GPT", {"model_type": "gpt2", "vocab_size": 50, "n_positions": 16, "n_embd": 8, "n_head": 2,
                     "n_layer": 1}, True),
    "bert": ("BERT", {"model_type": "bert", "vocab_size": 50, "max_position_embeddings": 16, "hidden_size": 8,
                      "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 16}, False),
    "llama": ("Llama", {"model_type": "llama", "vocab_size": 50, "max_position_embeddings": 16, "hidden_size": 8,
                        "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 1,
                        "intermediate_size": 16}, True),
}  # fmt: skip


def test_every_family_is_in_this_table():
    assert set(FAMILIES) == set(CONVERTERS), "add the new family to FAMILIES here, then make every test pass"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_family_has_a_pure_converter_and_is_named(family):
    module = importlib.import_module(f"glassformer.pretrained.{family}")
    assert CONVERTERS[family] is module
    assert callable(module.config_from_hf) and callable(module.convert)
    assert family in SUPPORTED, "pretrained/hf.py's SUPPORTED names it in the error for other architectures"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_family_fires_the_hooks_the_names_table_says(family):
    label = FAMILIES[family][0]
    always = [row for row in HOOK_TABLE if row[0] in ("embed", "blocks.{i}.attn.pattern", "blocks.{i}.mlp.out")]
    assert always and all(label in row[2] for row in always), f"HOOK_TABLE's model column lacks {label}"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_numpy_decoder_has_decided_on_a_family(family):
    _, hf_config, decoded = FAMILIES[family]
    config = CONVERTERS[family].config_from_hf(hf_config)
    assert implements(config) == decoded, "cpu_decoder.IMPLEMENTS: decide on this family's config values"


def test_the_readme_lists_the_places_and_names_every_family():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Adding a model family", 1)[1].split("\n## ", 1)[0]
    for place in ("config.py", "model.py", "pretrained/", "hf.py", "NAMES_HELP", "cpu_decoder.py", "HOOK_TABLE"):
        assert place in section, place
    for label, _, _ in FAMILIES.values():
        assert re.search(rf"\b{label}\b", readme.split("## Names of everything")[0]), f"the models table lacks {label}"
    assert "hub id" in NAMES_HELP
