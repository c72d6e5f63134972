"""Serving the explorer: the listening socket, uvicorn with the explorer's limits, and
`run`, which serves until SIGINT or SIGTERM."""

import socket
from collections.abc import Callable

from ..config import GlassformerError
from .guard import MAX_HEADER_BYTES, guarded_h11


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
