"""Start the explorer in a background thread on a free loopback port, for tests."""

import contextlib
import socket
import threading
import time

import uvicorn

from glassformer.server.app import Registry, create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(models: dict, host: str = "127.0.0.1"):
    """models: name -> loaded model. Yields the base URL."""
    registry = Registry()
    for name, model in models.items():
        registry.add(name, lambda m=model: m)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(registry), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
