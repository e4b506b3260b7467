"""``srdeploy demo``: the README's main job, a side-by-side comparison a person can look at.

Takes a ground-truth (HR) image, makes its LR input by MATLAB-style bicubic downscaling (the
benchmark protocol), upscales the LR with the model through the runtime (ONNX Runtime by default,
no PyTorch needed) and with bicubic, and writes one PNG: a row of crops of the same region,
LR input (enlarged nearest-neighbour, so its pixels show) | bicubic | model | ground truth, labelled
with the PSNRs (Y channel, border = scale cropped), and a caption saying that the PSNRs are over the
whole image while the crops are a part of it, enlarged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srdeploy.runtime.cli import add_session_args

DEFAULT_IMAGE = ("benchmark", "Set14", "comic.png")
LABEL_HEIGHT = 28  # white bar above each panel holding its label
PANEL_GAP = 6      # white pixels between panels
CAPTION_LINE = 18  # caption line height


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="upscale a benchmark image with the bundled model; write LR | bicubic | model | truth",
        description="Downscale a ground-truth image 4x (bicubic, as the benchmarks do), upscale it back with "
                    "the model and with bicubic, and write a side-by-side comparison PNG with PSNRs.")
    p.add_argument("-i", "--image", help="ground-truth image (default: Set14/comic.png under the data folder, "
                                         "$SRDEPLOY_DATA or ../shared/data)")
    p.add_argument("-o", "--output", default="demo.png", help="comparison PNG to write (default demo.png)")
    add_session_args(p, threads=False)
    p.add_argument("--crop", type=int, default=160, help="size of the crop shown, in HR pixels (default 160)")
    p.add_argument("--zoom", type=int, default=2, help="enlarge the crops by this factor, nearest neighbour")
    p.add_argument("--save-sr", metavar="FILE", help="also write the whole model output image")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run_demo)


def _busiest_window(img, size: int):
    """Top-left of the size x size window with the most detail (gradient energy), for a telling crop."""
    import numpy as np

    gray = img.astype(np.float64).mean(axis=2)
    energy = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
    integral = np.pad(energy, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    h, w = energy.shape
    size = min(size, h, w)
    sums = (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size])
    y, x = np.unravel_index(np.argmax(sums), sums.shape)
    return int(y), int(x), size


def _label(panel, text: str):
    import cv2
    import numpy as np

    bar = np.full((LABEL_HEIGHT, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, panel], axis=0)


def caption_text(*, scale: int, size: int, x: int, y: int, zoom: int) -> str:
    """What the picture says under the crops: where the PSNRs come from and what the crops are."""
    enlarged = f"enlarged {zoom}x (nearest neighbour)" if zoom > 1 else "not enlarged"
    return (f"PSNR: Y channel over the whole image (border {scale} px cropped), not over the crop. "
            f"Crops: {size}x{size} HR pixels at x={x}, y={y}, {enlarged}; "
            f"LR input shown nearest-neighbour enlarged {scale}x to the HR size.")


def _caption(text: str, width: int):
    """A white strip holding ``text``, wrapped to ``width`` pixels."""
    import cv2
    import numpy as np

    font, fscale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(trial, font, fscale, 1)[0][0] <= width - 12:
            lines[-1] = trial
        else:
            lines.append(word)
    strip = np.full((CAPTION_LINE * len(lines) + 8, width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(strip, line, (6, CAPTION_LINE * (i + 1)), font, fscale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def compose(lr, bicubic, sr, hr, *, scale: int, crop: int, zoom: int, labels: list[str]):
    """The comparison sheet and its crop (x, y, size in HR pixels).

    Panels, left to right: LR input (nearest-neighbour enlarged ``scale`` x), bicubic, model, ground
    truth; all show the same region, the busiest ``crop`` x ``crop`` window (aligned to ``scale`` so
    the LR crop covers exactly the same area), enlarged ``zoom`` x nearest-neighbour. Below them, the
    caption (``caption_text``).
    """
    import numpy as np

    y, x, size = _busiest_window(hr, crop)
    # Align to the LR grid (hr is a multiple of scale: mod_crop) so the LR panel shows exactly
    # this region; rounding down keeps the window inside the image.
    size = max(scale, size - size % scale)
    y, x = y - y % scale, x - x % scale
    lr_crop = lr[y // scale: (y + size) // scale, x // scale: (x + size) // scale]
    crops = [np.repeat(np.repeat(lr_crop, scale, axis=0), scale, axis=1)]
    crops += [im[y: y + size, x: x + size] for im in (bicubic, sr, hr)]
    if zoom > 1:
        crops = [np.repeat(np.repeat(c, zoom, axis=0), zoom, axis=1) for c in crops]
    panels = [_label(c, t) for c, t in zip(crops, labels)]
    gap = np.full((panels[0].shape[0], PANEL_GAP, 3), 255, np.uint8)
    row = [panels[0]]
    for p in panels[1:]:
        row += [gap, p]
    row = np.concatenate(row, axis=1)
    caption = _caption(caption_text(scale=scale, size=size, x=x, y=y, zoom=zoom), row.shape[1])
    return np.concatenate([row, caption], axis=0), (x, y, size)


def run_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from srdeploy.runtime.media.images import read_image, write_image
    from srdeploy.runtime.open import default_model_path, open_session
    from srdeploy.runtime.upscale import Upscaler
    from srdeploy.train.data import data_root, imresize, mod_crop
    from srdeploy.train.metrics import psnr

    image = Path(args.image) if args.image else data_root().joinpath(*DEFAULT_IMAGE)
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out}: exists; pass --overwrite to replace it")
    model = Path(args.model) if args.model else default_model_path()
    hr, _ = read_image(image)
    if hr.dtype != np.uint8:
        raise ValueError(f"{image}: demo needs an 8-bit image, got {hr.dtype}")
    if hr.ndim == 2:
        hr = np.repeat(hr[:, :, None], 3, axis=2)
    hr = np.ascontiguousarray(hr[:, :, :3])

    with open_session(model, backend=args.backend, device=args.device, precision=args.precision) as session:
        scale = session.info.scale
        hr = mod_crop(hr, scale)
        lr = imresize(hr, 1.0 / scale)
        sr = Upscaler(session).upscale(lr)
        used = f"{session.backend} {session.precision} on {session.device}"
    bicubic = imresize(lr, float(scale))
    p_bic, p_sr = psnr(bicubic, hr, crop=scale), psnr(sr, hr, crop=scale)

    labels = [f"LR input {lr.shape[1]}x{lr.shape[0]} (nearest)", f"bicubic x{scale}: {p_bic:.2f} dB",
              f"{model.stem} x{scale}: {p_sr:.2f} dB", "ground truth"]
    sheet, (x, y, size) = compose(lr, bicubic, sr, hr, scale=scale, crop=args.crop, zoom=args.zoom, labels=labels)
    write_image(out, sheet, overwrite=args.overwrite)
    if args.save_sr:
        write_image(args.save_sr, sr, overwrite=args.overwrite)
    print(f"{image.name}: {hr.shape[1]}x{hr.shape[0]} ground truth, LR {lr.shape[1]}x{lr.shape[0]} "
          f"(bicubic downscale x{scale})")
    print(f"model {model} ({used})")
    print(f"PSNR (Y, crop {scale}): bicubic {p_bic:.2f} dB, model {p_sr:.2f} dB ({p_sr - p_bic:+.2f} dB)")
    print(f"wrote {out} (crop at x={x}, y={y}, {size}x{size} HR pixels: LR | bicubic | model | ground truth)",
          file=sys.stdout)
    print(caption_text(scale=scale, size=size, x=x, y=y, zoom=args.zoom))
    return 0
