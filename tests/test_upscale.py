"""Upscaler (dtypes, channels, alpha) and `srdeploy upscale` (batches, bad inputs, safety), plus
the proof that the runtime runs without PyTorch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from srdeploy.cli import main
from srdeploy.runtime.media.images import read_image
from srdeploy.runtime.open import open_session
from srdeploy.runtime.upscale import Upscaler

SCALE = 2


@pytest.fixture(scope="module")
def model(tiny_srresnet_x2) -> Path:
    return tiny_srresnet_x2


@pytest.fixture(scope="module")
def session(model):
    with open_session(model, threads=1) as s:
        yield s


def _rng(seed=0):
    return np.random.default_rng(seed)


def _reference(session, rgb01: np.ndarray) -> np.ndarray:
    """Whole-image model output, H x W x 3 float in [0, 1]."""
    return session.infer(np.ascontiguousarray(rgb01.transpose(2, 0, 1)[None], np.float32))[0].transpose(1, 2, 0)


def test_rgb_uint8_matches_whole_image_model(session):
    img = (_rng().random((23, 31, 3)) * 255).astype(np.uint8)
    out = Upscaler(session, tile=8).upscale(img)
    assert out.shape == (46, 62, 3) and out.dtype == np.uint8
    ref = np.clip(np.rint(_reference(session, img / 255.0) * 255), 0, 255).astype(np.uint8)
    assert np.abs(out.astype(int) - ref).max() <= 1  # float32 rounding at .5 boundaries
    # BGR in, BGR out: same pixels, channels reversed
    np.testing.assert_array_equal(Upscaler(session, tile=8).upscale(img[..., ::-1].copy(), order="BGR"),
                                  out[..., ::-1])


def test_uint16_and_float32(session):
    img16 = (_rng(1).random((12, 9, 3)) * 65535).astype(np.uint16)
    out = Upscaler(session, tile=5).upscale(img16)
    assert out.shape == (24, 18, 3) and out.dtype == np.uint16
    ref = _reference(session, img16 / 65535.0) * 65535
    assert np.abs(out - np.clip(np.rint(ref), 0, 65535)).max() <= 2
    assert out.max() > 255  # really 16-bit, not 8-bit data in a 16-bit container
    img32 = _rng(2).random((7, 8, 3)).astype(np.float32)
    out32 = Upscaler(session, tile=0).upscale(img32)
    assert out32.dtype == np.float32 and np.abs(out32 - _reference(session, img32)).max() <= 1e-5


@pytest.mark.parametrize("dtype,maxval", [(np.uint8, 255), (np.uint16, 65535)])
def test_gray_stays_gray(session, dtype, maxval):
    gray = (_rng(3).random((10, 13)) * maxval).astype(dtype)
    out = Upscaler(session, tile=6).upscale(gray)
    assert out.shape == (20, 26) and out.dtype == dtype
    rgb = _reference(session, np.repeat(gray[..., None] / maxval, 3, axis=2))
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out - np.clip(np.rint(luma * maxval), 0, maxval)).max() <= maxval / 255


def test_rgba_alpha_modes(session):
    rgba = (_rng(4).random((11, 14, 4)) * 255).astype(np.uint8)
    by_model = Upscaler(session, tile=6).upscale(rgba)
    by_resize = Upscaler(session, tile=6, alpha="resize").upscale(rgba)
    assert by_model.shape == by_resize.shape == (22, 28, 4) and by_model.dtype == np.uint8
    np.testing.assert_array_equal(by_model[..., :3], by_resize[..., :3])
    np.testing.assert_array_equal(by_model[..., :3], Upscaler(session, tile=6).upscale(rgba[..., :3].copy()))
    np.testing.assert_array_equal(by_resize[..., 3], cv2.resize(rgba[..., 3], (28, 22),
                                                                interpolation=cv2.INTER_CUBIC))
    a_ref = _reference(session, np.repeat(rgba[..., 3:] / 255.0, 3, axis=2)).mean(axis=2)
    assert np.abs(by_model[..., 3].astype(float) - np.clip(np.rint(a_ref * 255), 0, 255)).max() <= 1
    opaque = rgba.copy()
    opaque[..., 3] = 255
    assert (Upscaler(session, tile=6).upscale(opaque)[..., 3] == 255).all()


def test_upscaler_rejects_bad_arrays(session):
    up = Upscaler(session)
    with pytest.raises(TypeError, match="uint8, uint16 or float32"):
        up.upscale(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ValueError, match="H x W"):
        up.upscale(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        Upscaler(session, alpha="nearest")


# ---------------------------------------------------------------- srdeploy upscale


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    rng = _rng(5)
    cv2.imwrite(str(d / "rgb.png"), (rng.random((17, 21, 3)) * 255).astype(np.uint8))
    cv2.imwrite(str(d / "gray16.png"), (rng.random((9, 12)) * 65535).astype(np.uint16))
    cv2.imwrite(str(d / "rgba.png"), (rng.random((8, 10, 4)) * 255).astype(np.uint8))
    cv2.imwrite(str(d / "photo.jpg"), (rng.random((12, 15, 3)) * 255).astype(np.uint8))
    return d


def _run(capsys, *argv) -> tuple[int, str]:
    rc = main(["upscale", "-q", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_cli_folder_and_formats(model, folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc, text = _run(capsys, "-i", folder, "-o", out, "--model", model, "--tile", "8", "--batch", "2")
    assert rc == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["gray16.png", "photo.jpg", "rgb.png", "rgba.png"]
    for name, shape, dtype in [("rgb.png", (34, 42, 3), np.uint8), ("gray16.png", (18, 24), np.uint16),
                               ("rgba.png", (16, 20, 4), np.uint8), ("photo.jpg", (24, 30, 3), np.uint8)]:
        img, meta = read_image(out / name)
        assert img.shape == shape and img.dtype == dtype, name
    assert "4 of 4" in text
    # --tile 0 (whole image) gives the same pixels as tiling with a full margin (PNG: lossless)
    whole = tmp_path / "whole"
    rc, _ = _run(capsys, "-i", folder / "rgb.png", "-o", whole, "--model", model, "--tile", "0")
    assert rc == 0
    np.testing.assert_array_equal(read_image(whole / "rgb.png")[0], read_image(out / "rgb.png")[0])


def test_cli_ext_suffix_glob_and_single_file(model, folder, tmp_path, capsys):
    out = tmp_path / "o2"
    rc, text = _run(capsys, "-i", str(folder / "*.png"), "-o", out, "--model", model, "--ext", "tiff",
                    "--suffix", "_x2")
    assert rc == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["gray16_x2.tiff", "rgb_x2.tiff", "rgba_x2.tiff"]
    assert read_image(out / "gray16_x2.tiff")[0].dtype == np.uint16
    single = tmp_path / "one" / "result.webp"
    rc, text = _run(capsys, "-i", folder / "rgb.png", "-o", single, "--model", model)
    assert rc == 0 and read_image(single)[0].shape == (34, 42, 3)
    rc, text = _run(capsys, "-i", folder, "-o", tmp_path / "many.png", "--model", model)
    assert rc == 1 and "needs exactly one input file" in text and not (tmp_path / "many.png").exists()


def test_cli_bad_inputs_continue_and_fail(model, folder, tmp_path, capsys):
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    good = (folder / "photo.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    rc, text = _run(capsys, "-i", folder, folder / "missing.png", "-o", out, "--model", model)
    assert rc == 1
    assert "4 of 7" in text and "4 failed" in text
    for name, why in [("empty.png", "empty file"), ("notes.jpg", "not a readable image"),
                      ("cut.jpg", "truncated JPEG"), ("missing.png", "no such file")]:
        assert any(name in line and why in line for line in text.splitlines()), (name, text)
    # good files written; nothing for the bad ones; no temporaries left behind
    assert sorted(p.name for p in out.iterdir()) == ["gray16.png", "photo.jpg", "rgb.png", "rgba.png"]


def test_cli_never_overwrites_without_flag_nor_the_input(model, folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "rgb.png").write_bytes(b"keep me")
    rc, text = _run(capsys, "-i", folder / "rgb.png", "-o", out, "--model", model)
    assert rc == 1 and "already exists" in text and "--overwrite" in text
    assert (out / "rgb.png").read_bytes() == b"keep me"
    rc, text = _run(capsys, "-i", folder / "rgb.png", "-o", out, "--model", model, "--overwrite")
    assert rc == 0 and read_image(out / "rgb.png")[0].shape == (34, 42, 3)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    rc, text = _run(capsys, "-i", folder, "-o", folder, "--model", model, "--overwrite")
    assert rc == 1 and "would overwrite the input" in text
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_cli_refuses_lossy_output_format(model, folder, tmp_path, capsys):
    rc, text = _run(capsys, "-i", folder / "gray16.png", folder / "rgba.png", "-o", tmp_path / "o", "--model",
                    model, "--ext", "jpg")
    assert rc == 1 and "cannot store 16-bit" in text and "no alpha channel" in text
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_cli_bad_models(model, folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    rc, text = _run(capsys, "-i", folder, "-o", out, "--model", tmp_path / "none.onnx")
    assert rc == 1 and "none.onnx" in text and "does not exist" in text
    bare = model.parent / "bare.onnx"
    rc, text = _run(capsys, "-i", folder, "-o", out, "--model", bare)
    assert rc == 1 and "bare.onnx" in text and "not an srdeploy model" in text
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    rc, text = _run(capsys, "-i", folder, "-o", out, "--model", broken)
    assert rc == 1 and "broken.onnx" in text and "cannot load" in text
    monkeypatch.setenv("SRDEPLOY_MODEL", str(tmp_path / "gone.onnx"))
    rc, text = _run(capsys, "-i", folder, "-o", out)
    assert rc == 1 and "SRDEPLOY_MODEL" in text
    assert not out.exists()


NO_TORCH = r"""
import importlib, importlib.abc, pkgutil, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, BlockTorch())
try:
    import torch
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("torch import was not blocked")

