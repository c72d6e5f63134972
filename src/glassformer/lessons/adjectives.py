"""lesson:adjectives — "are there any adjectives in front of me?"

A small English-like grammar built around 3Blue1Brown's example sentence:

    a fluffy blue creature roamed the verdant forest quietly .
    DET ADJ   ADJ  NOUN    VERB   DET ADJ     NOUN   ADV     .

Each noun phrase has 0-3 adjectives. Adjectives come in three kinds: colours,
textures and plain ones. The word right after a noun is decided by that noun's OWN
adjectives: the subject's verb and the object's closing adverb each come from one of
four groups, chosen by (has a colour adjective, has a texture adjective). The colour
or texture can sit anywhere in the phrase, not only next to the noun, so to predict
the next word a noun has to look back over all of its adjectives — and not at the
other noun's. That is the head the lesson grows.

`sentences(n, seed)` gives `(word, part_of_speech, owner)` triples, where `owner` is,
for an adjective, the index within the sentence of the noun it describes, else None.
"""

from __future__ import annotations

import random

from .. import inputs
from ._words import word_tokenizer

DETERMINERS = ["a", "the"]
COLOURS = ["blue", "red", "verdant", "golden", "grey"]
TEXTURES = ["fluffy", "spiky", "smooth", "furry", "scaly"]
PLAIN = ["big", "small", "old", "young", "tiny", "ancient"]
ADJECTIVES = COLOURS + TEXTURES + PLAIN
NOUNS = ["creature", "forest", "dragon", "cat", "river", "mountain", "wizard", "castle"]
# index = 2 * has_colour + has_texture
VERBS = [
    ["watched", "left", "found"],
    ["climbed", "crossed", "searched"],
    ["painted", "lit", "guarded"],
    ["roamed", "explored", "wandered"],
]
ADVERBS = [["quietly", "calmly"], ["slowly", "softly"], ["brightly", "boldly"], ["wildly", "freely"]]
WORDS = DETERMINERS + ADJECTIVES + NOUNS + [v for g in VERBS for v in g] + [a for g in ADVERBS for a in g] + ["."]

HELD_OUT = 1_000_003  # added to the seed for the validation sentences: a stream the training one never reaches
EXAMPLE = inputs.EXAMPLE  # the video's sentence, which the grammar is built around


def group(adjs: list[str]) -> int:
    return 2 * any(a in COLOURS for a in adjs) + any(a in TEXTURES for a in adjs)


def _phrase(rng: random.Random, start: int) -> tuple[list[tuple], list[str]]:
    n_adj = rng.choice([0, 1, 1, 2, 2, 2, 3, 3])
    adjs = rng.sample(ADJECTIVES, n_adj)
    noun_at = start + 1 + n_adj
    words: list[tuple[str, str, int | None]] = [(rng.choice(DETERMINERS), "DET", None)]
    words += [(a, "ADJ", noun_at) for a in adjs]
    words.append((rng.choice(NOUNS), "NOUN", None))
    return words, adjs


def sentence(rng: random.Random) -> list[tuple[str, str, int | None]]:
    subject, s_adjs = _phrase(rng, 0)
    verb = [(rng.choice(VERBS[group(s_adjs)]), "VERB", None)]
    obj, o_adjs = _phrase(rng, len(subject) + 1)
    end = [(rng.choice(ADVERBS[group(o_adjs)]), "ADV", None), (".", "PUNCT", None)]
    return subject + verb + obj + end


def sentences(n: int, seed: int = 0) -> list[list[tuple[str, str, int | None]]]:
    """`n` sentences of (word, part_of_speech, owner) triples, the same for the same seed."""
    rng = random.Random(seed)
    return [sentence(rng) for _ in range(n)]


def tokenizer():
    return word_tokenizer(WORDS)


def text(n_sentences: int, seed: int) -> str:
    """The corpus as plain text, one sentence per line."""
    return "\n".join(" ".join(w for w, _, _ in s) for s in sentences(n_sentences, seed))


def corpus(seed: int = 0) -> tuple[list[int], list[int]]:
    """(train ids, val ids): 30,000 sentences to learn from, 2,000 others to check on."""
    tok = tokenizer()
    return tok.encode(text(30_000, seed)), tok.encode(text(2_000, seed + HELD_OUT))


# what `glassformer train --data lesson:adjectives` uses when no flag says otherwise
# fp32 even where bf16 would be the default: on a CPU with bf16 units, three seeds grew
# adjective heads of 0.60 / 0.48 / 0.53 (non-adjacent 0.32 / 0.29 / 0.25) in bf16 against
# 0.96 / 0.40 / 0.91 (0.91 / 0.25 / 0.45) in fp32, for a 10-15% shorter run
TRAIN_DEFAULTS = dict(
    preset="lesson-tiny",
    steps=2500,
    batch_size=32,
    lr=3e-3,
    min_lr=3e-4,
    warmup=100,
    eval_every=500,
    weight_decay=0.1,
    precision="fp32",
)
