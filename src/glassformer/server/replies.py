"""How the app answers in HTTP: JSON bodies, and every refusal as {"detail": "one line"}.

`install(app)` maps the project's exceptions to status codes, once for every route:

    GlassformerError   422  a user's mistake, in the project's own words
    RequestValidation  422  a body or query that does not fit schemas.py (named, never echoed)
    UnknownModel       404  a model this server was not started with
    TooLong            413  a text over limits.MAX_WEIGHTS on this model (the line says its limit)
    LoadFailed         503  a registered model whose files are missing or broken
    Busy               503  + Retry-After: 1, the model's queue is full (by design: try again)
    Stopping           503  the server is shutting down
    HTTPException      its own status
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from ..config import GlassformerError
from ..json_text import to_bytes
from .lanes import Busy, Stopping
from .limits import TooLong
from .slots import LoadFailed, UnknownModel


class SafeJSON(Response):
    """JSON that a lone surrogate cannot crash and that is never NaN (json_text)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return to_bytes(content)


def json_answer(body: bytes) -> Response:
    """JSON already written out (by json_text.to_bytes, in the model's lane)."""
    return Response(body, media_type="application/json")


def refusal(status: int, detail: str, headers=None) -> Response:
    return SafeJSON({"detail": detail}, status_code=status, headers=headers)


def one_line_errors(errors) -> str:
    """A validation failure in one line, naming fields and rules but never echoing the
    input back (it may be NaN, or a lone surrogate that JSON cannot carry)."""
    parts = []
    for e in errors[:4]:
        if e.get("type") == "json_invalid":
            parts.append("the body is not valid JSON")
            continue
        where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query"))
        if not where and e.get("loc", ())[:1] == ("body",):  # the body as a whole: missing, or not an object
            parts.append("send a JSON object (content-type: application/json) with the fields /docs lists")
            continue
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    more = f" (and {len(errors) - 4} more)" if len(errors) > 4 else ""
    return "; ".join(parts) + more


def install(app: FastAPI) -> None:
    """Every refusal the routes can raise, as a 4xx/503 in JSON."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        return refusal(422, one_line_errors(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> Response:
        return refusal(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(GlassformerError)
    async def user_mistake(_request: Request, exc: GlassformerError) -> Response:
        return refusal(422, str(exc))

    @app.exception_handler(UnknownModel)
    async def unknown_model(_request: Request, exc: UnknownModel) -> Response:
        return refusal(404, str(exc))

    @app.exception_handler(TooLong)
    async def too_long(_request: Request, exc: TooLong) -> Response:
        return refusal(413, str(exc))

    @app.exception_handler(Stopping)
    async def stopping(_request: Request, exc: Stopping) -> Response:
        return refusal(503, "the server is stopping; this request was not answered", {"connection": "close"})

    @app.exception_handler(LoadFailed)
    async def load_failed(_request: Request, exc: LoadFailed) -> Response:
        return refusal(503, str(exc))

    @app.exception_handler(Busy)
    async def busy(_request: Request, exc: Busy) -> Response:
        return refusal(503, f"{exc} is busy with other requests; try again in a moment", {"retry-after": "1"})
