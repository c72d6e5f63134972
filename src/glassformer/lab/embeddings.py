"""Chapter 5 on real weights: words as directions in the model's own embedding matrix.

    arithmetic   "king - man + woman" -> the tokens nearest the result, by cosine
    project      words onto a direction such as "woman - man" (gender) or "cats - cat" (plural)
    pca          a list of words drawn in the 2-D plane that spreads them most
    angles       how close to 90° random directions, and the model's own rows, stand

How the vectors are read (the same everywhere here, so numbers compare): each row of the
matrix (W_E, or W_U's columns) has the mean of all rows subtracted, then is scaled to
length 1. Word2vec's analogy test (Mikolov et al. 2013, "3CosAdd") normalises each word;
centring first removes the one direction every row of a transformer's embedding shares
(Mu & Viswanath 2018, "All-but-the-top"), which otherwise pulls every cosine up.

A word is read as the token it becomes inside a sentence (" king", with its space, for a
byte-level BPE; "king" for BERT's WordPiece); a word that would be several tokens, or
the unknown token, is refused with the pieces named.
"""

from __future__ import annotations

import math
import re
import weakref
from dataclasses import dataclass

import torch

from ..config import GlassformerError
from ..inputs import tokenizer_of, unknown_words
from ..model import Transformer
from ..tokenizer import HFTokenizer

MATRICES = ("W_E", "W_U")
PREFIX = "a"  # a word is encoded after this one, so it gets the form it has inside a sentence
MAX_WORDS = 200  # words in one projection or picture
MAX_TERMS = 32  # words in one expression


# --- reading an expression -------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    weight: float
    word: str


_TOKEN = re.compile(
    r"\s*(?:(?P<op>[+\-])|(?P<star>\*)|'(?P<quoted>[^']*)'"
    r"|(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+\-]?\d+)?(?=\s*\*))|(?P<word>[^\s+\-*']+))"
)


def parse(expression: str) -> list[Term]:
    """'king - man + woman' or '0.5*walked + 0.5*swam' -> the weighted words.

    A number is a weight only when '*' follows it ('2' alone is the word two); a word
    holding '+', '-', '*' or a space goes in single quotes ('x-ray')."""
    if not isinstance(expression, str) or not expression.strip():
        raise GlassformerError("the expression is empty; give words joined by + and -, e.g. 'king - man + woman'")
    terms: list[Term] = []
    sign, weight, expect_word = 1.0, None, True
    pos, text = 0, expression.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise GlassformerError(f"cannot read the expression at {text[pos:].strip()!r}; {_HOW}")
        pos = m.end()
        if m["op"]:
            if not expect_word:
                sign, weight, expect_word = (1.0 if m["op"] == "+" else -1.0), None, True
            elif weight is None and not terms and sign == 1.0:  # a leading sign
                sign = 1.0 if m["op"] == "+" else -1.0
            else:
                raise GlassformerError(f"two signs in a row in {expression!r}; {_HOW}")
        elif m["number"]:
            if not expect_word or weight is not None:
                raise GlassformerError(f"a weight must come before its word, as in 0.5*walked: {expression!r}")
            weight = float(m["number"])
            pos = text.index("*", pos) + 1  # the lookahead promised a '*'
        elif m["star"]:
            raise GlassformerError(f"'*' must follow a number, as in 0.5*walked: {expression!r}")
        else:
            word = m["quoted"] if m["quoted"] is not None else m["word"]
            if not expect_word:
                raise GlassformerError(f"put + or - between words: {expression!r}; {_HOW}")
            if not word.strip():
                raise GlassformerError(f"an empty quoted word in {expression!r}")
            value = sign * (1.0 if weight is None else weight)
            if not math.isfinite(value):
                raise GlassformerError(f"the weight of {word!r} is not a finite number")
            terms.append(Term(value, word))
            expect_word = False
    if expect_word:
        raise GlassformerError(f"the expression {expression!r} ends without a word; {_HOW}")
    if len(terms) > MAX_TERMS:
        raise GlassformerError(f"the expression has {len(terms)} words; at most {MAX_TERMS}")
    return terms


