"""Evaluation by PSNR / SSIM (Y channel, border crop = scale) on benchmark folders."""

from __future__ import annotations

import os
from dataclasses import dataclass, asdict

import numpy as np

from .data import EvalSet, imresize, load_rgb, to_chw_float, to_hwc_uint8
from .metrics import psnr, ssim
from .progress import progress_bar


@dataclass
class SetResult:
    """Mean metrics of one image folder."""

    name: str
    psnr: float
    ssim: float
    images: int
    per_image: dict

    def as_dict(self) -> dict:
        return asdict(self)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: MATLAB-style bicubic upscaling of a uint8 image."""
    return imresize(lr, float(scale))


def model_upscale(model, lr: np.ndarray, device="cpu") -> np.ndarray:
    """Run a generator on one uint8 RGB image; returns the uint8 result (rounded, as saved)."""
    import torch

    x = torch.from_numpy(to_chw_float(lr))[None].to(device)
    gray = getattr(model, "in_channels", 3) == 1
    if gray:  # a gray model runs each channel as its own gray image
        x = x.transpose(0, 1)
    with torch.inference_mode():
        y = model(x).float().clamp(0, 1)
    if gray:
        y = y.transpose(0, 1)
    return to_hwc_uint8(y[0].cpu().numpy())


def evaluate(upscale, folders, *, scale: int = 4, progress: bool = False, read=load_rgb) -> list[SetResult]:
    """Evaluate an upscaling function on image folders.

    Args:
        upscale: function ``uint8 LR HxWx3 -> uint8 SR HxWx3`` (size scale*H x scale*W).
        folders: benchmark folders of HR images; LR is made by bicubic downscaling.
        scale: upscaling factor; also the border crop of the metrics.
        progress: show a progress bar.
        read: image reader ``path -> uint8 RGB HxWx3`` (default ``data.load_rgb``: Pillow).
    """
    results = []
    sets = [EvalSet(folder, scale=scale, read=read) for folder in ([folders] if isinstance(folders, (str, os.PathLike)) else folders)]
    bar = progress_bar(total=sum(len(s) for s in sets), desc="eval", unit="img", leave=False, enabled=progress)
    try:  # close the bar before an error message is printed under it
        for eval_set in sets:
            bar.set_description(f"eval {eval_set.name}")
            per_image = {}
            for name, lr, hr in eval_set:
                sr = upscale(lr)
                if sr.shape != hr.shape:
                    raise ValueError(f"evaluate: {eval_set.folder}/{name}: output {sr.shape} != ground truth {hr.shape}")
                per_image[name] = {"psnr": psnr(sr, hr, crop=scale), "ssim": ssim(sr, hr, crop=scale)}
                bar.update(1)
            results.append(SetResult(
                name=eval_set.name,
                psnr=float(np.mean([v["psnr"] for v in per_image.values()])),
                ssim=float(np.mean([v["ssim"] for v in per_image.values()])),
                images=len(per_image),
                per_image=per_image,
            ))
    finally:
        bar.close()
    return results


def validate(model, folders, scale: int, device) -> dict:
    """PSNR/SSIM per validation folder during training: {"<set>_psnr": .., "<set>_ssim": ..}.

    Args:
        model: the generator (a torch module; in eval mode for the call, then restored).
        folders: validation folders of HR images.
        scale: the model's scale (also the metrics' border crop).
        device: the torch device the model is on.
    """
    was_training = model.training
    model.eval()
    try:
        results = evaluate(lambda lr: model_upscale(model, lr, device), folders, scale=scale)
    finally:
        model.train(was_training)
    out = {}
    for r in results:
        out[f"{r.name}_psnr"] = round(r.psnr, 4)
        out[f"{r.name}_ssim"] = round(r.ssim, 5)
    return out


def format_table(results: list[SetResult], title: str = "") -> str:
    """A plain-text table: set, PSNR, SSIM, images."""
    lines = [title] if title else []
    lines.append(f"{'set':<16}{'PSNR (dB)':>10}{'SSIM':>9}{'images':>8}")
    for r in results:
        lines.append(f"{r.name:<16}{r.psnr:>10.2f}{r.ssim:>9.4f}{r.images:>8d}")
    return "\n".join(lines)
