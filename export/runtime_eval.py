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

import numpy as np

from srdeploy.runtime.settings import RunSettings


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


def evaluate_model_file(settings: RunSettings, folders, *, progress: bool = False,
                        scale: int | None = None) -> tuple[list, dict]:
    """Evaluate a model file through the runtime on HR image folders.

    Args:
        settings: the ``RunSettings``: the recipe (any model file the runtime opens, backend,
            device, precision, threads) and the tiling ``srdeploy upscale`` would use.
        folders: benchmark folders of HR images (LR by bicubic downscaling, as ``srdeploy eval``).
        progress: show a progress bar.
        scale: the scale the caller expects (``eval --scale``): checked as soon as the model is
            open, before any image is upscaled; None = the model's.

    Returns:
        ``(results, record)``: a ``SetResult`` per folder and a JSON-able description of what
        ran (model file, backend, device, precision, tiling; with tile "auto", the tiles the
        memory budget chose) for the result file.
    """
    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.upscale import Upscaler
    from srdeploy.train.evaluate import evaluate

    recipe, tiling = settings.recipe, settings.tiling
    chosen: list = []

    with open_session(recipe) as sess:
        if scale and scale != sess.info.scale:
            raise ValueError(f"eval: --scale {scale} does not match the model's scale {sess.info.scale} "
                             f"({recipe.model}); drop --scale or pass {sess.info.scale}")
        up = Upscaler(sess, tiling)

        def upscale(lr):
            sr = up.upscale(lr, order="RGB")
            tile = list(up.last_tile) if isinstance(up.last_tile, tuple) else up.last_tile
            if tile not in chosen:
                chosen.append(tile)
            return sr

        results = evaluate(upscale, folders, scale=sess.info.scale, progress=progress, read=read_rgb8)
        record = {"model": str(recipe.model), "backend": sess.backend, "device": sess.device,
                  "precision": sess.precision, "scale": sess.info.scale, "tile": tiling.tile,
                  "tile_pad": up.tile_pad, "batch": tiling.batch, "threads": recipe.threads}
        if tiling.auto:
            record.update(max_memory=up.budget, tiles_chosen=chosen)
    return results, record
