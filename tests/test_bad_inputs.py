"""Every bad input the command line can receive: one line on stderr, exit status 2, no
traceback, and nothing on disk changed or left behind. Then malformed model directories,
a full disk, and a run directory two processes want at once."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import glassformer as gf
from glassformer.train import TrainConfig, train

from conftest import assert_one_line_error, build, run_cli, tiny_decoder, tree_digest

TINY = "random:lesson-tiny"
TRAIN = ["train", "--data", "lesson:adjectives", "--preset", "lesson-tiny", "--steps", "2", "--eval-every", "2", "-q"]


def cases(tmp: Path) -> list[tuple[list[str], list[str]]]:
    """(argv, words the one line must hold), built in the folder `tmp`."""
    (tmp / "a-file").write_text("x")
    (tmp / "a-dir.png").mkdir()
    return [
        (["explain", "bad \udcff byte", "--model", TINY], ["not valid Unicode"]),  # invalid UTF-8 in argv
        (["explain", "hi", "--model", ""], ["model name is empty"]),
        (["lens", "hi", "--model", TINY, "-k", "-1"], ["at least 1"]),
        (["lens", "hi", "--model", TINY, "-k", "1000000"], ["more guesses than the 256 tokens"]),
        (["lens", "hi", "--model", TINY, "--position", "2"], ["--position 2 is out of range for 2 tokens"]),
        (["neurons", "hi", "--model", TINY, "-k", "-1"], ["at least 1"]),
        (["neurons", "hi", "--model", TINY, "-k", "1000000"], ["MLP neurons"]),
        (["generate", "--model", TINY, "--temperature", "nan"], ["finite number"]),
        (["generate", "--model", TINY, "--temperature", "inf"], ["finite number"]),
        (["generate", "--model", TINY, "--temperature", "1e309"], ["finite number"]),
        (["generate", "--model", TINY, "--temperature", "-1"], ["temperature"]),
        (["generate", "--model", TINY, "--top-p", "nan"], ["finite number"]),
        (["generate", "--model", TINY, "--top-k", "0"], ["at least 1"]),
        (["generate", "--model", TINY, "--seed", str(10**20)], ["seed"]),
        (["generate", "--model", TINY, "--max-new-tokens", "-5"], ["at least 0"]),
        (["show", "hi", "--model", TINY, "--out", str(tmp / "a-dir.png")], ["is a directory"]),
        (["show", "hi", "--model", TINY, "--out", "/proc/glassformer.png"], ["cannot write /proc/glassformer.png"]),
        (["show", "hi", "--model", TINY, "-t", "nan", "--kind", "next", "--out", str(tmp / "n.png")], ["finite"]),
        (["show", "hi", "--model", TINY, "--out", str(tmp / "x.gif")], [".html, .png or .svg"]),
        (["show", "hi", "--model", TINY, "--kind", "all", "--layer", "9", "--out", str(tmp / "a.png")], ["layer 9"]),
        ([*TRAIN, "--out", str(tmp / "a-file" / "run")], ["cannot create the run directory"]),
        ([*TRAIN, "--out", "/proc/glassformer-run"], ["/proc/glassformer-run"]),
        ([*TRAIN, "--out", str(tmp / "r1"), "--lr", "inf"], ["finite number"]),
        ([*TRAIN, "--out", str(tmp / "r2"), "--weight-decay", "nan"], ["finite number"]),
        ([*TRAIN, "--out", str(tmp / "r3"), "--min-lr", "nan"], ["finite number"]),
        ([*TRAIN, "--out", str(tmp / "r4"), "--grad-clip", "nan"], ["finite number"]),
        ([*TRAIN, "--out", str(tmp / "r5"), "--stop-at", "-1"], ["stop-at must be a whole number >= 1"]),
        ([*TRAIN, "--out", str(tmp / "r6"), "--seed", str(10**20)], ["seed must be"]),
        ([*TRAIN, "--out", str(tmp / "r7"), "--batch-size", str(10**12)], ["GiB of memory"]),
        ([*TRAIN, "--out", str(tmp / "r8"), "--context-length", str(10**10)], ["GiB of memory"]),
        ([*TRAIN, "--out", str(tmp / "r9"), "--d-model", str(10**7)], ["GiB of memory"]),
        ([*TRAIN, "--out", str(tmp / "r10"), "--preset", "gpt3-175b"], ["GiB of memory"]),
        ([*TRAIN, "--out", str(tmp / "r11"), "--lr", "0.1", "--min-lr", "0.5"], ["above lr"]),
        ([*TRAIN, "--out", str(tmp / "r12"), "--lr", "1e308"], ["training diverged at step"]),
        (["train", "--resume", str(tmp / "a-dir.png")], ["no resumable checkpoint"]),  # and no .lock left
        (["train", "--data", "/dev/zero", "--out", str(tmp / "r13")], ["not a regular file"]),
        (["heads", "--model", TINY, "--text", ""], ["text is empty"]),
        (["neurons", "--model", "random:minilm-l6", "--neuron", "999.9"], ["out of range"]),  # an encoder
        ([*TRAIN, "--out", str(tmp / "r14"), "--eval-batches", str(10**8)], ["GiB of memory"]),
        (
            ["train", "--data", str(tmp / "a-file"), "--out", str(tmp / "r15"), "--tokenizer", "bpe:100000000"],
            ["bpe vocabulary must hold"],
        ),
        ([*TRAIN, "--out", str(tmp / "r16"), "--preset", "bert-base-uncased"], ["is an encoder"]),
        (["params", "/no/such/dir"], ["no such file or directory"]),
    ]


N_CASES = 42


def test_every_case_is_run(tmp_path):
    assert len(cases(tmp_path)) == N_CASES


@pytest.mark.parametrize("case", range(N_CASES))
def test_cli_mistake_is_one_line_and_leaves_nothing(capsys, tmp_path, case):
    argv, words = cases(tmp_path)[case]
    before = tree_digest(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *words)
    assert tree_digest(tmp_path) == before, "a refused command changed the disk"
    assert not [p for p in tmp_path.rglob(".*tmp*")], "a temp file was left behind"


def test_a_resume_that_would_train_nothing_is_refused(capsys, tmp_path):
    out = tmp_path / "run"
    assert run_cli(capsys, *TRAIN, "--out", out)[0] == 0  # finished at step 2
    before = tree_digest(out)
    for extra, words in [
        (["--steps", "1"], "already at step 2; --steps 1 would train nothing"),
        (["--steps", "9", "--stop-at", "2"], "--stop-at 2 would train nothing"),
        ([], "finished at step 2; give --steps N"),
    ]:
        code, _, err = run_cli(capsys, "train", "--resume", out, *extra)
        assert_one_line_error(code, err, words)
    assert tree_digest(out) == before


def test_a_fifo_as_data_is_refused_not_waited_on(capsys, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    code, _, err = run_cli(capsys, "train", "--data", str(tmp_path / "fifo"), "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "not a regular file")
    assert not (tmp_path / "r").exists()


def test_invalid_utf8_and_a_full_stdout_through_a_real_process():
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    bad = subprocess.run([sys.executable, "-m", "glassformer", "explain", b"caf\xe9", "--model", TINY],
                         capture_output=True, env=env, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and b"Traceback" not in bad.stderr
    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "glassformer", "params", "gpt2"], stdout=full,
                             stderr=subprocess.PIPE, timeout=120)  # fmt: skip
    assert out.returncode == 2 and out.stderr.decode().strip().splitlines() == [
        "glassformer: error: No space left on device"
    ]


def test_a_tiny_temperature_is_greedy_not_an_error(capsys):
    code, out, _ = run_cli(capsys, "generate", "--model", TINY, "--prompt", "ab", "-n", "4", "-t", "1e-45")
    greedy_code, greedy, _ = run_cli(capsys, "generate", "--model", TINY, "--prompt", "ab", "-n", "4", "-t", "0")
    assert code == greedy_code == 0 and out == greedy


# --- malformed model directories -------------------------------------------------------
def good_checkpoint(path: Path) -> Path:
    model = build(tiny_decoder())
    model.tokenizer = gf.load(TINY).tokenizer
    gf.save(model, path)
    return path


def hf_gpt2(path: Path) -> Path:
    transformers = pytest.importorskip("transformers", reason="builds a Hugging Face directory")
    config = transformers.GPT2Config(vocab_size=64, n_embd=16, n_head=2, n_layer=1, n_positions=16)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    (path / "vocab.json").write_text(json.dumps({chr(97 + i): i for i in range(26)}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    return path


def edit_json(file: Path, change) -> None:
    data = json.loads(file.read_text())
    file.write_text(json.dumps(change(data)))


def _a_nan_weight(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path / "model.safetensors"))
    name = sorted(state)[0]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(path / "model.safetensors"))


def _weights_as_int(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path / "model.safetensors"))
    save_file({k: v.to(torch.int32) for k, v in state.items()}, str(path / "model.safetensors"))


MALFORMED = {
    "config is a list": (good_checkpoint, lambda p: (p / "config.json").write_text("[1, 2, 3]"), "JSON object"),
    "model is a list": (good_checkpoint, lambda p: edit_json(p / "config.json", lambda d: d | {"model": [1, 2]}),
                        "\"model\" object"),
    "no model key": (good_checkpoint, lambda p: edit_json(p / "config.json", lambda d: {"format": "glassformer"}),
                     "\"model\" object"),
    "version is text": (good_checkpoint, lambda p: edit_json(p / "config.json", lambda d: d | {"version": "9"}),
                        "version must be a whole number"),
    "newer version": (good_checkpoint, lambda p: edit_json(p / "config.json", lambda d: d | {"version": 9}),
                      "newer glassformer"),
    "a billion layers": (good_checkpoint, lambda p: edit_json(
        p / "config.json", lambda d: d | {"model": d["model"] | {"n_layers": 10**9}}), "weights hold 2"),
    "int32 weights": (good_checkpoint, _weights_as_int, "weights must be floats"),
    "a NaN weight": (good_checkpoint, _a_nan_weight, "NaN or infinite"),
    "truncated weights": (good_checkpoint, lambda p: (p / "model.safetensors").write_bytes(b"\x08\x00\x00"),
                          "corrupt or truncated"),
    "binary tokenizer": (good_checkpoint, lambda p: (p / "tokenizer.json").write_bytes(bytes(range(256))),
                         "not UTF-8"),
    "char tokenizer without chars": (good_checkpoint, lambda p: (p / "tokenizer.json").write_text(
        json.dumps({"glassformer_tokenizer": "char"})), "\"chars\" list"),
    "config not JSON": (good_checkpoint, lambda p: (p / "config.json").write_text("{nope"), "not valid JSON"),
    "hf config without n_embd": (hf_gpt2, lambda p: edit_json(
        p / "config.json", lambda d: {k: v for k, v in d.items() if k != "n_embd"}), "'n_embd'"),
    "hf config a list": (hf_gpt2, lambda p: (p / "config.json").write_text("[]"), "not a JSON object"),
    "bad shard index": (hf_gpt2, lambda p: (
        (p / "model.safetensors").rename(p / "shard-1.safetensors"),
        (p / "model.safetensors.index.json").write_text("{broken")), "not valid JSON"),
    "index without a map": (hf_gpt2, lambda p: (
        (p / "model.safetensors").rename(p / "shard-1.safetensors"),
        (p / "model.safetensors.index.json").write_text("{}")), "weight_map"),
    "shard outside the directory": (hf_gpt2, lambda p: (
        (p / "model.safetensors").rename(p / "shard-1.safetensors"),
        (p / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"wte.weight": "../../../../etc/passwd"}}))), "outside the model directory"),
    "absolute shard path": (hf_gpt2, lambda p: (
        (p / "model.safetensors").rename(p / "shard-1.safetensors"),
        (p / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"wte.weight": "/etc/passwd"}}))), "outside the model directory"),
    "bad sentence_bert_config": (hf_gpt2, lambda p: (p / "sentence_bert_config.json").write_text("[["),
                                 "not valid JSON"),
    "bad vocab.json": (hf_gpt2, lambda p: (p / "vocab.json").write_text("not json"), "could not be read"),
    "bad tokenizer_config": (hf_gpt2, lambda p: (
        (p / "vocab.json").unlink(), (p / "vocab.txt").write_text("[PAD]\na\n"),
        (p / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": "maybe"}))), "do_lower_case"),
    "binary hf tokenizer.json": (hf_gpt2, lambda p: (p / "tokenizer.json").write_bytes(b"\xff\xfe\x00"),
                                 "not UTF-8"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_model_directory_is_one_line(capsys, tmp_path, name):
    make, damage, words = MALFORMED[name]
    path = make(tmp_path / "model")
    damage(path)
    before = tree_digest(tmp_path)
    code, _, err = run_cli(capsys, "explain", "ab", "--model", str(path), "--layer", "0", "--head", "0")
    assert_one_line_error(code, err, words)
    assert tree_digest(tmp_path) == before


def test_a_billion_layer_config_is_refused_quickly_in_bounded_memory(tmp_path):
    """A child process with a 2 GiB address-space limit and a 60 s bound: the crafted
    config is checked against the weights before a single layer is built."""
    path = good_checkpoint(tmp_path / "model")
    edit_json(path / "config.json", lambda d: d | {"model": d["model"] | {"n_layers": 10**9}})
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30));"
        "from glassformer.cli import main; sys.exit(main(['params', sys.argv[1]]) or main(['explain', 'a', "
        "'--model', sys.argv[1]]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "the weights hold 2" in out.stderr and "Traceback" not in out.stderr


# --- a full disk -------------------------------------------------------------------------
@contextlib.contextmanager
def small_disk(path: Path, size: str = "300k"):
    """A tmpfs of `size` at `path` where the machine allows mounting one, else a skip."""
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode:  # fmt: skip
        pytest.skip("cannot mount a small tmpfs here (needs root); the simulated full disk below still runs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(capsys, tmp_path):
    with small_disk(tmp_path / "disk", "8m") as disk:
        out = disk / "run"
        assert run_cli(capsys, *TRAIN, "--out", out)[0] == 0
        before = tree_digest(out / "latest")
        filler = disk / "filler"
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 4096))  # leave too little for another checkpoint
        code, _, err = run_cli(capsys, "train", "--resume", out, "--steps", "4", "-q")
        assert_one_line_error(code, err, "no space left")
        assert tree_digest(out / "latest") == before
        assert gf.load(out / "latest").config.n_layers == 2  # still loads
        assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_full_disk_during_show_keeps_the_previous_picture(capsys, tmp_path):
    with small_disk(tmp_path / "disk", "400k") as disk:
        picture = disk / "pic.png"
        assert run_cli(capsys, "show", "ab", "--model", TINY, "--out", picture)[0] == 0
        old = picture.read_bytes()
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * max(0, free - 2048))
        code, _, err = run_cli(capsys, "show", "a longer sentence", "--model", TINY, "--kind", "all", "--out", picture)
        assert_one_line_error(code, err, "No space left on device")
        assert picture.read_bytes() == old
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "pic.png"]


def test_simulated_full_disk_during_a_checkpoint_is_one_line(capsys, tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: safetensors' own error for ENOSPC, raised mid-save."""
    import safetensors.torch
    from safetensors import SafetensorError

    out = tmp_path / "run"
    assert run_cli(capsys, *TRAIN, "--out", out)[0] == 0
    before = tree_digest(out / "latest")

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              'message: "No space left on device" })')  # fmt: skip

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    code, _, err = run_cli(capsys, "train", "--resume", out, "--steps", "4", "-q")
    assert_one_line_error(code, err, "no space left")
    assert tree_digest(out / "latest") == before and not [p for p in out.iterdir() if ".tmp-" in p.name]


# --- damaged run directories ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda latest: (latest / "train_state.json").write_text("{not json"), "not valid JSON"),
        (lambda latest: edit_json(latest / "train_state.json", lambda d: {k: v for k, v in d.items()
                                                                           if k != "optimizer"}), "damaged"),
        (lambda latest: (latest / "train_state.safetensors").write_bytes(b"\x01"), "corrupt or truncated"),
    ],
)  # fmt: skip
def test_damaged_resume_state_is_one_line(capsys, tmp_path, damage, words):
    out = tmp_path / "run"
    train(TrainConfig(data="lesson:adjectives", out=str(out), preset="lesson-tiny", steps=2, eval_every=2),
          progress=False)  # fmt: skip
    damage(out / "latest")
    before = tree_digest(out)
    code, _, err = run_cli(capsys, "train", "--resume", out, "-q")
    assert_one_line_error(code, err, words)
    assert tree_digest(out) == before
