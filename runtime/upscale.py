"""Upscale whole images (uint8/uint16/float32; gray, RGB, RGBA) through a Session, tile by tile.

Channel handling:

* RGB: the model's three channels. Pass ``order="BGR"`` when the array is in OpenCV order
  (input and output then both BGR(A)); channels are swapped per tile, never as a full copy.
* Gray (H x W): replicated to RGB for the model; the result is converted back to gray with
  ITU-R BT.601 luma weights (0.299 R + 0.587 G + 0.114 B), so gray stays gray.
* Gray + alpha (H x W x 2): the gray plane as gray above, alpha as for RGBA.
* RGBA: colour as above; alpha upscaled separately, chosen by ``alpha``:
  ``"model"`` (default, as Real-ESRGAN does) runs alpha through the model as a gray image
  (alpha replicated to three channels, output averaged), ``"resize"`` uses bicubic
  interpolation (cv2.INTER_CUBIC, half the cost). A constant alpha (fully opaque images saved
  as RGBA) is simply filled, whatever the mode.

Integer pixels are mapped to the model's input range (``value / max``), outputs mapped back from
the output range, rounded and clipped; float32 images are taken as [0, 1] and returned unclipped.
Output comes band by band (``Upscaler.bands``): ``upscale_files`` hands the bands straight to a
streaming writer (PNG, TIFF), so peak memory is the input and a few tile rows, not the output;
``upscale`` assembles them into one array. ``tile="auto"`` picks, per image, the largest tile
whose predicted peak fits the memory budget (``runtime.budget``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .pixels import PixelMap
from .session import Session
from .settings import DEFAULT_TILE, TileSettings
from .tiling import TilePlan, iter_bands, plan_tiles

# Outputs that cannot be written band by band and hold at least this much get a note up front.
LARGE_OUTPUT_BYTES = 256 << 20
_LUMA = (0.299, 0.587, 0.114)


class Upscaler:
    """Upscale images with a session, tiling large ones.

    Args:
        session: an open Session (any backend).
        settings: the ``TileSettings`` (tile, tile_pad, batch, feather, alpha, max_memory; see there).
        **tiling: instead of ``settings``, its fields as keywords (library shorthand:
            ``Upscaler(session, tile=64)``); here the tile defaults to ``DEFAULT_TILE``, a fixed
            size, where ``TileSettings`` and the CLI default to "auto".

    ``tile``, ``batch``, ``feather``, ``alpha`` and ``max_memory`` read the settings; ``tile_pad``
    is the margin resolved for this session's model (``TileSettings.pad_for``: the margin
    measured at export, else the radius rule).
    """

    def __init__(self, session: Session, settings: TileSettings | None = None, **tiling) -> None:
        if settings is None:
            settings = TileSettings(**{"tile": DEFAULT_TILE, **tiling})
        elif tiling or not isinstance(settings, TileSettings):
            raise TypeError("Upscaler(session, settings): settings must be a TileSettings, and keyword settings "
                            f"go in it (got {type(settings).__name__} and {sorted(tiling)})")
        self.session = session
        self.settings = settings
        self.scale = session.info.scale
        self.tile_pad = settings.pad_for(session.info.receptive_radius, session.info.tile_margin)
        self.last_plan: TilePlan | None = None
        self.last_prediction = None  # budget.Prediction of the last plan (tile "auto" only)
        # the tile the last plan used, as plan_tiles takes it: 0 (whole), an int or (core h, core w)
        self.last_tile: int | tuple[int, int] | None = None
        self._profile = None
        self._budget: int | None = settings.max_memory

    tile = property(lambda self: self.settings.tile, doc="tile size, or \"auto\" (``TileSettings.tile``)")
    batch = property(lambda self: self.settings.batch, doc="tiles per inference call")
    feather = property(lambda self: self.settings.feather, doc="blending width in LR pixels")
    alpha = property(lambda self: self.settings.alpha, doc="\"model\" or \"resize\" (RGBA alpha)")
    max_memory = property(lambda self: self.settings.max_memory, doc="--max-memory as given (None = default)")

    @property
    def budget(self) -> int:
        """The memory budget (bytes) ``tile="auto"`` fits: ``max_memory``, else the default budget."""
        if self._budget is None:
            from .budget import default_budget, gpu_free_memory

            self._budget = default_budget(gpu_free=gpu_free_memory(self.session.device))
        return self._budget

    def predict(self, height: int, width: int, *, channels: int = 3, itemsize: int = 1, streamed: bool = True,
                tile: int | None = None):
        """Predicted peak memory (``budget.Prediction``) of one image with ``tile`` (default: the
        one ``plan`` would choose); None when the model's graph cannot be profiled."""
        from . import budget

        if self._profile is None:
            self._profile = budget.session_profile(self.session)
        if isinstance(self._profile, Exception):
            return None
        kwargs = dict(height=height, width=width, channels=channels, itemsize=itemsize, scale=self.scale,
                      tile_pad=self.tile_pad, passes=2 if channels in (2, 4) and self.alpha == "model" else 1,
                      streamed=streamed, batch=self.batch, gpu=self.session.device.startswith("cuda"),
                      weights_bytes=budget.weights_bytes(self.session), factor=budget.activation_factor(self.session),
                      multiple=self.session.info.size_multiple, minimum=self.session.info.min_size)
        if tile is not None:
            return budget.predict_peak(self._profile, tile=tile, **kwargs)
        if self.settings.auto:
            return budget.choose_tile(self._profile, self.budget, **kwargs)
        return budget.predict_peak(self._profile, tile=self.tile, **kwargs)

    def plan(self, height: int, width: int, *, channels: int = 3, itemsize: int = 1,
             streamed: bool = True) -> TilePlan:
        """The tile plan for an image of this size (notes say what was adjusted to fit the session).

        With ``tile="auto"`` the tile is chosen for this image (its channels and pixel size, and
        whether the output is written band by band) and ``last_prediction`` records the
        predicted peak; a model whose graph cannot be profiled gets ``DEFAULT_TILE`` (noted).
        """
        tile = self.tile
        notes: tuple[str, ...] = ()
        self.last_prediction = None
        if self.settings.auto:
            pred = self.predict(height, width, channels=channels, itemsize=itemsize, streamed=streamed)
            if pred is None:
                tile = self.settings.fixed_tile()
                notes = (f"tile auto: memory not predicted ({self._profile}); using tile {tile}",)
            else:
                tile = pred.tile
                self.last_prediction = pred
                if pred.total > self.budget:
                    notes = (f"tile auto: even tile {_tile_text(tile)} is predicted to take {_size(pred.total)}, "
                             f"over the --max-memory budget of {_size(self.budget)}",)
        info = self.session.info
        plan = plan_tiles(height, width, tile=tile, tile_pad=self.tile_pad, batch=self.batch,
                          feather=self.feather, spec=self.session.input_spec, multiple=info.size_multiple,
                          minimum=info.min_size)
        if notes:
            plan = dataclasses.replace(plan, notes=notes + plan.notes)
        self.last_tile = tile
        return plan

    def resolve_tile(self, height: int, width: int, **kwargs) -> int | tuple[int, int]:
        """The tile ``plan`` uses for this image, as ``plan_tiles`` takes it (``tile="auto"``
        resolved: 0 = whole image, else (core height, core width))."""
        self.plan(height, width, **kwargs)
        return self.last_tile

    def describe(self) -> str:
        """Tiling settings for the CLI's first line: with ``tile="auto"``, the tile chosen for the
        last planned image and its predicted peak against the budget."""
        if not self.settings.auto:
            text = f"tile {_tile_text(self.tile)}" if self.tile else "tile whole image"
        elif self.last_tile is None:
            text = f"tile auto (max memory {_size(self.budget)})"
        else:
            text = f"tile auto -> {_tile_text(self.last_tile) if self.last_tile else 'whole image'}"
            p = self.last_prediction
            text += (f" (predicted peak {_size(p.total)}, max memory {_size(self.budget)})" if p is not None
                     else f" (memory not predicted: {self._why_not_predicted()})")
        return text + f", tile-pad {self.tile_pad}"

    def _why_not_predicted(self) -> str:
        """The reason ``predict`` had no graph profile, short: the ProfileError's text without the
        file name (the first line names the model already)."""
        why = str(self._profile) if isinstance(self._profile, Exception) else "no ONNX graph"
        path = str(getattr(self.session, "path", "") or "")
        return why[len(path) + 2:] if path and why.startswith(path + ": ") else why

    def _check(self, img: np.ndarray, order: str) -> tuple[np.ndarray, int]:
        if order not in ("RGB", "BGR"):
            raise ValueError(f"order must be 'RGB' or 'BGR', got {order!r}")
        if not isinstance(img, np.ndarray) or img.dtype not in (np.uint8, np.uint16, np.float32):
            raise TypeError(f"Upscaler.upscale: expected a uint8, uint16 or float32 array, got "
                            f"{getattr(img, 'dtype', type(img))}")
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (2, 3, 4))):
            raise ValueError(f"Upscaler.upscale: expected H x W, H x W x 2 (gray + alpha), H x W x 3 or "
                             f"H x W x 4, got {img.shape}")
        return img, 1 if img.ndim == 2 else img.shape[2]

    def upscale(self, img: np.ndarray, *, order: str = "RGB",
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Upscale one image.

        Args:
            img: H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA); uint8, uint16 or float32 ([0, 1]).
            order: "RGB" or "BGR": channel order of ``img`` and of the result.
            progress: optional ``progress(done, total)`` over tiles (all passes).

        Returns:
            The upscaled image: same dtype, channels and order, ``scale`` times larger.
        """
        img, channels = self._check(img, order)
        h, w = img.shape[:2]
        s = self.scale
        out = np.empty((h * s, w * s) if channels == 1 else (h * s, w * s, channels), img.dtype)
        y = 0
        for band in self.bands(img, order=order, progress=progress, streamed=False):
            out[y:y + band.shape[0]] = band
            y += band.shape[0]
        return out

    def bands(self, img: np.ndarray, *, order: str = "RGB", progress: Callable[[int, int], None] | None = None,
              streamed: bool = True) -> Iterator[np.ndarray]:
        """Upscale one image band by band: yields its output rows, top to bottom.

        Same arguments and pixels as ``upscale``, but the result comes as fresh arrays of rows
        (``rows x scale*W [x C]``) that a writer can store and drop (``media.writers.write_bands``):
        the whole output is never held. RGBA with the alpha through the model runs the colour
        and the alpha passes side by side. ``streamed`` tells ``tile="auto"`` whether the caller
        keeps the bands (False: the whole output is held, so less memory is left for tiles).
        """
        img, channels = self._check(img, order)
        h, w = img.shape[:2]
        s = self.scale
        plan = self.plan(h, w, channels=channels, itemsize=img.dtype.itemsize, streamed=streamed)
        self.last_plan = plan
        alpha_const = None
        has_alpha = channels in (2, 4)  # gray + alpha, RGBA: alpha is the last channel
        if has_alpha:
            a = img[:, :, -1]
            if a.min() == a.max():
                alpha_const = a.flat[0]
        model_alpha = has_alpha and self.alpha == "model" and alpha_const is None
        passes = 2 if model_alpha else 1
        done = [0, 0]
        pixels = PixelMap(self.session.info, img.dtype)

        def prog(k: int) -> Callable[[int, int], None]:
            def cb(d: int, total: int) -> None:
                done[k] = d
                if progress is not None:
                    progress(done[0] + done[1], total * passes)
            return cb

        model_channels = self.session.input_spec.channels

        def run(window, k: int) -> Iterator[tuple[int, np.ndarray]]:
            def source(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
                x = pixels.to_model(window(y0, y1, x0, x1))
                return np.broadcast_to(x, (3,) + x.shape[1:]) if x.shape[0] < model_channels else x
            # A gray model on colour pixels runs each channel as its own gray image.
            sess = _PerChannel(self.session) if model_channels == 1 and channels > 2 and k == 0 else self.session
            return iter_bands(sess, plan, source, progress=prog(k))

        rgb = [2, 1, 0] if order == "BGR" else [0, 1, 2]  # model channel k <- img channel rgb[k]
        if channels == 1:
            colour = run(lambda y0, y1, x0, x1: img[y0:y1, x0:x1][None], 0)
        elif channels == 2:  # gray stays gray: the gray pass into channel 0
            colour = run(lambda y0, y1, x0, x1: img[y0:y1, x0:x1, 0][None], 0)
        else:
            colour = run(lambda y0, y1, x0, x1: img[y0:y1, x0:x1][:, :, rgb].transpose(2, 0, 1), 0)
        alpha = run(lambda y0, y1, x0, x1: img[y0:y1, x0:x1, -1][None], 1) if model_alpha else None
        for y, rows in colour:
            n = rows.shape[1]
            band = np.empty((n, w * s) if channels == 1 else (n, w * s, channels), img.dtype)
            if channels in (1, 2):
                _convert(rows, band if channels == 1 else band[:, :, 0], "gray", pixels)
            else:
                _convert(rows, band, rgb, pixels)
            if has_alpha:
                if alpha_const is not None:
                    band[:, :, -1] = alpha_const
                elif alpha is None:  # "resize"
                    band[:, :, -1] = _resize_rows(img[:, :, -1], y, n, s)
                else:
                    ya, arows = next(alpha)
                    if ya != y:  # both passes follow one plan, so their bands line up
                        raise RuntimeError(f"Upscaler: alpha band at row {ya} but colour band at {y}")
                    _convert(arows, band, "alpha", pixels)
                    del arows
            del rows  # free the float band before the generator runs the next tiles
            yield band
            del band


def _tile_text(tile: int | tuple[int, int]) -> str:
    """256, or (h, w) as the flags write sizes: WxH."""
    return str(tile) if isinstance(tile, int) else f"{tile[1]}x{tile[0]}"


def _size(n: int) -> str:
    from .budget import format_size

    return format_size(n)


class _PerChannel:
    """A gray (1-channel) model seen as an RGB one: the channels of each tile are folded into the
    batch, so each runs as its own gray image (what a gray model does to colour input).

    Args:
        session: the gray model's Session.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.info = session.info
        lo, hi = session.input_spec.batch
        self.input_spec = dataclasses.replace(session.input_spec, channels=3,
                                              batch=(lo, None if hi is None else max(1, hi // 3)))

    def infer(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        y = self.session.infer(np.ascontiguousarray(x.reshape(n * c, 1, h, w)))
        return y.reshape(n, c, *y.shape[2:])


def _convert(rows: np.ndarray, band: np.ndarray, target, pixels: PixelMap) -> None:
    """Model output rows (3, n, W) -> ``band`` (n, W[, C]); ``target``: a channel map (colour),
    "gray" (BT.601 luma into a 2-D band) or "alpha" (channel mean into channel 3). A gray model's
    rows (1, n, W) are taken as they are for "gray" and "alpha"."""
    # In chunks of rows, so the float temporaries stay a few MB even for a 16000-pixel-wide band.
    step = max(1, (1 << 20) // max(1, rows.shape[2]))
    for r in range(0, rows.shape[1], step):
        v = rows[:, r:r + step]
        if v.shape[0] == 1 and target in ("gray", "alpha"):
            dst = band[r:r + step] if target == "gray" else band[r:r + step, :, -1]
            dst[...] = pixels.from_model(v[0])
        elif target == "gray":
            band[r:r + step] = pixels.from_model(v[0] * np.float32(_LUMA[0]) + v[1] * np.float32(_LUMA[1])
                                                 + v[2] * np.float32(_LUMA[2]))
        elif target == "alpha":
            band[r:r + step, :, -1] = pixels.from_model((v[0] + v[1] + v[2]) * np.float32(1 / 3))
        else:
            for k, c in enumerate(target):
                band[r:r + step, :, c] = pixels.from_model(v[k])


def _resize_rows(alpha: np.ndarray, y: int, n: int, s: int) -> np.ndarray:
    """Rows [y, y + n) of ``cv2.resize(alpha, scale s, INTER_CUBIC)``, from a strip of ``alpha``.

    Bicubic reads 2 source rows each side; 3 rows of margin keep the strip's own border
    handling away from the rows returned, so they equal the whole-image resize's.
    """
    import cv2

    m = 3
    a0 = max(0, y // s - m)
    a1 = min(alpha.shape[0], -(-(y + n) // s) + m)
    strip = cv2.resize(alpha[a0:a1], (alpha.shape[1] * s, (a1 - a0) * s), interpolation=cv2.INTER_CUBIC)
    return strip[y - a0 * s:y - a0 * s + n]


# ----------------------------------------------------------------------------- files
@dataclass
class FilesReport:
    """What ``upscale_files`` did: outputs written and one message per failed input."""

    written: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def upscale_files(upscaler: Upscaler, mapping: dict[Path, Path], *, overwrite: bool = False,
                  quality: int | None = None, progress: bool = True,
                  log: Callable[[str], None] | None = None,
                  announce: Callable[[Upscaler], None] | None = None) -> FilesReport:
    """Upscale each input file to its output path; a bad file is reported and the others go on.

    Args:
        upscaler: the Upscaler (session + tiling).
        mapping: input -> output path (``media.files.output_paths``); an output that would
            replace an input or that two inputs share fails that file (``files.output_problem``).
        overwrite: replace existing outputs.
        quality: JPEG/WebP quality.
        progress: tqdm bars on stderr (files, and tiles of large images).
        log: where per-file errors and notes go (default: tqdm.write to stderr).
        announce: called once with the upscaler when the first image is planned (before its tiles
            run), so the CLI's first line can show the tile ``tile="auto"`` chose and its
            predicted peak; later images whose choice differs get a note through ``log``.

    Returns:
        A FilesReport; outputs are written atomically, never over an input.
    """
    from .atomic import occupied
    from .media.files import output_problem
    from .media.images import check_writable, read_image
    from .media.writers import held_output_bytes, streams
    from .progress import progress_bar, say as say_line

    say = log or say_line
    report = FilesReport()
    last = None
    inputs = {f.resolve() for f in mapping}
    taken: dict[Path, Path] = {}
    files = list(mapping)
    bar = progress_bar(files, unit="img", enabled=progress and len(files) >= 2)
    for src in bar:
        dst = mapping[src]
        bar.set_postfix_str(src.name)
        try:
            problem = output_problem(src, dst, inputs, taken)
            if problem:
                raise ValueError(problem)
            if not overwrite and occupied(dst):
                raise FileExistsError(f"{dst}: already exists; pass --overwrite to replace it")
            img, meta = read_image(src, order="BGR")
            check_writable(dst, dtype=img.dtype, channels=meta.channels)
            h, w, sc = img.shape[0], img.shape[1], upscaler.scale
            streamed = streams(dst)
            held = held_output_bytes(dst, height=h * sc, width=w * sc, channels=meta.channels, dtype=img.dtype)
            plan = upscaler.plan(h, w, channels=meta.channels, itemsize=img.dtype.itemsize, streamed=streamed)
            if announce is not None:
                announce(upscaler)
                announce = None
            elif upscaler.settings.auto and upscaler.last_tile != last:  # the tile, not its predicted peak
                say(f"srdeploy upscale: note: {src}: {upscaler.describe()}")
            last = upscaler.last_tile
            if held >= LARGE_OUTPUT_BYTES:
                say(f"srdeploy upscale: note: {dst}: {dst.suffix} cannot be written band by band, so the whole "
                    f"{w * sc}x{h * sc} output is held in memory ({_size(held)}); .png or .tiff stream it")
            # A tile bar for every single image (one image can take minutes); in a folder run, for
            # images of more than one tile (the images bar moves for the others).
            _write_upscaled(upscaler, img, meta.channels, dst, plan.num_tiles, streamed=streamed,
                            overwrite=overwrite, quality=quality,
                            progress=progress and (plan.num_tiles >= 2 or len(files) == 1))
            del img
            report.written.append(dst)
            for note in plan.notes:
                say(f"srdeploy upscale: note: {src}: {note}")
        except (ValueError, OSError, MemoryError) as exc:
            msg = str(exc) if str(src) in str(exc) or str(dst) in str(exc) else f"{src}: {exc}"
            report.failures.append(msg)
            say(f"srdeploy upscale: error: {msg}")
    bar.close()
    return report


def _write_upscaled(upscaler: Upscaler, img: np.ndarray, channels: int, dst: Path, num_tiles: int, *,
                    streamed: bool, overwrite: bool, quality: int | None, progress: bool) -> None:
    """Upscale ``img`` (BGR) band by band straight into ``dst``, with a tile bar when ``progress``."""
    from .media.writers import write_bands
    from .progress import progress_bar

    h, w, sc = img.shape[0], img.shape[1], upscaler.scale
    tiles = progress_bar(total=num_tiles, unit="tile", leave=False, enabled=progress)
    try:
        def prog(done: int, total: int) -> None:
            tiles.total = total
            tiles.update(done - tiles.n)

        bands = upscaler.bands(img, order="BGR", progress=prog, streamed=streamed)
        write_bands(dst, bands, height=h * sc, width=w * sc, channels=channels, dtype=img.dtype,
                    order="BGR", overwrite=overwrite, quality=quality)
    finally:
        tiles.close()
