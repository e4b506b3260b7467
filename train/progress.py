"""The training side's progress bar: one set-up for ``srdeploy train`` and ``evaluate``.

Train may not import the runtime, so this is train's own counterpart of ``runtime.progress``: the
bar goes to stderr (stdout keeps the metrics lines and tables), adapts to the terminal width, and a
disabled bar is still a bar object (tqdm's no-op), so callers update it without checking.
"""

from __future__ import annotations

import sys


def progress_bar(*, total: float, desc: str, unit: str = "it", initial: float = 0, leave: bool = True,
                 enabled: bool = True, mininterval: float = 0.1):
    """A tqdm bar on stderr, or a silent one when ``enabled`` is False.

    Args:
        total: units expected.  desc: the label before the bar.  unit: what one unit is ("it", "img").
        initial: units already done (a resumed run).  leave: keep the finished bar on screen.
        enabled: False gives a disabled bar (no output; update and close still work).
        mininterval: seconds between redraws (training steps are fast; 1 s keeps the log small).
    """
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave, disable=not enabled,
                file=sys.stderr, dynamic_ncols=True, mininterval=mininterval)
