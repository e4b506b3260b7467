"""The memory budget, shared by all requests of a server.

``--max-memory`` bounds the whole process, as for ``srdeploy upscale``: the fixed part (the
interpreter with its libraries and the model's weights, ``budget.BASE_BYTES`` + the model file)
is taken off once; the rest is the ledger's capacity. Before decoding, a request reserves its
predicted peak over that fixed part (``budget.predict_peak``'s activations, decoded input,
float band and held output, plus its request and response bodies) and waits, in arrival order,
while the capacity is spent. After decoding the reservation shrinks to the exact figure. Tiles of
several requests batched into one call need no more than the sum of their reservations (each
request has at most its own ``--batch`` of windows in a batch), so the budget holds across
concurrent requests, not per request.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from .scheduler import POLL_S, Ticket


class MemoryLedger:
    """Bytes reserved against a fixed capacity; waiters are served first come, first served.

    Args:
        capacity: bytes available to requests.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"MemoryLedger: capacity must be >= 1 byte, got {capacity}")
        self.capacity = capacity
        self.reserved = 0
        self._queue: deque[object] = deque()
        self._cond = threading.Condition()

    @property
    def waiting(self) -> int:
        """Requests waiting for memory."""
        with self._cond:
            return len(self._queue)

    def acquire(self, nbytes: int, ticket: Ticket) -> int:
        """Reserve ``nbytes`` (at most the capacity: a request larger than the budget runs alone).

        Waits in arrival order; raises the ticket's ``Cancelled`` if it is cancelled or times out
        first. Returns the bytes reserved (pass them to ``release``).
        """
        nbytes = max(0, min(int(nbytes), self.capacity))
        me = object()
        t0 = time.perf_counter()
        with self._cond:
            self._queue.append(me)
            try:
                while self._queue[0] is not me or self.reserved + nbytes > self.capacity:
                    ticket.check()
                    self._cond.wait(POLL_S)
                self.reserved += nbytes
            finally:
                self._queue.remove(me)
                self._cond.notify_all()
        ticket.add("queue", time.perf_counter() - t0)
        return nbytes

    def shrink(self, held: int, nbytes: int) -> int:
        """Lower a reservation of ``held`` bytes to ``nbytes`` (never raises it); returns what is held."""
        nbytes = max(0, min(held, int(nbytes)))
        self.release(held - nbytes)
        return nbytes

    def release(self, nbytes: int) -> None:
        """Give back ``nbytes`` of a reservation."""
        if nbytes:
            with self._cond:
                self.reserved -= nbytes
                self._cond.notify_all()
