"""The explorer's routes, one module per card (or group of cards), each an `APIRouter`.

Adding a card (say, a patching map):

1. its answer's shape: a function in `server/answers.py` that turns the lab/ result
   into a JSON-ready dict (no FastAPI there, so it can be tested on its own);
2. its request, if a model and a text are not enough: a subclass of `TextRequest` in
   `server/schemas.py`;
3. its route: a new module here, `routes/patching.py`, holding

       router = APIRouter(responses=ON_A_MODEL)

       @router.post("/api/patching", summary="...")
       async def patching(req: PatchRequest, ex: Ex) -> Response:
           return json_answer(await ex.answer(req.model, lambda m: answers.patching(m, ...), req.text))

   `ex.answer` first holds the text to `server/limits.py` (layers × heads × tokens²,
   413 beyond), then runs the function in the model's lane (one forward pass at a time
   per model, never on the event loop) and writes its JSON there; GlassformerError
   becomes a 422, a full queue a 503 with Retry-After (see `server/replies.py`). Send
   what the page draws: a long text's grids as a window (`limits.window`), pictures as
   thumbnails (`answers.thumbnails`). Slow work that must not hold the learner's model
   runs through `ex.background` on the model's shadow, as `heads.py` does;
4. one line in `ROUTERS` below;
5. the page: `viz/static/explorer.html` (the card's markup) and `viz/static/explorer.js`
   (a `fetch` to the new route, then drawing; grids through `viz/static/grid.js`).
   tests/test_browser.py drives the page in Chromium.
"""

from __future__ import annotations

from . import attention, cause, chapters, heads, mlp, models, next_token, page

# in the order /docs lists them
ROUTERS = [
    page.router,
    models.router,
    attention.router,
    next_token.router,
    mlp.router,
    heads.router,
    cause.router,
    chapters.router,
]
