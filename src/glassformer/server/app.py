"""The explorer: a FastAPI app serving the page (static files shipped in the package) and
a JSON API over a fixed set of models chosen when the server starts.

    app = create_app(default_registry(["lesson:adjectives"]))
    run(app, "127.0.0.1", 8000, ready=lambda url: print("explorer on", url))

No request can name a file: `model` must be one of the registered names (anything else is
a 404 and loads nothing), and static files come only from the package's own folder. Every
request passes `guard.Guard` (Host check against DNS rebinding, body limits, security
headers); every refusal is a 4xx with a JSON body {"detail": "one line"}.

Forward passes run in one lane per model (`lanes.Lane`: one at a time per model, a short
queue, never on the event loop). Head detectors and the showcase head are slow, so they
run in a background lane of their own on a shadow of the model: they never hold the model
a user's request waits for, and they pause while any of the learner's forward passes runs.
The page asks for them after its first analysis has answered (detectors: on a button).
"""

import asyncio
import contextlib
import functools
import json
import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import version as package_version
from typing import Any

import torch

from .. import lessons, sampling
from ..config import GlassformerError
from ..inputs import EXAMPLE, encode, encode_batch
from ..inspect import detector_cache, heads
from ..inspect.explain import analyze, walk_head
from . import answers
from .guard import MAX_HEADER_BYTES, Guard, guarded_h11, hosts_allowed
from .lanes import Busy, Lane, Traffic, shadow

log = logging.getLogger(__name__)

# A sentence each model has something to show on: the lessons' own, a fact for a chat model.
EXAMPLES = {
    "lesson:adjectives": lessons.adjectives.EXAMPLE,
    "lesson:induction": lessons.induction.EXAMPLE,
    "smollm2": "The capital of France is",
}
MAX_TEXT = 20_000  # characters; the body limit (64 KiB) is the real bound
MAX_INDEX = 100_000  # layers, heads, positions: far beyond any model here, far below an overflow
BUSY_QUEUE = 64  # requests waiting for one model before the server says it is busy


@dataclass
class ModelSlot:
    name: str
    load: Callable[[], Any]
    note: str = ""
    example: str = EXAMPLE
    model: Any = None
    lock: threading.RLock = field(default_factory=threading.RLock)  # loading, the shadow, the caches
    lane: Lane = field(init=False)  # the learner's requests
    background: Lane = field(init=False)  # detectors and the showcase head, on the shadow
    shadow_model: Any = None  # same weights, own hook points: for the background lane
    showcases: dict[str, dict] = field(default_factory=dict)  # text -> {layer, head, why, questions}
    showcase_any: dict | None = None  # when the showcase does not depend on the text
    detection: dict | None = None
    logits: OrderedDict[str, torch.Tensor] = field(default_factory=OrderedDict)  # text -> next-token logits

    def __post_init__(self) -> None:
        self.lane = Lane(self.name, BUSY_QUEUE)
        self.background = Lane(f"{self.name} (background)", BUSY_QUEUE)

    def get(self):
        with self.lock:
            if self.model is None:
                self.model = self.load()
            return self.model

    def get_shadow(self, traffic: Traffic | None = None):
        with self.lock:
            if self.shadow_model is None:
                self.shadow_model = shadow(self.get(), traffic)
            return self.shadow_model

    def showcase_for(self, text: str) -> dict | None:
        with self.lock:
            return self.showcase_any or self.showcases.get(text)

    def remember_logits(self, text: str, logits: torch.Tensor) -> None:
        with self.lock:
            self.logits[text] = logits
            self.logits.move_to_end(text)
            while len(self.logits) > 16:
                self.logits.popitem(last=False)

    def cached_logits(self, text: str) -> torch.Tensor | None:
        with self.lock:
            return self.logits.get(text)


