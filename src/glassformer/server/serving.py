"""Serving the explorer: the listening socket, uvicorn with the explorer's limits, and
`run`, which serves until SIGINT or SIGTERM."""

import asyncio
import socket
from collections.abc import Callable

from ..config import GlassformerError
from .guard import MAX_HEADER_BYTES


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

        from .connections import guarded_h11
    except ImportError:
        raise GlassformerError("the explorer needs uvicorn: pip install 'glassformer[serve]'") from None
    config = uvicorn.Config(
        app,
        http=guarded_h11(header_timeout, max_connections, max(8, max_connections // 2)),
        ws="none",
        lifespan="on",
        timeout_keep_alive=int(keep_alive),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,  # request line and headers; 400 beyond
        limit_concurrency=None,  # guarded_h11 bounds connections and requests, and answers in JSON
        timeout_graceful_shutdown=1,
        log_level=log_level,
        access_log=False,
        server_header=False,
    )
    explorer = getattr(getattr(app, "state", None), "explorer", None)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            if explorer is not None:  # before uvicorn waits for requests in flight: they end now
                explorer.stop()
            await super().shutdown(sockets)
            if explorer is not None:  # a pass stops at its next block: no thread is left in torch
                await asyncio.to_thread(explorer.wait_idle, 5.0)

    return Server(config)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
EVERY_INTERFACE = ("0.0.0.0", "::", "[::]", "")


def local_url(host: str, port: int) -> str:
    """The URL a browser on this machine opens: for "every interface" (0.0.0.0, ::), the
    loopback address, which the Host check answers (0.0.0.0 is not a name it accepts)."""
    if host in EVERY_INTERFACE:
        host = "[::1]" if ":" in host else "127.0.0.1"
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"


def network_warning(host: str) -> str | None:
    """What to tell whoever serves on `host` when other machines can reach it (None on loopback)."""
    if host.strip().lower() in LOOPBACK_HOSTS:
        return None
    if host in EVERY_INTERFACE:
        return (
            f"listening on {host or 'every interface'}: other machines on the network can connect to this "
            "port (the explorer has no login); it answers only requests naming localhost or 127.0.0.1, so "
            "to serve another machine give --host this machine's address"
        )
    return (
        f"listening on {host}: anyone who can reach {host} can use the explorer (it has no login); "
        "use --host 127.0.0.1 to keep it on this machine"
    )


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
    2. Only then calls ready(url) (url like "http://127.0.0.1:8000/"; `local_url`, so
       for 0.0.0.0 a loopback URL that works): the place to print that the server is up
       (and `network_warning(host)` when other machines can reach it), or to open a browser.
    3. Serves with uvicorn: idle keep-alive connections close after `keep_alive` s, a
       request head must arrive within `header_timeout` s and a body within 10 s, headers
       are limited to 16 KiB, and at most `max_connections` are served at once.
    4. On SIGTERM or SIGINT, stops within about 1 s: new work is refused, requests
       waiting for a model are answered 503 (JSON) at once, and forward passes stop at
       their next block. uvicorn then re-raises the signal with its previous handler
       (SIGINT ends as KeyboardInterrupt, SIGTERM as it would have), and on the way out
       `run` waits until no thread is left inside torch (5 s at most).
    """
    if not 1 <= port <= 65535:
        raise GlassformerError(f"the port must be between 1 and 65535, got {port}")
    sock = listen(host, port)
    explorer = getattr(getattr(app, "state", None), "explorer", None)
    try:
        server = make_server(app, keep_alive=keep_alive, header_timeout=header_timeout, max_connections=max_connections)
        if ready is not None:
            ready(local_url(host, port))
        server.run(sockets=[sock])
    finally:
        sock.close()
        if explorer is not None:  # uvicorn re-raises the signal on the way out: wait here
            explorer.wait_idle(5.0)
