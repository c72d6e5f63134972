"""The explorer's front door: which requests get in, and what every answer carries.

`Guard` wraps the whole app (page, static files, API, docs), so nothing can slip past it:

- the Host header must name this machine (localhost, 127.0.0.1, [::1]) or the host the
  server was started on; anything else is a page on some other site whose name was
  pointed at 127.0.0.1 (DNS rebinding) and gets 421;
- a body may be at most `max_body` bytes (413) and must arrive within `body_timeout`
  seconds (408), so a client that dribbles bytes cannot hold a request open;
- every answer carries a Content-Security-Policy (scripts only from this server, no
  inline script, no framing), nosniff, X-Frame-Options and no-referrer.

`connections.guarded_h11(header_timeout, max_connections, per_client)` is uvicorn's
HTTP/1.1 protocol with a deadline for the request line and headers (uvicorn's keep-alive timer restarts on
every byte received), bounds on connections that close idle ones first, and refusals of
its own (400, 503) in JSON with the headers above.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable

from ..json_text import to_bytes

log = logging.getLogger(__name__)

LOOPBACK = ("localhost", "127.0.0.1", "[::1]")

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


# a Host header as a browser writes it: a name or an IPv4 address, or an IPv6 address in
# brackets, then at most a port
HOST = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::[0-9]{1,5})?")
MAX_HEADER_BYTES = 16 * 1024  # the request's headers together; uvicorn's own limit holds only across packets


def host_name(value: str) -> str:
    """The name part of a Host header, lower-case: 'LocalHost:8000' -> 'localhost',
    '[::1]:8000' -> '[::1]'; '' for anything that is not a well-formed Host
    ('localhost:evil', '127.0.0.1:80@evil.com')."""
    found = HOST.fullmatch(value.strip().lower())
    return found.group("name") if found else ""


def hosts_allowed(extra: Iterable[str] = ()) -> frozenset[str]:
    """The loopback names and `extra` (the host the server listens on), as Host headers name them."""
    names = set(LOOPBACK)
    for host in extra:
        host = host.strip().lower().rstrip(".")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address, as a URL (and so a Host header) writes it
        if host and host not in ("0.0.0.0", "[::]"):  # "every interface" is not a name a browser sends
            names.add(host)
    return frozenset(names)


def json_body(status: int, detail: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = to_bytes({"detail": detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # whatever the client still sends is not read
    ]
    return headers, body


class Guard:
    """ASGI middleware: host check, body limits, security headers on every answer."""

    def __init__(
        self, app, *, hosts: Iterable[str] = LOOPBACK, max_body: int = 64 * 1024, body_timeout: float = 10.0
    ) -> None:
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts)
        self.max_body = max_body
        self.body_timeout = body_timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_secured(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        raw_headers = scope.get("headers") or []
        if sum(len(k) + len(v) + 4 for k, v in raw_headers) > MAX_HEADER_BYTES:
            await self.refuse(send_secured, 431, f"the request's headers are over {MAX_HEADER_BYTES} bytes")
            return
        headers = dict(raw_headers)
        host = headers.get(b"host", b"").decode("latin-1")
        if host_name(host).rstrip(".") not in self.hosts:
            await self.refuse(send_secured, 421, "this server answers only to the names of this machine")
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self.refuse(send_secured, 413, f"the request body is over {self.max_body} bytes")
            return
        try:
            body = await asyncio.wait_for(self.read_body(receive), self.body_timeout)
        except asyncio.TimeoutError:
            await self.refuse(send_secured, 408, f"the request body did not arrive within {self.body_timeout:g} s")
            return
        if body is None:
            await self.refuse(send_secured, 413, f"the request body is over {self.max_body} bytes")
            return
        if body is False:  # the client went away
            return

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body, only http.disconnect can come

        try:
            await self.app(scope, replay, send_secured)
        except asyncio.CancelledError:
            # the server stopped before this request's work ended (after its grace period):
            # answered in JSON with our headers, not with uvicorn's 500 and a traceback
            if not started:
                await self.refuse(send_secured, 503, "the server is stopping; this request was not answered")
        except Exception:
            # a bug, not a bad request: logged, and answered in JSON with the headers above
            log.exception("error answering %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await self.refuse(send_secured, 500, "internal error; the server's log has the details")

    async def read_body(self, receive) -> bytes | bool | None:
        """The whole body, None when it is too large, False when the client disconnected."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def refuse(send, status: int, detail: str) -> None:
        headers, body = json_body(status, detail)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def refusal_message(status: int, detail: str, extra=()) -> tuple[dict, dict]:
    """A refusal as the two ASGI messages, with every security header: for answers written
    outside the app (the connection limits below), which Guard never sees."""
    headers, body = json_body(status, detail)
    start = {"type": "http.response.start", "status": status, "headers": [*headers, *extra, *SECURITY_HEADERS]}
    return start, {"type": "http.response.body", "body": body}
