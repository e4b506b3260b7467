"""Calibration inputs, one source for every precision step that needs them.

The FP16 safety analysis (``fp16``, used by ``export --fp16`` and ``build-engine --fp16``) and
INT8 calibration (``quantize``) read their images here, so all of them see the same pixels the
same way: ``calibration_inputs`` (whole images, for activation maxima) and ``calibration_crops``
(fixed-size LR crops of training images, for INT8 ranges).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def as_model_input(chw: np.ndarray, channels: int) -> np.ndarray:
    """float32 3 x H x W RGB -> the model's channels: itself, or BT.601 luma (1 x H x W) for a gray model."""
    if channels == 3:
        return chw
    return (chw[0] * np.float32(0.299) + chw[1] * np.float32(0.587) + chw[2] * np.float32(0.114))[None]


def calibration_inputs(folder: str | Path | None, *, scale: int, max_side: int = 256, limit: int = 16,
                       channels: int = 3, multiple: int = 1) -> tuple[list[np.ndarray], list[str]]:
    """Calibration inputs (float32 1xCxHxW in [0, 1]) and their names.

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
        channels: the model's input channels (1: gray, BT.601 luma of the RGB image).
        multiple: crop each input's sides down to a multiple of this (the model's size multiple).
    """
    from srdeploy.train.data import data_root, degrade, list_images, load_rgb, mod_crop, to_chw_float

    if folder is None:
        folder = data_root() / "benchmark" / "Set5"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: default calibration images (Set5) not found; pass a folder "
                                    "of typical input images with --calib DIR (or set SRDEPLOY_DATA)")
        make_lr = True
    else:
        make_lr = False
    inputs, names = [], []
    for path in list_images(folder)[:limit]:
        img = load_rgb(path)
        if make_lr:
            img = degrade(mod_crop(img, scale), scale)
        arr = as_model_input(to_chw_float(img), channels)
        h, w = arr.shape[1:]
        for y in range(0, h, max_side):
            for x in range(0, w, max_side):
                piece = arr[:, y:y + max_side, x:x + max_side]
                ph, pw = piece.shape[1] // multiple * multiple, piece.shape[2] // multiple * multiple
                if ph < 1 or pw < 1:
                    continue
                inputs.append(piece[None, :, :ph, :pw].copy())
                names.append(f"{path.name}@{y},{x}" if (h > max_side or w > max_side) else path.name)
    return inputs, names


def calibration_crops(folders, *, scale: int, count: int, crop: int, seed: int = 0,
                      channels: int = 3) -> tuple[list[np.ndarray], list[str]]:
    """``count`` LR crops (float32 1xCxSxS in [0, 1], S = ``crop``; C = ``channels``, gray: BT.601 luma)
    of training-style HR images, and their names.

    The HR crop (``crop * scale``) is taken first and then downscaled, exactly as
    ``SRTrainDataset`` makes training pairs, so calibration sees the distribution the model
    was trained on. Images smaller than the HR crop are skipped; no image at all is an error.
    """
    from srdeploy.train.data import IMAGE_EXTENSIONS, SRTrainDataset

    folders = [Path(f) for f in folders]
    for f in folders:
        if not f.is_dir():
            raise ValueError(f"{f}: calibration folder does not exist")
        if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in f.iterdir()):
            raise ValueError(f"{f}: calibration folder holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)}); pass a folder of training-style images")
    if count < 1 or crop < 8:
        raise ValueError(f"calibration needs at least 1 image and a crop of at least 8 px (got {count}, {crop})")
    try:
        data = SRTrainDataset([str(f) for f in folders], crop=crop * scale, scale=scale, augment=False, seed=seed)
    except ValueError as exc:
        raise ValueError(f"{', '.join(map(str, folders))}: {exc}; lower --crop or add larger images") from exc
    crops, names = [], []
    for i in range(count):
        lr, _ = data[i]
        k, top, left, _ = data.crop_params(i)
        crops.append(as_model_input(lr, channels)[None])
        names.append(f"{k}@{top},{left}")
    return crops, names
