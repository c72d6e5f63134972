"""GGUF files read with every size checked first, and the converted-weights cache: a model
mapped from the cache computes exactly what the converted file computes; a damaged cache
is rebuilt, never trusted; `glassformer cache` says where it is and clears only its own."""

import os
import signal
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import glassformer as gf
from glassformer.config import GlassformerError
from glassformer.pretrained import dequant, gguf_file, weights_cache

from conftest import assert_one_line_error, run_cli, tree_digest

# --- a GGUF file written byte by byte, so that it can lie ------------------------------------
STRING, ARRAY, U32, U8, F32 = 8, 9, 4, 0, 6


def _str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _value(kind: int, value) -> bytes:
    if kind == STRING:
        return _str(value)
    if kind == U32:
        return struct.pack("<I", value)
    if kind == F32:
        return struct.pack("<f", value)
    item, items = value  # an array: (item type, values)
    body = b"".join(_value(item, v) for v in items)
    return struct.pack("<IQ", item, len(items)) + body


def craft(path: Path, fields: list, tensors: list, data: bytes = b"", count: int | None = None) -> Path:
    """fields: (key, type, value); tensors: (name, dims fastest first, type id, offset)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(fields) if count is None else count)
    for key, kind, value in fields:
        out += _str(key) + struct.pack("<I", kind) + _value(kind, value)
    for name, dims, kind, offset in tensors:
        out += _str(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        out += struct.pack("<IQ", kind, offset)
    out += bytes(-len(out) % 32)
    path.write_bytes(out + data)
    return path


V, C, M, H, K = 8, 16, 24, 4, 2  # vocab, width, MLP, query heads, key/value heads
D = C // H


def llama_fields(layers: int) -> list:
    tokens = ["a", "b", "c", "d", "e", "f", "ab", "cd"]
    return [
        ("general.architecture", STRING, "llama"),
        ("llama.block_count", U32, layers),
        ("llama.context_length", U32, 32),
        ("llama.embedding_length", U32, C),
        ("llama.feed_forward_length", U32, M),
        ("llama.attention.head_count", U32, H),
        ("llama.attention.head_count_kv", U32, K),
        ("llama.rope.freq_base", F32, 500.0),
        ("tokenizer.ggml.model", STRING, "gpt2"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.merges", ARRAY, (STRING, ["a b", "c d"])),
    ]


def llama_tensors(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, GGUF dims, fastest axis first) of every tensor of a tiny Llama."""
    out = [("token_embd.weight", (C, V)), ("output_norm.weight", (C,)), ("output.weight", (C, V))]
    for i in range(layers):
        g = f"blk.{i}."
        out += [
            (g + "attn_norm.weight", (C,)),
            (g + "attn_q.weight", (C, H * D)),
            (g + "attn_k.weight", (C, K * D)),
            (g + "attn_v.weight", (C, K * D)),
            (g + "attn_output.weight", (H * D, C)),
            (g + "ffn_norm.weight", (C,)),
            (g + "ffn_gate.weight", (C, M)),
            (g + "ffn_up.weight", (C, M)),
            (g + "ffn_down.weight", (M, C)),
        ]
    return out


def tiny_llama_gguf(path: Path, layers: int = 2, seed: int = 0) -> Path:
    """A tiny Llama in float32, each tensor its own random numbers."""
    rng = np.random.default_rng(seed)
    tensors, data = [], b""
    for name, dims in llama_tensors(layers):
        values = rng.normal(1.0 if "norm" in name else 0.0, 0.3, int(np.prod(dims))).astype(np.float32)
        tensors.append((name, dims, 0, len(data)))
        data += values.tobytes() + bytes(-values.nbytes % 32)
    return craft(path, llama_fields(layers), tensors, data)


# --- sizes checked before anything is read ---------------------------------------------------
class Hung(Exception):
    pass


