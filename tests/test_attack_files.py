"""What an attacker tried on files, names and run directories (issue 20): each case gets
one line and exit 2, and nothing on disk is lost, overwritten or created outside."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import glassformer as gf
from glassformer.config import GlassformerError
from glassformer.train import TrainConfig, train

from conftest import assert_one_line_error, build, run_cli, tiny_decoder, tree_digest

TRAIN = ["train", "--data", "lesson:adjectives", "--preset", "lesson-tiny", "--steps", "2", "--eval-every", "2", "-q"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A run trained to step 2 of 2, once for the module; tests damage copies of it."""
    out = tmp_path_factory.mktemp("runs") / "base"
    settings = dict(data="lesson:adjectives", preset="lesson-tiny", steps=2, eval_every=2)
    train(TrainConfig(out=str(out), **settings), progress=False)
    return out


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    shutil.copytree(finished_run, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- the run directory's .lock ------------------------------------------------------------
def _symlink(lock: Path, victim: Path) -> None:
    lock.symlink_to(victim)


def _hard_link(lock: Path, victim: Path) -> None:
    os.link(victim, lock)


LOCKS = {
    "symlink to a file": _symlink,
    "dangling symlink": lambda lock, victim: lock.symlink_to(victim.parent / "made-outside.txt"),
    "hard link to a file": _hard_link,
    "a folder": lambda lock, victim: lock.mkdir(),
    "a FIFO": lambda lock, victim: os.mkfifo(lock),
    "someone's notes": lambda lock, victim: lock.write_text("my notes\n"),
}


@pytest.mark.parametrize("kind", sorted(LOCKS))
def test_a_lock_that_is_not_ours_is_refused_and_left_alone_by_a_new_run(capsys, tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("the only copy\n")
    (tmp_path / "run").mkdir()
    LOCKS[kind](tmp_path / "run" / ".lock", victim)
    before = tree_digest(tmp_path)
    code, _, err = run_cli(capsys, *TRAIN, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "not glassformer's lock file")
    assert victim.read_text() == "the only copy\n"
    assert tree_digest(tmp_path) == before and not (tmp_path / "made-outside.txt").exists()


@pytest.mark.parametrize("kind", ["symlink to a file", "dangling symlink", "hard link to a file"])
def test_a_lock_that_is_not_ours_is_refused_by_resume(capsys, tmp_path, run, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("the only copy\n")
    (run / ".lock").unlink()
    LOCKS[kind](run / ".lock", victim)
    before = tree_digest(tmp_path)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--steps", "4", "-q")
    assert_one_line_error(code, err, "not glassformer's lock file")
    assert tree_digest(tmp_path) == before and not (tmp_path / "made-outside.txt").exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(capsys, tmp_path):
    """A folder holding only the lock file of a dead process is empty in all that matters."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text(f"{dead_pid()}\n")
    assert run_cli(capsys, *TRAIN, "--out", tmp_path / "run")[0] == 0
    assert (tmp_path / "run" / ".lock").read_text() == f"{os.getpid()}\n"  # it was ours to rewrite


# --- names are names, never patterns -------------------------------------------------------
def test_saving_a_name_with_glob_characters_keeps_other_names_leftovers(tmp_path):
    model = build(tiny_decoder())
    gf.save(model, tmp_path / "ck1")
    (tmp_path / "ck1").rename(tmp_path / ".ck1.old-deadbeef")  # an interrupted save's only copy
    gf.save(model, tmp_path / "ck.old-x")  # a name that starts the same way
    (tmp_path / "ck.old-x").rename(tmp_path / ".ck.old-x.old-deadbeef")
    for name in ("ck[12]", "*", "ck?", "ck"):
        gf.save(model, tmp_path / name)
        gf.save(model, tmp_path / name)  # the second save renames the first aside, then removes it
    assert (tmp_path / ".ck1.old-deadbeef" / "model.safetensors").is_file()
    assert (tmp_path / ".ck.old-x.old-deadbeef" / "model.safetensors").is_file()
    assert gf.load(tmp_path / "ck1").config == model.config  # the interrupted save still loads by its name


def test_a_pattern_never_loads_a_leftover(capsys, tmp_path, monkeypatch):
    model = build(tiny_decoder())
    model.tokenizer = gf.load("random:lesson-tiny").tokenizer
    gf.save(model, tmp_path / "ck1")
    (tmp_path / "ck1").rename(tmp_path / ".ck1.old-deadbeef")
    monkeypatch.chdir(tmp_path)
    for name in ("*", "ck[0-9]", "ck?", ".ck1.old-*"):
        with pytest.raises(GlassformerError):
            gf.load(name)
        code, _, err = run_cli(capsys, "explain", "ab", "--model", name)
        assert_one_line_error(code, err)


# --- tracebacks that become one line ------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, words",
    [
        (["explain", "ab", "--model", "~nosuchuser-glassformer/x"], ["no user 'nosuchuser-glassformer'"]),
        (["params", "~nosuchuser-glassformer"], ["no user"]),
        (["train", "--data", "{text}", "--out", "{tmp}/r", "--tokenizer", "bpe:²⁵⁷"], ["unknown tokenizer"]),
        (["train", "--data", "{text}", "--out", "{tmp}/r", "--tokenizer", "bpe:٢٥٧"], ["unknown tokenizer"]),
        (["train", "--data", "{text}", "--out", "{tmp}/r", "--tokenizer", "bpe:" + "9" * 5000], ["257 to"]),
    ],
)
def test_inputs_that_raised_tracebacks_are_one_line(capsys, tmp_path, argv, words):
    (tmp_path / "text.txt").write_text("hello world, hello glassformer\n")
    argv = [a.format(text=tmp_path / "text.txt", tmp=tmp_path) for a in argv]
    before = tree_digest(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *words)
    assert tree_digest(tmp_path) == before and not (tmp_path / "r").exists()


def test_a_closed_stdout_is_one_line():
    out = subprocess.run(
        [sys.executable, "-m", "glassformer", "params", "gpt2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        timeout=120, pass_fds=(), preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert out.returncode == 2 and out.stderr.decode().strip().splitlines() == [
        "glassformer: error: standard output is closed; give the command somewhere to write, e.g. > FILE or > /dev/null"
    ]


DEEP = "[" * 100_000 + "]" * 100_000
HUGE = '{"format": "glassformer", "version": ' + "9" * 5000 + "}"


@pytest.mark.parametrize("file", ["config.json", "tokenizer.json"])
@pytest.mark.parametrize("text, words", [(DEEP, "too deeply"), (HUGE, "over 4,300 digits")])
def test_json_too_deep_or_with_a_huge_number_is_one_line(capsys, tmp_path, file, text, words):
    model = build(tiny_decoder())
    model.tokenizer = gf.load("random:lesson-tiny").tokenizer
    gf.save(model, tmp_path / "m")
    (tmp_path / "m" / file).write_text(text)
    for command in (["explain", "ab", "--model", tmp_path / "m"], ["params", tmp_path / "m"]):
        code, _, err = run_cli(capsys, *command)
        if file == "tokenizer.json" and command[0] == "params":
            assert code == 0  # a tally reads no tokenizer
            continue
        assert_one_line_error(code, err, str(tmp_path / "m" / file), words)


def _edit_state(run: Path, change) -> None:
    file = run / "latest" / "train_state.safetensors"
    tensors = load_file(str(file))
    change(tensors)
    save_file(tensors, str(file))


def _edit_json(file: Path, change) -> None:
    file.write_text(json.dumps(change(json.loads(file.read_text()))))


def _first_exp_avg(tensors: dict) -> str:
    return next(k for k in sorted(tensors) if k.endswith("exp_avg"))


DAMAGED = {
    "a non-UTF-8 byte in log.jsonl": (lambda r: (r / "log.jsonl").write_bytes((r / "log.jsonl").read_bytes()
                                                                              + b"\xff\xfe\n"),
                                      ["log.jsonl line 2 is not UTF-8"]),
    "step is text": (lambda r: _edit_json(r / "latest" / "train_state.json", lambda d: d | {"step": "10"}),
                     ["train_state.json", '"step"', "'10'"]),
    "step is negative": (lambda r: _edit_json(r / "latest" / "train_state.json", lambda d: d | {"step": -5}),
                         ["train_state.json"]),
    "a setting mistyped": (lambda r: _edit_json(r / "latest" / "train_state.json", lambda d: d | {
        "train_config": d["train_config"] | {"lr": "fast"}}), ["train_state.json", "lr"]),
    "a setting out of range": (lambda r: _edit_json(r / "latest" / "train_state.json", lambda d: d | {
        "train_config": d["train_config"] | {"batch_size": 0}}), ["train_state.json", "batch-size"]),
    "no rng entry": (lambda r: _edit_state(r, lambda t: t.pop("rng.torch")),
                     ["train_state.safetensors", "'rng.torch'"]),
    "a wrong-sized rng entry": (lambda r: _edit_state(r, lambda t: t.update({"rng.data": t["rng.data"][:100].clone()})),
                                ["train_state.safetensors", "'rng.data'", "[100]"]),
    "an optimizer moment of the wrong shape": (lambda r: _edit_state(
        r, lambda t: t.update({_first_exp_avg(t): torch.zeros(3)})), ["train_state.safetensors", "exp_avg"]),
    "config.json disagrees with the weights": (lambda r: _edit_json(r / "latest" / "config.json", lambda d: d | {
        "model": d["model"] | {"d_mlp": 8}}), ["model.safetensors does not fit", "config.json"]),
    "a non-UTF-8 tokenizer.json": (lambda r: (r / "latest" / "tokenizer.json").write_bytes(b"\xff\x00"),
                                   ["tokenizer.json is not UTF-8"]),
    "a deeply nested tokenizer.json": (lambda r: (r / "latest" / "tokenizer.json").write_text(DEEP),
                                       ["tokenizer.json nests"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_a_damaged_run_is_named_file_by_file_and_left_alone(capsys, run, name):
    damage, words = DAMAGED[name]
    damage(run)
    before = tree_digest(run)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--steps", "4", "-q")
    assert_one_line_error(code, err, *words)
    assert tree_digest(run) == before


# --- a run killed before its first checkpoint ----------------------------------------------
def test_a_run_killed_before_its_first_checkpoint_says_how_and_starts_over(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    pid = dead_pid()
    (out / ".lock").write_text(f"{pid}\n")
    (out / "log.jsonl").write_text(json.dumps({"step": 2, "train_loss": 9.0, "val_loss": 9.0}) + "\n")
    (out / f".latest.tmp-{pid}-deadbeef-abcd_123").mkdir()  # the checkpoint it was writing
    code, _, err = run_cli(capsys, "train", "--resume", out, "-q")
    assert_one_line_error(code, err, "stopped before its first checkpoint", f"--out {out}")
    assert run_cli(capsys, *TRAIN, "--out", out)[0] == 0  # the same command again starts over
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2] and records[0]["train_loss"] != 9.0
    assert sorted(p.name for p in out.iterdir()) == [".lock", "best", "latest", "log.jsonl"]


def test_a_run_killed_while_saving_its_first_best_keeps_it(capsys, tmp_path, finished_run):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(f"{dead_pid()}\n")
    shutil.copy(finished_run / "log.jsonl", out / "log.jsonl")
    shutil.copytree(finished_run / "best", out / "best")
    before = tree_digest(out / "best")
    code, _, err = run_cli(capsys, "train", "--resume", out, "-q")
    assert_one_line_error(code, err, f"move {out / 'best'} away")
    code, _, err = run_cli(capsys, *TRAIN, "--out", out)
    assert_one_line_error(code, err, "already holds files")
    assert (
        tree_digest(out / "best") == before
        and (out / "log.jsonl").read_bytes() == (finished_run / "log.jsonl").read_bytes()
    )


# --- --resume and the settings it cannot honour ---------------------------------------------------
@pytest.mark.parametrize(
    "flag, value", [("--lr", "0.01"), ("--batch-size", "4"), ("--eval-every", "1"), ("--tokenizer", "bpe:300")]
)
def test_resume_refuses_a_setting_it_would_ignore(capsys, run, flag, value):
    before = tree_digest(run)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--steps", "3", "-q", flag, value)
    assert_one_line_error(code, err, f"{flag} {value} differs from this run's", "--steps")
    assert tree_digest(run) == before


def test_resume_accepts_the_run_own_settings(capsys, run):
    saved = json.loads((run / "latest" / "train_state.json").read_text())["train_config"]
    same = ["--lr", str(saved["lr"]), "--batch-size", str(saved["batch_size"]), "--eval-every", "2"]
    code, _, err = run_cli(capsys, "train", "--resume", run, "--steps", "3", "-q", *same)
    assert code == 0, err


# --- a full disk, leftovers of killed writes -------------------------------------------------
def test_a_full_disk_names_the_checkpoint_not_its_temp_folder(capsys, run, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')  # fmt: skip

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--steps", "4", "-q")
    assert_one_line_error(code, err, f"cannot write {run / 'best'}: no space left")
    assert ".tmp-" not in err


def test_a_write_cleans_the_temp_files_of_killed_writes_and_only_those(capsys, tmp_path):
    pid = dead_pid()
    dead = [f".pic.png.tmp-{pid}-deadbee{i}" for i in range(3)]
    kept = [
        f".pic.png.tmp-{os.getpid()}-cafebabe",  # a live process's write in progress
        f".pic2.png.tmp-{pid}-deadbeef",  # another file's
        f".pic.png.tmp-{pid}-deadbeef.bak",  # not our pattern
        "victim.txt",
    ]
    for name in dead + kept:
        (tmp_path / name).write_text("x")
    (tmp_path / f".pic.png.tmp-{pid}-0000beef").symlink_to(tmp_path / "victim.txt")  # the link goes, not its target
    code, _, err = run_cli(capsys, "show", "ab", "--model", "random:lesson-tiny", "--out", tmp_path / "pic.png")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["pic.png"])
    for name in ("ck[1]", "*"):  # and names with glob characters match only themselves
        (tmp_path / f".{name}.html.tmp-{pid}-deadbeef").write_text("x")
    assert run_cli(capsys, "show", "ab", "--model", "random:lesson-tiny", "--out", tmp_path / "ck[1].html")[0] == 0
    assert not (tmp_path / f".ck[1].html.tmp-{pid}-deadbeef").exists()
    assert (tmp_path / f".*.html.tmp-{pid}-deadbeef").exists()


# --- one line means one line -------------------------------------------------------------------
def test_a_refused_pickle_is_one_line_in_our_words_and_warnings_wait_for_verbose(tmp_path):
    transformers = pytest.importorskip("transformers", reason="builds a Hugging Face directory")
    config = transformers.GPT2Config(vocab_size=64, n_embd=16, n_head=2, n_layer=1, n_positions=16)
    path = tmp_path / "hf"
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    state = load_file(str(path / "model.safetensors"))
    (path / "model.safetensors").unlink()
    with open(path / "pytorch_model.bin", "wb") as f:
        pickle.dump(state, f, protocol=4)  # a plain pickle: torch's safe reader warns, then refuses
    argv = [sys.executable, "-m", "glassformer", "explain", "ab", "--model", str(path)]
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    lines = quiet.stderr.strip().splitlines()
    assert quiet.returncode == 2 and len(lines) == 1, quiet.stderr
    assert lines[0].startswith(f"glassformer: error: refused {path / 'pytorch_model.bin'}: it is not a file of tensors")
    assert "torch.load" not in lines[0] and lines[0].endswith("with a tool you trust")
    verbose = subprocess.run(argv[:3] + ["--verbose"] + argv[3:], capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 2 and "UserWarning" in verbose.stderr  # torch's own, for whoever asks
