"""Helpers for the ``srdeploy serve`` tests: an in-process server, a session that waits at a gate,
raw HTTP over a socket, and ``srdeploy upscale`` as the reference."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np

from srdeploy.runtime.session import Session


class GateSession(Session):
    """A real session whose ``infer`` counts calls and waits until ``gate`` is set (for tests that
    need requests to be in flight at a known point)."""

    def __init__(self, real: Session) -> None:
        super().__init__()
        self.real = real
        self.info, self.input_spec = real.info, real.input_spec
        self.backend, self.device, self.precision = real.backend, real.device, real.precision
        self.details, self.path = real.details, getattr(real, "path", None)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls = 0
        self.tiles = 0
        self.shapes: list[tuple[int, ...]] = []

    def _infer(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.tiles += len(x)
        self.shapes.append(x.shape)
        self.entered.set()
        if not self.gate.wait(60):
            raise RuntimeError("GateSession: the test never opened the gate")
        return self.real.infer(x)

    def close(self) -> None:
        self.gate.set()
        self.real.close()
        super().close()


class LiveServer:
    """``build_app(service)`` under uvicorn on a free loopback port, in a thread.

    Args:
        service: the UpscaleService (closed with the server).
    """

    def __init__(self, service) -> None:
        import uvicorn

        from srdeploy.runtime.serve.app import bind, build_app

        self.service = service
        sock = bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(build_app(service), log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.service.close()

    def __enter__(self) -> "LiveServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start(model: Path, *, gate: bool = False, **config) -> LiveServer:
    """A LiveServer for ``model`` (1 thread); ``config``: ServeConfig fields, ``tiling``: TileSettings fields."""
    from srdeploy.runtime.open import SessionRecipe, open_session
    from srdeploy.runtime.serve.config import ServeConfig
    from srdeploy.runtime.serve.service import UpscaleService
    from srdeploy.runtime.settings import RunSettings, TileSettings

    run = RunSettings(SessionRecipe(str(model), threads=1), TileSettings(**config.pop("tiling", {})))
    session = open_session(run.recipe)
    if gate:
        session = GateSession(session)
    return LiveServer(UpscaleService(session, ServeConfig(run=run, **config)))


def metric(text: str, name: str) -> float:
    """The value of sample ``name`` (with labels, exactly as printed) in a /metrics text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


def raw_request(port: int, head: str, body: bytes = b"", *, read: bool = True) -> tuple[socket.socket, bytes]:
    """Send ``head`` (request line and headers, no blank line) and ``body`` on a fresh socket;
    with ``read``, return what the server answers until it closes or 5 s pass."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body)
    data = b""
    if read:
        try:
            while b"\r\n\r\n" not in data or not _complete(data):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    return sock, data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def wait_until(check, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def upscale_cli(model: Path, src: Path, out: Path, *flags: str) -> bytes:
    """The bytes ``srdeploy upscale`` writes for ``src`` with ``flags`` (the reference)."""
    from srdeploy.cli import main

    assert main(["upscale", "-q", "-i", str(src), "-o", str(out), "--model", str(model), "--threads", "1",
                 *flags]) == 0
    return out.read_bytes()
