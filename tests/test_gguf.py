"""GGUF files: small Llama models written the way llama.cpp writes them (rows of W_Q and
W_K permuted, weights quantized), read back and compared with Hugging Face; every
quantization type checked against an independent decoder; bad files refused in one line."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import glassformer as gf
from glassformer.tokenizer import train_bpe

from conftest import ROOT, RTOL_DEEP, assert_matches_hugging_face, assert_one_line_error, run_cli, tree_digest

gguf = pytest.importorskip("gguf", reason="GGUF files are read with llama.cpp's gguf package")
transformers = pytest.importorskip("transformers", reason="the reference model is Hugging Face's LlamaForCausalLM")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf import quants  # noqa: E402

TEXT = "The capital of France is Paris; 12 fluffy creatures roamed 3 verdant forests."


@pytest.fixture(scope="module")
def bpe():
    return train_bpe([(ROOT / "data" / "tinyshakespeare.txt").read_text()[:40_000], TEXT * 3], 400)


@pytest.fixture(scope="module")
def hf_llama(bpe):
    torch.manual_seed(3)
    config = transformers.LlamaConfig(
        vocab_size=bpe.vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rope_theta=2000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.mul_(5)
    model.set_attn_implementation("eager")
    return model


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to the rows of W_Q and W_K."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf_name: str) -> str:
    if hf_name in GGUF_NAMES:
        return GGUF_NAMES[hf_name]
    layer, rest = hf_name.removeprefix("model.layers.").split(".", 1)
    return f"blk.{layer}.{GGUF_NAMES[rest]}"


def write_gguf(
    path: Path,
    model,
    bpe,
    *,
    kind: str = "F32",
    arch: str = "llama",
    tokenizer: str = "gpt2",
    odd: str = "",
    meta: dict | None = None,
) -> dict:
    """Write `model` as llama.cpp would; returns the dequantized weights actually stored,
    by Hugging Face name (what the file's model computes with). `odd`: a tensor to store
    in IQ4_NL, a type glassformer does not read; `meta`: metadata fields to set instead,
    key -> (value, GGUFValueType, sub_type or None)."""
    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(c.head_dim)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    spec = json.loads(bpe.to_json())["model"]
    w.add_tokenizer_model(tokenizer)
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in sorted(spec["vocab"].items(), key=lambda kv: kv[1])])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in spec["merges"]])
    w.add_token_types([1] * bpe.vocab_size)
    stored = {}
    for name, tensor in model.state_dict().items():
        data = tensor.float().numpy()
        if name.endswith("q_proj.weight"):
            data = llama_cpp_permute(data, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = llama_cpp_permute(data, c.num_key_value_heads)
        if gguf_name(name) == odd:
            blocks = np.zeros((data.shape[0], data.shape[1] // 32 * 18), dtype=np.uint8)  # 32 values in 18 bytes
            w.add_tensor(odd, blocks, raw_dtype=Q.IQ4_NL)
        elif data.ndim == 2 and kind != "F32":
            packed = quants.quantize(data, Q[kind])
            w.add_tensor(gguf_name(name), packed, raw_dtype=Q[kind])
            data = quants.dequantize(packed, Q[kind])
        else:
            w.add_tensor(gguf_name(name), data)
        if name.endswith("q_proj.weight"):  # the reference keeps Hugging Face's row order
            data = _unpermute(data, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = _unpermute(data, c.num_key_value_heads)
        stored[name] = torch.from_numpy(np.array(data, dtype=np.float32))
    for key, (value, kind_, sub) in (meta or {}).items():
        w.kv_data[0][key] = gguf.GGUFValue(value, kind_, sub)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def compare(path: Path, hf_model, stored: dict, bpe, tol: float) -> None:
    ours = gf.load(path)
    reference = type(hf_model)(hf_model.config).eval()
    reference.load_state_dict(stored)
    reference.set_attn_implementation("eager")
    ids = torch.tensor([bpe.encode(TEXT)])
    assert ours.tokenizer.encode(TEXT) == ids[0].tolist()
    assert_matches_hugging_face(reference, ours, ids, logits=tol)


def test_a_float32_gguf_equals_the_hugging_face_model(tmp_path, hf_llama, bpe):
    """The rows llama.cpp permutes are put back: logits and every pattern as Hugging Face's, up to
    the rounding of another library's kernels (conftest's tolerances)."""
    stored = write_gguf(tmp_path / "m.gguf", hf_llama, bpe)
    assert all(torch.equal(stored[k], v) for k, v in hf_llama.state_dict().items())
    compare(tmp_path / "m.gguf", hf_llama, stored, bpe, tol=RTOL_DEEP)


@pytest.mark.parametrize("kind", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_quantized_ggufs_compute_with_their_dequantized_weights(tmp_path, hf_llama, bpe, kind):
    stored = write_gguf(tmp_path / "m.gguf", hf_llama, bpe, kind=kind)
    assert any(not torch.equal(stored[k], v) for k, v in hf_llama.state_dict().items())  # it was quantized
    compare(tmp_path / "m.gguf", hf_llama, stored, bpe, tol=RTOL_DEEP)


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_dequantization_agrees_with_an_independent_decoder(kind):
    """The gguf package's decoder against transformers' own, on random blocks: numpy cannot
    write K-quants, so every bit pattern is fair game."""
    from transformers.integrations.gguf.dequant import GGML_BLOCK
    from transformers.integrations.gguf.dequant import dequantize as reference

    elements, size = GGML_BLOCK[Q[kind].value]
    raw = np.random.default_rng(0).integers(0, 256, (64, size), dtype=np.uint8)
    # keep the blocks' fp16 scales finite and modest: random bits would make infinities
    halves = raw.view(np.uint16) if size % 2 == 0 else None
    if halves is not None:
        halves[(halves & 0x7C00) == 0x7C00] &= 0x3FFF
    ours = quants.dequantize(raw, Q[kind]).reshape(-1)
    theirs = reference(torch.from_numpy(raw.reshape(-1).copy()), Q[kind].value).numpy()
    assert ours.shape == theirs.shape == (64 * elements,)
    # a block's scale times a small integer (plus its minimum): a rounding or two, so 84 EPS per
    # element is ample; atol for the elements a block's scale makes zero
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


# --- files glassformer refuses ---------------------------------------------------------------
def damaged(tmp_path, hf_llama, bpe, how: str) -> Path:
    path = tmp_path / "bad.gguf"
    if how == "architecture":
        write_gguf(path, hf_llama, bpe, arch="falcon")
    elif how == "tokenizer":
        write_gguf(path, hf_llama, bpe, tokenizer="llama")
    elif how == "quantization":
        write_gguf(path, hf_llama, bpe, odd="blk.0.ffn_up.weight")
    elif how == "truncated":
        write_gguf(path, hf_llama, bpe)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "not gguf":
        path.write_bytes(b"GGML" + bytes(100))
    else:
        write_gguf(path, hf_llama, bpe, meta=CRAFTED[how])
    return path


T = gguf.GGUFValueType
CRAFTED = {  # metadata a crafted file might carry
    "no heads": {"llama.attention.head_count": (0, T.UINT32, None)},
    "width as text": {"llama.embedding_length": ("sixteen", T.STRING, None)},
    "bos out of range": {
        "tokenizer.ggml.bos_token_id": (99999, T.UINT32, None),
        "tokenizer.ggml.add_bos_token": (True, T.BOOL, None),
    },
    "merge without a space": {"tokenizer.ggml.merges": (["hello"], T.ARRAY, T.STRING)},
    "merge of unknown tokens": {"tokenizer.ggml.merges": (["qqq zzz"], T.ARRAY, T.STRING)},
    "scaling factor as text": {"llama.rope.scaling.factor": ("x", T.STRING, None)},
}


@pytest.mark.parametrize(
    "how, words",
    [
        ("architecture", ["'falcon'", "supported GGUF architectures: llama"]),
        ("tokenizer", ["'llama' tokenizer", "supported GGUF tokenizer models: gpt2"]),
        ("quantization", ["stored as IQ4_NL", "supported: F32, F16, BF16, Q8_0"]),
        ("truncated", ["damaged or truncated"]),
        ("not gguf", ["not a GGUF file"]),
        ("no heads", ["head_count 0 must be at least 1"]),
        ("width as text", ["does not describe a model", "sixteen"]),
        ("bos out of range", ["bos_token_id 99999 is not one of its"]),
        ("merge without a space", ["merges holds an entry that is not two tokens"]),
        ("merge of unknown tokens", ["tokenizer cannot be built"]),
        ("scaling factor as text", ["factor 'x' is not supported"]),
    ],
)
def test_a_bad_gguf_is_one_line(capsys, tmp_path, hf_llama, bpe, how, words):
    path = damaged(tmp_path, hf_llama, bpe, how)
    before = tree_digest(tmp_path)
    code, _, err = run_cli(capsys, "explain", "hi", "--model", str(path), "--layer", "0", "--head", "0")
    assert_one_line_error(code, err, *words)
    assert tree_digest(tmp_path) == before


def test_params_reads_a_gguf_without_its_weights(capsys, tmp_path, hf_llama, bpe):
    write_gguf(tmp_path / "m.gguf", hf_llama, bpe)
    code, out, _ = run_cli(capsys, "params", tmp_path / "m.gguf")
    total = int(next(x for x in out.splitlines() if x.startswith("Total")).split()[-1].replace(",", ""))
    assert code == 0 and total == sum(p.numel() for p in hf_llama.parameters())
