"""The README is tested: its Python block runs, and so does every `$ glassformer ...`
example that can run offline, in order, in a fresh folder. A few are shortened or
skipped; the lists below say which and why, so the README cannot drift from the code."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

README = (ROOT / "README.md").read_text()

# examples run as written, but shorter: the same command with fewer steps
SHORTENED = {
    "train --data lesson:adjectives": ["--steps", "6", "--eval-every", "3"],
    "train --data data/tinyshakespeare.txt": ["--steps", "6", "--eval-every", "3"],
}
# examples not run here, and why
SKIPPED = {
    "serve": "runs until stopped; tests/test_server.py and tests/test_browser.py drive the explorer",
}


def examples() -> list[str]:
    """Every `$ glassformer ...` line of the README's console blocks, comments removed."""
    found = []
    for block in re.findall(r"```console\n(.*?)```", README, re.S):
        for line in block.splitlines():
            if line.startswith("$ glassformer "):
                found.append(re.split(r"\s{2,}#", line.removeprefix("$ glassformer "))[0].strip())
    return found


def python_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) == 1, "the README has one Python example"
    return blocks[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A fresh folder with the shipped data where the README's paths expect it."""
    path = tmp_path_factory.mktemp("readme")
    (path / "data").symlink_to(ROOT / "data")
    return path


def test_the_readme_has_examples():
    assert len(examples()) >= 12 and any(e.startswith("explain") for e in examples())
    for key in [*SHORTENED, *SKIPPED]:
        assert any(e.startswith(key) for e in examples()), f"{key!r} is no longer in the README"


@pytest.mark.slow
def test_every_console_example_runs(folder):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "100"}
    for example in examples():
        if any(example.startswith(k) for k in SKIPPED):
            continue
        argv = shlex.split(example)
        for prefix, extra in SHORTENED.items():
            if example.startswith(prefix):
                argv += extra
        done = subprocess.run([sys.executable, "-m", "glassformer", *argv], cwd=folder, env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, f"$ glassformer {example}\n{done.stderr[-2000:]}"
        assert done.stdout.strip(), f"$ glassformer {example} printed nothing"


@pytest.mark.slow
def test_the_python_example_runs(folder):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", python_block()], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_quoted_explain_ending_is_what_explain_prints(capsys):
    """The README quotes how `explain`'s default walk ends; the quote is held to the output."""
    from glassformer.cli import main

    quoted = re.search(r"attends to \(`([^`]*→[^`]*)`", README.replace("\n  ", " "))
    assert quoted, "the README no longer quotes explain's ending"
    assert main(["explain"]) == 0
    assert quoted.group(1) in capsys.readouterr().out
