"""A word-level tokenizer for lessons: one token per known word.

Text is lower-cased and punctuation is split off ("The dragon." reads as `the dragon .`),
so a capital or a full stop never turns a known word into [UNK]. What is still unknown
becomes [UNK], and `HFTokenizer.unknown_pieces` names it (and where) so the learner is told.
"""

from __future__ import annotations

from ..tokenizer import HFTokenizer

UNKNOWN = "[UNK]"


def word_tokenizer(words: list[str]) -> HFTokenizer:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = {UNKNOWN: 0} | {w: i + 1 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return HFTokenizer(tok)


def train_defaults(*, steps: int, eval_every: int) -> dict:
    """A lesson's `glassformer train` settings (what `make lessons` runs): the shape and
    optimiser every lesson shares, and its own length. fp32 everywhere, so the shipped model
    comes out the same on a CPU with bf16 units."""
    return dict(
        preset="lesson-llama",
        steps=steps,
        batch_size=32,
        lr=3e-3,
        min_lr=3e-4,
        warmup=100,
        eval_every=eval_every,
        weight_decay=0.1,
        precision="fp32",
    )
