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


# Tolerances. The same float32 maths summed in another order (another kernel: AVX-512,
# AVX2 or the portable one; another thread count; a fused against an explicit attention;
# a cache against a full pass) rounds differently. Each rounding is at most EPS of the
# partial sum, and the partial sums are of the size of the largest numbers compared, so a
# tolerance is a number of EPS times that scale: RTOL_* below, never an absolute 1e-5
# (which failed on logits of size 5 under AVX-512: 1.05e-5 there is 1.5e-6 of the scale).
EPS = torch.finfo(torch.float32).eps  # 1.19e-7
# One to three tiny layers, two summation orders: the worst measured over `make
# test-kernels` (the portable, AVX2 and AVX-512 kernels at 1 and 2 threads, on an AMD EPYC
# with AVX-512) was 2.3e-6 of the scale (attributions adding up to a logit). 1e-5 is 84
# EPS, 4× that. (The numpy decoder, a third library's sums over random configs, measured
# up to 3.8e-6 and is held to twice this: tests/test_cpu_decoder.py.)
RTOL_REORDERED = 1e-5
# Real models (6 to 30 layers, d_model 384 to 768) against another library's kernels (ours
# against Hugging Face's): measured worst 2.2e-6 of the scale (SmolLM2's logits against
# transformers reading the same GGUF file), so 2e-5 is 9× that.
RTOL_DEEP = 2e-5


def assert_close(actual, expected, *, rtol: float, atol: float = 0.0, what: str = "") -> float:
    """max |actual − expected| ≤ atol + rtol · max |expected|, and the ratio to the scale.

    The scale is the largest magnitude compared: every element's rounding comes from sums
    of terms of about that size, so an element near zero is not held to a tighter bound
    (torch.testing.assert_close scales per element and so needs a large atol for those).
    `atol` is for quantities whose scale is known in advance (a probability, a pattern)."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape, f"{what} shapes {tuple(actual.shape)} and {tuple(expected.shape)}"
    scale = expected.abs().max().item() if expected.numel() else 0.0
    diff = (actual - expected).abs().max().item() if expected.numel() else 0.0
    ratio = diff / scale if scale else diff
    _record(ratio, rtol)
    assert diff <= atol + rtol * scale, (
        f"{what} max |Δ| = {diff:.3g} at scale {scale:.3g}: {ratio:.3g} of the scale, tolerance {rtol:.3g} + {atol:.3g}"
    )
    return ratio


def _record(ratio: float, rtol: float) -> None:
    """With GLASSFORMER_TOLERANCE_LOG set, write each comparison's ratio to the scale (and
    its tolerance) there: `make test-kernels` reads the worst to report the spread."""
    log = os.environ.get("GLASSFORMER_TOLERANCE_LOG")
    if log:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        with open(log, "a") as f:
            f.write(f"{ratio:.3e}\t{rtol:.1e}\t{test}\n")


def assert_same_greedy(mine: list[int], ref: list[int], logits_of, *, start: int, margin: float, what: str = ""):
    """Greedy tokens equal up to the first near-tie. Where the two runs first choose
    differently, the reference's own logits (`logits_of(ids)` → [T, V], one pass over the
    reference's tokens) must hold the two choices within `margin` (a tie that rounding may
    break either way); everything before it must be equal, everything after it is not
    compared (the sequences then continue from different tokens). Returns how many new
    tokens were compared."""
    assert len(mine) == len(ref), f"{what} {len(mine)} tokens against {len(ref)}"
    assert mine[:start] == ref[:start], f"{what} the prompts differ"
    for i in range(start, len(ref)):
        if mine[i] != ref[i]:
            with torch.no_grad():
                row = torch.as_tensor(logits_of(ref[:i]))[-1].double()
            gap = (row[ref[i]] - row[mine[i]]).item()
            assert abs(gap) <= margin, (
                f"{what} token {i - start}: {mine[i]} against {ref[i]}, whose logits differ by {gap:.3g} "
                f"(more than a near-tie's {margin:.3g})"
            )
            return i - start
    return len(ref) - start


def assert_matches_hugging_face(
    hf, ours, ids, *, logits: float = RTOL_DEEP, patterns: float = RTOL_REORDERED, what: str = ""
):
    """Our logits and every layer's attention pattern against a Hugging Face model's (run
    with eager attention so that it returns them), relative to their scale (a pattern's is
    1): the failure message says max |Δ| and the scale."""
    with torch.no_grad():
        ref = hf(ids, output_attentions=True)
    out, cache = ours.run_with_cache(ids, names="blocks.*.attn.pattern")
    assert_close(out, ref.logits, rtol=logits, what=f"{what} logits")
    for i, pattern in enumerate(ref.attentions):
        assert_close(cache[f"blocks.{i}.attn.pattern"], pattern, rtol=patterns, what=f"{what} layer {i} pattern")


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
