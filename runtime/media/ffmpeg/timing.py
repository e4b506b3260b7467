"""How output frames are timed: the exact rate of a constant-frame-rate source, or the mean rate of a variable one.

A container's time base may not hold the rate exactly (Matroska stores milliseconds), so the
rate is read off every frame's timestamp (``probe.frame_times``) and snapped to a common
broadcast rate (24000/1001...) before the source is called constant-rate (``analyse_timing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .probe import FrameTimes

_COMMON_RATES = [Fraction(n, 1001) for n in (24000, 30000, 48000, 60000, 120000)] + \
                [Fraction(n) for n in (10, 12, 15, 24, 25, 30, 48, 50, 60, 90, 100, 120, 144, 240)]


@dataclass(frozen=True)
class Timing:
    """How output frames are timed.

    Attributes:
        rate: constant frame rate of the output (CFR sources: the source's exact rate; VFR: the mean).
        cfr: the source is constant-frame-rate (every frame within one tick of the grid at ``rate``).
        offset: seconds from the container start to the first video frame (kept in the output).
        duration: source video duration in seconds (first frame to end of last).
    """

    rate: Fraction
    cfr: bool
    offset: float
    duration: float


def analyse_timing(times: FrameTimes, start: float) -> Timing:
    """Decide CFR (exact rational rate, e.g. 24000/1001) or VFR from the frames' timestamps.

    A container's time base may not hold the rate exactly (Matroska stores milliseconds, so
    23.976 fps is 41/42/42 ms): the rate is the mean rate snapped to a common broadcast rate, or
    failing that the simplest fraction, and the source counts as CFR when every frame lies within
    one tick (plus rounding) of that grid.

    VFR sources are written at their mean rate ``N / duration``: same frame count, same duration
    (the last frame ends where the source's does), first frame at the source's start. A frame
    may then be displayed up to ``max_offset`` from its source time; ``vfr_drift`` reports it.
    """
    n = times.count
    duration = float(times.duration_ticks * times.tb)
    offset = float(times.pts[0] * times.tb) - start
    if n == 1:
        rate = Fraction(1) / times.tb / times.last_duration if times.last_duration else Fraction(25)
        return Timing(rate=_nice(rate), cfr=True, offset=offset, duration=duration)
    span = (times.pts[-1] - times.pts[0]) * times.tb
    mean = Fraction(n - 1) / span
    rate = _nice(mean)
    tol = Fraction(1001, 1000)  # one tick of the container's time base (plus rounding)
    t0 = times.pts[0]
    cfr = all(abs(Fraction(p - t0) - Fraction(i) / rate / times.tb) <= tol for i, p in enumerate(times.pts))
    if cfr:
        return Timing(rate=rate, cfr=True, offset=offset, duration=duration)
    mean_all = Fraction(n) / (times.duration_ticks * times.tb)
    return Timing(rate=mean_all.limit_denominator(1_000_000), cfr=False, offset=offset, duration=duration)


def _nice(rate: Fraction) -> Fraction:
    for r in _COMMON_RATES:
        if abs(rate - r) / r < Fraction(1, 2000):
            return r
    return rate.limit_denominator(1001)


def vfr_drift(times: FrameTimes, rate: Fraction) -> float:
    """Largest |output time - source time| in seconds when frames are written at ``rate``."""
    t0 = times.pts[0]
    return float(max(abs((p - t0) * times.tb - Fraction(i) / rate) for i, p in enumerate(times.pts)))
