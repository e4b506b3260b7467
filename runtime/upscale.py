"""Upscale whole images (uint8/uint16/float32; gray, RGB, RGBA) through a Session, tile by tile.

Channel handling:

* RGB: the model's three channels. Pass ``order="BGR"`` when the array is in OpenCV order
  (input and output then both BGR(A)); channels are swapped per tile, never as a full copy.
* Gray (H x W): replicated to RGB for the model; the result is converted back to gray with
  ITU-R BT.601 luma weights (0.299 R + 0.587 G + 0.114 B), so gray stays gray.
* RGBA: colour as above; alpha upscaled separately, chosen by ``alpha``:
  ``"model"`` (default, as Real-ESRGAN does) runs alpha through the model as a gray image
  (alpha replicated to three channels, output averaged), ``"resize"`` uses bicubic
  interpolation (cv2.INTER_CUBIC, half the cost). A constant alpha (fully opaque images saved
  as RGBA) is simply filled, whatever the mode.

Integer pixels are mapped to the model's input range (``value / max``), outputs mapped back from
the output range, rounded and clipped; float32 images are taken as [0, 1] and returned unclipped.
Output is written band by band straight into the result array, so peak memory is the input, the
output and a few tile rows (no full-size float32 image).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .session import Session
from .tiling import TilePlan, plan_tiles, run_tiles

# Chosen by measurement (scripts/bench_tiling.py, README "Tiling defaults"). On the trained
# 16-block SRResNet x4 (radius 40; /work/runs/srresnet_x4 step 6500, Set5 29.92 dB), max
# deviation from the whole-image output over the 19 Set5 + Set14 images, in 1/255 units, by
# margin: 8 -> 1.96, 10 -> 0.76, 12 -> 0.20, 16 -> 0.005 (step 2000 gave 3.2/0.93/0.19/0.003).
# Compute cost is the tile overhead factor (window area / core area; measured time follows it):
# on a 4000x3000 image, tile 256 costs 1.20x with margin 12 (1.74x with the full radius 40), and
# 256 keeps ONNX Runtime's activation memory inside the 2 GB budget (scripts/bench_memory.py).
DEFAULT_TILE = 256
DEFAULT_MIN_TILE_PAD = 12       # LR pixels: 0.19/255 measured, 5x below the 1/255 goal
DEFAULT_TILE_PAD_FRACTION = 0.3  # 12 / 40 for the paper's model; scales with deeper models
ALPHA_MODES = ("model", "resize")
_LUMA = (0.299, 0.587, 0.114)


def default_tile_pad(receptive_radius: int) -> int:
    """Default tile margin (LR pixels) for a model of this receptive radius.

    The receptive radius gives exactly the whole-image result but is generous: a trained
    SRResNet depends very weakly on far context. The default is the measured margin for the
    paper's model (12 of 40, deviation 0.19/255) as a fraction of the radius, at least 12 LR
    pixels, never more than the radius (``--tile-pad`` RADIUS for bit-exact tiling).
    """
    return min(receptive_radius, max(DEFAULT_MIN_TILE_PAD, math.ceil(DEFAULT_TILE_PAD_FRACTION * receptive_radius)))


class Upscaler:
    """Upscale images with a session, tiling large ones.

    Args:
        session: an open Session (any backend).
        tile: tile core size in LR pixels; 0 = whole image in one pass.
        tile_pad: margin in LR pixels; None = ``default_tile_pad(session.info.receptive_radius)``.
        batch: tiles per inference call.
        feather: blending width between tiles in LR pixels (0 = hard crop; see tiling).
        alpha: how RGBA alpha is upscaled: "model" or "resize" (see module doc).
    """

    def __init__(self, session: Session, *, tile: int = DEFAULT_TILE, tile_pad: int | None = None,
                 batch: int = 1, feather: int = 0, alpha: str = "model") -> None:
        if alpha not in ALPHA_MODES:
            raise ValueError(f"alpha must be one of {ALPHA_MODES}, got {alpha!r}")
        if tile < 0 or batch < 1 or feather < 0 or (tile_pad is not None and tile_pad < 0):
            raise ValueError(f"Upscaler: need tile >= 0, tile_pad >= 0, batch >= 1, feather >= 0; got "
                             f"tile={tile}, tile_pad={tile_pad}, batch={batch}, feather={feather}")
        self.session = session
        self.scale = session.info.scale
        self.tile = tile
        self.tile_pad = default_tile_pad(session.info.receptive_radius) if tile_pad is None else tile_pad
        self.batch = batch
        self.feather = feather
        self.alpha = alpha
        self.last_plan: TilePlan | None = None

    def plan(self, height: int, width: int) -> TilePlan:
        """The tile plan for an image of this size (notes say what was adjusted to fit the session)."""
        return plan_tiles(height, width, tile=self.tile, tile_pad=self.tile_pad, batch=self.batch,
                          feather=self.feather, spec=self.session.input_spec)

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
        if order not in ("RGB", "BGR"):
            raise ValueError(f"order must be 'RGB' or 'BGR', got {order!r}")
        if not isinstance(img, np.ndarray) or img.dtype not in (np.uint8, np.uint16, np.float32):
            raise TypeError(f"Upscaler.upscale: expected a uint8, uint16 or float32 array, got "
                            f"{getattr(img, 'dtype', type(img))}")
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
            raise ValueError(f"Upscaler.upscale: expected H x W, H x W x 3 or H x W x 4, got {img.shape}")
        h, w = img.shape[:2]
        s = self.scale
        channels = 1 if img.ndim == 2 else img.shape[2]
        out = np.empty((h * s, w * s) if channels == 1 else (h * s, w * s, channels), img.dtype)
        plan = self.plan(h, w)
        self.last_plan = plan

        alpha_const = None
        if channels == 4:
            a = img[:, :, 3]
            if a.min() == a.max():
                alpha_const = a.flat[0]
        passes = 2 if channels == 4 and self.alpha == "model" and alpha_const is None else 1
        done_before = 0

        def prog(done: int, total: int) -> None:
            if progress is not None:
                progress(done_before + done, total * passes)

        rgb = [2, 1, 0] if order == "BGR" else [0, 1, 2]  # model channel k <- img channel rgb[k]
        if channels == 1:
            self._pass(plan, lambda y0, y1, x0, x1: img[y0:y1, x0:x1][None], out, "gray", prog)
        else:
            self._pass(plan, lambda y0, y1, x0, x1: img[y0:y1, x0:x1][:, :, rgb].transpose(2, 0, 1), out,
                       rgb, prog)
        done_before = plan.num_tiles
        if channels == 4:
            if alpha_const is not None:
                out[:, :, 3] = alpha_const
            elif self.alpha == "resize":
                import cv2

                out[:, :, 3] = cv2.resize(img[:, :, 3], (w * s, h * s), interpolation=cv2.INTER_CUBIC)
            else:
                self._pass(plan, lambda y0, y1, x0, x1: img[y0:y1, x0:x1, 3][None], out, "alpha", prog)
        return out

    def _pass(self, plan: TilePlan, window, out: np.ndarray, target, progress) -> None:
        """One model pass: ``window`` gives raw pixels (c, h, w); ``target`` says where outputs go:
        a channel map (colour), "gray" (luma into a 2-D output) or "alpha" (mean into channel 3)."""
        info = self.session.info
        dtype = out.dtype
        maxval = float(np.iinfo(dtype).max) if dtype.kind == "u" else 1.0
        in_lo, in_hi = info.input_range
        out_lo, out_hi = info.output_range
        a_in = (in_hi - in_lo) / maxval
        a_out = maxval / (out_hi - out_lo)

        def source(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            raw = window(y0, y1, x0, x1)
            x = raw.astype(np.float32) * np.float32(a_in)
            if in_lo:
                x += np.float32(in_lo)
            if x.shape[0] == 1:
                x = np.broadcast_to(x, (3,) + x.shape[1:])
            return x

        def convert(v: np.ndarray) -> np.ndarray:
            v = (v - np.float32(out_lo)) * np.float32(a_out) if (out_lo or a_out != 1.0) else v
            if dtype.kind == "u":
                v = np.clip(np.rint(v), 0, maxval)
            return v.astype(dtype, copy=False)

        def emit(y: int, band: np.ndarray) -> None:
            # Convert in chunks of rows so the float temporaries stay a few MB even for a
            # 16000-pixel-wide band.
            step = max(1, (1 << 20) // max(1, band.shape[2]))
            for r in range(0, band.shape[1], step):
                emit_rows(y + r, band[:, r:r + step])

        def emit_rows(y: int, rows: np.ndarray) -> None:
            n = rows.shape[1]
            if target == "gray":
                lum = rows[0] * np.float32(_LUMA[0]) + rows[1] * np.float32(_LUMA[1]) + rows[2] * np.float32(_LUMA[2])
                out[y:y + n] = convert(lum)
            elif target == "alpha":
                out[y:y + n, :, 3] = convert((rows[0] + rows[1] + rows[2]) * np.float32(1 / 3))
            else:
                for k, c in enumerate(target):
                    out[y:y + n, :, c] = convert(rows[k])

        run_tiles(self.session, plan, source, emit, progress=progress)
