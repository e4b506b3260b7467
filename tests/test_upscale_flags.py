"""Every `srdeploy upscale` flag changes the output the way docs/runtime.md says.

The model is a range-covering one (tests/_models.py): outputs spread over [0, 1], so one 8-bit
level is a small fraction of a typical value and a flag that is ignored shows as a large change.
Each flag is checked two ways: the CLI output equals the library's output with that setting
(lossless PNG), and the setting makes the documented difference (seams, blending, alpha source).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from _models import export_spread_model
from srdeploy.cli import main
from srdeploy.runtime.media.images import read_image
from srdeploy.runtime.open import open_session
from srdeploy.runtime.tiling import tiled_infer
from srdeploy.runtime.upscale import Upscaler

SCALE, TILE = 2, 16


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return export_spread_model(tmp_path_factory.mktemp("flags") / "spread_x2.onnx", scale=SCALE)


@pytest.fixture(scope="module")
def session(model):
    with open_session(model, threads=1) as s:
        yield s


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """A textured RGB image (40x44, 3x3 tiles at tile 16) and an RGBA one with a varying alpha."""
    d = tmp_path_factory.mktemp("flag-inputs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:44]
    rgb = np.stack([(xx * 6) % 256, (yy * 5) % 256, 128 + 100 * np.sin((xx + yy) / 3)], axis=-1)
    rgb = np.clip(rgb + rng.normal(0, 20, rgb.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(d / "rgb.png"), rgb)
    alpha = np.clip(xx * 6 + rng.normal(0, 30, xx.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(d / "rgba.png"), np.dstack([rgb, alpha]))
    return {"rgb": d / "rgb.png", "rgba": d / "rgba.png"}


def upscale(model, src: Path, out: Path, *flags) -> np.ndarray | None:
    """Run the CLI on one file; the output image when ``out`` is a file name."""
    rc = main(["upscale", "-q", "-i", str(src), "-o", str(out), "--model", str(model), *map(str, flags)])
    assert rc == 0
    return None if out.is_dir() else read_image(out)[0]


def lib(session, src: Path, **kw) -> np.ndarray:
    """What the library gives for the same file and settings."""
    return Upscaler(session, **kw).upscale(read_image(src)[0])


def diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int32) - b.astype(np.int32))


def test_model_output_covers_the_range(session, images):
    out = lib(session, images["rgb"], tile=0)
    assert 80 < out.mean() < 175 and out.std() > 40
    assert (out == 0).mean() < 0.01 and (out == 255).mean() < 0.01


def test_tile_pad_flag(model, session, images, tmp_path, capsys):
    src = images["rgb"]
    r = session.info.receptive_radius
    whole = upscale(model, src, tmp_path / "whole.png", "--tile", 0)
    exact = upscale(model, src, tmp_path / "exact.png", "--tile", TILE, "--tile-pad", r)
    bare = upscale(model, src, tmp_path / "bare.png", "--tile", TILE, "--tile-pad", 0)
    three = upscale(model, src, tmp_path / "three.png", "--tile", TILE, "--tile-pad", 3)
    # docs/runtime.md: a margin >= the radius is the whole-image result (float32 rounding may flip a level)
    assert diff(exact, whole).max() <= 1 and (exact != whole).mean() < 1e-3
    # no margin: seams, far more than rounding
    assert diff(bare, whole).max() >= 30 and diff(bare, whole).mean() > 1
    # the value itself is used, not just zero / non-zero
    assert diff(bare, whole).mean() > diff(three, whole).mean() > diff(exact, whole).mean()
    for out, pad in ((bare, 0), (three, 3), (exact, r)):
        np.testing.assert_array_equal(out, lib(session, src, tile=TILE, tile_pad=pad))
    # and the library passes it to the tiler: float in, float out, no quantisation in between
    x = read_image(src)[0].astype(np.float32) / 255
    got = Upscaler(session, tile=TILE, tile_pad=3).upscale(x)
    want = tiled_infer(session, np.ascontiguousarray(x.transpose(2, 0, 1)), tile=TILE, tile_pad=3).transpose(1, 2, 0)
    assert np.abs(got - want).max() <= 1e-6


def test_feather_flag(model, session, images, tmp_path, capsys):
    src = images["rgb"]
    r = session.info.receptive_radius
    whole = upscale(model, src, tmp_path / "whole.png", "--tile", 0)
    hard = upscale(model, src, tmp_path / "hard.png", "--tile", TILE, "--tile-pad", 4)
    soft = upscale(model, src, tmp_path / "soft.png", "--tile", TILE, "--tile-pad", 4, "--feather", 3)
    # Blending replaces the hard crop only within 3 LR pixels of each seam between tile cores
    # (cores of 40 x 44 at tile 16: rows 0|13|26|40, columns 0|14|29|44); elsewhere nothing moves.
    near = np.zeros(soft.shape[:2], bool)
    for b in (13, 26):
        near[(b - 3) * SCALE:(b + 3) * SCALE] = True
    for b in (14, 29):
        near[:, (b - 3) * SCALE:(b + 3) * SCALE] = True
    assert diff(soft, hard)[near].max() >= 10
    np.testing.assert_array_equal(soft[~near], hard[~near])
    np.testing.assert_array_equal(soft, lib(session, src, tile=TILE, tile_pad=4, feather=3))
    x = read_image(src)[0].astype(np.float32) / 255
    got = Upscaler(session, tile=TILE, tile_pad=4, feather=3).upscale(x)
    want = tiled_infer(session, np.ascontiguousarray(x.transpose(2, 0, 1)), tile=TILE, tile_pad=4,
                       feather=3).transpose(1, 2, 0)
    assert np.abs(got - want).max() <= 1e-6
    # with a full margin the blend is of equal values: the whole-image result
    full = upscale(model, src, tmp_path / "full.png", "--tile", TILE, "--tile-pad", r, "--feather", 3)
    assert diff(full, whole).max() <= 1 and (full != whole).mean() < 0.01
    # --feather above --tile-pad is refused with a message, nothing written
    rc = main(["upscale", "-q", "-i", str(src), "-o", str(tmp_path / "bad.png"), "--model", str(model),
               "--tile", str(TILE), "--tile-pad", "2", "--feather", "3"])
    assert rc == 1 and "feather" in capsys.readouterr().err and not (tmp_path / "bad.png").exists()


def test_alpha_flag(model, session, images, tmp_path):
    src = images["rgba"]
    rgba = read_image(src)[0]
    h, w = rgba.shape[:2]
    by_model = upscale(model, src, tmp_path / "model.png")  # default: --alpha model
    by_resize = upscale(model, src, tmp_path / "resize.png", "--alpha", "resize")
    assert by_model.shape == by_resize.shape == (h * SCALE, w * SCALE, 4)
    np.testing.assert_array_equal(by_model[..., :3], by_resize[..., :3])  # colour does not depend on it
    # resize: bicubic of the input alpha, exactly
    np.testing.assert_array_equal(by_resize[..., 3], cv2.resize(rgba[..., 3], (w * SCALE, h * SCALE),
                                                                interpolation=cv2.INTER_CUBIC))
    # model: the model's output for alpha as a gray image (mean of its three output channels)
    a = np.repeat(rgba[..., 3:].astype(np.float32) / 255, 3, axis=2)
    with_model = tiled_infer(session, np.ascontiguousarray(a.transpose(2, 0, 1)), tile=0).mean(axis=0)
    assert diff(by_model[..., 3], np.clip(np.rint(with_model * 255), 0, 255)).max() <= 1
    assert diff(by_model[..., 3], by_resize[..., 3]).mean() > 10  # the two modes really differ here


def test_batch_flag_same_output(model, session, images, tmp_path, capsys):
    src = images["rgb"]
    one = upscale(model, src, tmp_path / "b1.png", "--tile", TILE)
    capsys.readouterr()
    three = upscale(model, src, tmp_path / "b3.png", "--tile", TILE, "--batch", 3)
    assert "batch 3" in capsys.readouterr().err
    # batched convolutions may round differently: one level at most, on very few pixels
    assert diff(one, three).max() <= 1 and (one != three).mean() < 1e-3


def test_ext_suffix_quality_flags(model, session, images, tmp_path):
    src = images["rgb"]
    want = np.ascontiguousarray(lib(session, src)[..., ::-1])  # library output (RGB) as OpenCV writes it (BGR)
    out = tmp_path / "o"
    for q in (None, 95, 30):
        flags = ["--ext", "jpg", "--suffix", f"_q{q}"] + ([] if q is None else ["--quality", q])
        upscale(model, src, out, *flags)
    files = {q: out / f"rgb_q{q}.jpg" for q in (None, 95, 30)}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files.values())
    assert all(f.read_bytes()[:3] == b"\xff\xd8\xff" for f in files.values())  # really JPEG
    assert files[None].read_bytes() == files[95].read_bytes()                   # default quality 95
    assert files[30].stat().st_size < 0.7 * files[95].stat().st_size
    # compared in luma: JPEG's 4:2:0 chroma subsampling cannot keep this model's pixel-level colour
    luma = lambda img: cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)  # noqa: E731
    err = {q: diff(luma(cv2.imread(str(files[q]))), luma(want)).mean() for q in (95, 30)}
    assert err[95] < 4 and err[30] > 3 * err[95]
    # --ext png: lossless, the library's pixels exactly; WebP by extension
    upscale(model, src, out, "--ext", "png")
    assert (out / "rgb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(cv2.imread(str(out / "rgb.png")), want)
    upscale(model, src, out, "--ext", "webp", "--suffix", "_w")
    data = (out / "rgb_w.webp").read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def test_uint8_output_is_rounded_not_truncated(session, images):
    """uint8 output = the float output x 255, rounded: at most half a level off, no bias."""
    img = read_image(images["rgb"])[0]
    out = Upscaler(session, tile=0).upscale(img).astype(np.float64)
    ref = Upscaler(session, tile=0).upscale(img.astype(np.float32) / 255).astype(np.float64) * 255
    inside = (ref > 0.5) & (ref < 254.5)
    assert inside.mean() > 0.95
    signed = out[inside] - ref[inside]
    assert np.abs(signed).max() <= 0.5 + 1e-3 and abs(signed.mean()) < 0.05  # truncation: mean -0.5
