"""Image reading/writing: EXIF orientation, 8/16-bit, gray/RGBA, bad files, atomic writes."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from srdeploy.runtime.media.images import read_image, write_image


def _exif(orientation: int) -> bytes:
    """A minimal little-endian TIFF/EXIF block holding only the orientation tag."""
    return (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0))


def _png_with_exif(img_bgr: np.ndarray, orientation: int) -> bytes:
    data = cv2.imencode(".png", img_bgr)[1].tobytes()
    blob = _exif(orientation)
    chunk = struct.pack(">I", len(blob)) + b"eXIf" + blob + struct.pack(">I", zlib.crc32(b"eXIf" + blob))
    return data[:33] + chunk + data[33:]  # after the 8-byte signature and the 25-byte IHDR chunk


def _jpeg_with_exif(img_bgr: np.ndarray, orientation: int) -> bytes:
    data = cv2.imencode(".jpg", img_bgr)[1].tobytes()
    app1 = b"Exif\x00\x00" + _exif(orientation)
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


@pytest.fixture
def asym():
    """An asymmetric BGR image, so every flip/rotation gives a different array."""
    img = np.zeros((6, 10, 3), np.uint8)
    img[..., 0] = np.arange(10)[None] * 20
    img[..., 1] = np.arange(6)[:, None] * 40
    img[0, 0] = (0, 0, 255)
    return img


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png_matches_opencv_display(tmp_path, asym, orientation):
    # cv2.IMREAD_COLOR applies EXIF orientation (IMREAD_UNCHANGED does not): it is the reference.
    path = tmp_path / f"o{orientation}.png"
    path.write_bytes(_png_with_exif(asym, orientation))
    ref = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == asym.shape  # the bug we work around
    got, meta = read_image(path, order="BGR")
    assert meta.orientation == orientation
    np.testing.assert_array_equal(got, ref)
    rgb, _ = read_image(path)
    np.testing.assert_array_equal(rgb, ref[:, :, ::-1])


def test_exif_orientation_jpeg(tmp_path, asym):
    path = tmp_path / "o6.jpg"
    path.write_bytes(_jpeg_with_exif(asym, 6))
    got, meta = read_image(path, order="BGR")
    assert meta.orientation == 6 and got.shape == (10, 6, 3)
    np.testing.assert_array_equal(got, cv2.imread(str(path), cv2.IMREAD_COLOR))


def test_exif_orientation_keeps_16bit_and_alpha(tmp_path):
    img = (np.random.default_rng(0).random((4, 7, 4)) * 65535).astype(np.uint16)
    path = tmp_path / "o8.png"
    path.write_bytes(_png_with_exif(img, 8))
    got, meta = read_image(path, order="BGR")
    assert got.dtype == np.uint16 and got.shape == (7, 4, 4) and meta.channels == 4
    np.testing.assert_array_equal(got, np.rot90(img))  # 8 = rotate 90 counter-clockwise


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_roundtrip_depths_and_channels(tmp_path, ext):
    rng = np.random.default_rng(1)
    for k, arr in enumerate([(rng.random((5, 6, 3)) * 255).astype(np.uint8), (rng.random((5, 6)) * 65535).astype(np.uint16),
                (rng.random((5, 6, 4)) * 255).astype(np.uint8), (rng.random((5, 6, 3)) * 65535).astype(np.uint16)]):
        path = tmp_path / f"x{k}{ext}"
        write_image(path, arr)
        back, meta = read_image(path)
        assert back.dtype == arr.dtype and meta.channels == (1 if arr.ndim == 2 else arr.shape[2])
        np.testing.assert_array_equal(back, arr)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_gray_alpha_png_stays_gray_alpha(tmp_path):
    """A gray+alpha PNG (colour type 4; OpenCV cannot write one, so it is built by hand) reads as
    H x W x 2 (issue 11, item 9) and is written back as RGBA with R = G = B, alpha kept."""
    h, w = 3, 4
    rows = b"".join(b"\x00" + bytes([100, 200]) * w for _ in range(h))
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 4, 0, 0, 0))
           + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))
    path = tmp_path / "ga.png"
    path.write_bytes(png)
    img, meta = read_image(path)
    assert meta.channels == 2 and img.shape == (h, w, 2)
    assert (img[..., 0] == 100).all() and (img[..., 1] == 200).all()
    write_image(tmp_path / "out.png", img)
    back = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert back.shape == (h, w, 4) and (back[..., :3] == 100).all() and (back[..., 3] == 200).all()


def test_bad_files_name_the_file(tmp_path):
    good = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes()
    png = cv2.imencode(".png", np.full((16, 16, 3), 128, np.uint8))[1].tobytes()
    cases = {
        "empty.png": (b"", "empty file"),
        "text.png": (b"this is not an image", "not a readable image"),
        "trunc.jpg": (good[: len(good) // 2], "truncated JPEG"),
        "trunc.png": (png[: len(png) - 20], "truncated PNG"),
        "garbage.png": (png[:40] + b"\x00" * 200 + b"IEND", "corrupt PNG"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=message) as info:
            read_image(path)
        assert name in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="folder"):
        read_image(tmp_path)


def test_absurd_declared_size_is_refused_before_decoding(tmp_path):
    png = bytearray(cv2.imencode(".png", np.zeros((2, 2, 3), np.uint8))[1].tobytes())
    ihdr = struct.pack(">II", 100_000, 100_000) + bytes(png[24:29])
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(png))
    with pytest.raises(ValueError, match=r"bomb.png: declared image size 100000x100000 .*exceeds"):
        read_image(path)
    # a JPEG whose SOF claims 65535 x 65535
    jpg = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    i = jpg.find(b"\xff\xc0")
    jpg[i + 5:i + 9] = struct.pack(">HH", 65535, 65535)
    (tmp_path / "bomb.jpg").write_bytes(bytes(jpg))
    with pytest.raises(ValueError, match="bomb.jpg: declared image size 65535x65535"):
        read_image(tmp_path / "bomb.jpg")
    # the limit is a parameter
    small = tmp_path / "small.png"
    small.write_bytes(cv2.imencode(".png", np.zeros((10, 10, 3), np.uint8))[1].tobytes())
    with pytest.raises(ValueError, match="exceeds"):
        read_image(small, max_pixels=50)


def test_write_refuses_lossy_downgrades(tmp_path):
    with pytest.raises(ValueError, match="16-bit"):
        write_image(tmp_path / "a.jpg", np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ValueError, match="alpha"):
        write_image(tmp_path / "a.jpg", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="cannot write"):
        write_image(tmp_path / "a.xyz", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic_and_does_not_clobber(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    write_image(path, np.zeros((4, 4, 3), np.uint8))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_image(path, np.full((4, 4, 3), 9, np.uint8))
    assert path.read_bytes() == before
    # a failing encoder leaves neither a partial file nor a temporary behind
    monkeypatch.setattr(cv2, "imwrite", lambda p, *a, **k: open(p, "wb").write(b"partial") and False)
    with pytest.raises(OSError, match="failed to write"):
        write_image(tmp_path / "new.png", np.zeros((4, 4, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    monkeypatch.undo()
    write_image(path, np.full((4, 4, 3), 9, np.uint8), overwrite=True)
    assert read_image(path)[0][0, 0, 0] == 9
    assert (path.stat().st_mode & 0o777) != 0o600  # not mkstemp's private mode


def test_decode_image_reads_bytes_as_read_image_reads_files(tmp_path, asym):
    """Uploads (``decode_image``) and files (``read_image``): the same pixels, metadata and refusals."""
    import tifffile
    from PIL import Image

    from srdeploy.runtime.media.images import (ImageTooLargeError, NotAnImageError, decode_image, encode_image,
                                               image_header)

    files = {"o.jpg": _jpeg_with_exif(asym, 6), "o.png": _png_with_exif(asym, 3),
             "a.png": cv2.imencode(".png", np.dstack([asym, asym[..., :1]]))[1].tobytes()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        want, wmeta = read_image(tmp_path / name)
        got, meta = decode_image(data, name=name)
        np.testing.assert_array_equal(got, want)
        assert meta == wmeta.__class__(**{**wmeta.__dict__, "path": name})
        assert encode_image(got, ".png") == cv2.imencode(".png", want[..., [2, 1, 0, 3][:want.shape[2]]])[1].tobytes()
    frames = [Image.new("RGB", (12, 10), (40 * i, 90, 200)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    tifffile.imwrite(tmp_path / "pages.tif", np.zeros((2, 8, 9), np.uint8), photometric="minisblack",
                     metadata=None)  # two pages
    for name, what in (("anim.gif", "animated GIF with 3 frames"), ("pages.tif", "multi-page TIFF with 2 frames")):
        assert cv2.imcount(str(tmp_path / name)) == int(what.split(" with ")[1].split()[0])  # counted as OpenCV does
        with pytest.raises(ValueError, match=what):
            decode_image((tmp_path / name).read_bytes(), name=name)
    with pytest.raises(NotAnImageError, match="^up: not a readable image"):
        decode_image(b"hello, not an image", name="up")
    with pytest.raises(NotAnImageError, match="^up: not a readable image"):  # refused from its bytes
        image_header(b"\x00\x00\x00\x18ftypisom" + b"\0" * 40, name="up", known_only=True)  # an MP4
    assert image_header(b"\x00\x00\x00\x18ftypavif" + b"\0" * 40, name="up", known_only=True)[0] == "other"
    bomb = files["o.png"][:16] + struct.pack(">II", 50_000, 50_000) + files["o.png"][24:]
    with pytest.raises(ImageTooLargeError, match="declared image size 50000x50000"):
        image_header(bomb, name="up")
