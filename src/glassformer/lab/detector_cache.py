"""Head-detector scores kept on disk per model version, like the converted weights, so that
"score every head" on SmolLM2 costs one forward pass the first time and nothing after
(the explorer's button, `glassformer heads`).

The scores live beside the converted weights (pretrained.weights_cache's folder), keyed
by the weights' own key, as JSON whose numbers read back to the same float32 bits; a file
that does not read back whole is ignored and written again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import uuid

import torch

from ..model import Transformer
from ..pretrained import weights_cache
from . import survey

log = logging.getLogger(__name__)

VERSION = 1  # raise when the detectors or their probe change: old scores are then not read


def version_of(model: Transformer) -> str | None:
    """The model's version: the key of the converted weights it was loaded from (a GGUF
    file's size, mtime and header hash) with its precision; None for a model read straight
    from its own files (a lesson, a checkpoint), which is small enough to score each time."""
    key = model.weights_key
    if key is None:
        return None
    text = f"{VERSION}:{key}:{model.W_E.dtype}:{model.stream_dtype}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def detect_all(model: Transformer) -> survey.Detection:
    """survey.detect_all on the detectors' own probe, read from the cache when this model
    version was scored before, else computed and kept."""
    folder, version = weights_cache.cache_dir(), version_of(model)
    if folder is None or version is None:
        return survey.detect_all(model)
    file = folder / weights_cache.DETECTORS / f"{version}.json"
    found = _read(file)
    if found is not None:
        return found
    found = survey.detect_all(model)
    try:
        _write(file, found)
    except (OSError, TypeError, ValueError) as err:  # a read-only disk; a field that is not JSON
        log.warning("cannot keep the detector scores in %s: %s", file, err)
    return found


def _encode(value):
    if isinstance(value, torch.Tensor):
        return {"float32": value.float().tolist()}  # float32 -> Python float is exact, so is the way back
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value):
    if isinstance(value, dict) and set(value) == {"float32"}:
        return torch.tensor(value["float32"], dtype=torch.float32)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


def _write(file, found: survey.Detection) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    body = {f.name: _encode(getattr(found, f.name)) for f in dataclasses.fields(found)}
    tmp = file.parent / f".{file.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(json.dumps(body))
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)


def _read(file) -> survey.Detection | None:
    try:
        body = json.loads(file.read_text(encoding="utf-8"))
        return survey.Detection(**{k: _decode(v) for k, v in body.items()})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, RecursionError) as err:
        log.warning("ignoring the unreadable detector scores %s (%s)", file, err)
        return None
