"""Text into a model, checked once: the prompt, the layer and head asked about, the
names of tokens. Generation, inspection, the command line and the explorer all come
through here, so a bad input gets the same one-line error everywhere.
"""

from __future__ import annotations

import torch

from .config import GlassformerError
from .model import Transformer
from .tokenizer import Tokenizer, utf8

# The video's sentence: the default wherever a sentence is needed and none was given.
EXAMPLE = "a fluffy blue creature roamed the verdant forest"


def encode(model: Transformer, text: str, *, crop: bool = False, blank_ok: bool = False) -> list[int]:
    """Token ids for `text`: refused when empty (or only blanks, unless `blank_ok`: a
    prompt may be a newline), unencodable or longer than the context (with `crop`, the
    last context-length tokens are kept instead)."""
    if not isinstance(text, str) or not text or (not blank_ok and not text.strip()):
        raise GlassformerError("the text is empty; give a sentence to look at")
    ids = tokenizer_of(model).encode(utf8(text))  # checked here for every tokenizer, bytes too
    if not ids:
        raise GlassformerError(
            f"the text {text!r} has no tokens in this model's vocabulary; give a sentence (generate: --prompt)"
        )
    limit = model.config.context_length
    if len(ids) > limit:
        if not crop:
            raise GlassformerError(f"the text is {len(ids)} tokens; this model's context is {limit} tokens")
        ids = ids[-limit:]
    return ids


def tokenizer_of(model: Transformer) -> Tokenizer:
    """The model's tokenizer, or one line saying it has none."""
    if model.tokenizer is None:
        raise GlassformerError("this model has no tokenizer attached; set model.tokenizer, or give token ids")
    return model.tokenizer


def as_batch(model: Transformer, ids: list[int]) -> torch.Tensor:
    """[1, T] ids on the model's device."""
    return torch.tensor([ids], dtype=torch.long, device=model.device)


def encode_batch(model: Transformer, text: str) -> torch.Tensor:
    """`encode`, as a [1, T] batch on the model's device."""
    return as_batch(model, encode(model, text))


def check_layer_head(model: Transformer, layer: int, head: int) -> None:
    L, H = model.config.n_layers, model.config.n_heads
    if not 0 <= layer < L:
        raise GlassformerError(f"layer {layer} is out of range: this model has layers 0..{L - 1}")
    if not 0 <= head < H:
        raise GlassformerError(f"head {head} is out of range: this model has heads 0..{H - 1}")


def check_neuron(model: Transformer, layer: int, neuron: int) -> None:
    c = model.config
    if not (0 <= layer < c.n_layers and 0 <= neuron < c.d_mlp):
        raise GlassformerError(
            f"layer {layer}, neuron {neuron} is out of range: layers 0..{c.n_layers - 1}, neurons 0..{c.d_mlp - 1}"
        )


def token_texts(model: Transformer, ids) -> list[str]:
    """Each token's own text ('fluffy', ' Paris', '##ing'), or its id if there is no tokenizer."""
    ids = ids.flatten().tolist() if isinstance(ids, torch.Tensor) else list(ids)
    if model.tokenizer is None:
        return [f"<{i}>" for i in ids]
    return model.tokenizer.token_texts(ids)


def unknown_pieces(model: Transformer, text: str) -> list[tuple[int, str]]:
    """(token position, word) for each piece of `text` the model's vocabulary does not know
    (it became [UNK]): a lesson's word list is small, and a learner should be told which
    words it skipped, and where."""
    return model.tokenizer.unknown_pieces(text) if model.tokenizer is not None else []


def unknown_words(model: Transformer, text: str) -> list[str]:
    """The unknown pieces of `text`, in order, once each."""
    return list(dict.fromkeys(word for _, word in unknown_pieces(model, text)))


def vocabulary(model: Transformer) -> list[str] | None:
    """The words of a word-level vocabulary (the lessons'), or None for any other kind."""
    return model.tokenizer.words() if model.tokenizer is not None else None


def unknown_note(model: Transformer, text: str, unknown: list[str] | None = None) -> str | None:
    """One line naming the unknown words of `text` (or `unknown`, when already found), or
    None when every word is known."""
    unknown = unknown_words(model, text) if unknown is None else unknown
    if not unknown:
        return None
    words = vocabulary(model)
    where = f"the {len(words)}-word vocabulary" if words is not None else "this model's vocabulary"
    shown = ", ".join(repr(w) if not w.strip() or len(w) == 1 else w for w in unknown[:12])
    more = f" and {len(unknown) - 12} more" if len(unknown) > 12 else ""
    return f"not in {where} (read as [UNK]): {shown}{more}"


def need_decoder(model: Transformer, what: str) -> None:
    """One line refusing an encoder for `what`, which reads the next token through W_U."""
    if not model.config.causal:
        raise GlassformerError(f"{what} needs a decoder (a GPT or Llama model with W_U); this model is an encoder")


def single_token(model: Transformer, text: str, what: str = "token") -> int:
    """The id of `text` when it is exactly one known token of this model (' Mary' with its
    leading space, as it stands inside a sentence); else a one-line error naming its pieces."""
    if not isinstance(text, str) or not text:
        raise GlassformerError(f"the {what} is empty; give one token, e.g. ' Mary' with its leading space")
    ids = tokenizer_of(model).encode(text)
    if len(ids) != 1:
        pieces = ", ".join(repr(t) for t in token_texts(model, ids)) or "no tokens"
        raise GlassformerError(
            f"the {what} {text!r} is {len(ids)} tokens in this model ({pieces}); give exactly one token"
        )
    if unknown_words(model, text):
        raise GlassformerError(f"the {what} {text!r} is not in this model's vocabulary")
    return int(ids[0])