_HOW = "write words joined by + and -, with optional weights: 'king - man + woman', '0.5*walked + 0.5*swam'"


# --- words and the matrix they are read from ----------------------------------------------------
class Space:
    """One model's matrix (W_E's rows, or W_U's columns), every row centred and scaled to 1."""

    def __init__(self, model: Transformer, matrix: str) -> None:
        if matrix not in MATRICES:
            raise GlassformerError(f"--matrix must be W_E or W_U, not {matrix!r}")
        if model.tokenizer is None:
            raise GlassformerError("this model has no tokenizer: words cannot be read")
        if matrix == "W_U" and not model.config.causal:
            raise GlassformerError("an encoder has no unembedding W_U; use W_E")
        with torch.no_grad():
            rows = (model.W_E if matrix == "W_E" else model.W_U.T).detach().float()  # [V, C]
            rows = rows[: min(rows.shape[0], model.tokenizer.vocab_size)]  # padding rows name no token
            self.mean = rows.mean(0)  # [C]
            centred = rows - self.mean
            self.unit = centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)  # [V, C]
        self.model, self.matrix = model, matrix
        self.tied = model.config.causal and model.config.tied_unembedding

    def token_of(self, word: str) -> int:
        token = word_token(self.model, word)
        if token >= self.unit.shape[0]:  # a tokenizer larger than the matrix
            raise GlassformerError(f"{word!r} is token {token}, beyond this model's {self.unit.shape[0]} rows")
        return token

    def vector(self, terms: list[Term]) -> torch.Tensor:
        """Σ weight · unit(word), [C]."""
        ids = torch.tensor([self.token_of(t.word) for t in terms])
        weights = torch.tensor([t.weight for t in terms])
        return weights @ self.unit[ids]

    def texts(self, ids) -> list[str]:
        return tokenizer_of(self.model).token_texts([int(i) for i in ids])


_SPACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {matrix: Space}


def space(model: Transformer, matrix: str = "W_E") -> Space:
    """The prepared matrix of `model` (made once per model and matrix: 49152 rows take a moment)."""
    per_model = _SPACES.setdefault(model, {})
    if matrix not in per_model:
        per_model[matrix] = Space(model, matrix)
    return per_model[matrix]


def _encode(model: Transformer, text: str) -> list[int]:
    tok = tokenizer_of(model)
    if isinstance(tok, HFTokenizer):  # special tokens ([CLS], <s>) are not part of a word
        return tok.encode(text, add_special_tokens=False)
    return tok.encode(text)  # the char and byte tokenizers have none


def word_pieces(model: Transformer, word: str) -> list[int]:
    """The tokens `word` becomes inside a sentence: after PREFIX and a space."""
    before = _encode(model, PREFIX)
    inside = _encode(model, f"{PREFIX} {word}")
    if inside[: len(before)] == before:
        return inside[len(before) :]
    return _encode(model, " " + word)  # the prefix merged with the word: read it alone


def word_token(model: Transformer, word: str) -> int:
    """The one token `word` becomes inside a sentence, or a one-line refusal naming its pieces."""
    if not word or not word.strip() or any(ch.isspace() for ch in word):
        raise GlassformerError(f"give one word at a time, not {word!r}")
    if unknown_words(model, word):
        raise GlassformerError(f"{word!r} is not in this model's vocabulary (it would be read as [UNK])")
    pieces = word_pieces(model, word)
    if len(pieces) != 1:
        shown = ", ".join(repr(t) for t in tokenizer_of(model).token_texts(pieces))
        raise GlassformerError(
            f"{word!r} is {len(pieces)} tokens inside a sentence ({shown}), not one; "
            "word arithmetic needs words that are a single token: pick another word"
        )
    return pieces[0]


def _same_word(a: str, b: str) -> bool:
    return a.strip().lower().removeprefix("##") == b.strip().lower().removeprefix("##")


# --- arithmetic ----------------------------------------------------------------------------------
@dataclass
class Nearest:
    token: int
    text: str
    cosine: float


