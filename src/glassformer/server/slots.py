"""The models a server holds and the work it does on them, with no HTTP in sight.

- `ModelSlot`: one registered model, loaded on first use, with its lanes (the learner's
  requests; background jobs on a shadow of the model) and its small caches.
- `Registry`: the fixed set of slots a server was started with; nothing else can be named.
- `Background`: slow jobs (head detectors, the showcase head), each started once.
- `Explorer`: what the routes reach through `routes.common.Ex`: the registry, the
  learner's traffic and the background jobs, and `answer(name, fn, text)`, which checks
  the text against `limits`, runs fn(model) in the model's lane and writes its JSON there.
  `stop()` (the server is shutting down) answers every waiting request with Stopping
  (503) and stops running forward passes at their next block.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import lessons
from ..config import GlassformerError
from ..inputs import EXAMPLE, encode_batch
from ..json_text import to_bytes
from ..lab import detector_cache, showcase
from . import answers, limits
from .lanes import Lane, Traffic, shadow

log = logging.getLogger(__name__)

# A sentence each model has something to show on: the lessons' own, a fact for a chat model.
EXAMPLES = {f"lesson:{name}": lesson.EXAMPLE for name, lesson in lessons.LESSONS.items()}
EXAMPLES["smollm2"] = "The capital of France is"
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
    learner_model: Any = None  # same weights, stops at its next block when the server stops
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

    def get_learner(self, traffic: Traffic):
        """The model as the learner's requests run it: a shadow that never waits, but stops
        at its next block once the server stops (the model itself carries no hook)."""
        with self.lock:
            if self.learner_model is None:
                self.learner_model = shadow(self.get(), traffic, give_way=False)
            return self.learner_model

    def showcase_for(self, text: str) -> dict | None:
        with self.lock:
            return self.showcase_any or self.showcases.get(text)

    def remember_showcase(self, text: str, found: dict, per_text: bool) -> None:
        with self.lock:
            if not per_text:  # a lesson's head, found on the lesson's own texts
                self.showcase_any = found
            else:
                self.showcases[text] = found
                while len(self.showcases) > 32:
                    self.showcases.pop(next(iter(self.showcases)))

    def next_card(self, model, text: str, how: dict, logits: torch.Tensor | None = None) -> dict:
        """The next-token card for `text` under the sampling settings `how`, from `logits`
        when the caller has just computed them, else from those kept for this text (the
        sliders move often, the sentence seldom), else from one forward pass."""
        with self.lock:
            logits = self.logits.get(text) if logits is None else logits
        if logits is None:
            with torch.inference_mode():
                logits = model(encode_batch(model, text), last_only=True)[0, -1].float().cpu()
        with self.lock:
            self.logits[text] = logits
            self.logits.move_to_end(text)
            while len(self.logits) > 16:
                self.logits.popitem(last=False)
        return answers.next_tokens(model, logits, **how)


class Registry:
    def __init__(self) -> None:
        self.slots: dict[str, ModelSlot] = {}

    def add(self, name: str, load: Callable[[], Any], note: str = "", example: str | None = None) -> None:
        self.slots[name] = ModelSlot(name, load, note, example or EXAMPLES.get(name, EXAMPLE))

    def __getitem__(self, name: str) -> ModelSlot:
        if name not in self.slots:
            raise KeyError(name)
        return self.slots[name]


def default_registry(names: list[str], precision: str = "fp32") -> Registry:
    """Exactly the models named on the command line, loaded on first use (in `dtype`)."""
    from ..pretrained import load

    reg = Registry()
    for name in names:
        reg.add(name, functools.partial(load, name, precision=precision))
    return reg


def showcase_fields(found: showcase.Showcase) -> dict:
    """showcase.showcase_head's answer as JSON; for a lesson's head, with the question its
    queries ask and its keys answer."""
    questions = list(found.questions) if found.questions else None
    return {"layer": found.layer, "head": found.head, "why": found.why, "questions": questions}


class LoadFailed(Exception):
    """A registered model could not be loaded (its files are missing or broken): 503."""


class UnknownModel(Exception):
    """A request named a model this server was not started with: 404, and nothing loads."""


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


class Explorer:
    """The registry, the learner's traffic and the background jobs of one app: what every
    route works through (`request.app.state.explorer`)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.background = Background()
        self.traffic = Traffic()  # the learner's forward passes: background work gives way to them
        for slot in registry.slots.values():  # a registry served again: its lanes and shadows start afresh
            slot.lane.stopped = slot.background.stopped = False
            slot.learner_model = slot.shadow_model = None  # their hooks answer to this app's traffic

    def slot_for(self, name: str) -> ModelSlot:
        try:
            return self.registry[name]
        except KeyError:
            names = ", ".join(self.registry.slots)
            raise UnknownModel(f"unknown model {name!r}; this server has: {names}") from None

    def loaded(self, slot: ModelSlot):
        try:
            slot.get()
        except GlassformerError as err:
            raise LoadFailed(f"model {slot.name!r} could not be loaded: {err}") from None
        return slot.get_learner(self.traffic)

    async def on_model(self, name: str, fn: Callable[[Any], Any], text: str | None = None) -> Any:
        """fn(model) in the model's lane, one at a time, once `text` (when given) is found
        within `limits` (TooLong: 413); GlassformerError becomes a 422."""
        slot = self.slot_for(name)

        def job():
            model = self.loaded(slot)
            if text is not None:
                limits.check_text(model, text)
            with self.traffic.learner():
                return fn(model)

        return await slot.lane.call(job)

    async def answer(self, name: str, fn: Callable[[Any], dict], text: str | None) -> bytes:
        """fn(model)'s answer as JSON bytes, written out in the model's lane too: a big grid
        of floats is never serialised on the event loop, where it would hold up every request.
        `text`: the request's text, judged against `limits` before fn runs (None: no text)."""
        return await self.on_model(name, lambda model: to_bytes(fn(model)), text)

    def stop(self) -> None:
        """The server is shutting down (on the event loop): refuse new work, answer what
        waits with Stopping, and stop running forward passes at their next block."""
        self.traffic.stop()
        for slot in self.registry.slots.values():
            slot.lane.stop()
            slot.background.stop()

    def wait_idle(self, timeout: float) -> bool:
        """True once no lane runs a job (within `timeout` s in all): no thread left in torch."""
        deadline = time.monotonic() + timeout
        lanes = [lane for slot in self.registry.slots.values() for lane in (slot.lane, slot.background)]
        return all(lane.wait_idle(max(0.0, deadline - time.monotonic())) for lane in lanes)

    def start_showcase(self, slot: ModelSlot, text: str) -> asyncio.Future:
        """Find the showcase head for `text` in the background (once), on the shadow."""

        def find():
            model = slot.get_shadow(self.traffic)
            found = slot.showcase_for(text)
            if found is None:
                limits.check_text(model, text)
                shown = showcase.showcase_head(model, encode_batch(model, text))
                found = showcase_fields(shown)
                slot.remember_showcase(text, found, shown.per_text)
            return found

        return self.background.start(slot, ("showcase", text), find)

    async def detection(self, slot: ModelSlot) -> dict:
        """Head-detector scores for the slot's model, found once in the background."""

        def detect() -> dict:
            if slot.detection is None:
                found = answers.detection(detector_cache.detect_all(slot.get_shadow(self.traffic)))
                with slot.lock:
                    slot.detection = found
            return slot.detection

        if slot.detection is not None:
            return slot.detection
        return await self.background.result(slot, ("detect",), detect)

    def warm(self) -> None:
        """When the server starts: the showcase head of each model already loaded."""
        for slot in self.registry.slots.values():
            if slot.model is not None:
                self.start_showcase(slot, slot.example)
