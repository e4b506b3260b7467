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
Output is written band by band straight into the result array, so peak memory is the input, the
output and a few tile rows (no full-size float32 image).
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .media.images import IMAGE_EXTS
from .session import Session
from .tiling import TilePlan, plan_tiles, run_tiles

# Chosen by measurement (scripts/bench_tiling.py, README "Tiling defaults"). On the trained
# 16-block SRResNet x4 (radius 40; the bundled model's training run at step 6500, Set5 29.92 dB), max
# deviation from the whole-image output over the 19 Set5 + Set14 images, in 1/255 units, by
# margin: 8 -> 1.96, 10 -> 0.76, 12 -> 0.20, 16 -> 0.005 (step 2000 gave 3.2/0.93/0.19/0.003).
# Compute cost is the tile overhead factor (window area / core area; measured time follows it):
# on a 4000x3000 image, tile 256 costs 1.20x with margin 12 (1.74x with the full radius 40), and
# 256 keeps ONNX Runtime's activation memory inside the 2 GB budget (scripts/bench_memory.py).
DEFAULT_TILE = 256
DEFAULT_MIN_TILE_PAD = 12       # LR pixels: 0.19/255 measured, 5x below the 1/255 goal
DEFAULT_TILE_PAD_FRACTION = 0.3  # 12 / 40 for the paper's model; scales with deeper models
ALPHA_MODES = ("model", "resize")
# Containers `srdeploy video` reads; `upscale` points there instead of failing to decode them.
VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".wmv", ".flv", ".mpg", ".mpeg", ".ts")
_LUMA = (0.299, 0.587, 0.114)


def default_tile_pad(receptive_radius: int) -> int:
    """Default tile margin (LR pixels) for a model of this receptive radius.

    The receptive radius gives exactly the whole-image result but is generous: a trained
    SRResNet depends very weakly on far context. The default is the measured margin for the
    paper's model (12 of 40, deviation 0.19/255) as a fraction of the radius, at least 12 LR
    pixels, never more than the radius (``--tile-pad`` RADIUS for bit-exact tiling).
    """
    return min(receptive_radius, max(DEFAULT_MIN_TILE_PAD, math.ceil(DEFAULT_TILE_PAD_FRACTION * receptive_radius)))


