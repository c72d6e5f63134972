"""The head cards that run in the background: the showcase head (POST /api/showcase) and
the head detectors (GET /api/heads)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ...inputs import encode
from ...json_text import to_bytes
from ..replies import json_answer
from ..schemas import TextRequest
from .common import ON_A_MODEL, Ex

router = APIRouter(responses=ON_A_MODEL)


@router.post("/api/showcase", summary="the head that best shows what the model does on this text, and why")
async def showcase(req: TextRequest, ex: Ex) -> dict:
    slot = ex.slot_for(req.model)
    found = slot.showcase_for(req.text)
    if found is not None and slot.model is not None:
        encode(slot.model, req.text)  # a cached answer still needs a text this model can read
    if found is None:
        found = await asyncio.shield(ex.start_showcase(slot, req.text))
    return {"model": req.model, **(found or {})}


@router.get("/api/heads", summary="head-detector scores, [layer][head] per kind (slow the first time)")
async def head_scores(
    ex: Ex, model: str = Query(description="one of the names /api/models lists", max_length=200)
) -> Response:
    return json_answer(to_bytes(await ex.detection(ex.slot_for(model))))
