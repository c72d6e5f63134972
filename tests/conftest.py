import hashlib
import os
from pathlib import Path

import pytest
import torch

import glassformer as gf

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never need the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_decoder(**changes) -> gf.ModelConfig:
    base = dict(vocab_size=97, context_length=32, d_model=48, n_heads=4, n_layers=2)
    return gf.ModelConfig(**{**base, **changes})


def tiny_encoder(**changes) -> gf.ModelConfig:
    base = dict(vocab_size=97, context_length=32, d_model=48, n_heads=4, n_layers=2,
                causal=False, norm="post", activation="gelu", type_vocab_size=2,
                tied_unembedding=False, norm_eps=1e-12)  # fmt: skip
    return gf.ModelConfig(**{**base, **changes})


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


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under `path` with the hash of its bytes: to prove nothing was lost."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(path).rglob("*"))
        if p.is_file()
    }
