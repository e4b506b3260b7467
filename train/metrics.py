"""PSNR and SSIM on the Y channel, as the SR literature reports them.

Definitions follow MATLAB / BasicSR: images are uint8 RGB; Y is ITU-R BT.601 luma
``16 + (65.481 R + 128.553 G + 24.966 B) / 255`` computed in float (not rounded); ``crop``
pixels (usually the scale) are removed from each border; PSNR uses peak 255; SSIM uses an
11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, over the 'valid' region, averaged.
"""

from __future__ import annotations

import numpy as np


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """uint8 (or 0..255 float) RGB HxWx3 -> float64 Y in [16, 235]; 2-D input is returned as float."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 2:
        return img
    return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def _prepare(a: np.ndarray, b: np.ndarray, crop: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"metrics: image shapes differ: {a.shape} vs {b.shape}")
    a = rgb_to_y(a) if y_channel else np.asarray(a, dtype=np.float64)
    b = rgb_to_y(b) if y_channel else np.asarray(b, dtype=np.float64)
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    return a, b


def psnr(img: np.ndarray, ref: np.ndarray, *, crop: int = 0, y_channel: bool = True) -> float:
    """PSNR in dB of ``img`` against ``ref`` (uint8 range, peak 255). Identical images give inf."""
    a, b = _prepare(img, ref, crop, y_channel)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - size // 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    return g


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Separable 'valid' correlation (the window is symmetric, so correlation == convolution).
    k = len(g)
    rows = sum(g[i] * x[i: x.shape[0] - k + 1 + i, :] for i in range(k))
    return sum(g[j] * rows[:, j: rows.shape[1] - k + 1 + j] for j in range(k))


def ssim(img: np.ndarray, ref: np.ndarray, *, crop: int = 0, y_channel: bool = True) -> float:
    """SSIM (Wang et al. 2004) of ``img`` against ``ref`` in uint8 range; RGB without Y: channel mean."""
    a, b = _prepare(img, ref, crop, y_channel)
    if a.ndim == 3:
        return float(np.mean([_ssim_2d(a[..., c], b[..., c]) for c in range(a.shape[2])]))
    return _ssim_2d(a, b)


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    if min(a.shape) < 11:
        raise ValueError(f"ssim: image {a.shape} is smaller than the 11x11 window")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a ** 2
    var_b = _filter_valid(b * b, g) - mu_b ** 2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))
