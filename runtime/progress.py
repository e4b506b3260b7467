"""Progress bars and the lines printed around them: one set-up for every runtime command.

Every bar goes to stderr (stdout stays for results), adapts to the terminal width and smooths
its rate over recent updates (a video's first frames include the session warm-up). A disabled
bar is still a bar object (tqdm's own no-op), so callers update it without checking.
"""

from __future__ import annotations

import sys
from typing import Iterable


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None, unit: str = "it",
                 desc: str | None = None, enabled: bool = True, initial: float = 0, leave: bool = True):
    """A tqdm bar on stderr, or a silent one when ``enabled`` is False.

    Args:
        iterable: wrap this (as ``tqdm(iterable)``); None for a bar updated by hand.
        total: units expected (None: unknown, a counter with a rate).
        unit: what one unit is ("frame", "img", "tile", "item").
        desc: the label before the bar.
        enabled: False gives a disabled bar (no output; update, close and write still work).
        initial: units already done (a resumed job).
        leave: keep the finished bar on screen (False for inner bars such as tiles of one image).
    """
    from tqdm import tqdm

    return tqdm(iterable, total=total, unit=unit, desc=desc, initial=initial, leave=leave, disable=not enabled,
                file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def say(message: str) -> None:
    """Print one line on stderr without breaking a progress bar that is on screen."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
