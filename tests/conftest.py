"""Shared by the tests: tiny models of each family, and the checks every table of bad
inputs uses (one line, exit 2, nothing on disk changed)."""

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

import glassformer as gf
from glassformer.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never need the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# converted weights go to a cache of this test session's own, never the user's (child
# processes inherit it); removed when the session ends
TEST_CACHE = tempfile.mkdtemp(prefix="glassformer-test-cache-")
os.environ["GLASSFORMER_CACHE"] = TEST_CACHE


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(TEST_CACHE, ignore_errors=True)


ROOT = Path(__file__).resolve().parents[1]


def tiny_decoder(**changes) -> gf.ModelConfig:
    base = dict(vocab_size=97, context_length=32, d_model=48, n_heads=4, n_layers=2)
    return gf.ModelConfig(**{**base, **changes})


def tiny_encoder(**changes) -> gf.ModelConfig:
    base = dict(
        vocab_size=97,
        context_length=32,
        d_model=48,
        n_heads=4,
        n_layers=2,
        causal=False,
        norm="post",
        activation="gelu",
        type_vocab_size=2,
        tied_unembedding=False,
        norm_eps=1e-12,
    )
    return gf.ModelConfig(**{**base, **changes})


def tiny_llama(**changes) -> gf.ModelConfig:
    """Rotary positions, RMSNorm, SwiGLU, no biases, 4 query heads sharing 2 key/value heads."""
    base = dict(
        vocab_size=97,
        context_length=32,
        d_model=48,
        n_heads=4,
        n_kv_heads=2,
        n_layers=2,
        d_mlp=80,
        normalization="rmsnorm",
        activation="silu",
        mlp="gated",
        positions="rotary",
        bias=False,
        rope_base=500.0,
        tied_unembedding=False,
    )
    return gf.ModelConfig(**{**base, **changes})


FAMILIES = {"gpt": tiny_decoder, "bert": tiny_encoder, "llama": tiny_llama}


def build(config: gf.ModelConfig, seed: int = 0) -> gf.Transformer:
    torch.manual_seed(seed)
    model = gf.Transformer(config).eval()
    # GPT-2's init is tiny (std 0.02); stronger weights give sharper patterns to compare
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


@pytest.fixture
def decoder() -> gf.Transformer:
    return build(tiny_decoder())


@pytest.fixture
def encoder() -> gf.Transformer:
    return build(tiny_encoder())


@pytest.fixture
def llama() -> gf.Transformer:
    return build(tiny_llama())


def maxdiff(a, b) -> float:
    return (torch.as_tensor(a) - torch.as_tensor(b)).abs().max().item()


def assert_matches_hugging_face(hf, ours, ids, *, logits: float = 1e-4, patterns: float = 1e-5, what: str = ""):
    """Our logits and every layer's attention pattern against a Hugging Face model's (run
    with eager attention so that it returns them), max |Δ| in the failure message."""
    with torch.no_grad():
        ref = hf(ids, output_attentions=True)
    out, cache = ours.run_with_cache(ids, names="blocks.*.attn.pattern")
    assert maxdiff(out, ref.logits) <= logits, f"{what} logits max |Δ| = {maxdiff(out, ref.logits)}"
    for i, pattern in enumerate(ref.attentions):
        d = maxdiff(cache[f"blocks.{i}.attn.pattern"], pattern)
        assert d <= patterns, f"{what} layer {i}: pattern max |Δ| = {d}"


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under `path` with the hash of its bytes: to prove nothing was lost."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(path).rglob("*"))
        if p.is_file()
    }


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `glassformer ARGV`, argparse's own exits included."""
    capsys.readouterr()  # what the test's own set-up printed is not the command's
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("glassformer"), lines[0]
    for w in words:
        assert w in lines[0], lines[0]


def needs(module: str, why: str):
    """Skip unless `module` can be imported, saying what it is for."""
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"needs {module}: {why}")
