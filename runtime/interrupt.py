"""SIGTERM handled like Ctrl-C: the one signal handler of every command.

``kill``, systemd, Docker and Kubernetes stop a process with SIGTERM. Python's default is to die
at once, which leaves temporary files and half-written outputs behind and skips ``finally``
blocks (a Ray shutdown, an ffmpeg process to stop). Inside ``sigterm_as_interrupt`` SIGTERM raises
``Terminated``, a ``KeyboardInterrupt``: every ``finally`` and ``atomic_target`` cleans up as for
Ctrl-C, and the caller tells the two apart by type (exit status 143 instead of 130).

A library may replace the handler: ``ray.init`` installs Ray's own (exit status 15) and Ray's
C++ core adds a stack dump on SIGTERM. Whoever calls such a library enters
``sigterm_as_interrupt`` again right after it (the batch driver does, after ``ray.init``): the
handler installed last is the one that runs, at the C level too.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C."""


def _on_sigterm(signum, frame) -> None:
    # Once only: a second SIGTERM while cleaning up must not interrupt the clean-up itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread; the previous handler
    comes back after it. Outside the main thread (where Python cannot install handlers) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
