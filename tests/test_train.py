"""Training: loss falls, resume is bit-exact, kills never lose a checkpoint, DDP == one process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import glassformer as gf
from glassformer import files
from glassformer.cli import main
from glassformer.pretrained.build import load_checkpoint
from glassformer.train import TrainConfig, resume, train
from glassformer.train.state import RunDir

from conftest import RTOL_DEEP, assert_close, assert_one_line_error, run_cli, tree_digest

SMALL = dict(preset="lesson-tiny", d_model=32, n_layers=1, batch_size=8, lr=3e-3, warmup=5, eval_batches=4)


def text_file(tmp_path, n=4000) -> Path:
    from glassformer.lessons import adjectives

    path = tmp_path / "text.txt"
    path.write_text(adjectives.text(n, seed=3))
    return path


def log_lines(out) -> list[dict]:
    return [json.loads(x) for x in (Path(out) / "log.jsonl").read_text().splitlines()]


def test_loss_falls_and_run_loads(tmp_path):
    out = tmp_path / "run"
    result = train(
        TrainConfig(data=str(text_file(tmp_path)), out=str(out), steps=60, eval_every=20, **SMALL),
        progress=False,
    )
    log = log_lines(out)
    assert [r["step"] for r in log] == [20, 40, 60]
    assert log[-1]["val_loss"] < log[0]["val_loss"] - 0.3
    assert set(log[0]) >= {"step", "train_loss", "val_loss", "lr", "tokens_per_s"}
    model = gf.load(out)  # a run directory loads as its best checkpoint
    assert model.tokenizer.kind == "char" and result.best_val_loss == min(r["val_loss"] for r in log)


def test_bpe_tokenizer_is_trained_and_saved(tmp_path):
    out = tmp_path / "run"
    train(
        TrainConfig(data=str(text_file(tmp_path)), out=str(out), tokenizer="bpe:300", steps=4, eval_every=4, **SMALL),
        progress=False,
    )
    model = gf.load(out)
    assert model.config.vocab_size == model.tokenizer.vocab_size <= 300
    assert model.tokenizer.decode(model.tokenizer.encode("a fluffy creature")) == "a fluffy creature"


def test_resume_is_bit_identical(tmp_path):
    common = dict(data="lesson:adjectives", steps=30, eval_every=10, **SMALL)
    full = tmp_path / "full"
    train(TrainConfig(out=str(full), **common), progress=False)
    split = tmp_path / "split"
    train(TrainConfig(out=str(split), stop_at=15, ckpt_every=5, **common), progress=False)
    assert [r["step"] for r in log_lines(split)] == [10]
    resume(split, progress=False)
    assert log_lines(split) == [
        {**r, "tokens_per_s": s["tokens_per_s"]} for r, s in zip(log_lines(full), log_lines(split))
    ]
    a = files.read_safetensors(full / "latest" / "model.safetensors")
    b = files.read_safetensors(split / "latest" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_training_keeps_fp32_weights_and_records_its_precision(tmp_path):
    from glassformer.hardware import cpu_has_bf16_units

    out = tmp_path / "run"
    train(
        TrainConfig(data="lesson:adjectives", out=str(out), steps=40, eval_every=20, precision="bf16", **SMALL),
        progress=False,
    )
    log = log_lines(out)
    assert log[-1]["val_loss"] < log[0]["val_loss"]
    weights = files.read_safetensors(out / "latest" / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}
    assert RunDir(out).read_latest().settings.precision == "bf16"
    auto = tmp_path / "auto"
    train(TrainConfig(data="lesson:adjectives", out=str(auto), steps=2, eval_every=2, **SMALL), progress=False)
    # auto is stored resolved, so a resume on another machine trains the same way
    assert RunDir(auto).read_latest().settings.precision == ("bf16" if cpu_has_bf16_units() else "fp32")


def test_attention_stays_fp32_under_cpu_autocast():
    model = gf.load("random:lesson-tiny").train()
    seen = {}
    hook = model.blocks[0].attn.output.register_forward_pre_hook(lambda m, args: seen.update(z=args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.arange(10)[None])
    hook.remove()
    assert seen["z"] == torch.float32  # the pattern-weighted values came out of fp32 attention
    assert logits.dtype == torch.bfloat16  # while the products around it ran in bf16


@pytest.mark.slow
def test_sigkill_never_loses_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "glassformer",
        "train",
        "--data",
        "lesson:adjectives",
        "--out",
        str(out),
        "--preset",
        "lesson-tiny",
        "--steps",
        "100000",
        "--eval-every",
        "7",
        "--eval-batches",
        "1",
        "--ckpt-every",
        "1",
        "--batch-size",
        "4",
        "--quiet",
    ]

    def saved_step() -> int:
        latest = files.find_dir(out / "latest")
        try:
            return json.loads((latest / "train_state.json").read_text())["step"]
        except (TypeError, OSError, ValueError):
            return -1

    steps_seen = [-1]
    for attempt, delay in enumerate([0.5, 0.13, 0.31, 0.07, 0.22]):
        proc = subprocess.Popen(cmd if attempt == 0 else cmd[:4] + ["--resume", str(out), "--quiet"])
        start = time.monotonic()
        while time.monotonic() - start < 90 and saved_step() <= steps_seen[-1]:
            time.sleep(0.02)  # until this process has written checkpoints of its own
        time.sleep(delay)  # with a checkpoint every step, most of the time is spent writing one
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        latest = files.find_dir(out / "latest")
        assert latest is not None, "the last good checkpoint was lost"
        model = load_checkpoint(out / "latest")  # loads, with every tensor in place
        assert model.config.n_layers == 2
        steps_seen.append(saved_step())
    steps_seen = steps_seen[1:]
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]
    # and the run still continues from there
    assert main(["train", "--resume", str(out), "--steps", str(steps_seen[-1] + 2), "--quiet"]) == 0


@pytest.mark.slow
def test_two_gloo_processes_equal_one_with_the_combined_batch(tmp_path):
    args = [
        "--data",
        "lesson:adjectives",
        "--preset",
        "lesson-tiny",
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--eval-batches",
        "2",
        "--quiet",
        "--device",
        "cpu",
        "--precision",
        "fp32",
    ]  # (bf16 would round each process's partial sums differently)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "glassformer",
            "train",
            "--out",
            str(tmp_path / "one"),
            "--batch-size",
            "8",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes",
            "1",
            "--nproc-per-node",
            "2",
            "-m",
            "glassformer",
            "train",
            "--out",
            str(tmp_path / "two"),
            "--batch-size",
            "4",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = files.read_safetensors(tmp_path / "one" / "latest" / "model.safetensors")
    b = files.read_safetensors(tmp_path / "two" / "latest" / "model.safetensors")
    # two processes average their gradients in another order, and a few optimizer steps
    # carry that rounding on: compared at each weight's own scale, with the absolute 1e-5
    # that held before as the floor for small weights
    for k in a:
        assert_close(b[k], a[k], rtol=RTOL_DEEP, atol=1e-5, what=f"{k} in 1 and 2 processes:")
    assert not list((tmp_path / "two").glob("*/.*tmp*"))  # only rank 0 wrote


@pytest.mark.slow
def test_default_adjectives_lesson_grows_an_adjective_head(tmp_path):
    """At the lesson's own seed, as `make lessons` trains it: a head whose nouns put most of
    their attention on their own adjectives, each counted up to an equal share. Seed 1337
    measured 0.84 (layer 0 head 3; 0.91 on own adjectives), seed 0 0.79 (layer 0 head 0,
    which leans on the middle one of three): the thresholds, 0.7 and 0.8, hold for both."""
    from glassformer.lab import heads

    code = subprocess.run(
        [
            sys.executable,
            "-m",
            "glassformer",
            "train",
            "--data",
            "lesson:adjectives",
            "--out",
            str(tmp_path / "adj"),
            "--quiet",
        ],
        timeout=1800,
    ).returncode
    assert code == 0
    model = gf.load(tmp_path / "adj")
    own, _, even = heads.adjective_scores(model, n=300, seed=2024)  # held-out sentences
    layer, head, score = heads.strongest(even)
    print(f"\nadjective head {layer}.{head}: even {score:.2f}, own {own[layer, head]:.2f}")
    assert score >= 0.7, f"best head gathers only {score:.2f} of a noun's attention evenly on its adjectives"
    assert own[layer, head] >= 0.8, f"head {layer}.{head} puts {own[layer, head]:.2f} on its noun's adjectives"


# --- bad input -------------------------------------------------------------------------
def one_line_error(capsys, argv, *words):
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *words)


@pytest.mark.parametrize("tied", ["yes", "no"])
def test_cli_chooses_a_tied_or_separate_unembedding(tmp_path, tied):
    out = tmp_path / "run"
    argv = [
        "train",
        "--data",
        "lesson:adjectives",
        "--out",
        str(out),
        "--preset",
        "lesson-tiny",
        "--steps",
        "2",
        "--eval-every",
        "2",
        "--tied-unembedding",
        tied,
        "-q",
    ]
    assert main(argv) == 0
    model = gf.load(out)
    shared = model.unembed.weight.data_ptr() == model.embed.W_E.weight.data_ptr()
    assert model.config.tied_unembedding == shared == (tied == "yes")


def test_bad_training_inputs(capsys, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    binary = tmp_path / "data.bin"
    binary.write_bytes(bytes(range(256)) * 10)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café".encode("latin-1"))
    latin.with_name("ok.txt").write_text("some fine text " * 50)
    out = str(tmp_path / "o")
    one_line_error(capsys, ["train", "--data", str(empty), "--out", out], "empty")
    one_line_error(capsys, ["train", "--data", str(binary), "--out", out], "binary")
    one_line_error(capsys, ["train", "--data", str(latin), "--out", out], "not UTF-8")
    one_line_error(capsys, ["train", "--data", str(tmp_path / "nope.txt"), "--out", out], "no such file")
    one_line_error(capsys, ["train", "--data", "lesson:poetry", "--out", out], "unknown lesson", "lesson:adjectives")
    one_line_error(capsys, ["train", "--data", "lesson:adjectives"], "--out")
    one_line_error(
        capsys,
        ["train", "--data", str(latin.with_name("ok.txt")), "--out", out, "--tokenizer", "words"],
        "unknown tokenizer",
    )
    one_line_error(
        capsys,
        ["train", "--data", "lesson:adjectives", "--out", out, "--tokenizer", "bpe:300"],
        "brings its own",
    )
    one_line_error(
        capsys,
        ["train", "--data", "lesson:adjectives", "--out", out, "--precision", "fp16"],
        "unknown precision",
        "bf16",
    )
    assert not Path(out).exists()  # nothing was created by any of them


def test_resume_refuses_another_shape_and_keeps_files(capsys, tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(data="lesson:adjectives", out=str(out), steps=4, eval_every=2, **SMALL), progress=False)
    before = tree_digest(out)
    one_line_error(capsys, ["train", "--resume", str(out), "--d-model", "64"], "d_model=32", "not 64")
    one_line_error(capsys, ["train", "--resume", str(out), "--data", "lesson:induction"], "resume refused")
    one_line_error(capsys, ["train", "--data", "lesson:adjectives", "--out", str(out)], "--resume")
    one_line_error(capsys, ["train", "--resume", str(tmp_path / "nothing")], "no resumable checkpoint")
    assert tree_digest(out) == before


# --- one process per run directory, and a log that survives kills ---------------------------
LONG_RUN = ["--data", "lesson:adjectives", "--preset", "lesson-tiny", "--steps", "100000", "--eval-every", "5",
            "--eval-batches", "1", "--batch-size", "4", "--quiet"]  # fmt: skip


def _wait_for(predicate, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_a_second_train_into_the_same_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "glassformer", "train", "--out", str(out), *LONG_RUN])
    try:
        _wait_for(lambda: (out / "log.jsonl").exists() and len((out / "log.jsonl").read_text().splitlines()) >= 2)
        for argv in (["--out", str(out), *LONG_RUN], ["--resume", str(out), "--quiet"]):
            second = subprocess.run([sys.executable, "-m", "glassformer", "train", *argv], capture_output=True,
                                    text=True, timeout=120)  # fmt: skip
            err = second.stderr.strip().splitlines()
            assert second.returncode == 2 and len(err) == 1, second.stderr
            assert f"PID {first.pid}" in err[0] or "already holds files" in err[0], err[0]
        _wait_for(lambda: len((out / "log.jsonl").read_text().splitlines()) >= 4)
    finally:
        first.kill()
        first.wait()
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), f"the log interleaves two runs: {steps}"
    # the killed run's lock went with it: a resume may now take the directory
    assert main(["train", "--resume", str(out), "--steps", str(steps[-1] + 5), "--quiet"]) == 0


KILL_DURING = """
import os, signal, sys
from glassformer.cli import main
from glassformer.train import state
what = sys.argv[1]
if what == "append":
    real = os.write
    def torn(fd, data):  # half of the record reaches the file, then the process dies
        real(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    original = state.RunDir.append_log
    def append_log(self, record):
        if record["step"] == 10:
            os.write = torn
        original(self, record)
    state.RunDir.append_log = append_log
else:
    from glassformer import files
    original = files.write_file_atomically
    def write_file_atomically(target, write):
        def half(tmp):  # the rewrite is half done in its temp file when the process dies
            write(tmp)
            tmp.write_text(tmp.read_text()[:20])
            os.kill(os.getpid(), signal.SIGKILL)
        return original(target, half)
    files.write_file_atomically = write_file_atomically
main(sys.argv[2:])
"""


@pytest.mark.slow
def test_sigkill_during_a_log_append_or_the_resume_rewrite_keeps_earlier_records(tmp_path):
    out = tmp_path / "run"
    base = ["train", "--data", "lesson:adjectives", "--preset", "lesson-tiny", "--eval-every", "5",
            "--eval-batches", "1", "--batch-size", "4", "--quiet"]  # fmt: skip
    killed = subprocess.run([sys.executable, "-c", KILL_DURING, "append", *base, "--out", str(out), "--steps", "40"],
                            timeout=300)  # fmt: skip
    assert killed.returncode == -9
    text = (out / "log.jsonl").read_text()
    assert not text.endswith("\n"), "the kill should have torn the last record"
    assert [json.loads(line)["step"] for line in text.splitlines()[:-1]] == [5]
    before = (out / "log.jsonl").read_bytes()
    killed = subprocess.run([sys.executable, "-c", KILL_DURING, "rewrite", "train", "--resume", str(out), "--quiet"],
                            timeout=300)  # fmt: skip
    assert killed.returncode == -9
    assert (out / "log.jsonl").read_bytes() == before, "a kill during the rewrite changed the log"
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name], "the killed rewrite's temp file was not cleaned"
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30, 35, 40], steps
