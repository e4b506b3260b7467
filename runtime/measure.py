"""What a benchmark measures with: the deterministic input and its checksum, and the timers.

The input is shared with the C++ tool (cpp_bench): ``x.flat[i] = ((i * 37 + 11) % 256) / 255`` over
(N, 3, H, W) in C order, and ``output_checksum`` is the float64 sum of all output values of one
inference on it, so the two tools can be checked against each other. Timing uses
``time.perf_counter``; ``time_alternating`` runs contenders in alternating blocks so background
load hits them alike. numpy only (``srdeploy bench``, ``srdeploy quantize``, scripts).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .progress import progress_bar


# --------------------------------------------------------------------------- input / checksum
def deterministic_input(shape: tuple[int, ...]) -> np.ndarray:
    """The benchmark input shared with the C++ tool: ``x.flat[i] = ((i*37 + 11) % 256) / 255``.

    Args:
        shape: array shape, normally (N, 3, H, W); ``i`` runs over the C-order flat index (int64).

    Returns:
        float32 array of ``shape`` with values in [0, 1] (each value is the float32 nearest to
        k/255; computing k/255 in float32 or in float64 and rounding gives the same numbers).
    """
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.int64)
    return (((i * 37 + 11) % 256) / 255.0).astype(np.float32).reshape(shape)


def output_checksum(y: np.ndarray) -> float:
    """float64 sum of all values of ``y`` (the ``output_checksum`` field)."""
    return float(np.sum(y, dtype=np.float64))


def deterministic_images(batch: int, height: int, width: int) -> list[np.ndarray]:
    """uint8 RGB HWC images whose /255 is ``deterministic_input((batch, 3, height, width))``."""
    k = np.rint(deterministic_input((batch, 3, height, width)) * 255.0).astype(np.uint8)
    return [np.ascontiguousarray(img.transpose(1, 2, 0)) for img in k]


# --------------------------------------------------------------------------- timing
def time_calls(fn: Callable[[], object], *, warmup: int, iters: int, desc: str | None = None) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``iters`` times; returns seconds per call.

    ``desc``: show a progress bar (stderr) with this label; it is updated outside the timed region.
    """
    bar = progress_bar(total=warmup + iters, desc=desc, unit="call", leave=False, enabled=desc is not None)
    try:
        for _ in range(warmup):
            fn()
            bar.update(1)
        out = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
            bar.update(1)
    finally:
        bar.close()
    return out


def time_alternating(fns: dict[str, Callable[[], object]], *, warmup: int, iters: int,
                     block: int | None = None) -> dict[str, list[float]]:
    """Time several callables in alternating blocks (A A A B B B A A A ...), same run.

    Background load on a shared machine changes over seconds; alternating blocks makes it hit
    every contender alike, so the ratio stays meaningful even when the absolute numbers move.
    Each block starts with one untimed call, so one runtime's idle-spinning threads or cold caches
    left by the other do not land in the timed calls.

    Args:
        fns: name -> zero-argument callable.
        warmup: untimed calls of each callable before the first block.
        iters: timed calls of each callable in total.
        block: timed calls per block (default: iters // 4, at least 1).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    block = max(1, block or iters // 4)
    times: dict[str, list[float]] = {name: [] for name in fns}
    while any(len(v) < iters for v in times.values()):
        for name, fn in fns.items():
            todo = min(block, iters - len(times[name]))
            if todo <= 0:
                continue
            fn()
            times[name].extend(time_calls(fn, warmup=0, iters=todo))
    return times


def summarize(latencies_s: list[float], *, frames: int, out_pixels_per_frame: int) -> dict:
    """A ``timing`` object of the schema from per-batch latencies in seconds.

    Args:
        latencies_s: one entry per timed batch.
        frames: images per batch (fps = frames / median latency).
        out_pixels_per_frame: output (super-resolved) pixels of one image, for megapixels/s.
    """
    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    median = float(np.median(ms))
    per_s = 1e3 / median if median > 0 else 0.0
    return {
        "latency_ms": {"median": median, "p90": float(np.percentile(ms, 90)), "mean": float(ms.mean()),
                       "min": float(ms.min()), "max": float(ms.max())},
        "fps": frames * per_s,
        "megapixels_per_s": frames * out_pixels_per_frame * per_s / 1e6,
    }
