"""The chapter 5 and 7 cards: POST /api/embed (word arithmetic, a direction, a PCA plane
on the model's own W_E or W_U) and POST /api/superposition (the toy model, trained on
request: it is not a transformer and needs no model)."""

from __future__ import annotations

import threading

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...lab import embeddings
from ...lessons import superposition as toy
from ..lanes import Busy
from ..replies import json_answer
from ..schemas import EmbedRequest, SuperpositionRequest
from .common import Ex

router = APIRouter()
_TRAINING = threading.BoundedSemaphore(1)  # one toy model trains at a time; the CPU is shared


@router.post("/api/embed", summary="word arithmetic, a direction or a PCA plane on the model's own embeddings")
async def embed(req: EmbedRequest, ex: Ex) -> Response:
    def job(model) -> dict:
        if req.kind == "arithmetic":
            return embeddings.arithmetic(model, req.expression, k=req.k, matrix=req.matrix).to_dict()
        if req.kind == "direction":
            return embeddings.project(model, req.expression, req.words, req.matrix).to_dict()
        return embeddings.pca(model, req.words, req.matrix).to_dict()

    return json_answer(await ex.answer(req.model, job, None))


@router.post("/api/superposition", summary="train the toy model of superposition (lesson:superposition) and give W")
async def superposition(req: SuperpositionRequest) -> dict:
    settings = toy.Settings(
        features=req.features,
        dims=req.dims,
        sparsities=tuple(req.sparsities),
        decay=req.importance,
        steps=req.steps,
        seed=req.seed,
    ).check()
    if not _TRAINING.acquire(blocking=False):
        raise Busy("a toy model is training already; try again in a few seconds")
    try:
        runs = await run_in_threadpool(toy.train, settings)
    finally:
        _TRAINING.release()
    return {
        "features": settings.features,
        "dims": settings.dims,
        "importance_decay": settings.decay,
        "runs": [r.to_dict() for r in runs],
        "summary": toy.summary(runs),
    }
