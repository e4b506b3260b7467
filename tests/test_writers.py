"""runtime.media.writers: band-by-band PNG/TIFF output equals OpenCV's whole-image round trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from srdeploy.runtime.media.writers import held_output_bytes, streams, write_bands

_SPLITS = ((0, 5), (5, 6), (6, 30), (30, 37))  # uneven bands, one a single row


def _image(dtype, channels, seed=0):
    shape = (37, 29) if channels == 1 else (37, 29, channels)
    hi = 1.0 if dtype == np.float32 else np.iinfo(dtype).max + 1
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.random(shape, dtype=np.float32)
    # smooth gradients plus noise: exercises the PNG Sub filter and the TIFF predictor wrap-around
    y, x = np.mgrid[:37, :29]
    base = ((y * 7 + x * 13) * hi // 600).astype(np.int64)
    base = base[..., None] if channels > 1 else base
    return ((base + rng.integers(0, hi, shape)) % hi).astype(dtype)


@pytest.mark.parametrize("ext", ["png", "tiff"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_bands_equal_opencv_round_trip(tmp_path, ext, dtype, channels):
    img = _image(dtype, channels)  # BGR(A) order, as the CLI holds it
    ours, ref = tmp_path / f"ours.{ext}", tmp_path / f"ref.{ext}"
    write_bands(ours, (img[a:b] for a, b in _SPLITS), height=37, width=29, channels=channels, dtype=dtype,
                order="BGR")
    assert cv2.imwrite(str(ref), img)
    got = cv2.imread(str(ours), cv2.IMREAD_UNCHANGED)
    assert got.dtype == dtype and got.shape == img.shape
    np.testing.assert_array_equal(got, cv2.imread(str(ref), cv2.IMREAD_UNCHANGED))
    np.testing.assert_array_equal(got, img)


def test_rgb_order_and_float_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    img = _image(np.float32, 3)
    write_bands(tmp_path / "f.tif", [img[:7], img[7:]], height=37, width=29, channels=3, dtype=np.float32)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "f.tif"), img)
    rgb = _image(np.uint8, 3)
    write_bands(tmp_path / "rgb.png", [rgb], height=37, width=29, channels=3, dtype=np.uint8, order="RGB")
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "rgb.png"))[:, :, ::-1], rgb)


def test_bigtiff_only_over_4gb(tmp_path, monkeypatch):
    tifffile = pytest.importorskip("tifffile")
    from srdeploy.runtime.media import writers

    img = _image(np.uint8, 3)
    write_bands(tmp_path / "small.tif", [img], height=37, width=29, channels=3, dtype=np.uint8)
    monkeypatch.setattr(writers, "_BIGTIFF_OVER", 100)  # as if this image were over 4 GB
    write_bands(tmp_path / "big.tif", [img], height=37, width=29, channels=3, dtype=np.uint8)
    with tifffile.TiffFile(tmp_path / "small.tif") as a, tifffile.TiffFile(tmp_path / "big.tif") as b:
        assert not a.is_bigtiff and b.is_bigtiff
        np.testing.assert_array_equal(b.asarray(), img)


@pytest.mark.parametrize("ext", ["png", "tiff", "jpg"])
def test_no_partial_file_on_failure(tmp_path, ext):
    img = _image(np.uint8, 3)
    out = tmp_path / f"out.{ext}"

    def failing():
        yield img[:10]
        raise RuntimeError("inference failed half way")

    with pytest.raises(RuntimeError, match="half way"):
        write_bands(out, failing(), height=37, width=29, channels=3, dtype=np.uint8)
    with pytest.raises(ValueError, match="stopped after 10 of 37 rows"):
        write_bands(out, iter([img[:10]]), height=37, width=29, channels=3, dtype=np.uint8)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file


def test_existing_output_kept_unless_overwrite(tmp_path):
    img = _image(np.uint8, 1)
    out = tmp_path / "o.png"
    out.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_bands(out, [img], height=37, width=29, channels=1, dtype=np.uint8)
    assert out.read_bytes() == b"keep"
    write_bands(out, [img], height=37, width=29, channels=1, dtype=np.uint8, overwrite=True)
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), img)


def test_band_shape_checked(tmp_path):
    img = _image(np.uint8, 3)
    with pytest.raises(ValueError, match="does not match"):
        write_bands(tmp_path / "o.png", [img[:, :20]], height=37, width=29, channels=3, dtype=np.uint8)
    with pytest.raises(ValueError, match="more than the declared"):
        write_bands(tmp_path / "o.png", [img, img], height=37, width=29, channels=3, dtype=np.uint8)
    assert list(tmp_path.iterdir()) == []


def test_held_output_bytes():
    assert streams("a.PNG") and streams("b.tif") and not streams("c.jpg")
    assert held_output_bytes("x.png", height=10, width=20, channels=3, dtype=np.uint8) == 0
    assert held_output_bytes("x.webp", height=10, width=20, channels=4, dtype=np.uint8) == 800