import srdeploy.runtime as rt
# walk_packages (not iter_modules): modules in sub-packages (backends, media, cli) are checked too
seen = set()
for mod in pkgutil.walk_packages(rt.__path__, prefix="srdeploy.runtime."):
    importlib.import_module(mod.name)
    seen.add(mod.name)
expected = {"srdeploy.runtime.backends.ort", "srdeploy.runtime.backends.trt", "srdeploy.runtime.backends._cuda",
            "srdeploy.runtime.media.images", "srdeploy.runtime.media.video", "srdeploy.runtime.cli.upscale",
            "srdeploy.runtime.cli._args", "srdeploy.runtime.open", "srdeploy.runtime.tiling",
            "srdeploy.runtime.settings", "srdeploy.runtime.parsing", "srdeploy.runtime.pixels"}
assert expected <= seen, f"modules not walked: {sorted(expected - seen)}"
from srdeploy.cli import main
rc = main(sys.argv[1:])
assert not any(m.split(".")[0] == "torch" for m in sys.modules), "torch got imported"
raise SystemExit(rc)
"""


def test_runtime_runs_without_torch(model, folder, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "upscale", "-q", "-i", str(folder / "rgb.png"),
                           "-o", str(out), "--model", str(model), "--tile", "8"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert read_image(out / "rgb.png")[0].shape == (34, 42, 3)
    # and the PyTorch backend fails with a clear message instead of a traceback
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "upscale", "-q", "-i", str(folder / "rgb.png"),
                           "-o", str(tmp_path / "o2"), "--model", str(ckpt)],
                          capture_output=True, text=True, env=env, timeout=120)
    # exit policy (README, "Errors and exit status"): a missing optional package is an environment error, 1
    assert proc.returncode == 1 and "pip install 'srdeploy[train]'" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
