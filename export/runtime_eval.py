"""Evaluation of a deployed model file through the runtime, on the paper's protocol.

``srdeploy eval`` measures checkpoints with the training code (``train.evaluate``). A deployed
model (FP32/FP16/INT8 ONNX on any backend, a TensorRT engine, OpenVINO IR) is measured here:
the same folders, LR made by the same MATLAB-style bicubic, the same Y-PSNR/SSIM with border
crop = scale, but the SR image comes from ``runtime.upscale.Upscaler`` on an open ``Session``:
the code path (tiling, uint8 rounding) that ``srdeploy upscale`` runs. This module lives in
export because it needs both the runtime and train, and train must not import anything of ours.

It imports neither torch nor Pillow (nor does anything it imports): evaluating a deployed model
is an edge-box job, done on the runtime-only install. The images are read by the runtime's
reader (OpenCV, ``read_rgb8``), which gives the pixels Pillow gives (``train.data.load_rgb``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class RuntimeEvalConfig:
    """How a model file is opened and tiled for evaluation.

    Attributes:
        backend: runtime backend name or alias ("auto" = from the file).
        device: runtime device (None = the backend's default).
        precision: requested precision (None = what the file computes).
        threads: CPU threads (None = the backend's default).
        tile: tile core size in LR pixels (0 = whole image), as ``srdeploy upscale --tile``.
        tile_pad: tile margin (None = the upscale default for the model's receptive radius).
        batch: tiles per inference call.
    """

    backend: str = "auto"
    device: str | None = None
    precision: str | None = None
    threads: int | None = None
    tile: int = 256
    tile_pad: int | None = None
    batch: int = 1


def read_rgb8(path: str | os.PathLike) -> np.ndarray:
    """An image as uint8 RGB HxWx3, read by the runtime (OpenCV), converted as ``train.data.load_rgb`` does.

    Gray is repeated into R, G and B; alpha is dropped (not composited); 16-bit samples keep
    their top 8 bits. Unlike Pillow, the runtime's reader applies a JPEG's EXIF orientation.

    Args:
        path: the image file.

    Raises:
        ValueError: naming the file, when it cannot be read (or holds float samples).
    """
    from srdeploy.runtime.media.images import read_image

    img, _ = read_image(path, order="RGB")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"{path}: {img.dtype} samples; eval reads 8- and 16-bit images")
    if img.ndim == 2:
        img = img[:, :, None]
    elif img.shape[2] in (2, 4):
        img = img[:, :, :-1]  # gray + alpha -> gray, RGBA -> RGB
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def evaluate_model_file(path: str | os.PathLike, folders, cfg: RuntimeEvalConfig = RuntimeEvalConfig(), *,
                        progress: bool = False) -> tuple[list, dict]:
    """Evaluate a model file through the runtime on HR image folders.

    Args:
        path: any model file the runtime opens (``open_session``).
        folders: benchmark folders of HR images (LR by bicubic downscaling, as ``srdeploy eval``).
        cfg: backend, device, precision, threads and tiling.
        progress: show a progress bar.

    Returns:
        ``(results, record)``: a ``SetResult`` per folder and a JSON-able description of what
        ran (model file, backend, device, precision, tiling) for the result file.
    """
    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.upscale import Upscaler
    from srdeploy.train.evaluate import evaluate

    path = Path(path)
    with open_session(path, backend=cfg.backend, device=cfg.device, precision=cfg.precision,
                      threads=cfg.threads) as sess:
        up = Upscaler(sess, tile=cfg.tile, tile_pad=cfg.tile_pad, batch=cfg.batch)
        results = evaluate(lambda lr: up.upscale(lr, order="RGB"), folders, scale=sess.info.scale,
                           progress=progress, read=read_rgb8)
        record = {"model": str(path), "backend": sess.backend, "device": sess.device,
                  "precision": sess.precision, "scale": sess.info.scale, "tile": cfg.tile,
                  "tile_pad": up.tile_pad, "batch": cfg.batch, "threads": cfg.threads}
    return results, record
