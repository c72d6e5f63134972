"""What an API request may hold: one pydantic model per kind of request, strict (1.0 is not
a layer, true is not a number, 5 is not a sentence) and closed (an unknown field is a 422).

These classes are what /docs shows as each request's body. A new card whose request
needs a field of its own subclasses `TextRequest` here:

    class PatchRequest(TextRequest):
        layer: int = Field(0, ge=0, le=MAX_INDEX)

Imported only by the app (pydantic comes with FastAPI, the `serve` extra).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from .. import sampling
from ..inputs import EXAMPLE

MAX_TEXT = 20_000  # characters; the body limit (64 KiB) is the real bound
MAX_INDEX = 100_000  # layers, heads, positions: far beyond any model here, far below an overflow


class Strict(BaseModel):
    # strict: 1.0 is not a layer, true is not a number, 5 is not a sentence
    model_config = ConfigDict(extra="forbid", strict=True)


class TextRequest(Strict):
    """A model and a sentence: what every card starts from."""

    # the example becomes the server's first model name when the app is built (app.openapi)
    model: str = Field(description="one of the names /api/models lists", max_length=200, examples=["lesson:adjectives"])
    text: str = Field(description="the sentence to run", max_length=MAX_TEXT, examples=[EXAMPLE])


class SamplingRequest(TextRequest):
    """The next-token distribution's settings (the one sampler, `sampling`, judges them)."""

    temperature: float = Field(1.0, ge=0, le=sampling.MAX_TEMPERATURE, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=1, le=10_000_000, description="keep the k likeliest tokens (none: all)")
    top_p: float | None = Field(
        None, gt=0, le=1, allow_inf_nan=False, description="keep the likeliest tokens up to this mass"
    )
    rows: int = Field(12, ge=1, le=100, description="how many of the likeliest tokens to list")


class AnalyzeRequest(SamplingRequest):
    showcase: bool = Field(False, description="also name the showcase head, if it is already known")


class HeadRequest(TextRequest):
    layer: int = Field(0, ge=0, le=MAX_INDEX)
    head: int = Field(0, ge=0, le=MAX_INDEX)
    query: int | None = Field(
        None,
        ge=0,
        le=MAX_INDEX,
        description="the query the grids' window of rows is centred on (none: the one a first look follows)",
    )


class MLPRequest(TextRequest):
    position: int = Field(ge=0, le=MAX_INDEX, description="the token whose MLP step to show")
    k: int = Field(8, ge=1, le=32, description="how many neurons")


def settings(req: SamplingRequest) -> dict:
    """The sampling settings as keyword arguments for answers.next_tokens, once judged."""
    sampling.check(req.temperature, req.top_k, req.top_p)  # the one place settings are judged
    return {"temperature": req.temperature, "top_k": req.top_k, "top_p": req.top_p, "rows": req.rows}


# --- the laboratory: switch off, patch, read weights ------------------------------------------
Pair = Annotated[list[int], Field(min_length=2, max_length=2)]


class AblateRequest(TextRequest):
    """Heads and MLPs to switch off, and where to read the next token."""

    heads: list[Pair] = Field(default_factory=list, max_length=1000, description="[layer, head] pairs to switch off")
    mlps: list[int] = Field(default_factory=list, max_length=1000, description="layers whose whole MLP to switch off")
    neurons: list[Pair] = Field(
        default_factory=list, max_length=1000, description="[layer, neuron] pairs: single MLP neurons to switch off"
    )
    mode: str = Field("zero", pattern="^(zero|mean)$", description="zero, or mean over this text's positions")
    position: int | None = Field(None, ge=0, le=MAX_INDEX, description="where the next token is read (default: last)")
    rows: int = Field(8, ge=1, le=100, description="how many of the likeliest tokens to list, before and after")


class PatchRequest(Strict):
    """Two texts of the same token count, and optionally the tokens whose logits to compare."""

    model: str = Field(description="one of the names /api/models lists", max_length=200, examples=["lesson:adjectives"])
    clean: str = Field(description="the text the model gets right", max_length=MAX_TEXT)
    corrupt: str = Field(description="the corrupted text, same token count", max_length=MAX_TEXT)
    answer: str | None = Field(None, max_length=200, description="one token (default: the clean run's top token)")
    wrong: str | None = Field(None, max_length=200, description="one token (default: the corrupted run's top token)")


class CircuitRequest(Strict):
    """One head, read from its weights alone."""

    model: str = Field(description="one of the names /api/models lists", max_length=200, examples=["lesson:adjectives"])
    layer: int = Field(0, ge=0, le=MAX_INDEX)
    head: int = Field(0, ge=0, le=MAX_INDEX)
    k: int = Field(12, ge=1, le=200, description="how many top pairs of each circuit")
    token_ids: list[int] = Field(
        default_factory=list, max_length=20, description="token ids whose best keys and outputs to list"
    )
    whole: bool = Field(False, description="the whole grids too (vocabularies of at most 1000 tokens)")


# --- chapters 5 and 7: the embeddings card and the superposition card ---------------------------
class EmbedRequest(Strict):
    """Word arithmetic ('king - man + woman'), a direction with words on it, or a PCA plane."""

    model: str = Field(description="one of the names /api/models lists", max_length=200, examples=["smollm2"])
    kind: str = Field("arithmetic", pattern="^(arithmetic|direction|pca)$", description="arithmetic, direction or pca")
    expression: str = Field("", max_length=2000, description="arithmetic: the sum; direction: the direction")
    words: list[str] = Field(default_factory=list, max_length=200, description="direction and pca: the words")
    k: int = Field(10, ge=1, le=100, description="arithmetic: how many nearest tokens")
    matrix: str = Field("W_E", pattern="^W_[EU]$", description="W_E's rows or W_U's columns")


class SuperpositionRequest(Strict):
    """The toy model of superposition's settings (lesson:superposition); seconds to train."""

    features: int = Field(5, ge=1, le=64)
    dims: int = Field(2, ge=1, le=32)
    sparsities: list[float] = Field(default_factory=lambda: [0.0, 0.7, 0.9, 0.97], min_length=1, max_length=8)
    importance: float = Field(0.9, gt=0, le=1, allow_inf_nan=False, description="feature i weighs importance^i")
    steps: int = Field(2000, ge=1, le=5000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
