"""Issue 25 (reliability, round 3), the non-video items: concurrent image writers, dangling output
links, hostile ONNX metadata, OpenVINO weights outside the model's folder, INT8 memory bounds,
progress and message wording. Each test names the item it covers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from srdeploy.cli import main

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "models" / "srresnet_x4.onnx"


def _png(path: Path, seed: int, shape=(20, 16, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8))
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# ------------------------------------------------------------------ item 2: streamed writers claim the name
@pytest.mark.parametrize("ext", ["png", "tiff"])
def test_item2_streamed_writer_does_not_replace_a_file_that_appeared_meanwhile(tmp_path, ext):
    """Another writer finishes the same name while this one streams its bands: this one fails, the
    other's file stays, no temporary file is left. With overwrite it replaces."""
    from srdeploy.runtime.media.writers import write_bands

    dst = tmp_path / f"out.{ext}"
    img = np.full((8, 6, 3), 7, np.uint8)

    def bands():
        yield img[:4]
        dst.write_bytes(b"the other run's output")  # the concurrent run claimed the name first
        yield img[4:]

    with pytest.raises(FileExistsError, match=f"out.{ext}: already exists"):
        write_bands(dst, bands(), height=8, width=6, channels=3, dtype=np.uint8)
    assert dst.read_bytes() == b"the other run's output"
    assert _leftovers(tmp_path) == []
    write_bands(dst, bands(), height=8, width=6, channels=3, dtype=np.uint8, overwrite=True)
    np.testing.assert_array_equal(cv2.imread(str(dst)), img)


# The first run, held inside the PNG writer (its temporary file complete) until the test says go.
HELD = r"""
import os, sys, time
import srdeploy.runtime.media.writers as wr
ready, go = sys.argv[1], sys.argv[2]
real = wr._write_png
def _write_png(f, *a, **k):
    real(f, *a, **k)
    open(ready, "w").close()
    t = time.monotonic()
    while not os.path.exists(go):
        if time.monotonic() - t > 120:
            raise SystemExit("the test never said go")
        time.sleep(0.02)
wr._write_png = _write_png
from srdeploy.cli import main
raise SystemExit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_item2_two_concurrent_upscales_to_one_new_png_exactly_one_succeeds(tmp_path, capsys):
    a, b = _png(tmp_path / "a.png", 1), _png(tmp_path / "b.png", 2)
    dst = tmp_path / "out" / "same.png"
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", HELD, ready, go, "upscale", "-q", "-i", a, "-o", dst,
                              "--model", BUNDLED, "--tile", "0"], stderr=subprocess.PIPE, text=True)
    try:
        t = time.monotonic()
        while not ready.exists():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() - t < 120
            time.sleep(0.05)
        assert not dst.exists()  # the first run holds its finished temporary file, unnamed yet
        assert main(["upscale", "-q", "-i", str(b), "-o", str(dst), "--model", str(BUNDLED), "--tile", "0"]) == 0
        second = cv2.imread(str(dst))
        go.touch()
        err = first.stderr.read()
        assert first.wait(timeout=120) == 1, err
    finally:
        go.touch()
        first.kill()
    assert f"{dst}: already exists; pass --overwrite" in err and "0 of 1 image(s) written" in err
    np.testing.assert_array_equal(cv2.imread(str(dst)), second)  # the survivor's output, untouched
    assert _leftovers(dst.parent) == []
    # the survivor's output is the solo run's
    assert main(["upscale", "-q", "-i", str(b), "-o", str(tmp_path / "solo.png"), "--model", str(BUNDLED),
                 "--tile", "0"]) == 0
    np.testing.assert_array_equal(second, cv2.imread(str(tmp_path / "solo.png")))


# ------------------------------------------------------------------ item 4: a dangling -o link is an output
@pytest.mark.parametrize("ext", ["png", "jpg", "tiff"])
def test_item4_dangling_symlink_output_is_refused_without_overwrite(tmp_path, capsys, ext):
    src = _png(tmp_path / "in.png", 0)
    link = tmp_path / f"out.{ext}"
    link.symlink_to(tmp_path / "elsewhere" / f"target.{ext}")
    args = ["upscale", "-q", "-i", str(src), "-o", str(link), "--model", str(BUNDLED), "--tile", "0"]
    assert main(args) == 1
    assert f"{link}: already exists; pass --overwrite" in capsys.readouterr().err
    assert link.is_symlink() and not (tmp_path / "elsewhere").exists()
    assert main([*args, "--overwrite"]) == 0
    assert not link.is_symlink() and cv2.imread(str(link)).shape == (80, 64, 3)


def test_item4_library_writers_treat_a_dangling_link_as_existing(tmp_path):
    from srdeploy.runtime.atomic import atomic_target
    from srdeploy.runtime.media.images import write_image
    from srdeploy.runtime.media.writers import write_bands

    img = np.zeros((4, 4, 3), np.uint8)
    for name, write in [("a.png", lambda p: write_bands(p, [img], height=4, width=4, channels=3, dtype=np.uint8)),
                        ("b.jpg", lambda p: write_image(p, img)),
                        ("c.bin", lambda p: atomic_target(p, overwrite=False).__enter__())]:
        link = tmp_path / name
        link.symlink_to(tmp_path / "missing" / name)
        with pytest.raises(FileExistsError, match="already exists"):
            write(link)
        assert link.is_symlink()
    assert _leftovers(tmp_path) == []
