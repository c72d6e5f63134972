"""What every route module imports: `Ex`, the app's Explorer as a FastAPI dependency, and
`ON_A_MODEL`, the refusals a route that runs a model can answer (for /docs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..slots import Explorer


def explorer(request: Request) -> Explorer:
    return request.app.state.explorer


Ex = Annotated[Explorer, Depends(explorer)]


def _said(text: str) -> dict:
    return {"description": text, "content": {"application/json": {"example": {"detail": "one line"}}}}


ON_A_MODEL: dict[int | str, dict] = {
    404: _said("a model this server was not started with"),
    413: _said("the text is longer than the explorer shows on this model (layers × heads × tokens², see /api/models)"),
    422: _said("a request that does not fit, or a text this model cannot read"),
    503: _said(
        "the model is busy with other requests (by design: its queue is short; the answer carries "
        "Retry-After: 1, so try again in a second), or the server is stopping"
    ),
}
