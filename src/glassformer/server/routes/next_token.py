"""The next-token card: POST /api/next, the distribution under temperature, top-k, top-p."""

from __future__ import annotations

import torch
from fastapi import APIRouter
from fastapi.responses import Response

from ...config import GlassformerError
from ...inputs import encode_batch
from .. import answers
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
        logits = slot.cached_logits(req.text)
        if logits is None:  # the sliders move often; the sentence seldom
            with torch.inference_mode():
                logits = model(encode_batch(model, req.text), last_only=True)[0, -1].float().cpu()
            slot.remember_logits(req.text, logits)
        return answers.next_tokens(model, logits, **how)

    return json_answer(await ex.answer(req.model, job, req.text))
