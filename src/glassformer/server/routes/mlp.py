"""The MLP card: POST /api/mlp, the neurons that fire hardest at one token."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from .. import answers
from ..replies import json_answer
from ..schemas import MLPRequest
from .common import ON_A_MODEL, Ex

router = APIRouter(responses=ON_A_MODEL)


@router.post("/api/mlp", summary="the MLP step at one token: the neurons that fire hardest, what they push towards")
async def mlp(req: MLPRequest, ex: Ex) -> Response:
    step = await ex.answer(req.model, lambda m: answers.mlp_step(m, req.text, req.position, req.k), req.text)
    return json_answer(step)
