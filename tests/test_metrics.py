"""PSNR/SSIM against hand-computed values and scikit-image, and the bicubic baseline."""

from __future__ import annotations

import numpy as np
import pytest

from srdeploy.train.data import degrade, load_rgb, mod_crop
from srdeploy.train.metrics import psnr, rgb_to_y, ssim


def test_rgb_to_y_bt601():
    assert rgb_to_y(np.array([[[0, 0, 0]]]))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.array([[[255, 255, 255]]]))[0, 0] == pytest.approx(235.0)
    assert rgb_to_y(np.array([[[255, 0, 0]]]))[0, 0] == pytest.approx(16 + 65.481)


def test_psnr_hand_computed():
    a = np.zeros((10, 10), np.uint8)
    b = a.copy()
    b[0, 0] = 10  # MSE = 100 / 100 = 1 -> PSNR = 10 log10(255^2)
    assert psnr(b, a, y_channel=False) == pytest.approx(20 * np.log10(255.0))
    assert psnr(a, a, y_channel=False) == float("inf")
    # The border crop removes the only difference.
    assert psnr(b, a, crop=1, y_channel=False) == float("inf")
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, b[:5])


def test_psnr_on_y_channel():
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[..., 1] += 10  # Y differs by 128.553 * 10 / 255 everywhere
    expected = 10 * np.log10(255**2 / (128.553 * 10 / 255) ** 2)
    assert psnr(b, a) == pytest.approx(expected)


def test_ssim_identity_and_matches_scikit_image(set5):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    hr = mod_crop(load_rgb(set5 / "bird.png"), 4)
    noisy = np.clip(hr.astype(int) + np.random.default_rng(0).integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    assert ssim(hr, hr) == pytest.approx(1.0)
    ya, yb = rgb_to_y(noisy), rgb_to_y(hr)
    ref = skimage_metrics.structural_similarity(
        ya, yb, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    # Same definition; scikit-image averages over the image minus a 5-pixel border after
    # reflect-padded filtering, which equals our 'valid' region.
    assert ssim(noisy, hr) == pytest.approx(ref, abs=1e-6)
    assert psnr(noisy, hr) == pytest.approx(skimage_metrics.peak_signal_noise_ratio(yb, ya, data_range=255), abs=1e-9)


def test_bicubic_baseline_matches_independent_reference(set5, set14):
    from srdeploy.train.evaluate import bicubic_upscale, evaluate

    s5, s14 = evaluate(lambda lr: bicubic_upscale(lr, 4), [set5, set14], scale=4)
    # Independent antialiased bicubic on these files: 28.43 / 26.09 dB (literature: 28.42 / 26.00);
    # docs/train.md states Set5 28.43 dB / 0.8113 and Set14 26.09 dB / 0.7050.
    assert (s5.images, s14.images) == (5, 14)
    assert (round(s5.psnr, 2), round(s5.ssim, 4)) == (28.43, 0.8113)
    assert (round(s14.psnr, 2), round(s14.ssim, 4)) == (26.09, 0.7050)
    hr = mod_crop(load_rgb(set5 / "baby.png"), 4)
    assert degrade(hr, 4).shape == (128, 128, 3)
