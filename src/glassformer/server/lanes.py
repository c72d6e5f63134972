"""Where the explorer's forward passes run: off the event loop, in a few daemon threads.

Each model gets one lane: a thread and a short queue, so a model runs one forward pass at
a time (torch already spreads one pass over every core; twenty at once only fight for
them) and a slow model never holds up another, nor /api/models, which needs no thread.
A queue that is full answers at once that the server is busy instead of growing.

The threads are daemons: a stopping server does not wait for a forward pass it will not
answer. Slow background work (head detectors, the showcase head) runs in a lane of its own
on a `shadow` of the model, so it never holds the model a user's request waits for, and
the shadow pauses at every block while a learner's forward pass runs (`Traffic`): two
forward passes at once on two cores would slow the learner's several times over.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any


class Busy(Exception):
    """The lane's queue is full."""


class Lane:
    def __init__(self, name: str, max_waiting: int = 64) -> None:
        self.name = name
        self.jobs: queue.Queue = queue.Queue(maxsize=max_waiting)
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def _ensure_thread(self) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=f"glassformer-{self.name}", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            fn, loop, future = self.jobs.get()
            if future.cancelled():
                continue
            try:
                result, error = fn(), None
            except BaseException as err:  # handed to the awaiting request, which decides
                result, error = None, err
            loop.call_soon_threadsafe(_settle, future, result, error)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """fn() in this lane's thread; raises Busy at once when too many are waiting."""
        self._ensure_thread()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self.jobs.put_nowait((fn, loop, future))
        except queue.Full:
            raise Busy(self.name) from None
        return await future


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the client went away while its job ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Traffic:
    """How many of the learner's forward passes are running, on any model; background work
    waits for none."""

    def __init__(self) -> None:
        self._idle = threading.Condition()
        self._running = 0

    @contextlib.contextmanager
    def learner(self) -> Iterator[None]:
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def wait_idle(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._running == 0)


def shadow(model, traffic: Traffic | None = None):
    """A second module tree over the very same weights (nothing is copied but the modules).

    Hooks hang on modules, so two captures on one model at the same time would mix their
    tensors; a shadow has hook points of its own and can run beside the original. With
    `traffic`, the shadow waits at the entrance of every block while a learner's forward
    pass runs."""
    memo: dict[int, Any] = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    memo[id(model.tokenizer)] = model.tokenizer
    twin = copy.deepcopy(model, memo)
    if traffic is not None:

        def give_way(x, name: str) -> None:
            traffic.wait_idle()

        for name, point in twin.hook_points.items():
            if name.startswith("blocks.") and name.endswith(".resid_pre"):
                point.fns.append(give_way)  # for the shadow's whole life, so not hooks.attach's `with`
    return twin
