"""What an attacker found in the new commands, each closed: a traceback, a 500, or JSON a
strict parser refuses."""

import json

import pytest

from conftest import assert_one_line_error, run_cli

LESSON = "lesson:adjectives"


@pytest.mark.parametrize(
    "argv",
    [
        ["embed", "\udcff", "--model", LESSON],  # a byte that is not UTF-8, as Python reads argv
        ["embed", "--pca", "fluffy", "blue", "\udcff", "--model", LESSON],
        ["circuit", "--model", LESSON, "--layer", "0", "--head", "0", "--token", "\udcff"],
        ["angles", "--dims", "3", "--seed", "99999999999999999999999"],
        ["superposition", "--seed", "99999999999999999999999", "--steps", "10"],
    ],
)
def test_bad_words_and_seeds_get_one_line(capsys, argv):
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err)


def test_angles_reads_a_models_rows(capsys, tmp_path):
    code, out, err = run_cli(capsys, "angles", "--dims", "3", "--model", LESSON, "--vectors", "50")
    assert code == 0, err
    assert "W_E" in out


def test_json_never_carries_nan(capsys):
    """`heads --json` on a model of more than 32 heads leaves unmeasured heads as NaN: they
    are written as null, which every strict parser reads (bare NaN is not JSON)."""
    from glassformer.cli import print_json

    capsys.readouterr()
    print_json({"switch_off_kl": [[0.5, float("nan")], [float("inf"), 1.0]]})
    out = capsys.readouterr().out
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "switch_off_kl": [[0.5, None], [None, 1.0]]
    }


def test_a_neuron_is_named_by_layer_and_index(capsys):
    code, _, err = run_cli(
        capsys, "ablate", "a fluffy blue creature", "--model", LESSON, "--mlp", "0", "--neuron", "99999"
    )
    assert_one_line_error(code, err, "layer 0, neuron 99999")


def test_patch_says_when_its_shares_mean_little():
    from glassformer.lab.edit import patch_caution

    assert patch_caution(6.1, -5.5) is None
    assert "does not prefer" in patch_caution(-10.42, -10.38)
    assert "mostly noise" in patch_caution(0.3, 0.1)


def test_circuit_k_is_bounded(capsys):
    code, _, err = run_cli(capsys, "circuit", "--model", LESSON, "--layer", "0", "--head", "0", "-k", "100000")
    assert code == 2 and "1 to 1000" in err
