"""The explorer: a FastAPI app serving the page and a JSON API over a fixed set of models
chosen when the server starts.

    app = create_app(default_registry(["lesson:adjectives"]))
    run(app, "127.0.0.1", 8000, ready=lambda url: print("explorer on", url))

Where things live:

    app.py       create_app: the middleware, the static mounts, the routers (this file)
    fastapi_app.py  FastAPI, with this server's model names as /docs' examples
    routes/      one APIRouter per card; routes/__init__.py says how a new card is added
    schemas.py   what each request may hold (pydantic; /docs shows them)
    answers.py   each answer's JSON shape, from lab/'s results (no FastAPI)
    replies.py   exceptions -> 4xx/503 JSON refusals
    slots.py     the models (loaded on first use), their lanes, background jobs
    lanes.py     one thread per model; the shadow model the background work runs on
    limits.py    how long a text may be (layers × heads × tokens²), grid windows, thumbnails
    guard.py     the front door: Host check, body limits, security headers
    connections.py  uvicorn's HTTP/1.1 with bounds on connections; its refusals in JSON
    static.py    where the page lives: the package's viz/static/ (explorer.html, .js, .css)
    serving.py   the socket and uvicorn, with the explorer's limits

No request can name a file: `model` must be one of the registered names (anything else is
a 404 and loads nothing), and static files come only from the package's own folder. Every
request passes `guard.Guard` (Host check against DNS rebinding, body limits, security
headers); every refusal is a 4xx with a JSON body {"detail": "one line"}, but for a busy
model (503 with Retry-After: 1, by design: its queue is short) and a stopping server (503).

Forward passes run in one lane per model (`lanes.Lane`: one at a time per model, a short
queue, never on the event loop). Head detectors and the showcase head are slow, so they
run in a background lane of their own on a shadow of the model: they never hold the model
a user's request waits for, and they pause while any of the learner's forward passes runs.
The page asks for them after its first analysis has answered (detectors: on a button).
"""

import contextlib
from collections.abc import Iterable
from importlib.metadata import version as package_version

from ..config import GlassformerError
from .guard import Guard, hosts_allowed
from .schemas import MAX_INDEX, MAX_TEXT
from .serving import listen, make_server, run
from .slots import BUSY_QUEUE, EXAMPLES, Explorer, ModelSlot, Registry, default_registry
from .static import static_dir, swagger_dir

__all__ = [
    "BUSY_QUEUE",
    "EXAMPLES",
    "MAX_INDEX",
    "MAX_TEXT",
    "ModelSlot",
    "Registry",
    "create_app",
    "default_registry",
    "listen",
    "make_server",
    "run",
]


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
        from fastapi.staticfiles import StaticFiles

        from . import replies
        from .fastapi_app import ExplorerApp
        from .routes import ROUTERS
    except ImportError:
        raise GlassformerError("the explorer needs FastAPI: pip install 'glassformer[serve]'") from None

    explorer = Explorer(registry)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        if warm:
            explorer.warm()
        yield

    app = ExplorerApp(
        title="glassformer explorer",
        version=package_version("glassformer"),
        description="Attention, step by step, on the models this server was started with.",
        docs_url=None,  # served by routes/page.py from local files: no CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.example_model = tuple(registry.slots)[:1]
    app.state.explorer = explorer
    app.state.swagger = swagger_dir()
    app.add_middleware(Guard, hosts=hosts_allowed(allowed_hosts), max_body=max_body, body_timeout=body_timeout)
    app.mount("/static", StaticFiles(directory=str(static_dir())), name="static")
    if app.state.swagger is not None:
        app.mount("/docs-static", StaticFiles(directory=str(app.state.swagger)), name="docs-static")
    replies.install(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
