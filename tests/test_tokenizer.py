import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import glassformer as gf
from glassformer.tokenizer import ByteTokenizer, CharTokenizer, tokenizer_from_json, train_bpe

SHAKESPEARE_BITS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


@pytest.fixture(scope="module")
def bpe():
    return train_bpe([SHAKESPEARE_BITS * 20, "a fluffy blue creature roamed the verdant forest"], 400)


@given(st.text(alphabet=sorted(set(SHAKESPEARE_BITS)), max_size=200))
def test_char_round_trip(text):
    tok = CharTokenizer.from_text(SHAKESPEARE_BITS)
    assert tok.decode(tok.encode(text)) == text


def test_char_unknown_character_is_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(gf.GlassformerError, match="'z'"):
        tok.encode("abz")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_byte_level_bpe_round_trip_is_exact(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=100))
def test_byte_tokenizer_round_trip(text):
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(text)) == text


def test_bpe_has_the_asked_vocab_size_and_merges(bpe):
    assert 257 < bpe.vocab_size <= 400  # the corpus may run out of merges first
    assert len(bpe.encode("Speak, speak.")) < len("Speak, speak.")


def test_json_round_trip(bpe):
    for tok in (bpe, CharTokenizer.from_text("hello"), ByteTokenizer()):
        again = tokenizer_from_json(tok.to_json())
        assert again.encode("hello") == tok.encode("hello")
        assert type(again) is type(tok)


def test_token_texts_are_readable(bpe):
    ids = bpe.encode("the verdant forest")
    assert "".join(bpe.token_texts(ids)) == "the verdant forest"


def test_bad_json():
    with pytest.raises(gf.GlassformerError):
        tokenizer_from_json("{not json")
    with pytest.raises(gf.GlassformerError):
        train_bpe(["x"], 100)


def test_token_texts_name_special_tokens_and_show_split_characters_as_bytes(bpe):
    """A special token by its name, not as ''; a token holding part of a character by its
    bytes, not as '��'."""
    special = bpe.token_id("<|endoftext|>")
    assert bpe.token_texts([special]) == ["<|endoftext|>"]
    ids = bpe.encode("☃")  # three bytes the small vocabulary has not merged
    texts = bpe.token_texts(ids)
    assert "".join(texts) == "\\xe2\\x98\\x83" and all("\ufffd" not in t for t in texts)
    assert bpe.token_texts(bpe.encode(" fluffy")) == [" fluffy"]


def test_every_tokenizer_offers_the_whole_protocol():
    """Code reads a model's tokenizer through tokenizer.Tokenizer, never by probing for
    methods: each kind must offer every one of them."""
    from glassformer.tokenizer import ByteTokenizer, CharTokenizer, Tokenizer, train_bpe

    kinds = [CharTokenizer.from_text("abc "), ByteTokenizer(), train_bpe(["a fluffy blue creature"] * 3, 300)]
    for tok in kinds:
        assert isinstance(tok, Tokenizer), type(tok).__name__
        assert tok.unknown_pieces("abc") == [] and tok.words() is None
    assert kinds[0].token_id("b") == 2 and kinds[0].token_id("z") is None
    assert kinds[1].token_id("a") == 97 and kinds[1].token_id("ab") is None