@pytest.fixture
def no_hang():
    """Turns a reader that would run on without end into a failure (a guard, not a timing)."""

    def stop(*_):
        raise Hung("the reader ran on for 60 s: it trusts a declared size")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_an_array_longer_than_the_file_is_refused_at_once(tmp_path, no_hang):
    """128 bytes that declare a uint8 array of 2**63 elements: refused before reading one."""
    path = tmp_path / "huge.gguf"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _str("x") + struct.pack("<IIQ", ARRAY, U8, 2**63)
    path.write_bytes(header + bytes(128 - len(header)))
    with pytest.raises(GlassformerError, match="past the end"):
        gguf_file.open_file(path)


@pytest.mark.parametrize("item", [STRING, U32])
def test_counts_beyond_the_file_are_refused(tmp_path, no_hang, item):
    """A vocabulary of 2**40 strings, or 10**9 numbers, in a file of a few hundred bytes."""
    path = tmp_path / "lying.gguf"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _str("tokens") + struct.pack("<IIQ", ARRAY, item, 2**40)
    path.write_bytes(header + b"\0" * 300)
    with pytest.raises(GlassformerError, match="past the end"):
        gguf_file.open_file(path)
    many = craft(tmp_path / "many.gguf", [], [], count=2**62)  # metadata entries
    with pytest.raises(GlassformerError, match="past the end"):
        gguf_file.open_file(many)


def test_arrays_of_numbers_are_read_in_one_piece(tmp_path):
    """A million token types come back as one numpy array, not a million objects."""
    kinds = list(range(7)) * 150_000
    path = craft(tmp_path / "types.gguf", [("tokenizer.ggml.token_type", ARRAY, (U32, kinds))], [])
    got = gguf_file.open_file(path).fields["tokenizer.ggml.token_type"]
    assert isinstance(got, np.ndarray) and got.dtype == np.uint32 and got.tolist() == kinds


def test_a_tensor_offset_of_two_to_the_64_is_one_error_and_no_warning(tmp_path):
    fields = llama_fields(1)
    tensors = [(name, dims, 0, 0) for name, dims in llama_tensors(1)]
    tensors[0] = (tensors[0][0], tensors[0][1], 0, 2**64 - 1)
    path = craft(tmp_path / "far.gguf", fields, tensors, bytes(4 * C * M))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow RuntimeWarning would be an error here
        with pytest.raises(GlassformerError, match=r"token_embd\.weight lies past the end"):
            gf.load(path)


def test_a_model_too_big_for_memory_is_refused_before_any_tensor_is_decoded(tmp_path, monkeypatch):
    """2,000 layers whose tensors all share one offset: a few KB of file, hundreds of MB of
    float32 declared. The size is checked first; nothing is decoded."""
    layers = 2000
    tensors = [(name, dims, 0, 0) for name, dims in llama_tensors(layers)]
    path = craft(tmp_path / "shared.gguf", llama_fields(layers), tensors, bytes(4 * C * M))
    decoded = []
    monkeypatch.setattr(dequant, "dequantize_into", lambda *a: decoded.append(a))
    monkeypatch.setattr("glassformer.params.available_memory", lambda: 5 * 2**20)
    with pytest.raises(GlassformerError, match=r"more than the 0\.0 GiB of memory free"):
        gf.load(path)
    assert decoded == []


def test_a_gguf_lie_is_one_line_on_the_command_line(capsys, tmp_path):
    path = tmp_path / "lie.gguf"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _str("x") + struct.pack("<IIQ", ARRAY, U8, 2**63)
    path.write_bytes(header + bytes(128 - len(header)))
    before = tree_digest(tmp_path)
    code, _, err = run_cli(capsys, "explain", "ab", "--model", path)
    assert_one_line_error(code, err, "damaged or truncated", "past the end")
    assert tree_digest(tmp_path) == before


# --- the weights cache -------------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("GLASSFORMER_CACHE", str(folder))
    return folder