@dataclass
class Arithmetic:
    expression: str
    matrix: str
    terms: list[Term]
    tokens: list[str]  # each term's token text
    nearest: list[Nearest]
    left_out: list[str]  # the tokens passed over as the expression's own words
    tied: bool

    def to_dict(self) -> dict:
        return {
            "expression": self.expression,
            "matrix": self.matrix,
            "terms": [{"weight": t.weight, "word": t.word, "token": tok} for t, tok in zip(self.terms, self.tokens)],
            "nearest": [{"token": n.text, "id": n.token, "cosine": n.cosine} for n in self.nearest],
            "left_out": self.left_out,
            "tied": self.tied,
            "method": METHOD + "; nearest by cosine",
        }


METHOD = "each row centred on the mean of all rows and scaled to length 1"


@torch.no_grad()
def arithmetic(model: Transformer, expression: str, k: int = 10, matrix: str = "W_E") -> Arithmetic:
    """The k tokens nearest Σ weight·word, leaving out the expression's own words (also in
    another case or without their space: ' King' and 'king' for king)."""
    terms = parse(expression)
    s = space(model, matrix)
    if not 1 <= k <= 1000:
        raise GlassformerError(f"-k must be from 1 to 1000, not {k}")
    ids = [s.token_of(t.word) for t in terms]
    target = s.vector(terms)
    if float(target.norm()) < 1e-6:
        raise GlassformerError(f"{expression!r} adds up to nothing (the words cancel); nothing is near it")
    cosines = s.unit @ (target / target.norm())  # [V]
    cosines[ids] = -math.inf
    nearest: list[Nearest] = []
    left_out = dict.fromkeys(s.texts(ids))
    for i in cosines.topk(min(k + 64, cosines.shape[0])).indices.tolist():
        text = s.texts([i])[0]
        if any(_same_word(text, t.word) for t in terms):
            left_out[text] = None
            continue
        nearest.append(Nearest(i, text, float(cosines[i])))
        if len(nearest) == k:
            break
    return Arithmetic(expression, matrix, terms, s.texts(ids), nearest, list(left_out), s.tied)


# --- a direction, and a plane ------------------------------------------------------------------
@dataclass
class Projection:
    direction: str
    matrix: str
    words: list[str]
    tokens: list[str]
    values: list[float]  # unit(word) · unit(direction): a cosine, in [-1, 1]

    def to_dict(self) -> dict:
        return {
            "direction": self.direction,
            "matrix": self.matrix,
            "words": [
                {"word": w, "token": t, "projection": v} for w, t, v in zip(self.words, self.tokens, self.values)
            ],
            "method": METHOD + "; the projection is the cosine with the direction",
        }


def _check_words(words: list[str], least: int = 1) -> None:
    if len(words) < least:
        raise GlassformerError(f"give at least {least} word{'s' if least > 1 else ''}")
    if len(words) > MAX_WORDS:
        raise GlassformerError(f"give at most {MAX_WORDS} words, not {len(words)}")
    twice = next((w for i, w in enumerate(words) if w in words[:i]), None)
    if twice is not None:
        raise GlassformerError(f"{twice!r} is given twice; give each word once")


@torch.no_grad()
def project(model: Transformer, direction: str, words: list[str], matrix: str = "W_E") -> Projection:
    """Each word's position along `direction` ('woman - man'): the cosine of its vector with it."""
    _check_words(words)
    s = space(model, matrix)
    d = s.vector(parse(direction))
    if float(d.norm()) < 1e-6:
        raise GlassformerError(f"the direction {direction!r} adds up to nothing (its words cancel)")
    ids = [s.token_of(w) for w in words]
    values = (s.unit[ids] @ (d / d.norm())).tolist()
    return Projection(direction, matrix, list(words), s.texts(ids), values)


@dataclass
class Plane:
    matrix: str
    words: list[str]
    tokens: list[str]
    xy: list[tuple[float, float]]
    explained: tuple[float, float]  # share of the words' spread along each axis

    def to_dict(self) -> dict:
        return {
            "matrix": self.matrix,
            "words": [
                {"word": w, "token": t, "x": x, "y": y} for w, t, (x, y) in zip(self.words, self.tokens, self.xy)
            ],
            "explained": list(self.explained),
            "method": METHOD + "; then the words' own two principal components (PCA)",
        }


