"""Calibration inputs, one source for every precision step that needs them.

The FP16 safety analysis (``fp16``, used by ``export --fp16`` and ``build-engine --fp16``) and
INT8 calibration read their images here, so all of them see the same pixels the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def calibration_inputs(folder: str | Path | None, *, scale: int, max_side: int = 256,
                       limit: int = 16) -> tuple[list[np.ndarray], list[str]]:
    """Calibration inputs (float32 1x3xHxW in [0, 1]) and their names.

    With ``folder=None`` the default is Set5 under ``data_root()``, whose files are HR images, so
    each is made into its LR by ``mod_crop`` + ``degrade`` (the evaluation protocol). Images in a
    user folder are taken as they are: they stand for what the deployed model will be fed.
    Images larger than ``max_side`` are cut into non-overlapping tiles of at most that size so
    every pixel is seen while CPU time stays bounded.

    Args:
        folder: a folder of images, or None for Set5 LR.
        scale: the model's scale (for the Set5 default).
        max_side: largest tile side fed to the model.
        limit: at most this many images (sorted by name).
    """
    from srdeploy.train.data import data_root, degrade, list_images, load_rgb, mod_crop, to_chw_float

    if folder is None:
        folder = data_root() / "benchmark" / "Set5"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: default FP16 calibration images (Set5) not found; pass a folder "
                                    "of typical input images with --calib DIR (or set SRDEPLOY_DATA)")
        make_lr = True
    else:
        make_lr = False
    inputs, names = [], []
    for path in list_images(folder)[:limit]:
        img = load_rgb(path)
        if make_lr:
            img = degrade(mod_crop(img, scale), scale)
        arr = to_chw_float(img)
        h, w = arr.shape[1:]
        for y in range(0, h, max_side):
            for x in range(0, w, max_side):
                inputs.append(arr[None, :, y:y + max_side, x:x + max_side].copy())
                names.append(f"{path.name}@{y},{x}" if (h > max_side or w > max_side) else path.name)
    return inputs, names
