import os

import pytest
import torch

import glassformer as gf
from glassformer import checkpoint
from glassformer.tokenizer import CharTokenizer

from conftest import build, tiny_decoder, tiny_encoder, tree_digest


@pytest.mark.parametrize("make", [tiny_decoder, tiny_encoder, lambda: tiny_decoder(tied_unembedding=False)])
def test_round_trip_is_bit_exact(tmp_path, make):
    model = build(make())
    model.tokenizer = CharTokenizer.from_text("abcdefgh ")
    gf.save(model, tmp_path / "ckpt")
    again = gf.load(tmp_path / "ckpt")
    assert again.config == model.config
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    ids = torch.randint(0, 97, (2, 10))
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))
    assert again.tokenizer.encode("bad cafe") == model.tokenizer.encode("bad cafe")
    if model.config.causal and model.config.tied_unembedding:
        assert again.unembed.weight is again.embed.W_E.weight  # still tied after loading


def test_crash_during_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    old = build(tiny_decoder(), seed=1)
    gf.save(old, path)
    before = tree_digest(path)

    def boom(tmp):
        raise KeyboardInterrupt  # the process is interrupted half-way through writing

    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(build(tiny_decoder(), seed=2), path, extra=boom)
    assert tree_digest(path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt.tmp")]
    assert torch.equal(gf.load(path).W_E, old.W_E)


def test_crash_between_renames_is_recovered(tmp_path):
    path = tmp_path / "ckpt"
    model = build(tiny_decoder())
    gf.save(model, path)
    os.rename(path, tmp_path / ".ckpt.old-deadbeef")  # the moment between the two renames
    assert torch.equal(gf.load(path).W_E, model.W_E)
    gf.save(model, path)  # a later save cleans up the leftover
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_refuses_to_overwrite_a_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(gf.GlassformerError, match="not a glassformer checkpoint"):
        gf.save(build(tiny_decoder()), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_truncated_weights_are_a_clear_error(tmp_path):
    gf.save(build(tiny_decoder()), tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(gf.GlassformerError, match="corrupt or truncated"):
        gf.load(tmp_path / "c")


def test_wrong_shape_in_checkpoint_names_the_key(tmp_path):
    from safetensors.torch import load_file, save_file

    gf.save(build(tiny_decoder()), tmp_path / "c")
    state = load_file(str(tmp_path / "c" / "model.safetensors"))
    state["blocks.1.mlp.up.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "c" / "model.safetensors"))
    with pytest.raises(gf.GlassformerError, match=r"blocks\.1\.mlp\.up\.weight"):
        gf.load(tmp_path / "c")


def test_no_pickle_anywhere(tmp_path):
    gf.save(build(tiny_decoder()), tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["config.json", "model.safetensors"]


def test_a_rewritten_file_keeps_its_permissions(tmp_path):
    import os

    from glassformer.files import write_file_atomically

    private = tmp_path / "private.html"
    private.write_text("old")
    os.chmod(private, 0o600)
    write_file_atomically(private, lambda tmp: tmp.write_text("new"))
    assert private.read_text() == "new" and private.stat().st_mode & 0o777 == 0o600
    fresh = write_file_atomically(tmp_path / "fresh.html", lambda tmp: tmp.write_text("x"))
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask
