"""A word-level tokenizer for lessons: one token per word, split on spaces."""

from __future__ import annotations

from ..tokenizer import HFTokenizer


def word_tokenizer(words: list[str]) -> HFTokenizer:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0} | {w: i + 1 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return HFTokenizer(tok)
