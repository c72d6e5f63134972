"""Start the explorer for tests: in a background thread (`running`), or in a process of its
own (`server_process`), on a free loopback port, with the same limits `glassformer serve` uses."""

import contextlib
import queue
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from glassformer.server.app import Registry, create_app, listen, make_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registry_of(models: dict) -> Registry:
    """models: name -> loaded model."""
    registry = Registry()
    for name, model in models.items():
        registry.add(name, lambda m=model: m)
    return registry


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1", **limits):
    """Serve an app built by create_app; yields the base URL."""
    sock = listen(host, 0)
    port = sock.getsockname()[1]
    server = make_server(app, **limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def running(models: dict, host: str = "127.0.0.1", **limits):
    """models: name -> loaded model. Yields the base URL."""
    with serving(create_app(registry_of(models)), host, **limits) as url:
        yield url


# A server in a process of its own: argv = port, then models as NAME=LOAD_NAME (or LOAD_NAME).
# It prints "ready URL" once it listens (from run()'s ready callback), and stops on SIGTERM.
SERVER_SCRIPT = """
import sys
import glassformer as gf
from glassformer.server.app import Registry, create_app, run

registry = Registry()
for spec in sys.argv[2:]:
    name, _, load_name = spec.rpartition("=")
    model = gf.load(load_name)
    registry.add(name or load_name, lambda m=model: m)
run(create_app(registry), "127.0.0.1", int(sys.argv[1]), ready=lambda url: print("ready", url, flush=True))
"""


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    url: str
    lines: queue.Queue  # what it prints after "ready URL", line by line


@contextlib.contextmanager
def server_process(script: str = SERVER_SCRIPT, *args: str):
    """`script` (argv = a free port, then `args`) in a Python process of its own, once it has
    printed "ready URL"; killed at the end if it is still running."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(free_port()), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        try:
            line = lines.get(timeout=120)
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"the server did not start: {proc.stderr.read()}") from None
        assert line.startswith("ready http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        yield ServerProcess(proc, line.split()[1].rstrip("/"), lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
