"""lesson:adjectives — "are there any adjectives in front of me?"

A small English-like grammar built around 3Blue1Brown's example sentence:

    a fluffy blue creature roamed the verdant forest quietly .
    DET ADJ   ADJ  NOUN    VERB   DET ADJ     NOUN   ADV     .

Each noun phrase has 0-3 adjectives, each a colour or a texture. The word right after
a noun is decided by that noun's OWN adjectives: the subject's verb and the object's
closing adverb each come from one of four groups, chosen by (has a colour adjective,
has a texture adjective). The colour or texture can sit anywhere in the phrase, not
only next to the noun, so to predict the next word a noun has to look back over all of
its adjectives — and not at the other noun's. That is the head the lesson grows.

Every adjective carries one of the two facts the noun needs. (An earlier version also
had six "plain" adjectives, big or ancient, that decided nothing: heads learned to look
past them, and the best head held 0.46-0.74 of a noun's attention across seeds, against
0.96-0.99 without them; see TRAIN_DEFAULTS.)

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
ADJECTIVES = COLOURS + TEXTURES
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


# what `glassformer train --data lesson:adjectives` uses when no flag says otherwise. Seeds
# 1337 (the default), 0, 1 and 2 grew a best head putting 0.96 / 0.96 / 0.99 / 0.97 of a
# noun's attention on its own adjectives, 0.80 / 0.61 / 0.94 / 0.87 on those not next to
# it (fp32, a CPU without bf16 units). fp32 even where bf16 would be the default: with the
# earlier grammar, bf16 grew clearly weaker heads on a CPU with bf16 units.
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