class Registry:
    def __init__(self) -> None:
        self.slots: dict[str, ModelSlot] = {}

    def add(self, name: str, load: Callable[[], Any], note: str = "", example: str | None = None) -> None:
        self.slots[name] = ModelSlot(name, load, note, example or EXAMPLES.get(name, EXAMPLE))

    def __getitem__(self, name: str) -> ModelSlot:
        if name not in self.slots:
            raise KeyError(name)
        return self.slots[name]


def default_registry(names: list[str], dtype: str = "fp32") -> Registry:
    """Exactly the models named on the command line, loaded on first use (in `dtype`)."""
    from ..pretrained import load

    reg = Registry()
    for name in names:
        reg.add(name, functools.partial(load, name, dtype=dtype))
    return reg


def showcase_fields(found: heads.Showcase) -> dict:
    """heads.showcase_head's answer as JSON; for a lesson's head, with the question its
    queries ask and its keys answer."""
    questions = list(found.questions) if found.questions else None
    return {"layer": found.layer, "head": found.head, "why": found.why, "questions": questions}


class LoadFailed(Exception):
    """A registered model could not be loaded (its files are missing or broken)."""


class Background:
    """Slow jobs, each in its model's background lane and each asked for once: a second
    request for the same job waits for the first one's answer instead of starting it again."""

    def __init__(self) -> None:
        self.tasks: dict[tuple, asyncio.Future] = {}

    def start(self, slot: ModelSlot, key: tuple, fn: Callable[[], Any]) -> asyncio.Future:
        key = (slot.name, *key)
        task = self.tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(slot.background.call(fn))
            self.tasks[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        return task

    def _finished(self, key: tuple, task: asyncio.Future) -> None:
        self.tasks.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            log.debug("background job %s failed: %s", key, task.exception())

    async def result(self, slot: ModelSlot, key: tuple, fn: Callable[[], Any]) -> Any:
        # shielded: a client that goes away does not cancel a job others may be waiting for
        return await asyncio.shield(self.start(slot, key, fn))


def static_dir():
    return resources.files("glassformer.viz").joinpath("static")


def swagger_dir():
    """Swagger UI's files from the fastapi-offline package, or None when it is not installed."""
    try:
        found = resources.files("fastapi_offline").joinpath("static")
    except ModuleNotFoundError:
        return None
    return found if found.joinpath("swagger-ui-bundle.js").is_file() else None


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>glassformer explorer: API</title>
<link rel="stylesheet" href="/docs-static/swagger-ui.css">
<link rel="icon" href="/docs-static/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs-static/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script>
</body>
</html>
"""


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


def create_app(
    registry: Registry,
    *,
    allowed_hosts: Iterable[str] = (),
    max_body: int = 64 * 1024,
    body_timeout: float = 10.0,
    warm: bool = True,
):
    """The explorer's ASGI app over the models in `registry`.

    allowed_hosts: host names, besides localhost, 127.0.0.1 and [::1], that the Host
    header may carry (pass the --host the server listens on when it is not loopback).
    max_body: the largest request body in bytes (413 beyond). body_timeout: seconds a
    body may take to arrive (408 beyond). warm: when the server starts, find the showcase
    head of each model already loaded, in the background.
    """
    try:
        from fastapi import FastAPI, Query, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, Response
        from fastapi.staticfiles import StaticFiles
        from pydantic import BaseModel, ConfigDict, Field
        from starlette.exceptions import HTTPException
    except ImportError:
        raise GlassformerError("the explorer needs FastAPI: pip install 'glassformer[serve]'") from None

    background = Background()
    traffic = Traffic()  # the learner's forward passes: background work gives way to them

    def start_showcase(slot: ModelSlot, text: str) -> asyncio.Future:
        def find():
            model = slot.get_shadow(traffic)
            found = slot.showcase_for(text)
            if found is None:
                shown = heads.showcase_head(model, encode_batch(model, text))
                found = showcase_fields(shown)
                with slot.lock:
                    if not shown.per_text:  # a lesson's head, found on the lesson's own texts
                        slot.showcase_any = found
                    else:
                        slot.showcases[text] = found
                        while len(slot.showcases) > 32:
                            slot.showcases.pop(next(iter(slot.showcases)))
            return found

        return background.start(slot, ("showcase", text), find)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        if warm:
            for slot in registry.slots.values():
                if slot.model is not None:
                    start_showcase(slot, slot.example)
        yield

    app = FastAPI(
        title="glassformer explorer",
        version=package_version("glassformer"),
        description="Attention, step by step, on the models this server was started with.",
        docs_url=None,  # served below from local files: no CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(Guard, hosts=hosts_allowed(allowed_hosts), max_body=max_body, body_timeout=body_timeout)
    app.mount("/static", StaticFiles(directory=str(static_dir())), name="static")
    swagger = swagger_dir()
    if swagger is not None:
        app.mount("/docs-static", StaticFiles(directory=str(swagger)), name="docs-static")

    # --- answers and refusals ---------------------------------------------------------------
    class SafeJSON(Response):
        """JSON that is always ASCII (a lone surrogate is escaped, not a crash) and never NaN."""

        media_type = "application/json"

        def render(self, content) -> bytes:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()

    def json_body(data: dict) -> bytes:
        # big nested lists of floats: json.dumps is many times faster than FastAPI's encoder
        try:
            try:
                body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
            except UnicodeEncodeError:  # a token text holding a lone surrogate
                body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
        except ValueError:  # NaN or infinity, which JSON cannot carry
            raise GlassformerError(
                "this model's numbers overflowed to NaN or infinity on this text; nothing can be shown"
            ) from None
        return body

    def refusal(status: int, detail: str, headers=None) -> Response:
        return SafeJSON({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        return refusal(422, one_line_errors(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> Response:
        return refusal(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(GlassformerError)
    async def user_mistake(_request: Request, exc: GlassformerError) -> Response:
        return refusal(422, str(exc))

    @app.exception_handler(LoadFailed)
    async def load_failed(_request: Request, exc: LoadFailed) -> Response:
        return refusal(503, str(exc))

    @app.exception_handler(Busy)
    async def busy(_request: Request, exc: Busy) -> Response:
        return refusal(503, f"{exc} is busy with other requests; try again in a moment", {"retry-after": "1"})

    # --- running things on a model --------------------------------------------------------------
    def slot_for(name: str) -> ModelSlot:
        try:
            return registry[name]
        except KeyError:
            raise HTTPException(404, f"unknown model {name!r}; this server has: {', '.join(registry.slots)}") from None

    def loaded(slot: ModelSlot):
        try:
            return slot.get()
        except GlassformerError as err:
            raise LoadFailed(f"model {slot.name!r} could not be loaded: {err}") from None

    async def on_model(name: str, fn: Callable[[Any], Any]) -> Any:
        """fn(model) in the model's lane, one at a time; GlassformerError becomes a 422."""
        slot = slot_for(name)

        def job():
            model = loaded(slot)
            with traffic.learner():
                return fn(model)

        return await slot.lane.call(job)

    async def answer(name: str, fn: Callable[[Any], dict]) -> Response:
        """fn(model)'s answer as JSON, written out in the model's lane too: a big grid of
        floats is never serialised on the event loop, where it would hold up every request."""
        return Response(await on_model(name, lambda model: json_body(fn(model))), media_type="application/json")

    # --- what a request may hold ------------------------------------------------------------
    class Strict(BaseModel):
        # strict: 1.0 is not a layer, true is not a number, 5 is not a sentence
        model_config = ConfigDict(extra="forbid", strict=True)

    class TextRequest(Strict):
        model: str = Field(
            description="one of the names /api/models lists", max_length=200, examples=list(registry.slots)[:1]
        )
        text: str = Field(description="the sentence to run", max_length=MAX_TEXT, examples=[EXAMPLE])

    class SamplingRequest(TextRequest):
        temperature: float = Field(1.0, ge=0, le=sampling.MAX_TEMPERATURE, allow_inf_nan=False)
        top_k: int | None = Field(None, ge=1, le=10_000_000, description="keep the k likeliest tokens (none: all)")
        top_p: float | None = Field(
            None, gt=0, le=1, allow_inf_nan=False, description="keep the likeliest tokens up to this mass"
        )
        rows: int = Field(12, ge=1, le=100, description="how many of the likeliest tokens to list")

    class AnalyzeRequest(SamplingRequest):
        showcase: bool = Field(False, description="also name the showcase head, if it is already known")

    class HeadRequest(TextRequest):
        layer: int = Field(0, ge=0, le=MAX_INDEX)
        head: int = Field(0, ge=0, le=MAX_INDEX)

    class MLPRequest(TextRequest):
        position: int = Field(ge=0, le=MAX_INDEX, description="the token whose MLP step to show")
        k: int = Field(8, ge=1, le=32, description="how many neurons")

    def settings(req: SamplingRequest) -> dict:
        sampling.check(req.temperature, req.top_k, req.top_p)  # the one place settings are judged
        return {"temperature": req.temperature, "top_k": req.top_k, "top_p": req.top_p, "rows": req.rows}

    # --- the page and the docs --------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return static_dir().joinpath("explorer.html").read_text(encoding="utf-8")

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> Response:
        if swagger is None:
            return refusal(404, "the API docs need Swagger UI's files: pip install fastapi-offline")
        return HTMLResponse(DOCS_PAGE)

    # --- the API ------------------------------------------------------------------------------
    @app.get("/api/models", summary="the models this server can show")
    async def models() -> list[dict]:
        out = []
        for slot in registry.slots.values():
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
                }
            out.append(entry)
        return out

    @app.post("/api/analyze", summary="every layer's and head's attention pattern, and the next-token distribution")
    async def analyze_text(req: AnalyzeRequest) -> Response:
        how = settings(req)
        slot = slot_for(req.model)

        def job(model) -> dict:
            a = analyze(model, req.text)
            out = {"model": req.model, **answers.analysis(a), **answers.unknowns(model, req.text)}
            if a.last_logits is not None:
                slot.remember_logits(req.text, a.last_logits)
                out |= answers.next_tokens(model, a.last_logits, **how)
            if req.showcase:
                out["showcase"] = slot.showcase_for(req.text)
            return out

        return await answer(req.model, job)

    @app.post("/api/head", summary="one head step by step: Q, K, dot products, mask, pattern, V, ΔE")
    async def head(req: HeadRequest) -> Response:
        def job(model) -> dict:
            walk = walk_head(model, req.text, req.layer, req.head)
            follow = heads.query_to_follow(model, walk)
            return {"model": req.model, **answers.head_walk(walk), "query": follow}

        return await answer(req.model, job)

    @app.post("/api/next", summary="the next-token distribution under temperature, top-k and top-p, and a sample")
    async def next_token(req: SamplingRequest) -> Response:
        how = settings(req)
        slot = slot_for(req.model)

        def job(model) -> dict:
            if not model.config.causal:
                raise GlassformerError(f"{req.model} is an encoder: it does not predict a next token")
            logits = slot.cached_logits(req.text)
            if logits is None:  # the sliders move often; the sentence seldom
                with torch.inference_mode():
                    logits = model(encode_batch(model, req.text), last_only=True)[0, -1].float().cpu()
                slot.remember_logits(req.text, logits)
            return answers.next_tokens(model, logits, **how)

        return await answer(req.model, job)

    @app.post("/api/mlp", summary="the MLP step at one token: the neurons that fire hardest, what they push towards")
    async def mlp(req: MLPRequest) -> Response:
        return await answer(req.model, lambda m: answers.mlp_step(m, req.text, req.position, req.k))

    @app.post("/api/showcase", summary="the head that best shows what the model does on this text, and why")
    async def showcase(req: TextRequest) -> dict:
        slot = slot_for(req.model)
        found = slot.showcase_for(req.text)
        if found is not None and slot.model is not None:
            encode(slot.model, req.text)  # a cached answer still needs a text this model can read
        if found is None:
            found = await asyncio.shield(start_showcase(slot, req.text))
        return {"model": req.model, **(found or {})}

    @app.get("/api/heads", summary="head-detector scores, [layer][head] per kind (slow the first time)")
    async def head_scores(
        model: str = Query(description="one of the names /api/models lists", max_length=200),
    ) -> Response:
        slot = slot_for(model)

        def detect() -> dict:
            if slot.detection is None:
                found = answers.detection(detector_cache.detect_all(slot.get_shadow(traffic)))
                with slot.lock:
                    slot.detection = found
            return slot.detection

        found = slot.detection if slot.detection is not None else await background.result(slot, ("detect",), detect)
        return Response(json_body(found), media_type="application/json")

    return app


