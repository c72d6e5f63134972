"""Where the explorer's forward passes run: off the event loop, in a few daemon threads.

Each model gets one lane: a thread and a short queue, so a model runs one forward pass at
a time (torch already spreads one pass over every core; twenty at once only fight for
them) and a slow model never holds up another, nor /api/models, which needs no thread.
A queue that is full answers at once that the server is busy instead of growing.

The threads are daemons. A stopping server (`Lane.stop`, `Traffic.stop`) answers every
waiting request at once (`Stopping`: 503), and a forward pass that is running stops at the
entrance of its next block; `Lane.wait_idle` then lets the process exit with no thread
inside torch (a daemon thread torn down there aborts the process).

Slow background work (head detectors, the showcase head) runs in a lane of its own on a
`shadow` of the model, so it never holds the model a user's request waits for, and the
shadow pauses at every block while a learner's forward pass runs (`Traffic`): two forward
passes at once on two cores would slow the learner's several times over.
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


class Stopping(Exception):
    """The server is shutting down: no new work, and running work stops at its next block."""


class Lane:
    def __init__(self, name: str, max_waiting: int = 64) -> None:
        self.name = name
        self.jobs: queue.Queue = queue.Queue(maxsize=max_waiting)
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._waiting: set[asyncio.Future] = set()  # touched on the event loop only
        self.stopped = False

    def _ensure_thread(self) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=f"glassformer-{self.name}", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            fn, loop, future = self.jobs.get()
            if future.done() or self.stopped:  # its client went away, or the server is stopping
                continue
            self._idle.clear()
            try:
                result, error = fn(), None
            except BaseException as err:  # handed to the awaiting request, which decides
                result, error = None, err
            finally:
                self._idle.set()
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the event loop has closed: the server stopped, nobody waits
                pass

    async def call(self, fn: Callable[[], Any]) -> Any:
        """fn() in this lane's thread; raises Busy at once when too many are waiting, and
        Stopping once the server stops."""
        if self.stopped:
            raise Stopping(self.name)
        self._ensure_thread()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self.jobs.put_nowait((fn, loop, future))
        except queue.Full:
            raise Busy(self.name) from None
        self._waiting.add(future)
        try:
            return await future
        finally:
            self._waiting.discard(future)

    def stop(self) -> None:
        """On the event loop: every request waiting on this lane gets Stopping now; what is
        queued never runs."""
        self.stopped = True
        for future in list(self._waiting):
            if not future.done():
                future.set_exception(Stopping(self.name))

    def wait_idle(self, timeout: float) -> bool:
        """True once no job is running (at most `timeout` seconds)."""
        return self._idle.wait(timeout)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away while its job ran, or the server stopped
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Traffic:
    """How many of the learner's forward passes are running, on any model; background work
    waits for none. Once stopped, every forward pass on a shadow raises Stopping at its
    next block."""

    def __init__(self) -> None:
        self._idle = threading.Condition()
        self._running = 0
        self.stopped = False

    def stop(self) -> None:
        with self._idle:
            self.stopped = True
            self._idle.notify_all()

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
            self._idle.wait_for(lambda: self._running == 0 or self.stopped)

    def check(self) -> None:
        if self.stopped:
            raise Stopping("the server is stopping")


def shadow(model, traffic: Traffic | None = None, *, give_way: bool = True):
    """A second module tree over the very same weights (nothing is copied but the modules).

    Hooks hang on modules, so two captures on one model at the same time would mix their
    tensors; a shadow has hook points of its own and can run beside the original. With
    `traffic`, the shadow stops at the entrance of every block once the server stops, and
    (give_way) waits there while a learner's forward pass runs."""
    memo: dict[int, Any] = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    memo[id(model.tokenizer)] = model.tokenizer
    twin = copy.deepcopy(model, memo)
    if traffic is not None:

        def at_block(x, name: str) -> None:
            traffic.check()
            if give_way:
                traffic.wait_idle()
                traffic.check()

        for name, point in twin.hook_points.items():
            if name.startswith("blocks.") and name.endswith(".resid_pre"):
                point.fns.append(at_block)  # for the shadow's whole life, so not hooks.attach's `with`
    return twin