class PixelMap:
    """Pixels of one dtype <-> the model's value ranges: the one conversion for tiles, images and video.

    Integer pixels map to the input range as ``value / max``; outputs map back from the output
    range, rounded and clipped. float32 pixels are taken as [0, 1] and returned unclipped.

    Args:
        info: the session's ``ModelInfo`` (input_range, output_range).
        dtype: pixel dtype (uint8, uint16 or float32).
    """

    def __init__(self, info, dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.maxval = float(np.iinfo(self.dtype).max) if self.dtype.kind == "u" else 1.0
        self.in_lo, in_hi = info.input_range
        self.out_lo, out_hi = info.output_range
        self.a_in = np.float32((in_hi - self.in_lo) / self.maxval)
        self.a_out = self.maxval / (out_hi - self.out_lo)

    def to_model(self, raw: np.ndarray) -> np.ndarray:
        """Raw pixels (any layout) -> float32 in the model's input range."""
        x = raw.astype(np.float32) * self.a_in
        if self.in_lo:
            x += np.float32(self.in_lo)
        return x

    def from_model(self, v: np.ndarray) -> np.ndarray:
        """float32 model output (any layout) -> pixels of ``dtype``."""
        if self.out_lo or self.a_out != 1.0:
            v = (v - np.float32(self.out_lo)) * np.float32(self.a_out)
        if self.dtype.kind == "u":
            v = np.clip(np.rint(v), 0, self.maxval)
        return v.astype(self.dtype, copy=False)


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
        if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (2, 3, 4))):
            raise ValueError(f"Upscaler.upscale: expected H x W, H x W x 2 (gray + alpha), H x W x 3 or "
                             f"H x W x 4, got {img.shape}")
        h, w = img.shape[:2]
        s = self.scale
        channels = 1 if img.ndim == 2 else img.shape[2]
        out = np.empty((h * s, w * s) if channels == 1 else (h * s, w * s, channels), img.dtype)
        plan = self.plan(h, w)
        self.last_plan = plan

        alpha_const = None
        has_alpha = channels in (2, 4)  # gray + alpha, RGBA: alpha is the last channel
        if has_alpha:
            a = img[:, :, -1]
            if a.min() == a.max():
                alpha_const = a.flat[0]
        passes = 2 if has_alpha and self.alpha == "model" and alpha_const is None else 1
        done_before = 0

        def prog(done: int, total: int) -> None:
            if progress is not None:
                progress(done_before + done, total * passes)

        rgb = [2, 1, 0] if order == "BGR" else [0, 1, 2]  # model channel k <- img channel rgb[k]
        if channels == 1:
            self._pass(plan, lambda y0, y1, x0, x1: img[y0:y1, x0:x1][None], out, "gray", prog)
        elif channels == 2:  # gray stays gray: the gray pass into channel 0
            self._pass(plan, lambda y0, y1, x0, x1: img[y0:y1, x0:x1, 0][None], out[:, :, 0], "gray", prog)
        else:
            self._pass(plan, lambda y0, y1, x0, x1: img[y0:y1, x0:x1][:, :, rgb].transpose(2, 0, 1), out,
                       rgb, prog)
        done_before = plan.num_tiles
        if has_alpha:
            if alpha_const is not None:
                out[:, :, -1] = alpha_const
            elif self.alpha == "resize":
                import cv2

                out[:, :, -1] = cv2.resize(img[:, :, -1], (w * s, h * s), interpolation=cv2.INTER_CUBIC)
            else:
                self._pass(plan, lambda y0, y1, x0, x1: img[y0:y1, x0:x1, -1][None], out, "alpha", prog)
        return out

    def _pass(self, plan: TilePlan, window, out: np.ndarray, target, progress) -> None:
        """One model pass: ``window`` gives raw pixels (c, h, w); ``target`` says where outputs go:
        a channel map (colour), "gray" (luma into a 2-D output) or "alpha" (mean into channel 3)."""
        pixels = PixelMap(self.session.info, out.dtype)
        convert = pixels.from_model

        def source(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            x = pixels.to_model(window(y0, y1, x0, x1))
            if x.shape[0] == 1:
                x = np.broadcast_to(x, (3,) + x.shape[1:])
            return x

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
                out[y:y + n, :, -1] = convert((rows[0] + rows[1] + rows[2]) * np.float32(1 / 3))
            else:
                for k, c in enumerate(target):
                    out[y:y + n, :, c] = convert(rows[k])

        run_tiles(self.session, plan, source, emit, progress=progress)


# ----------------------------------------------------------------------------- files and folders
def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def collect_inputs(items: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders and globs into a sorted, de-duplicated file list.

    Returns:
        (files, problems) where problems are (item, message) for items that matched nothing.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS
                           and not f.name.startswith("."))
            if not found:
                problems.append((item, f"{item}: folder contains no images ({', '.join(IMAGE_EXTS)})"))
            files += found
        elif p.exists():
            if p.suffix.lower() in VIDEO_EXTS:  # read_image would only say "not an image"
                problems.append((item, f"{item}: is a video; upscale it with `srdeploy video -i {item} -o OUT`"))
                continue
            files.append(p)
        elif _has_magic(item):
            found = sorted(Path(f) for f in glob.glob(item) if Path(f).is_file())
            if not found:
                problems.append((item, f"{item}: no files match this pattern"))
            files += found
        else:
            problems.append((item, f"{item}: no such file or folder"))
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


def output_paths(files: list[Path], output: str, *, ext: str | None, suffix: str,
                 single_item: bool) -> dict[Path, Path]:
    """Map each input to its output path (see the ``-o`` help)."""
    out = Path(output)
    if ext is not None:
        ext = "." + ext.lower().lstrip(".")
        if ext not in IMAGE_EXTS:
            raise ValueError(f"--ext {ext[1:]}: unsupported output format; use one of "
                             + ", ".join(e[1:] for e in IMAGE_EXTS))
    if single_item and len(files) == 1 and out.suffix.lower() in IMAGE_EXTS and not out.is_dir():
        if ext is not None and ext != out.suffix.lower():
            raise ValueError(f"-o {out} has extension {out.suffix} but --ext says {ext}; drop one of them")
        return {files[0]: out}
    if out.suffix.lower() in IMAGE_EXTS and not out.is_dir():
        raise ValueError(f"-o {out}: an output file name needs exactly one input file ({len(files)} given, or a "
                         "folder/glob); give an output folder instead")
    if out.exists() and not out.is_dir():
        raise ValueError(f"-o {out}: exists and is not a folder (a single output file needs exactly one "
                         "input file and an image extension)")
    return {f: out / f"{f.stem}{suffix}{ext or f.suffix}" for f in files}


@dataclass
class FilesReport:
    """What ``upscale_files`` did: outputs written and one message per failed input."""

    written: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def upscale_files(upscaler: Upscaler, mapping: dict[Path, Path], *, overwrite: bool = False,
                  quality: int | None = None, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> FilesReport:
    """Upscale each input file to its output path; a bad file is reported and the others go on.

    Args:
        upscaler: the Upscaler (session + tiling).
        mapping: input -> output path (``output_paths``).
        overwrite: replace existing outputs.
        quality: JPEG/WebP quality.
        progress: tqdm bars on stderr (files, and tiles of large images).
        log: where per-file errors and notes go (default: tqdm.write to stderr).

    Returns:
        A FilesReport; outputs are written atomically, never over an input.
    """
    import sys

    from tqdm import tqdm

    from .media.images import check_writable, read_image, write_image

    def say(msg: str) -> None:
        (log or (lambda m: tqdm.write(m, file=sys.stderr)))(msg)

    report = FilesReport()
    planned: set[Path] = set()
    files = list(mapping)
    bar = tqdm(files, unit="img", disable=not progress or len(files) < 2, file=sys.stderr)
    for src in bar:
        dst = mapping[src]
        bar.set_postfix_str(src.name)
        try:
            key = dst.resolve()
            if key == src.resolve():
                raise ValueError(f"{src}: output {dst} would overwrite the input; choose another -o folder, "
                                 "--suffix or --ext")
            if key in planned:
                raise ValueError(f"{src}: output {dst} is also the output of an earlier input; use --suffix "
                                 "or separate runs")
            planned.add(key)
            if dst.exists() and not overwrite:
                raise FileExistsError(f"{dst}: already exists; pass --overwrite to replace it")
            img, meta = read_image(src, order="BGR")
            check_writable(dst, dtype=img.dtype, channels=meta.channels)
            plan = upscaler.plan(img.shape[0], img.shape[1])
            tiles = tqdm(total=plan.num_tiles, unit="tile", leave=False, file=sys.stderr,
                         disable=not progress or plan.num_tiles < 4)
            try:
                def prog(done: int, total: int) -> None:
                    tiles.total = total
                    tiles.update(done - tiles.n)

                result = upscaler.upscale(img, order="BGR", progress=prog)
            finally:
                tiles.close()
            del img
            write_image(dst, result, order="BGR", overwrite=overwrite, quality=quality)
            del result
            report.written.append(dst)
            for note in plan.notes:
                say(f"srdeploy upscale: note: {src}: {note}")
        except (ValueError, OSError, MemoryError) as exc:
            msg = str(exc) if str(src) in str(exc) or str(dst) in str(exc) else f"{src}: {exc}"
            report.failures.append(msg)
            say(f"srdeploy upscale: error: {msg}")
    bar.close()
    return report
