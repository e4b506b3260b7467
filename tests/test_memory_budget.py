"""--tile auto and streamed outputs end to end: the chooser drives the Upscaler, bands reach the
file unchanged, and the CLI says what it chose."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from srdeploy.cli import main
from srdeploy.runtime import budget
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


def test_auto_tile_follows_the_budget(session, monkeypatch):
    monkeypatch.setattr(budget, "BASE_BYTES", 0)  # tiny image: only activations and bands count
    img = (np.random.default_rng(0).random((60, 70, 3)) * 255).astype(np.uint8)
    whole = Upscaler(session, tile=0).upscale(img)
    tiles = []
    for kb in (2000, 6000, 100_000):
        limit = int((budget.CONVERT_CHUNK_BYTES + (kb << 10)) / budget.HEADROOM)  # chunks: a fixed cost
        up = Upscaler(session, tile="auto", max_memory=limit)
        out = up.upscale(img)
        p = up.last_prediction
        assert p is not None and p.total <= budget.HEADROOM * limit
        tiles.append(budget.tile_overhead(60, 70, p.tile, up.tile_pad))
        assert up.describe().startswith("tile auto -> ") and "(predicted peak" in up.describe()
        np.testing.assert_array_equal(out, Upscaler(session, tile=p.tile).upscale(img))
        # default margin = the receptive radius for this small model: tiled equals whole
        assert np.abs(out.astype(int) - whole).max() <= 1
    assert tiles == sorted(tiles, reverse=True) and tiles[0] > tiles[-1] == 1.0  # the last: whole image
    assert session.details["mem_pattern"] is False  # measured: 1.5x the activations for no speed


@pytest.mark.parametrize("dtype,channels,alpha", [(np.uint16, 4, "model"), (np.uint8, 4, "resize"),
                                                   (np.uint8, 1, "model")])
def test_bands_equal_upscale(session, dtype, channels, alpha):
    hi = np.iinfo(dtype).max
    shape = (29, 23) if channels == 1 else (29, 23, channels)
    img = (np.random.default_rng(1).random(shape) * hi).astype(dtype)
    up = Upscaler(session, tile=8, alpha=alpha)
    bands = list(up.bands(img, order="BGR"))
    assert len(bands) == len(up.last_plan.rows.cores) > 1
    np.testing.assert_array_equal(np.concatenate(bands), up.upscale(img, order="BGR"))


def _cli(capsys, *argv):
    rc = main(["upscale", "-q", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


@pytest.mark.parametrize("ext", ["png", "tiff"])
def test_cli_streams_output_equal_to_upscale(model, session, tmp_path, capsys, ext):
    img = (np.random.default_rng(2).random((21, 26, 4)) * 65535).astype(np.uint16)
    src = tmp_path / "in.png"
    assert cv2.imwrite(str(src), img)
    rc, text = _cli(capsys, "-i", src, "-o", tmp_path / f"out.{ext}", "--model", model, "--max-memory", "2G")
    assert rc == 0, text
    first = text.splitlines()[0]
    assert "tile auto -> whole image (predicted peak" in first and "max memory 2.00 GiB" in first
    got, _ = read_image(tmp_path / f"out.{ext}", order="BGR")
    np.testing.assert_array_equal(got, Upscaler(session, tile=0).upscale(img, order="BGR"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.png", f"out.{ext}"])  # no temporaries


def test_cli_says_when_output_is_held(model, tmp_path, capsys, monkeypatch):
    from srdeploy.runtime import upscale

    monkeypatch.setattr(upscale, "LARGE_OUTPUT_BYTES", 1000)
    src = tmp_path / "in.png"
    assert cv2.imwrite(str(src), np.full((20, 20, 3), 90, np.uint8))
    rc, text = _cli(capsys, "-i", src, "-o", tmp_path / "out", "--ext", "jpg", "--model", model)
    assert rc == 0, text
    assert ".jpg cannot be written band by band, so the whole 40x40 output is held in memory" in text
    assert "band by band" not in _cli(capsys, "-i", src, "-o", tmp_path / "o2", "--model", model)[1]


@pytest.mark.parametrize("flag,value,message", [("--max-memory", "12X", "memory size"),
                                                 ("--tile", "big", "expected auto or a size")])
def test_cli_rejects_bad_tile_flags(model, tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit):
        main(["upscale", "-i", str(tmp_path), "-o", str(tmp_path / "o"), flag, value])
    assert message in capsys.readouterr().err
