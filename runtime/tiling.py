"""Tiled inference, written once in numpy and knowing nothing about backends.

How an image is cut (per axis, the same for height and width):

* The image is split into ``k = ceil(n / tile)`` *cores* of near-equal size (at most ``tile``);
  the cores partition the image.
* Every tile runs on a *window* of one fixed size ``min(core + 2 * tile_pad, n)``: the core plus
  ``tile_pad`` LR pixels of context on each side, shifted inwards at the image borders. A fixed
  window size means every tile has the same shape, so tiles can be stacked into batches and a
  backend sees one input shape (TensorRT/ORT pick one kernel set). Shifting inwards keeps at
  least ``tile_pad`` pixels of real context on every side that is not an image border.
* The model's output for a window is cropped back to the core (times the scale) and written in
  place. With ``tile_pad >= receptive radius`` (ModelInfo.receptive_radius) every output pixel
  sees exactly the context it sees in a whole-image pass, so tiled == whole image up to float32
  rounding (tests check max abs <= 1e-5).
* Optional feathering (``feather`` LR pixels, <= tile_pad): neighbouring tiles overlap by
  ``2 * feather`` pixels around each core boundary and are blended with linear ramps whose
  weights sum to one. Only useful when ``tile_pad`` is below the radius (seams then soften).
* Shape profiles: a session's ``input_spec`` (TensorRT engine profile) bounds the window. A tile
  larger than the profile allows is reduced to ``max - 2 * tile_pad`` (recorded in the plan); an
  image smaller than the profile's minimum is edge-padded up to it and the output cropped
  (only the padded border pixels can differ from an unconstrained whole-image pass).

Output rows are produced band by band (one row of tiles at a time) through an ``emit``
callback, so a caller can convert them straight into a uint8 image without ever holding a
full-size float32 output (a 4x upscale of 4000x3000 would be 2.3 GB in float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .session import InputSpec, Session


@dataclass(frozen=True)
class AxisPlan:
    """Tiling along one axis (LR pixels).

    Attributes:
        size: image size along this axis.
        window: model input size along this axis (same for every tile).
        cores: (start, stop) of each tile's core; they partition [0, size).
        starts: window start of each tile (window = [start, start + window)).
        padded: size after edge padding (> size only when the window, at least the profile or model
            minimum and a multiple of the model's size multiple, exceeds the image).
    """

    size: int
    window: int
    cores: tuple[tuple[int, int], ...]
    starts: tuple[int, ...]
    padded: int


@dataclass(frozen=True)
class TilePlan:
    """How an image is tiled; ``notes`` records any adjustment made to fit the session."""

    rows: AxisPlan
    cols: AxisPlan
    tile_pad: int
    feather: int
    batch: int
    notes: tuple[str, ...] = ()

    @property
    def num_tiles(self) -> int:
        return len(self.rows.cores) * len(self.cols.cores)

    @property
    def window(self) -> tuple[int, int]:
        return self.rows.window, self.cols.window


def axis_cores(n: int, tile: int) -> tuple[tuple[int, int], ...]:
    """The cores along an axis of ``n`` pixels: ``ceil(n / tile)`` near-equal (start, stop) ranges,
    each at most ``tile``, that partition [0, n); tile 0 = one core, the whole axis."""
    k = math.ceil(n / tile) if tile else 1
    bounds = [(i * n) // k for i in range(k + 1)]
    return tuple((bounds[i], bounds[i + 1]) for i in range(k))


def fit_size(n: int, multiple: int = 1, minimum: int = 1) -> int:
    """The smallest side the model takes that holds ``n`` pixels: at least ``minimum``, rounded up
    to ``multiple`` (``ModelInfo.size_multiple``/``min_size``; the tiler edge-pads up to it)."""
    return -(-max(n, minimum) // multiple) * multiple


def window_size(core: int, pad: int, multiple: int = 1, minimum: int = 1, limit: int | None = None) -> int:
    """The model input the tiler runs for a core of ``core`` pixels: the core plus ``pad`` on each
    side, at most ``limit`` (the image), at least ``minimum`` (smaller windows are edge-padded).
    With a size ``multiple`` > 1, ``multiple - 1`` more (a window start rounded down to the multiple
    still leaves ``pad`` after the core), rounded up to the multiple (see ``_plan_axis``). The
    memory budget and the TensorRT provider's shape profile size windows with it."""
    window = core + 2 * pad + (multiple - 1)
    return fit_size(min(window, limit) if limit is not None else window, multiple, minimum)


def axis_window(n: int, tile: int, pad: int, multiple: int = 1, minimum: int = 1) -> tuple[int, int]:
    """(window, number of cores) along an axis of ``n`` pixels, before any engine-profile limit:
    ``window_size`` of the largest core, at most ``n`` (``runtime.budget`` sizes tiles with it)."""
    cores = axis_cores(n, tile)
    if not tile:
        return fit_size(n, multiple, minimum), len(cores)
    return window_size(max(b - a for a, b in cores), pad, multiple, minimum, limit=n), len(cores)


def _plan_axis(n: int, tile: int, pad: int, lo: int, hi: int | None, name: str,
               notes: list[str], mult: int = 1) -> AxisPlan:
    if n < 1:
        raise ValueError(f"tiling: image {name} must be >= 1, got {n}")
    if hi is not None and mult > 1:
        hi = hi // mult * mult  # the largest window that is also a multiple
    if tile == 0:  # whole image in one pass
        if hi is not None and -(-n // mult) * mult > hi:
            raise ValueError(f"tiling: image {name} {n} exceeds the model's maximum input {name} {hi} "
                             "(engine profile); use tiling (--tile N) or rebuild the engine with a larger profile")
        cores = ((0, n),)
        window = n
    else:
        t = tile
        if hi is not None and t + 2 * pad + (mult - 1) > hi:
            t = hi - 2 * pad - (mult - 1)
            if t < 1:
                raise ValueError(f"tiling: tile_pad {pad} leaves no room in the model's maximum input {name} {hi} "
                                 f"(engine profile): need tile_pad < {hi // 2}; lower --tile-pad or rebuild the "
                                 "engine with a larger profile")
            notes.append(f"tile {name} reduced from {tile} to {t} to fit the model's largest input {hi} (engine "
                         f"profile or fixed window) with tile_pad {pad}")
        cores = axis_cores(n, t)
        window, _ = axis_window(n, t, pad, mult)
    if window < lo and n < lo:
        notes.append(f"image {name} {n} is below the engine profile minimum {lo}: edge-padded to {lo}")
    # The model's size multiple (a pixel-unshuffle model groups pixels in blocks from its input's
    # origin, so its output changes when the input shifts by less than a block): windows are a
    # multiple of it and start on a multiple of it, as the whole image does; the image is
    # edge-padded to a multiple (and its output cropped).
    window = fit_size(window, mult, lo)
    padded = -(-max(n, window) // mult) * mult
    starts = tuple((s - s % mult) for s in (min(max(a - pad, 0), padded - window) for a, _ in cores))
    return AxisPlan(size=n, window=window, cores=cores, starts=starts, padded=padded)


def plan_tiles(height: int, width: int, *, tile: int | tuple[int, int], tile_pad: int, batch: int = 1,
               feather: int = 0, spec: InputSpec | None = None, multiple: int = 1, minimum: int = 1) -> TilePlan:
    """Plan the tiles of a ``height`` x ``width`` image.

    Args:
        height, width: LR image size in pixels.
        tile: core size in LR pixels (int or (tile_h, tile_w)); 0 = whole image in one pass.
        tile_pad: context margin in LR pixels on each side of a core (>= the model's receptive
            radius for an exact result).
        batch: tiles per ``Session.infer`` call (clamped to the session's batch range).
        feather: blending width in LR pixels (0 = hard crop); at most ``tile_pad`` and half the
            smallest core (reduced to fit, recorded in ``notes``).
        spec: the session's input limits (engine profile); None = unbounded.
        multiple, minimum: the model's size requirements (``ModelInfo.size_multiple``/``min_size``):
            windows are rounded up to the multiple and at least the minimum; smaller images are
            edge-padded and their output cropped.
    """
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    if th < 0 or tw < 0 or tile_pad < 0 or feather < 0:
        raise ValueError(f"tiling: tile, tile_pad and feather must be >= 0, got {tile}, {tile_pad}, {feather}")
    if batch < 1:
        raise ValueError(f"tiling: batch must be >= 1, got {batch}")
    spec = spec or InputSpec()
    notes: list[str] = []
    if multiple < 1 or minimum < 1:
        raise ValueError(f"tiling: size multiple and minimum must be >= 1, got {multiple}, {minimum}")
    rows = _plan_axis(height, th, tile_pad, max(spec.height[0], minimum), spec.height[1], "height", notes, multiple)
    cols = _plan_axis(width, tw, tile_pad, max(spec.width[0], minimum), spec.width[1], "width", notes, multiple)
    bmax = spec.batch[1]
    if bmax is not None and batch > bmax:
        notes.append(f"batch reduced from {batch} to {bmax} (engine profile max)")
        batch = bmax
    if feather:
        if feather > tile_pad:
            raise ValueError(f"tiling: feather {feather} must be <= tile_pad {tile_pad} "
                             "(blended pixels need context on both sides)")
        min_core = min(b - a for ax in (rows, cols) for a, b in ax.cores)
        f = min(feather, min_core // 2)
        if f != feather:
            notes.append(f"feather reduced from {feather} to {f} (half the smallest tile core)")
        feather = f
    return TilePlan(rows=rows, cols=cols, tile_pad=tile_pad, feather=feather, batch=batch, notes=tuple(notes))


def _extent(ax: AxisPlan, i: int, f: int) -> tuple[int, int]:
    """LR range a tile contributes to: its core, widened by the feather on interior sides."""
    a, b = ax.cores[i]
    return (a - f if i > 0 else a), (b + f if i < len(ax.cores) - 1 else b)


def _weights(ax: AxisPlan, i: int, f: int, s: int) -> np.ndarray | None:
    """Blending weights (HR pixels) over ``_extent``; None when all ones (no feather)."""
    if f == 0 or len(ax.cores) == 1:
        return None
    e0, e1 = _extent(ax, i, f)
    w = np.ones((e1 - e0) * s, np.float32)
    ramp = (np.arange(2 * f * s, dtype=np.float32) + 0.5) / (2 * f * s)
    if i > 0:
        w[: 2 * f * s] = ramp
    if i < len(ax.cores) - 1:
        w[-2 * f * s:] = ramp[::-1]
    return w


# A window source returns float32 (C, h, w) for an in-image window [y0:y1, x0:x1].
Source = Callable[[int, int, int, int], np.ndarray]
# emit(y, rows): rows = float32 (C, h, scale*width) holding final output rows [y, y + h).
Emit = Callable[[int, np.ndarray], None]


def run_tiles(session: Session, plan: TilePlan, source: Source, emit: Emit, *,
              progress: Callable[[int, int], None] | None = None) -> None:
    """Run ``plan`` through ``session``, emitting finished output rows top to bottom.

    Args:
        session: any Session (only ``infer``, ``info.scale`` and ``input_spec`` are used).
        plan: from ``plan_tiles``.
        source: gives the model input for an in-image window (see ``Source``).
        emit: receives finished output rows in order (see ``Emit``); ``rows`` is reused
            afterwards, so copy what you keep.
        progress: optional ``progress(done_tiles, total_tiles)`` callback.
    """
    for y, rows in iter_bands(session, plan, source, progress=progress):
        emit(y, rows)


def iter_bands(session: Session, plan: TilePlan, source: Source, *,
               progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``run_tiles`` as a generator: yields ``(y, rows)`` where ``run_tiles`` calls ``emit``.

    A caller can then pull bands into a file writer, or drive two passes side by side (the
    colour and the alpha of an RGBA image), holding one band per pass and never the whole output.
    """
    s = session.info.scale
    R, C, f = plan.rows, plan.cols, plan.feather
    wh, ww = plan.window
    out_w = C.size * s
    tiles = [(i, j) for i in range(len(R.cores)) for j in range(len(C.cores))]
    per_row = len(C.cores)
    bmin = session.input_spec.batch[0]
    bands: dict[int, list] = {}  # row -> [buffer, tiles left]
    carry: np.ndarray | None = None  # weighted overlap rows of the previous band (feather)
    next_row = 0
    done = 0

    def window(i: int, j: int) -> np.ndarray:
        y0, x0 = R.starts[i], C.starts[j]
        y1, x1 = min(y0 + wh, R.size), min(x0 + ww, C.size)
        w = source(y0, y1, x0, x1)
        if w.shape[1:] != (wh, ww):  # window reaches into the profile-minimum padding
            w = np.pad(w, ((0, 0), (0, wh - w.shape[1]), (0, ww - w.shape[2])), mode="edge")
        return w

    for b0 in range(0, len(tiles), plan.batch):
        group = tiles[b0:b0 + plan.batch]
        x = np.stack([window(i, j) for i, j in group]).astype(np.float32, copy=False)
        if len(group) < bmin:  # engine profile needs a bigger batch: repeat the last tile
            x = np.concatenate([x, np.repeat(x[-1:], bmin - len(group), axis=0)])
        y = part = None  # drop the previous output first: two alive would add a window's output to the peak
        y = session.infer(x)
        for k, (i, j) in enumerate(group):
            ey0, ey1 = _extent(R, i, f)
            ex0, ex1 = _extent(C, j, f)
            if i not in bands:
                bands[i] = [np.zeros((y.shape[1], (ey1 - ey0) * s, out_w), np.float32), per_row]
            buf = bands[i][0]
            oy, ox = (ey0 - R.starts[i]) * s, (ex0 - C.starts[j]) * s
            part = y[k, :, oy:oy + (ey1 - ey0) * s, ox:ox + (ex1 - ex0) * s]
            wy, wx = _weights(R, i, f, s), _weights(C, j, f, s)
            if wy is not None or wx is not None:
                wgt = np.ones((1, part.shape[1], part.shape[2]), np.float32)
                if wy is not None:
                    wgt = wgt * wy[None, :, None]
                if wx is not None:
                    wgt = wgt * wx[None, None, :]
                buf[:, :, ex0 * s:ex1 * s] += part * wgt
            else:
                buf[:, :, ex0 * s:ex1 * s] = part
            bands[i][1] -= 1
            done += 1
        while next_row in bands and bands[next_row][1] == 0:
            buf = bands.pop(next_row)[0]
            ey0, ey1 = _extent(R, next_row, f)
            if carry is not None:
                buf[:, :carry.shape[1]] += carry
                carry = None
            last = next_row == len(R.cores) - 1
            keep = 0 if last or f == 0 else 2 * f * s
            if keep:
                carry = buf[:, buf.shape[1] - keep:].copy()
            yield ey0 * s, buf[:, :buf.shape[1] - keep]
            del buf  # the consumer is done with it: free it before the next tiles run
            next_row += 1
        if progress is not None:
            progress(done, len(tiles))


def tiled_infer(session: Session, x: np.ndarray, *, tile: int | tuple[int, int] = 0, tile_pad: int | None = None,
                batch: int = 1, feather: int = 0,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Run an SR session on one image, tile by tile.

    Args:
        session: an open Session.
        x: float32 (C, H, W) image in the model's input range (one image, not a batch).
        tile: core size in LR pixels (int or (h, w)); 0 = the whole image in one pass.
        tile_pad: context margin in LR pixels; None = the model's receptive radius (exact).
        batch: tiles per ``session.infer`` call.
        feather: blending width in LR pixels (see module doc); 0 = hard crop.
        progress: optional ``progress(done_tiles, total_tiles)`` callback.

    Returns:
        float32 (C, scale*H, scale*W), the model's raw output (not clipped).
    """
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise ValueError(f"tiled_infer: expected one (C, H, W) image, got shape {getattr(x, 'shape', None)}")
    if tile_pad is None:
        tile_pad = session.info.receptive_radius
    _, h, w = x.shape
    plan = plan_tiles(h, w, tile=tile, tile_pad=tile_pad, batch=batch, feather=feather, spec=session.input_spec,
                      multiple=session.info.size_multiple, minimum=session.info.min_size)
    s = session.info.scale
    out = np.empty((x.shape[0], h * s, w * s), np.float32)
    x = x.astype(np.float32, copy=False)

    def emit(y: int, rows: np.ndarray) -> None:
        out[:, y:y + rows.shape[1]] = rows

    run_tiles(session, plan, lambda y0, y1, x0, x1: x[:, y0:y1, x0:x1], emit, progress=progress)
    return out
