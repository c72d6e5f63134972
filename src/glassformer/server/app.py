"""The explorer: FastAPI app serving the page (static files shipped in the package)
and a JSON API over a fixed set of models chosen when the server starts.

No request can name a file: `model` must be one of the registered names, and static
files come only from the package's own folder.
"""

import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch

from .. import sampling
from ..config import GlassformerError
from ..inputs import encode_batch
from ..inspect.explain import analyze, walk_head
from ..viz.page import rounded


@dataclass
class ModelSlot:
    name: str
    load: Callable[[], Any]
    note: str = ""
    model: Any = None
    head_scores: dict | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)  # loading and detector scores
    # one forward pass at a time per model: torch already spreads each one over every
    # core, so running twenty at once only makes them fight (and use twenty times the memory)
    busy: threading.Lock = field(default_factory=threading.Lock)

    def get(self):
        with self.lock:
            if self.model is None:
                self.model = self.load()
            return self.model


class Registry:
    def __init__(self) -> None:
        self.slots: dict[str, ModelSlot] = {}

    def add(self, name: str, load: Callable[[], Any], note: str = "") -> None:
        self.slots[name] = ModelSlot(name, load, note)

    def __getitem__(self, name: str) -> ModelSlot:
        if name not in self.slots:
            raise KeyError(name)
        return self.slots[name]


def default_registry(names: list[str]) -> Registry:
    """Exactly the models named on the command line, loaded on first use."""
    from ..pretrained import load

    reg = Registry()
    for name in names:
        reg.add(name, functools.partial(load, name))
    return reg


def create_app(registry: Registry):
    try:
        from fastapi import FastAPI, HTTPException
        from fastapi.responses import HTMLResponse, Response
        from fastapi.staticfiles import StaticFiles
        from pydantic import BaseModel, Field
    except ImportError:
        raise GlassformerError("the explorer needs FastAPI: pip install 'glassformer[serve]'") from None

    app = FastAPI(
        title="glassformer explorer",
        description="Attention, step by step, on the models this server was started with.",
    )
    static = resources.files("glassformer.viz").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    class TextRequest(BaseModel):
        model: str = Field(description="one of the names /api/models lists")
        text: str = Field(description="the sentence to run")

    class AnalyzeRequest(TextRequest):
        temperature: float = Field(1.0, ge=0, le=100, description="for the next-token distribution")
        top_k: int = Field(12, ge=1, le=100)

    class HeadRequest(TextRequest):
        layer: int = 0
        head: int = 0

    def slot_for(name: str) -> ModelSlot:
        try:
            return registry[name]
        except KeyError:
            raise HTTPException(404, f"unknown model {name!r}; this server has: {', '.join(registry.slots)}") from None

    def model_for(name: str):
        slot = slot_for(name)
        try:
            return slot.get()
        except GlassformerError as err:
            raise HTTPException(503, f"model {name!r} could not be loaded: {err}") from None

    def checked(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GlassformerError as err:
            raise HTTPException(422, str(err)) from None

    def run(name: str, fn, *args, **kwargs):
        """fn(model, ...) on the named model, one at a time; user mistakes become 422."""
        model = model_for(name)
        with registry[name].busy:
            return checked(fn, model, *args, **kwargs)

    def next_tokens(model, logits: torch.Tensor, temperature: float, top_k: int) -> dict:
        probs = sampling.probabilities(logits, temperature)
        top = probs.topk(min(top_k, probs.numel()))
        texts = model.tokenizer.token_texts(top.indices.tolist())
        sample = int(torch.multinomial(probs, 1)) if temperature > 0 else int(probs.argmax())
        return {
            "temperature": temperature,
            "next": [
                {"token": t, "id": i, "prob": round(p, 6)}
                for t, i, p in zip(texts, top.indices.tolist(), top.values.tolist())
            ],
            "sample": {"id": sample, "token": model.tokenizer.token_texts([sample])[0]},
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return static.joinpath("explorer.html").read_text(encoding="utf-8")

    @app.get("/api/models", summary="the models this server can show")
    def models() -> list[dict]:
        out = []
        for slot in registry.slots.values():
            entry = {"name": slot.name, "note": slot.note, "loaded": slot.model is not None}
            if slot.model is not None:
                c = slot.model.config
                entry |= {
                    "decoder": c.causal,
                    "n_layers": c.n_layers,
                    "n_heads": c.n_heads,
                    "context_length": c.context_length,
                }
            out.append(entry)
        return out

    def as_json(data: dict) -> Response:
        # big nested lists of floats: json.dumps is many times faster than FastAPI's encoder
        return Response(json.dumps(data, separators=(",", ":"), ensure_ascii=False), media_type="application/json")

    @app.post("/api/analyze", summary="every layer's and head's pattern, and the next-token distribution")
    def analyze_text(req: AnalyzeRequest) -> Response:
        model = model_for(req.model)
        a = run(req.model, analyze, req.text)
        result = {
            "model": req.model,
            "tokens": a.tokens,
            "ids": a.ids,
            "decoder": a.causal,
            "n_layers": a.patterns.shape[0],
            "n_heads": a.patterns.shape[1],
            "patterns": rounded(a.patterns),
        }
        if a.last_logits is not None:
            result |= next_tokens(model, a.last_logits, req.temperature, req.top_k)
        return as_json(result)

    @app.post("/api/head", summary="one head step by step: Q, K, dot products, mask, pattern, ΔE")
    def head(req: HeadRequest) -> dict:
        walk = run(req.model, walk_head, req.text, req.layer, req.head)
        return {
            "model": req.model,
            "layer": req.layer,
            "head": req.head,
            "tokens": walk.tokens,
            "q": rounded(walk.Q.tensor),
            "k": rounded(walk.K.tensor),
            "scores": rounded(walk.dots.tensor),
            "mask": torch.isinf(walk.mask.tensor).tolist(),
            "pattern": rounded(walk.pattern.tensor),
            "delta_e_norm": rounded(walk.dE.tensor.norm(dim=-1)),
            "e_norm": rounded(walk.E.tensor.norm(dim=-1)),
            "steps": [
                {"symbol": s.symbol, "title": s.title, "meaning": s.meaning, "shape": list(s.tensor.shape)}
                for s in walk.steps
            ],
        }

    @app.post("/api/next", summary="the next-token distribution at a temperature, and one sample from it")
    def next_token(req: AnalyzeRequest) -> dict:
        model = model_for(req.model)
        if not model.config.causal:
            raise HTTPException(422, f"{req.model} is an encoder: it does not predict a next token")

        def last_logits(m, text):
            with torch.inference_mode():
                return m(encode_batch(m, text), last_only=True)[0, -1].float().cpu()

        return next_tokens(model, run(req.model, last_logits, req.text), req.temperature, req.top_k)

    @app.get("/api/heads", summary="head-detector scores, [layer][head] per kind")
    def head_scores(model: str) -> dict:
        from ..inspect import heads

        slot = slot_for(model)
        with slot.lock:
            if slot.head_scores is None:
                tables = run(model, heads.detect_all)
                slot.head_scores = {
                    "kinds": {
                        k: {
                            "definition": heads.DETECTORS[k],
                            "scores": rounded(v, 3),
                            "strongest": list(heads.strongest(v)),
                        }
                        for k, v in tables.items()
                    }
                }
        return slot.head_scores

    return app