@pytest.fixture
def conversions(monkeypatch) -> list:
    """Counts the GGUF tensors decoded (a load served from the cache decodes none)."""
    seen: list = []
    real = dequant.dequantize_into
    monkeypatch.setattr(dequant, "dequantize_into", lambda *a: seen.append(1) or real(*a))
    return seen


def cached_files(cache: Path) -> list[Path]:
    return sorted((cache / weights_cache.WEIGHTS).glob("*.safetensors"))


def logits(model, ids=(1, 2, 3, 4, 5, 6, 7, 0)) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([list(ids)]))


def test_results_are_bit_identical_with_and_without_the_cache(tmp_path, cache, monkeypatch, conversions):
    path = tiny_llama_gguf(tmp_path / "m.gguf")
    monkeypatch.setenv("GLASSFORMER_CACHE", "off")
    uncached = gf.load(path)
    assert conversions and not cache.exists()
    monkeypatch.setenv("GLASSFORMER_CACHE", str(cache))
    first = gf.load(path)  # converts, writes the cache
    assert len(cached_files(cache)) == 1
    conversions.clear()
    mapped = gf.load(path)  # maps the cache
    assert conversions == []
    for model in (first, mapped):
        assert model.state_dict().keys() == uncached.state_dict().keys()
        for key, value in uncached.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
        assert torch.equal(logits(model), logits(uncached))
    ids = mapped.tokenizer.encode("abcd")
    tokens = [torch.as_tensor(gf.generate(m, ids, max_new_tokens=6, temperature=0)) for m in (mapped, uncached)]
    assert torch.equal(*tokens)


def test_the_cached_weights_are_what_the_file_holds(tmp_path, cache):
    """Read back with the safetensors library itself: the joined W_Q|W_K|W_V is the file's
    query rows (un-permuted), key rows and value rows, transposed."""
    from safetensors.numpy import load_file

    path = tiny_llama_gguf(tmp_path / "m.gguf")
    model = gf.load(path)
    stored = load_file(str(cached_files(cache)[0]))
    reader = gguf_file.open_file(path)
    q = gguf_file.unpermute(reader.raw(reader.tensors["blk.1.attn_q.weight"]).view(np.float32).reshape(H * D, C), H)
    np.testing.assert_array_equal(stored["blocks.1.attn.qkv"][:, : H * D], q.T)
    attn = model.block(1).attn
    assert torch.equal(attn.query.weight, torch.from_numpy(q.T.copy()))
    # the model's matrices are column blocks of the one joined matrix: no copy is made
    assert attn.key.weight.data_ptr() == attn.query.weight.data_ptr() + 4 * H * D


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "garble the header", "empty", "another key"])
def test_a_damaged_cache_is_rebuilt_not_trusted(tmp_path, cache, conversions, damage):
    path = tiny_llama_gguf(tmp_path / "m.gguf")
    reference = logits(gf.load(path))
    (file,) = cached_files(cache)
    raw = bytearray(file.read_bytes())
    if damage == "flip a byte":
        raw[-100] ^= 0x10
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "garble the header":
        raw[20:30] = b"}{" * 5
    elif damage == "empty":
        raw = bytearray()
    else:  # a cache made from another file, renamed to this one's name
        raw = raw.replace(b'"source":"', b'"source":"9')[:-1]
    file.write_bytes(bytes(raw))
    conversions.clear()
    assert torch.equal(logits(gf.load(path)), reference)
    assert conversions, "the damaged cache was used"
    conversions.clear()
    gf.load(path)
    assert conversions == [], "the rebuilt cache is not used"


def test_a_changed_file_gets_a_new_cache_and_the_old_one_goes(tmp_path, cache, conversions):
    path = tiny_llama_gguf(tmp_path / "m.gguf")
    old = logits(gf.load(path))
    (before,) = cached_files(cache)
    tiny_llama_gguf(path, seed=1)  # same size, new numbers and modification time
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    conversions.clear()
    new = logits(gf.load(path))
    assert conversions and not torch.equal(new, old)
    (after,) = cached_files(cache)
    assert after != before