# --- serving ----------------------------------------------------------------------------------
def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port), or GlassformerError
    with the reason ("cannot listen on 127.0.0.1:8000: Address already in use")."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise GlassformerError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    try:
        # lets a restarted server take its port back from connections still closing
        # (TIME_WAIT); on Linux it never lets two servers listen on one port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise GlassformerError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def make_server(
    app,
    *,
    keep_alive: float = 5.0,
    header_timeout: float = 10.0,
    max_connections: int = 100,
    log_level: str = "warning",
):
    """A uvicorn Server for `app` with the explorer's limits (see `run`)."""
    try:
        import uvicorn
    except ImportError:
        raise GlassformerError("the explorer needs uvicorn: pip install 'glassformer[serve]'") from None
    config = uvicorn.Config(
        app,
        http=guarded_h11(header_timeout),
        ws="none",
        lifespan="on",
        timeout_keep_alive=int(keep_alive),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,  # request line and headers; 400 beyond
        limit_concurrency=max_connections,
        timeout_graceful_shutdown=1,
        log_level=log_level,
        access_log=False,
        server_header=False,
    )
    return uvicorn.Server(config)


def run(
    app,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    ready: Callable[[str], None] | None = None,
    keep_alive: float = 5.0,
    header_timeout: float = 10.0,
    max_connections: int = 100,
) -> None:
    """Serve `app` on host:port until SIGINT or SIGTERM; returns once it has stopped.

    1. Binds the listening socket first: a port that is taken (or a bad host) raises
       GlassformerError("cannot listen on HOST:PORT: Address already in use") before
       anything else happens; a port outside 1..65535 raises one too.
    2. Only then calls ready(url) (url like "http://127.0.0.1:8000/"): the place to print
       that the server is up, or to open a browser.
    3. Serves with uvicorn: idle keep-alive connections close after `keep_alive` s, a
       request head must arrive within `header_timeout` s and a body within 10 s, headers
       are limited to 16 KiB, and at most `max_connections` are served at once.
    4. On SIGTERM or SIGINT, stops within about 1 s (uvicorn's graceful shutdown, 1 s for
       requests in flight); uvicorn then re-raises the signal with its previous handler,
       so SIGINT ends as KeyboardInterrupt and SIGTERM ends the process as it would have.
    """
    if not 1 <= port <= 65535:
        raise GlassformerError(f"the port must be between 1 and 65535, got {port}")
    sock = listen(host, port)
    try:
        server = make_server(app, keep_alive=keep_alive, header_timeout=header_timeout, max_connections=max_connections)
        shown = f"[{host}]" if ":" in host else host
        if ready is not None:
            ready(f"http://{shown}:{port}/")
        server.run(sockets=[sock])
    finally:
        sock.close()
