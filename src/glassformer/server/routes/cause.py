"""The laboratory: POST /api/ablate (switch heads or MLPs off), /api/patch (head-by-head
patching from a clean text into a corrupted one), /api/circuit (a head read from its
weights alone). Each runs in the model's lane, like every forward pass."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from .. import answers
from ..replies import json_answer
from ..schemas import AblateRequest, CircuitRequest, PatchRequest
from .common import Ex

router = APIRouter()


@router.post(
    "/api/ablate",
    summary="switch heads or MLPs off: the next-token distribution before and after, KL, and the patterns that moved",
)
async def ablate(req: AblateRequest, ex: Ex) -> Response:
    def job(model) -> dict:
        return answers.ablation(
            model,
            req.model,
            req.text,
            req.heads,
            [(L, None) for L in req.mlps] + req.neurons,
            req.mode,
            req.position,
            req.rows,
        )

    return json_answer(await ex.answer(req.model, job, req.text))


@router.post(
    "/api/patch",
    summary="patch each head's z from a clean text into a corrupted one: the share of the logit difference restored",
)
async def patch(req: PatchRequest, ex: Ex) -> Response:
    return json_answer(
        await ex.answer(
            req.model,
            lambda m: answers.patching(m, req.clean, req.corrupt, req.answer, req.wrong),
            max(req.clean, req.corrupt, key=len),  # the two have the same token count, or are refused
        )
    )


@router.post("/api/circuit", summary="one head's QK and OV circuits, read from its weights alone")
async def circuit(req: CircuitRequest, ex: Ex) -> Response:
    def job(model) -> dict:
        return answers.circuit(model, req.layer, req.head, req.k, req.token_ids, req.whole)

    return json_answer(await ex.answer(req.model, job, None))  # no text: the weights alone