def test_writing_to_a_loaded_weight_never_reaches_the_cache(tmp_path, cache, conversions):
    path = tiny_llama_gguf(tmp_path / "m.gguf")
    gf.load(path)
    (file,) = cached_files(cache)
    digest = tree_digest(file.parent)
    model = gf.load(path)
    with torch.no_grad():
        model.block(0).attn.query.weight.mul_(2)
    del model
    assert tree_digest(file.parent) == digest
    conversions.clear()
    gf.load(path)
    assert conversions == []


def test_an_unwritable_cache_still_loads(tmp_path, monkeypatch, conversions):
    """A cache path that cannot be a folder (here: a file is in the way; the same for a
    read-only disk or a full one): the model loads anyway, converted in memory."""
    path = tiny_llama_gguf(tmp_path / "m.gguf")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("in the way")
    monkeypatch.setenv("GLASSFORMER_CACHE", str(blocker))
    model = gf.load(path)
    assert conversions and torch.isfinite(logits(model)).all()
    assert blocker.read_text() == "in the way"


def test_a_dead_writers_temp_file_is_removed(tmp_path, cache):
    path = tiny_llama_gguf(tmp_path / "m.gguf")
    folder = cache / weights_cache.WEIGHTS
    folder.mkdir(parents=True)
    dead = folder / ".x.safetensors.tmp-999999999-deadbeef"  # no such process
    dead.write_bytes(b"half")
    gf.load(path)
    assert not dead.exists()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_the_cache_command_says_where_and_clears_only_its_own(capsys, tmp_path, cache):
    code, out, _ = run_cli(capsys, "cache")
    assert code == 0 and str(cache) in out and "empty" in out
    gf.load(tiny_llama_gguf(tmp_path / "m.gguf"))
    (file,) = cached_files(cache)
    mine = cache / "notes.txt"
    mine.write_text("the user's own file")
    code, out, _ = run_cli(capsys, "cache")
    assert code == 0 and str(cache) in out and "1 file" in out and f"{file.stat().st_size / 1e6:.1f} MB" in out
    code, out, _ = run_cli(capsys, "cache", "--clear")
    assert code == 0 and "removed 1 file" in out
    assert cached_files(cache) == [] and mine.read_text() == "the user's own file"


def test_no_cache_when_it_is_off(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GLASSFORMER_CACHE", "off")
    code, out, _ = run_cli(capsys, "cache")
    assert code == 0 and "off" in out


@pytest.mark.parametrize("kind", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q4_K"])
def test_chunked_decoding_is_the_reference_decoders_bit_for_bit(kind, monkeypatch):
    """Our numpy decoders (and chunking, made small here so that a tensor spans several
    chunks) against the gguf package's own, on random blocks: the same float32 bits."""
    quants = pytest.importorskip("gguf.quants", reason="the reference decoder is the gguf package's")
    from gguf.constants import GGMLQuantizationType

    type_id = next(i for i, (name, _, _) in dequant.TYPES.items() if name == kind)
    _, block, size = dequant.TYPES[type_id]
    raw = np.random.default_rng(0).integers(0, 256, (40, size), dtype=np.uint8)
    halves = raw.view(np.uint16) if size % 2 == 0 else None
    if halves is not None:  # keep fp16 scales and values finite: random bits make infinities
        halves[(halves & 0x7C00) == 0x7C00] &= 0x3FFF
    monkeypatch.setattr(dequant, "CHUNK", 3 * block)
    ours = np.empty(40 * block, dtype=np.float32)
    dequant.dequantize_into(raw.reshape(-1), type_id, ours)
    reference = quants.dequantize(raw.reshape(-1), GGMLQuantizationType[kind]).reshape(-1)
    np.testing.assert_array_equal(ours.view(np.uint32), np.asarray(reference, dtype=np.float32).view(np.uint32))
