"""One scheduler thread runs the tiles of every request, batched across requests.

Each request runs the runtime's own ``Upscaler`` on a worker thread, unchanged; only its session
is a ``TicketSession`` whose ``infer`` hands the tiles to the ``Scheduler`` and waits. The
scheduler stacks the waiting tiles that share a window shape, up to ``max_batch`` tiles, into one
``session.infer`` call, and gives each request its rows of the output. That is Triton's dynamic
batcher: once the first tiles arrive it waits at most ``wait_s`` for more, and a full batch goes
at once. Tiling, pixel mapping, stitching and encoding stay the ones ``srdeploy upscale`` uses,
so a response equals the file ``upscale`` writes wherever the backend computes a tile the same
in any batch (ONNX Runtime on the CPU does, bit for bit; tests check it).

A ``Ticket`` is one request's handle: its deadline and whether its client went away. A cancelled
ticket's waiting tiles are dropped and its ``Upscaler`` stops at the next tile, so a client that
disconnects costs at most the batch already running.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..session import Session

POLL_S = 0.05  # how often a waiting request looks at its ticket (cancel, deadline)


class Cancelled(Exception):
    """The request stopped before its tiles were done (see the subclasses)."""


class ClientGone(Cancelled):
    """The client disconnected."""


class DeadlineExceeded(Cancelled):
    """The per-request timeout passed."""


class Ticket:
    """One request's deadline, cancel flag and timings (seconds by phase, for Server-Timing).

    Args:
        timeout_s: seconds from now until the request is abandoned.
    """

    def __init__(self, timeout_s: float) -> None:
        self.start = time.monotonic()
        self.timeout_s = timeout_s
        self.deadline = self.start + timeout_s
        self.timings: dict[str, float] = {}
        self._error: Cancelled | None = None

    def cancel(self, error: Cancelled) -> None:
        """Stop the request: its next wait raises ``error``."""
        if self._error is None:
            self._error = error

    @property
    def cancelled(self) -> bool:
        return self._error is not None

    def check(self) -> None:
        """Raise if the request was cancelled or its deadline passed."""
        if self._error is None and time.monotonic() > self.deadline:
            self._error = DeadlineExceeded(f"request timed out after {self.timeout_s:g} s (--timeout)")
        if self._error is not None:
            raise self._error

    def add(self, phase: str, seconds: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds


@dataclass(eq=False)  # identity: a request's item is found and removed by itself
class _Item:
    x: np.ndarray
    ticket: Ticket
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    y: np.ndarray | None = None
    error: BaseException | None = None


class Scheduler:
    """Batches tiles of concurrent requests into ``session.infer`` calls on one thread.

    Args:
        session: the open session every request shares.
        max_batch: most tiles per call (capped by the session's batch range, e.g. an engine profile).
        wait_s: after the first waiting tiles, how long to wait for more before running a partial batch.
        on_batch: called after each call with (tiles, seconds in ``infer``), for the metrics.
        on_dropped: called with the number of tiles dropped because their request was cancelled.
    """

    def __init__(self, session: Session, *, max_batch: int, wait_s: float,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_dropped: Callable[[int], None] | None = None) -> None:
        if max_batch < 1 or wait_s < 0:
            raise ValueError(f"Scheduler: need max_batch >= 1 and wait_s >= 0, got {max_batch}, {wait_s}")
        bmax = session.input_spec.batch[1]
        self.session = session
        self.max_batch = min(max_batch, bmax) if bmax else max_batch
        self.wait_s = wait_s
        self._on_batch = on_batch or (lambda tiles, seconds: None)
        self._on_dropped = on_dropped or (lambda tiles: None)
        self._pending: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="srdeploy-scheduler", daemon=True)
        self._thread.start()

    @property
    def pending_tiles(self) -> int:
        with self._cond:
            return sum(len(it.x) for it in self._pending)

    def infer(self, x: np.ndarray, ticket: Ticket) -> np.ndarray:
        """Run ``x`` (N tiles, float32 NCHW) in the next fitting batch; blocks until its output is ready.

        Raises the ticket's ``Cancelled`` when the request is cancelled or times out while waiting,
        and whatever the session raised for the batch.
        """
        ticket.check()
        item = _Item(x, ticket)
        with self._cond:
            if self._closed:
                raise RuntimeError("srdeploy serve: the scheduler is shut down")
            self._pending.append(item)
            self._cond.notify_all()
        while not item.done.wait(POLL_S):
            try:
                ticket.check()
            except Cancelled:
                with self._cond:
                    if item in self._pending:
                        self._pending.remove(item)
                        self._on_dropped(len(item.x))
                raise  # a batch already running finishes; its rows for this item are dropped
        if item.error is not None:
            raise item.error
        return item.y

    def close(self) -> None:
        """Stop the thread once the tiles already waiting have run."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = self._gather()
            if batch:
                self._run(batch)

    def _gather(self) -> list[_Item]:
        """Take the next batch (lock held): the oldest item's window shape, up to ``max_batch`` tiles,
        waiting until it is full or the oldest item has waited ``wait_s``."""
        while self._pending:
            for it in [it for it in self._pending if it.ticket.cancelled]:
                self._pending.remove(it)
                self._on_dropped(len(it.x))
            if not self._pending:
                break
            first = self._pending[0]
            same = [it for it in self._pending if it.x.shape[1:] == first.x.shape[1:]]
            left = first.arrived + self.wait_s - time.monotonic()
            if sum(len(it.x) for it in same) >= self.max_batch or left <= 0 or self._closed:
                batch, n = [], 0
                for it in same:
                    if batch and n + len(it.x) > self.max_batch:
                        break
                    batch.append(it)
                    n += len(it.x)
                for it in batch:
                    self._pending.remove(it)
                return batch
            self._cond.wait(left)
        return []

    def _run(self, batch: list[_Item]) -> None:
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([it.x for it in batch])
            t0 = time.perf_counter()
            y = self.session.infer(x)
            self._on_batch(len(x), time.perf_counter() - t0)
            k = 0
            for it in batch:
                n = len(it.x)
                # a copy per request: one slow request must not keep the whole batch's output alive
                it.y = y if len(batch) == 1 else y[k:k + n].copy()
                k += n
        except BaseException as exc:  # noqa: BLE001 - the thread must outlive any batch; the requests get it
            for it in batch:
                it.error = exc
        finally:
            for it in batch:
                it.done.set()


class TicketSession(Session):
    """The shared session as one request sees it: ``infer`` goes through the scheduler.

    Everything ``Upscaler`` and the memory budget read (info, input_spec, backend, device,
    precision, details, path) is the real session's.

    Args:
        session: the real session.
        scheduler: the scheduler running ``session``.
        ticket: the request's ticket (time in ``infer`` is added to its "infer" timing).
    """

    def __init__(self, session: Session, scheduler: Scheduler, ticket: Ticket) -> None:
        super().__init__()
        self.info = session.info
        self.input_spec = session.input_spec
        self.backend, self.device, self.precision = session.backend, session.device, session.precision
        self.details = session.details
        self.path = getattr(session, "path", None)
        self._scheduler = scheduler
        self._ticket = ticket

    def _infer(self, x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self._scheduler.infer(x, self._ticket)
        finally:
            self._ticket.add("infer", time.perf_counter() - t0)
