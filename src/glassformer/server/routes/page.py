"""The page (viz/static/explorer.html) and the API docs (Swagger UI from local files)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ..replies import refusal
from ..static import DOCS_PAGE, static_dir

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def index() -> str:
    return static_dir().joinpath("explorer.html").read_text(encoding="utf-8")


@router.get("/docs", response_class=HTMLResponse)
async def docs(request: Request) -> Response:
    if request.app.state.swagger is None:
        return refusal(404, "the API docs need Swagger UI's files: pip install fastapi-offline")
    return HTMLResponse(DOCS_PAGE)