@torch.no_grad()
def pca(model: Transformer, words: list[str], matrix: str = "W_E") -> Plane:
    """The words in the plane of their two largest principal components."""
    _check_words(words, 3)
    s = space(model, matrix)
    return _plane(s, [s.token_of(w) for w in words], list(words))


@torch.no_grad()
def analogy_plane(model: Transformer, found: Arithmetic) -> tuple[Plane, list[tuple[int, int]]]:
    """The expression's words and its nearest token in their PCA plane, with the video's
    two parallel arrows for 'a - b + c': b -> c and a -> the answer (c - b ≈ answer - a)."""
    s = space(model, found.matrix)
    ids = [s.token_of(t.word) for t in found.terms]
    words = [t.word for t in found.terms]
    if not found.nearest or len(set(ids)) < len(ids):
        raise GlassformerError("the picture needs distinct words and at least one nearest token")
    ids.append(found.nearest[0].token)
    words.append(found.nearest[0].text.strip() or found.nearest[0].text)
    if len(ids) < 3:
        raise GlassformerError("the picture needs at least two words in the expression")
    arrows: list[tuple[int, int]] = []
    if [t.weight for t in found.terms] == [1.0, -1.0, 1.0]:
        arrows = [(1, 2), (0, 3)]
    return _plane(s, ids, words), arrows


def _plane(s: Space, ids: list[int], words: list[str]) -> Plane:
    X = s.unit[ids].double()
    X = X - X.mean(0)
    U, S, _ = torch.linalg.svd(X, full_matrices=False)
    xy = U[:, :2] * S[:2]  # [n, 2]
    # a component's sign is arbitrary: point it so the first word sits on its positive side
    xy = xy * torch.where(xy[0] < 0, -1.0, 1.0).double()
    var = S**2 / (S**2).sum()
    return Plane(s.matrix, words, s.texts(ids), [(float(x), float(y)) for x, y in xy], (float(var[0]), float(var[1])))


# --- nearly orthogonal directions --------------------------------------------------------------
DIMENSIONS = (3, 100, 576, 12_288)  # 3-D, a small model, SmolLM2's width, GPT-3's width
BAND = 1.0  # degrees either side of 90: the video's 89-91°


@dataclass
class Angles:
    name: str  # "random, 100 dims" or "W_E rows of smollm2"
    dims: int
    vectors: int
    degrees: torch.Tensor  # every pair's angle

    def summary(self) -> dict:
        d = self.degrees
        return {
            "name": self.name,
            "dims": self.dims,
            "vectors": self.vectors,
            "pairs": int(d.numel()),
            "mean": float(d.mean()),
            "std": float(d.std()),
            "min": float(d.min()),
            "max": float(d.max()),
            "within_band": float(((d - 90).abs() <= BAND).double().mean()),
        }


def pair_angles(X: torch.Tensor) -> torch.Tensor:
    """Every pair's angle in degrees, for the rows of X [N, C]."""
    unit = X.double() / X.double().norm(dim=1, keepdim=True).clamp_min(1e-300)
    cos = unit @ unit.T
    i, j = torch.triu_indices(X.shape[0], X.shape[0], offset=1)
    return torch.rad2deg(torch.arccos(cos[i, j].clamp(-1, 1)))


def random_angles(dims: int, vectors: int = 1000, seed: int = 0) -> Angles:
    """Angles between `vectors` random directions (Gaussian, so every direction is as likely)."""
    if not 2 <= dims <= 100_000:
        raise GlassformerError(f"dimensions must be from 2 to 100000, not {dims}")
    if not 2 <= vectors <= 4000:
        raise GlassformerError(f"vectors must be from 2 to 4000, not {vectors}")
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(vectors, dims, generator=g)
    return Angles(f"random, {dims:,} dims", dims, vectors, pair_angles(X))


