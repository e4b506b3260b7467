"""The settings of a server: one frozen value, built once by the CLI and passed whole (to Ray replicas too)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..settings import RunSettings

DEFAULT_MAX_UPLOAD = 50 << 20


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``srdeploy serve`` was asked for.

    Attributes:
        run: the ``RunSettings`` every runtime command takes: the recipe (picklable: Ray replicas
            open the model themselves) and the ``TileSettings``, as for ``srdeploy upscale``.
        host, port: where to listen.
        token: bearer token required on the API (None = none).
        insecure: allow a non-loopback ``host`` without a token.
        max_batch: most tiles per inference call, across requests.
        batch_wait_ms: how long the scheduler waits for more tiles after the first one arrives.
        max_queue: most requests admitted at once (waiting or running); more get 503.
        max_upload: most request-body bytes; more get 413 before the rest is read.
        max_pixels: declared-size limit (None = ``media.images.pixel_limit()``, as upscale).
        timeout_s: per-request limit, from admission to the last tile.
        replicas: Ray Serve replicas: a number or "auto" (autoscaling on queue length).
        address: Ray cluster address (None = start a local Ray).
        gpus_per_replica: GPUs Ray gives each replica.
    """

    run: RunSettings
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    insecure: bool = False
    max_batch: int = 8
    batch_wait_ms: float = 2.0
    max_queue: int = 32
    max_upload: int = DEFAULT_MAX_UPLOAD
    max_pixels: int | None = None
    timeout_s: float = 300.0
    replicas: int | str = 1
    address: str | None = None
    gpus_per_replica: float = 0.0

    def validate(self) -> None:
        """One message for out-of-range values and for exposing the API without a token."""
        if self.max_batch < 1 or self.batch_wait_ms < 0 or self.max_queue < 1 or self.max_upload < 1 \
                or self.timeout_s <= 0 or (self.max_pixels is not None and self.max_pixels < 1):
            raise ValueError("serve: need --max-batch >= 1, --batch-wait-ms >= 0, --max-queue >= 1, --max-upload >= 1, "
                             "--max-pixels >= 1 and --timeout > 0")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port}: not a TCP port (0-65535)")
        if self.replicas != "auto" and (not isinstance(self.replicas, int) or self.replicas < 1):
            raise ValueError(f"--replicas {self.replicas}: need a number >= 1 or auto")
        if self.gpus_per_replica < 0:
            raise ValueError(f"--gpus-per-replica {self.gpus_per_replica}: must be >= 0")
        if self.token is not None and not self.token.strip():
            raise ValueError("--token: empty; give a secret, or leave the flag out on 127.0.0.1")
        if not is_loopback(self.host) and self.token is None and not self.insecure:
            raise ValueError(f"--host {self.host}: other machines could reach the API; give --token SECRET (clients "
                             "send 'Authorization: Bearer SECRET') or pass --insecure to serve without one")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
