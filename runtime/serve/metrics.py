"""Counters for ``GET /metrics``, in Prometheus' text exposition format (version 0.0.4).

Written out by hand (a few counters and two histograms), so the service needs no metrics library.
The model-busy fraction is the share of the last ``BUSY_WINDOW_S`` seconds the scheduler spent in
``session.infer``; ``srdeploy_model_busy_seconds_total`` gives the same over any window with
``rate()``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Iterable

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
BUSY_WINDOW_S = 60.0


class _Histogram:
    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
        self.total += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out = [f'{name}_bucket{{le="{b:g}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        return out + [f'{name}_bucket{{le="+Inf"}} {self.total}', f"{name}_sum {self.sum:.6f}",
                      f"{name}_count {self.total}"]


class Metrics:
    """What the service counts; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.requests: dict[int, int] = {}
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.batch_tiles = _Histogram(BATCH_BUCKETS)
        self.busy_s = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.tiles = 0
        self.tiles_dropped = 0
        self._recent: deque[tuple[float, float]] = deque()  # (end, seconds) of recent batches

    def request(self, status: int, seconds: float, *, bytes_in: int = 0, bytes_out: int = 0) -> None:
        """One finished request (status 499: the client went away first)."""
        with self._lock:
            self.requests[status] = self.requests.get(status, 0) + 1
            self.latency.observe(seconds)
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out

    def batch(self, tiles: int, seconds: float) -> None:
        """One ``session.infer`` call of ``tiles`` tiles that took ``seconds``."""
        now = time.monotonic()
        with self._lock:
            self.batch_tiles.observe(tiles)
            self.tiles += tiles
            self.busy_s += seconds
            self._recent.append((now, seconds))
            while self._recent and self._recent[0][0] < now - BUSY_WINDOW_S:
                self._recent.popleft()

    def dropped(self, tiles: int) -> None:
        """Tiles never run because their request was cancelled."""
        with self._lock:
            self.tiles_dropped += tiles

    def busy_fraction(self) -> float:
        """Share of the last ``BUSY_WINDOW_S`` seconds (or of the uptime, if shorter) spent in inference."""
        now = time.monotonic()
        window = min(BUSY_WINDOW_S, max(now - self.started, 1e-9))
        with self._lock:
            busy = sum(min(s, end - (now - window)) for end, s in self._recent if end > now - window)
        return min(1.0, busy / window)

    def render(self, *, queue_depth: int, queue_limit: int, memory_waiting: int, pending_tiles: int,
               reserved: int, capacity: int) -> str:
        """The exposition text; the gauges are passed in by the service at scrape time."""
        busy = self.busy_fraction()
        with self._lock:
            lines = ["# HELP srdeploy_requests_total Upscale requests by HTTP status (499: client disconnected).",
                     "# TYPE srdeploy_requests_total counter"]
            lines += [f'srdeploy_requests_total{{status="{s}"}} {n}' for s, n in sorted(self.requests.items())]
            lines += ["# HELP srdeploy_request_duration_seconds Upscale request latency, admission to response.",
                      "# TYPE srdeploy_request_duration_seconds histogram"]
            lines += self.latency.lines("srdeploy_request_duration_seconds")
            lines += ["# HELP srdeploy_batch_tiles Tiles per inference call (batched across requests).",
                      "# TYPE srdeploy_batch_tiles histogram"]
            lines += self.batch_tiles.lines("srdeploy_batch_tiles")
            gauges = (
                ("queue_depth", "Requests admitted and not finished (waiting or running).", queue_depth),
                ("queue_limit", "--max-queue: more requests get 503.", queue_limit),
                ("memory_waiting_requests", "Requests waiting for their memory reservation.", memory_waiting),
                ("pending_tiles", "Tiles waiting for the scheduler.", pending_tiles),
                ("memory_reserved_bytes", "Bytes reserved by requests in flight.", reserved),
                ("memory_capacity_bytes", "--max-memory less the interpreter and the weights.", capacity),
                ("model_busy_fraction", f"Share of the last {BUSY_WINDOW_S:g} s spent in inference.", round(busy, 6)),
            )
            counters = (
                ("model_busy_seconds_total", "Seconds spent in inference.", round(self.busy_s, 6)),
                ("tiles_total", "Tiles run.", self.tiles),
                ("tiles_dropped_total", "Tiles dropped because their request was cancelled.", self.tiles_dropped),
                ("received_bytes_total", "Request body bytes of upscale requests.", self.bytes_in),
                ("sent_bytes_total", "Response body bytes of upscale requests.", self.bytes_out),
            )
        for kind, rows in (("gauge", gauges), ("counter", counters)):
            for name, help_, value in rows:
                lines += [f"# HELP srdeploy_{name} {help_}", f"# TYPE srdeploy_{name} {kind}",
                          f"srdeploy_{name} {value}"]
        return "\n".join(lines) + "\n"
