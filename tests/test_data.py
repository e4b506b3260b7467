"""MATLAB-style bicubic resize, dataset crops and evaluation sets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from srdeploy.train.data import (EvalSet, SRTrainDataset, augment, degrade, imresize, list_images,
                                 load_rgb, mod_crop)


def test_resize_weights_match_matlab_known_case():
    # MATLAB: imresize([1:8]', 0.5, 'bicubic') on doubles gives these values (antialiased kernel,
    # symmetric padding); computed independently from the kernel definition:
    # out(i) = sum_k 0.5 * cubic(0.5 * (u_i - k)) * x_k with u = 2i - 0.5 and mirrored x.
    x = np.arange(1, 9, dtype=np.float64)[:, None]
    y = imresize(x, size=(4, 1))[:, 0]

    def cubic(t):
        t = abs(t)
        return (1.5 * t**3 - 2.5 * t**2 + 1) if t <= 1 else (-0.5 * t**3 + 2.5 * t**2 - 4 * t + 2) if t <= 2 else 0.0

    mirror = lambda k: (k if 1 <= k <= 8 else (1 - k if k < 1 else 17 - k))  # noqa: E731
    expected = []
    for i in range(1, 5):
        u = 2 * i - 0.5
        ks = range(int(np.floor(u - 4)), int(np.floor(u - 4)) + 10)  # ceil(width) + 2 taps
        w = np.array([0.5 * cubic(0.5 * (u - k)) for k in ks])
        expected.append(np.dot(w / w.sum(), [mirror(k) for k in ks]))
    np.testing.assert_allclose(y, expected, atol=1e-12)
    # Away from the mirrored borders a linear ramp is reproduced exactly (the cubic kernel is
    # exact on linear functions): pixel i of the half-size ramp is the mean of HR pixels 2i-1, 2i.
    ramp = imresize(np.arange(1, 33, dtype=np.float64)[:, None], size=(16, 1))[:, 0]
    np.testing.assert_allclose(ramp[3:-3], np.arange(4, 14) * 2 - 0.5, atol=1e-12)


def test_resize_matches_pillow_antialiased_bicubic_in_the_interior(set5):
    # Pillow's BICUBIC uses the same a = -0.5 kernel, widened when downscaling; it differs from
    # MATLAB only at the borders (clamped kernel vs mirror padding) and by 8-bit rounding inside.
    hr = mod_crop(load_rgb(set5 / "butterfly.png"), 4)
    ours = imresize(hr.astype(np.float64), 0.25)
    pil = np.stack([np.asarray(Image.fromarray(hr[..., c]).convert("F").resize(
        (hr.shape[1] // 4, hr.shape[0] // 4), Image.BICUBIC), dtype=np.float64) for c in range(3)], axis=2)
    diff = np.abs(ours - pil)[3:-3, 3:-3]
    assert diff.max() < 1e-3, diff.max()


def test_resize_uint8_rounds_and_keeps_constants():
    img = np.full((12, 20, 3), 77, np.uint8)
    out = imresize(img, 0.25)
    assert out.dtype == np.uint8 and out.shape == (3, 5, 3)
    assert (out == 77).all()
    up = imresize(out, 4.0)
    assert up.shape == (12, 20, 3) and (up == 77).all()


def test_mod_crop_and_degrade_sizes():
    img = np.zeros((13, 18, 3), np.uint8)
    assert mod_crop(img, 4).shape == (12, 16, 3)
    assert degrade(mod_crop(img, 4), 4).shape == (3, 4, 3)
    with pytest.raises(ValueError, match="not a multiple"):
        degrade(img, 4)


def test_augment_covers_the_eight_dihedral_transforms():
    img = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    outs = {augment(img, code).tobytes() + bytes(augment(img, code).shape) for code in range(8)}
    assert len(outs) == 8


def test_train_dataset_crops_correspond(set5):
    ds = SRTrainDataset([set5], crop=48, scale=4, seed=3)
    lr, hr = ds[5]
    assert lr.shape == (3, 12, 12) and hr.shape == (3, 48, 48)
    assert lr.dtype == np.float32 and 0 <= lr.min() and hr.max() <= 1
    # LR is the bicubic downscale of the HR crop.
    hr_u8 = ds.crop_hr(5)
    np.testing.assert_array_equal(np.round(lr * 255).astype(np.uint8).transpose(1, 2, 0), degrade(hr_u8, 4))
    np.testing.assert_array_equal(np.round(hr * 255).astype(np.uint8).transpose(1, 2, 0), hr_u8)
    # Items are a pure function of (seed, index): resume needs no RNG state.
    np.testing.assert_array_equal(SRTrainDataset([set5], crop=48, scale=4, seed=3)[5][1], hr)
    assert not np.array_equal(ds[6][1], hr)


def test_train_dataset_rejects_bad_crop(set5):
    with pytest.raises(ValueError, match="multiple of scale"):
        SRTrainDataset([set5], crop=50, scale=4)


def test_eval_set_crops_to_scale_multiple(set14):
    sizes = {name: (lr.shape, hr.shape) for name, lr, hr in EvalSet(set14, scale=4)}
    assert len(sizes) == 14
    for lr_shape, hr_shape in sizes.values():
        assert hr_shape[0] % 4 == 0 and hr_shape[1] % 4 == 0 and hr_shape[2] == 3
        assert lr_shape == (hr_shape[0] // 4, hr_shape[1] // 4, 3)


def test_loading_gray_rgba_and_16bit(tmp_path):
    gray = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    g16 = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "w.png")
    g = load_rgb(tmp_path / "g.png")
    assert g.shape == (8, 8, 3) and (g[..., 0] == gray).all() and (g[..., 2] == gray).all()
    assert load_rgb(tmp_path / "a.png")[0, 0].tolist() == [200, 0, 0]
    w = load_rgb(tmp_path / "w.png")
    assert w.dtype == np.uint8 and w[7, 7, 0] == (63000 >> 8)
    assert len(list_images(tmp_path)) == 3


def test_bad_files_and_folders_give_clear_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png: cannot read image"):
        load_rgb(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        list_images(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images(empty)
