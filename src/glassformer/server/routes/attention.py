"""The attention cards: every head's pattern (POST /api/analyze) and one head step by step
(POST /api/head)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ...config import GlassformerError
from ...lab import showcase
from ...lab.explain import analyze, walk_head
from .. import answers
from ..replies import json_answer
from ..schemas import AnalyzeRequest, HeadRequest, settings
from .common import ON_A_MODEL, Ex

router = APIRouter(responses=ON_A_MODEL)


@router.post("/api/analyze", summary="every layer's and head's attention pattern, and the next-token distribution")
async def analyze_text(req: AnalyzeRequest, ex: Ex) -> Response:
    how = settings(req)
    slot = ex.slot_for(req.model)

    def job(model) -> dict:
        a = analyze(model, req.text)
        out = {"model": req.model, **answers.analysis(a), **answers.unknowns(model, req.text)}
        if a.last_logits is not None:
            out |= slot.next_card(model, req.text, how, a.last_logits)
        if req.showcase:
            out["showcase"] = slot.showcase_for(req.text)
        return out

    return json_answer(await ex.answer(req.model, job, req.text))


@router.post("/api/head", summary="one head step by step: Q, K, dot products, mask, pattern, V, ΔE")
async def head(req: HeadRequest, ex: Ex) -> Response:
    def job(model) -> dict:
        walk = walk_head(model, req.text, req.layer, req.head)
        follow = showcase.query_to_follow(model, walk)
        focus = follow if req.query is None else req.query
        if not 0 <= focus < len(walk.tokens):
            raise GlassformerError(f"query {focus} is out of range: the text has tokens 0..{len(walk.tokens) - 1}")
        return {"model": req.model, **answers.head_walk(walk, focus, model), "query": follow}

    return json_answer(await ex.answer(req.model, job, req.text))
