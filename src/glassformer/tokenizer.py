"""Text <-> token ids.

Three kinds, one interface, the `Tokenizer` protocol below (what a model's `.tokenizer`
offers; nothing probes for methods with getattr):

- CharTokenizer: one token per character seen in a training text (nanoGPT's
  Shakespeare-char); unseen characters are refused by name.
- ByteTokenizer: one token per UTF-8 byte; lets a randomly initialised preset read any text.
- HFTokenizer: any Hugging Face `tokenizer.json` (byte-level BPE like GPT-2,
  WordPiece like BERT) through the `tokenizers` library; `train_bpe` makes a new one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

from .config import GlassformerError

_MARK = "glassformer_tokenizer"  # key that tells our own formats from Hugging Face's


def utf8(text: str) -> str:
    """`text`, refused in one line if it cannot be written as UTF-8: a lone surrogate, as
    Python reads a byte that is not UTF-8 on the command line (the tokenizers library
    would raise a TypeError on it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise GlassformerError(
            f"{text[:40]!r} holds a character that is not valid Unicode text at position {err.start} "
            "(a lone surrogate, or a byte that is not UTF-8 on the command line); give UTF-8 text"
        ) from None
    return text


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer offers; a model's `.tokenizer` is one of these (or None)."""

    kind: str  # "char", "bytes" or "hf"

    @property
    def vocab_size(self) -> int: ...  # how many ids it gives (W_E may have more rows)

    def encode(self, text: str) -> list[int]: ...  # special tokens added as the model expects

    def decode(self, ids: Iterable[int]) -> str: ...

    def token_texts(self, ids: Iterable[int]) -> list[str]: ...  # each id as its own piece of text

    def token_id(self, token: str) -> int | None: ...  # the id of one whole token, or None

    def unknown_pieces(self, text: str) -> list[tuple[int, str]]: ...  # (position, piece) that became [UNK]

    def words(self) -> list[str] | None: ...  # a word-level vocabulary's words, else None

    def to_json(self) -> str: ...


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable character that stands for each
    byte in a byte-level vocabulary (bytes that print as themselves keep their own
    character; the rest are moved to 256 onwards)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in kept:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


BYTE_OF_CHAR = _byte_level_alphabet()


class CharTokenizer:
    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = list(chars)
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise GlassformerError("a character vocabulary needs distinct single characters")
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        if not text:
            raise GlassformerError("cannot build a character vocabulary from empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError as err:
            raise GlassformerError(
                f"character {err.args[0]!r} is not in this model's vocabulary of {self.vocab_size} characters"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def token_texts(self, ids: Iterable[int]) -> list[str]:
        n = len(self.chars)  # a model may have more rows in W_E than the tokenizer has tokens
        return [self.chars[i] if 0 <= i < n else f"<{i}>" for i in ids]

    def token_id(self, token: str) -> int | None:
        return self.index.get(token)

    def unknown_pieces(self, text: str) -> list[tuple[int, str]]:
        return []  # encode refuses an unknown character by name instead

    def words(self) -> list[str] | None:
        return None

    def to_json(self) -> str:
        return json.dumps({_MARK: "char", "chars": self.chars}, ensure_ascii=False)


class ByteTokenizer:
    kind = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def token_texts(self, ids: Iterable[int]) -> list[str]:
        return [bytes([i]).decode("utf-8", errors="replace") if 0 <= i < 256 else f"<{i}>" for i in ids]

    def token_id(self, token: str) -> int | None:
        raw = token.encode("utf-8")
        return raw[0] if len(raw) == 1 else None

    def unknown_pieces(self, text: str) -> list[tuple[int, str]]:
        return []  # every string is bytes

    def words(self) -> list[str] | None:
        return None

    def to_json(self) -> str:
        return json.dumps({_MARK: "bytes"})


class HFTokenizer:
    """A Hugging Face `tokenizers.Tokenizer`; special tokens ([CLS], [SEP]) are added
    the way the original tokenizer adds them."""

    kind = "hf"

    def __init__(self, tok) -> None:
        self.tok = tok

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tok.encode(utf8(text), add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch([utf8(t) for t in texts], add_special_tokens=add_special_tokens)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_texts(self, ids: Iterable[int]) -> list[str]:
        """Each token's own text: ' fluffy' for GPT-2's 'Ġfluffy', '##ing' for BERT."""
        ids = list(ids)
        if self.tok.decoder is not None and type(self.tok.decoder).__name__ == "ByteLevel":
            return [self._byte_level_text(i) for i in ids]
        return [self.tok.id_to_token(i) or f"<{i}>" for i in ids]

    def _byte_level_text(self, i: int) -> str:
        """A byte-level token's text; a special token by its name ('<|endoftext|>'); a
        token holding part of a character by its bytes ('\\xe2\\x80'), not as '��'."""
        text = self.tok.decode([i], skip_special_tokens=False)
        if "\ufffd" not in text:
            return text
        piece = self.tok.id_to_token(i) or ""
        if any(ch not in BYTE_OF_CHAR for ch in piece):
            return text
        raw = bytes(BYTE_OF_CHAR[ch] for ch in piece)
        return raw.decode("utf-8", errors="backslashreplace")

    def token_id(self, token: str) -> int | None:
        return self.tok.token_to_id(utf8(token))

    def unknown_pieces(self, text: str) -> list[tuple[int, str]]:
        """(position, piece of `text`) for each token that became the unknown token, at its
        position in `encode(text)` (special tokens counted): empty for byte-level
        vocabularies, which know every string."""
        unk = self._unknown_token()
        if unk is None:
            return []
        enc = self.tok.encode(utf8(text))
        return [(i, text[s:e]) for i, (token, (s, e)) in enumerate(zip(enc.tokens, enc.offsets)) if token == unk]

    def unknown_words(self, text: str) -> list[str]:
        """The pieces of `text` this vocabulary does not know, in order, once each."""
        return list(dict.fromkeys(piece for _, piece in self.unknown_pieces(text)))

    def words(self) -> list[str] | None:
        """A word-level vocabulary's words in id order (the unknown token left out), else None."""
        if type(self.tok.model).__name__ != "WordLevel":
            return None
        unk = self._unknown_token()
        vocab = self.tok.get_vocab(with_added_tokens=False)
        return [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if w != unk]

    def _unknown_token(self) -> str | None:
        if type(self.tok.model).__name__ not in ("WordLevel", "WordPiece"):
            return None
        return self.tok.model.unk_token

    def to_json(self) -> str:
        return self.tok.to_str()


def tokenizer_from_json(text: str, source: str = "tokenizer.json") -> Tokenizer:
    """The tokenizer a tokenizer.json holds; errors name `source`, the file it came from."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise GlassformerError(f"{source} is not valid JSON ({err.msg})") from None
    except RecursionError:
        raise GlassformerError(f"{source} nests its JSON too deeply to read; it is not a tokenizer") from None
    except ValueError:  # an integer of more digits than Python converts (4300)
        raise GlassformerError(f"{source} holds a number of over 4,300 digits; it is not a tokenizer") from None
    if isinstance(data, dict) and _MARK in data:
        if data[_MARK] == "char":
            chars = data.get("chars")
            if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
                raise GlassformerError(f'{source}: a char tokenizer needs a "chars" list of characters')
            return CharTokenizer(chars)
        if data[_MARK] == "bytes":
            return ByteTokenizer()
        raise GlassformerError(f"unknown tokenizer kind {data[_MARK]!r} in {source}")
    from tokenizers import Tokenizer as _HF

    try:
        tok = _HF.from_str(text)
        tok.no_padding()  # a saved padding or truncation setting would change every text's length
        tok.no_truncation()
        return HFTokenizer(tok)
    except Exception as err:  # the Rust library raises plain Exceptions
        raise GlassformerError(f"{source} could not be read: {err}") from None


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise GlassformerError(f"no tokenizer at {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GlassformerError(f"{path} is not UTF-8 text; a tokenizer.json is JSON") from None
    return tokenizer_from_json(text, str(path))


def train_bpe(texts: Iterable[str], vocab_size: int, *, special_tokens=("<|endoftext|>",)) -> HFTokenizer:
    """Train a byte-level BPE (GPT-2's scheme) of `vocab_size` tokens on `texts`.

    Byte-level means every string can be encoded and decoded back exactly: the 256
    bytes are in the vocabulary before any merge is learned.
    """
    from tokenizers import Tokenizer as _HF
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(special_tokens):
        raise GlassformerError(f"a byte-level BPE needs at least {256 + len(special_tokens)} tokens, got {vocab_size}")
    tok = _HF(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(special_tokens),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return HFTokenizer(tok)
