"""The explorer's HTTP/1.1 connections: uvicorn's h11 protocol with limits of its own
(imported by `serving.make_server` once uvicorn is known to be there).

- a connection that has not sent a complete request head within `header_timeout` s
  of opening or of its last answer is closed;
- at most `max_connections` at once, and `per_client` from one address: a new
  connection over either bound first closes the longest-idle ones (open, but between
  requests, for GRACE s at least), so idle sockets cannot fill the server; when none is idle, the newcomer's
  request is answered 503 (JSON, Retry-After) and it is closed within a second;
- at most `max_connections` requests in flight; beyond, 503 in JSON with Retry-After;
- uvicorn's own 400 for a malformed request is JSON with the security headers too.
"""

from __future__ import annotations

import asyncio
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .guard import refusal_message

GRACE = 0.5  # seconds a connection may sit idle before a newcomer may close it


class GuardedH11(H11Protocol):
    header_timeout = 10.0  # set by guarded_h11
    max_connections = 100
    per_client = 50
    _deadline: asyncio.TimerHandle | None = None
    _overflow = False
    _since = 0.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.app = self._limited(self.app)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._since = time.monotonic()
        self._make_room()
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._since = time.monotonic()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _idle(self) -> bool:
        between_requests = self.cycle is None or self.cycle.response_complete
        return between_requests and self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def _make_room(self) -> None:
        here = self.client[0] if self.client else None
        others = [c for c in self.connections if c is not self and isinstance(c, GuardedH11)]
        mine = [c for c in others if (c.client[0] if c.client else None) == here]
        now = time.monotonic()
        for group, bound in ((mine, self.per_client), (others, self.max_connections)):
            live = [c for c in group if not c.transport.is_closing()]
            over = len(live) + 1 - bound
            # idle for a moment at least: a client that has just connected is still sending
            idle = [c for c in live if c._idle() and now - c._since > GRACE]
            for c in sorted(idle, key=lambda c: c._since)[: max(0, over)]:
                c.transport.close()  # the longest idle first
                over -= 1
            if over > 0:
                self._overflow = True  # nothing idle to close: this one is answered 503

    def _limited(self, app):
        async def limited(scope, receive, send) -> None:
            if self._overflow or len(self.tasks) > self.max_connections:  # the running task counts itself
                self.cycle.keep_alive = False
                why = "the server is answering as many requests as it takes; try again in a moment"
                for message in refusal_message(503, why, [(b"retry-after", b"1")]):
                    await send(message)
                return
            await app(scope, receive, send)

        return limited

    def send_400_response(self, msg: str) -> None:
        start, body = refusal_message(400, "the request is not valid HTTP/1.1")
        response = h11.Response(status_code=400, headers=start["headers"], reason=b"Bad Request")
        self.transport.write(self.conn.send(response))
        self.transport.write(self.conn.send(h11.Data(data=body["body"])))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            wait = min(self.header_timeout, 1.0) if self._overflow else self.header_timeout
            self._deadline = self.loop.call_later(wait, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        if self._idle():
            self.transport.close()


def guarded_h11(header_timeout: float, max_connections: int = 100, per_client: int = 50) -> type[GuardedH11]:
    """GuardedH11 with these limits: a head within `header_timeout` s, at most
    `max_connections` connections and requests, `per_client` connections from one address."""
    limits = {"header_timeout": header_timeout, "max_connections": max_connections, "per_client": per_client}
    return type("GuardedH11", (GuardedH11,), limits)
