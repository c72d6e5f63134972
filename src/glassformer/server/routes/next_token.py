"""The next-token card: POST /api/next, the distribution under temperature, top-k, top-p."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ...config import GlassformerError
from ..replies import json_answer
from ..schemas import SamplingRequest, settings
from .common import ON_A_MODEL, Ex

router = APIRouter(responses=ON_A_MODEL)


@router.post("/api/next", summary="the next-token distribution under temperature, top-k and top-p, and a sample")
async def next_token(req: SamplingRequest, ex: Ex) -> Response:
    how = settings(req)
    slot = ex.slot_for(req.model)

    def job(model) -> dict:
        if not model.config.causal:
            raise GlassformerError(f"{req.model} is an encoder: it does not predict a next token")
        return slot.next_card(model, req.text, how)

    return json_answer(await ex.answer(req.model, job, req.text))