@torch.no_grad()
def row_angles(model: Transformer, name: str, vectors: int = 1000, seed: int = 0, centred: bool = False) -> Angles:
    """Angles between `vectors` rows of the model's W_E drawn at random (as they are, or centred)."""
    W = model.W_E.detach().float()
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(W.shape[0], generator=g)[: min(vectors, W.shape[0])]
    X = W[rows] - W.mean(0) if centred else W[rows]
    label = f"W_E rows of {name}" + (", centred" if centred else "")
    return Angles(label, W.shape[1], len(rows), pair_angles(X))


def pair_outside(dims: int, band: float = BAND) -> float:
    """The chance two random directions in `dims` dimensions stand further than `band`
    degrees from 90°. Their cosine is close to Normal(0, 1/dims) (exact as dims grows)."""
    eps = math.sin(math.radians(band))
    return math.erfc(eps * math.sqrt(dims) / math.sqrt(2))


def random_fit(dims: int, band: float = BAND) -> float:
    """How many random directions can be drawn before one pair is expected to leave
    90° ± band: N(N-1)/2 · p = 1, so N ≈ √(2/p). It grows like exp(dims·ε²/4), ε = sin(band):
    the Johnson–Lindenstrauss view, exponential in the dimension."""
    p = pair_outside(dims, band)
    if p <= 0:  # beyond what a double holds: use the Gaussian tail's logarithm
        eps = math.sin(math.radians(band))
        z = eps * math.sqrt(dims)
        log_p = -z * z / 2 - math.log(z * math.sqrt(math.pi / 2))
        return math.exp(min(700.0, (math.log(2) - log_p) / 2))
    return math.sqrt(2 / p) if p < 1 else 1.0


def hadamard_order(order: int) -> bool:
    """Whether `hadamard` builds one of this order: 2^k, or 12·2^k."""
    odd, twos = order, 0
    while odd > 1 and odd % 2 == 0:
        odd, twos = odd // 2, twos + 1
    return order >= 1 and (odd == 1 or (odd == 3 and twos >= 2))


def hadamard(order: int) -> torch.Tensor:
    """A ±1 matrix H with H·Hᵀ = order·I: Sylvester's doubling, from order 1 or from
    Paley's order 12."""
    if not hadamard_order(order):
        raise GlassformerError(f"no Hadamard matrix of order {order} is built here (2^k or 12·2^k)")
    H = torch.ones(1, 1) if order & (order - 1) == 0 else _paley12()
    while H.shape[0] < order:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H


def _paley12() -> torch.Tensor:
    """Paley's Hadamard matrix of order 12, from the squares modulo 11."""
    q = 11
    squares = {(i * i) % q for i in range(1, q)}
    chi = [0] + [1 if a in squares else -1 for a in range(1, q)]
    Q = torch.tensor([[float(chi[(j - i) % q]) for j in range(q)] for i in range(q)])
    S = torch.zeros(q + 1, q + 1)
    S[0, 1:], S[1:, 0], S[1:, 1:] = 1.0, -1.0, Q
    return S + torch.eye(q + 1)


def two_bases(dims: int) -> tuple[int, float] | None:
    """More than `dims` nearly perpendicular directions, built: the `dims` axes and the rows
    of a Hadamard matrix scaled by 1/√dims. Two axes, or two rows, stand at exactly 90°; an
    axis and a row at 90° ± asin(1/√dims). (2·dims directions, that widest gap in degrees),
    or None where no Hadamard matrix of that order is built here."""
    if not hadamard_order(dims) or dims < 2:
        return None
    return 2 * dims, math.degrees(math.asin(1 / math.sqrt(dims)))


def welch_bound(vectors: int, dims: int) -> float:
    """The least the widest gap from 90° can be, in degrees, for `vectors` unit vectors in
    `dims` dimensions (Welch 1974: some pair has |cos| ≥ √((N - d) / (d (N - 1))))."""
    if vectors <= dims:
        return 0.0  # the axes themselves: all at exactly 90°
    return math.degrees(math.asin(math.sqrt((vectors - dims) / (dims * (vectors - 1)))))
