"""What every route module imports: `Ex`, the app's Explorer as a FastAPI dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..slots import Explorer


def explorer(request: Request) -> Explorer:
    return request.app.state.explorer


Ex = Annotated[Explorer, Depends(explorer)]
