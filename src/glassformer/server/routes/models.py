"""GET /api/models: the page's model menu."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from .. import limits
from .common import Ex

router = APIRouter()


@router.get("/api/models", summary="the models this server can show")
async def models(ex: Ex) -> list[dict]:
    out = []
    for slot in ex.registry.slots.values():
        entry: dict[str, Any] = {
            "name": slot.name,
            "note": slot.note,
            "example": slot.example,
            "loaded": slot.model is not None,
            "detectors_ready": slot.detection is not None,
        }
        if slot.model is not None:
            c = slot.model.config
            entry |= {
                "decoder": c.causal,
                "n_layers": c.n_layers,
                "n_heads": c.n_heads,
                "context_length": c.context_length,
                "max_tokens": limits.max_tokens(c),  # longer texts are refused (413)
            }
        out.append(entry)
    return out
