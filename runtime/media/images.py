"""Reading and writing images with OpenCV, safely.

* Arrays are RGB / RGBA / gray (H x W) by default, or BGR(A) with ``order="BGR"`` (OpenCV's
  own order, which saves a full-size copy for large images). dtype uint8, uint16 or float32
  (as the file stores it: 16-bit PNG/TIFF stay 16-bit).
* EXIF orientation is applied (``cv2.IMREAD_UNCHANGED``, needed to keep alpha and 16-bit,
  ignores it): the orientation tag is parsed here from JPEG APP1, PNG eXIf, WebP EXIF chunks and
  TIFF IFD0, and the image rotated/flipped accordingly.
* Gray + alpha (PNG colour type 4, or a 2-channel decode) is returned as H x W x 2 and written
  back as RGBA with equal R, G, B (OpenCV cannot encode gray + alpha), so gray stays gray.
* Multi-frame files (animated GIF, multi-page TIFF) are refused with a pointer to ``srdeploy
  video``: reading only their first frame would silently drop the rest.
* Bad files fail with a ``ValueError`` naming the file: zero-byte, not an image, truncated
  (JPEG without its end marker after the scan data, PNG without IEND), corrupt (the decoder
  refuses), or an absurd declared size (checked from the header *before* decoding, so a
  decompression bomb never allocates; limit ``MAX_PIXELS``, env ``SRDEPLOY_MAX_IMAGE_PIXELS``).
* ``write_image`` writes a temporary file beside the target and renames it, so a reader never
  sees a partial file; it refuses formats that would silently lose alpha or bit depth.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_target, occupied
from .files import IMAGE_EXTS

# 200 megapixels: well above any camera, far below what would exhaust memory in decoding.
MAX_PIXELS = 200_000_000
MAX_PIXELS_ENV = "SRDEPLOY_MAX_IMAGE_PIXELS"
QUALITY_RANGE = {".jpg": (0, 100), ".jpeg": (0, 100), ".webp": (1, 100)}  # what the encoders accept


def pixel_limit() -> int:
    """The decoding limit: ``$SRDEPLOY_MAX_IMAGE_PIXELS`` if set, else ``MAX_PIXELS``.

    Read when an image is read (not at import), so a bad value is one error naming the variable.
    """
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV}={text!r}: not a positive whole number of pixels "
                         f"(e.g. {MAX_PIXELS_ENV}=400000000); unset it for the default {MAX_PIXELS}")
    return value


def check_quality(quality: int | None, path: str | os.PathLike) -> None:
    """Refuse a JPEG/WebP quality the encoder would only clamp (JPEG 0-100, WebP 1-100)."""
    ext = Path(path).suffix.lower()
    if quality is None or ext not in QUALITY_RANGE:
        return
    lo, hi = QUALITY_RANGE[ext]
    if not lo <= quality <= hi:
        raise ValueError(f"--quality {quality}: out of range for {ext} ({lo}-{hi})")

_EXT_16BIT = {".png", ".tif", ".tiff", ".ppm", ".pgm", ".pnm"}
_EXT_ALPHA = {".png", ".tif", ".tiff", ".webp", ".bmp"}
_EXT_FLOAT = {".tif", ".tiff"}


@dataclass(frozen=True)
class ImageMeta:
    """What ``read_image`` found.

    Attributes:
        path: the file.
        format: detected container ("png", "jpeg", "tiff", "webp", "bmp", "pnm", "gif" or "other").
        width, height: size after EXIF orientation.
        channels: 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA).
        dtype: numpy dtype name of the pixels.
        orientation: EXIF orientation tag found (1 = none; 2..8 were applied).
    """

    path: str
    format: str
    width: int
    height: int
    channels: int
    dtype: str
    orientation: int = 1


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    if data[:1] == b"P" and data[1:2] in b"123456" and len(data) > 2:
        return "pnm"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return "other"


def _jpeg_segments(data: bytes):
    """Yield (marker, payload_start, payload_end) of JPEG header segments up to SOS."""
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        yield marker, i + 4, i + 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return
        i += 2 + length


def _declared_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) from the header, without decoding; None when unknown."""
    try:
        if fmt == "png":
            return struct.unpack(">II", data[16:24])
        if fmt == "jpeg":
            for marker, a, _ in _jpeg_segments(data):
                if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                    h, w = struct.unpack(">HH", data[a + 1:a + 5])
                    return w, h
            return None
        if fmt == "bmp":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if fmt == "gif":
            return struct.unpack("<HH", data[6:10])
        if fmt == "webp":
            chunk = data[12:16]
            if chunk == b"VP8X":
                w = int.from_bytes(data[24:27], "little") + 1
                h = int.from_bytes(data[27:30], "little") + 1
                return w, h
            if chunk == b"VP8L":
                b = int.from_bytes(data[21:25], "little")
                return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            return None
        if fmt == "tiff":
            tags = _tiff_ifd0(data, 0)
            if tags and 256 in tags and 257 in tags:
                return tags[256], tags[257]
            return None
        if fmt == "pnm":
            tokens = []
            for line in data[2:4096].split(b"\n"):
                line = line.split(b"#")[0]
                tokens += line.split()
                if len(tokens) >= 2:
                    return int(tokens[0]), int(tokens[1])
            return None
    except (struct.error, ValueError, IndexError):
        return None
    return None


def _tiff_ifd0(data: bytes, base: int) -> dict[int, int] | None:
    """Integer tags of IFD0 of a TIFF structure starting at ``base`` (EXIF blocks are TIFF too)."""
    bo = {b"II": "<", b"MM": ">"}.get(data[base:base + 2])
    if bo is None:
        return None
    (off,) = struct.unpack(bo + "I", data[base + 4:base + 8])
    p = base + off
    (count,) = struct.unpack(bo + "H", data[p:p + 2])
    tags: dict[int, int] = {}
    for k in range(min(count, 1000)):
        e = p + 2 + 12 * k
        tag, typ, cnt = struct.unpack(bo + "HHI", data[e:e + 8])
        if cnt != 1:
            continue
        if typ == 3:  # SHORT
            (tags[tag],) = struct.unpack(bo + "H", data[e + 8:e + 10])
        elif typ == 4:  # LONG
            (tags[tag],) = struct.unpack(bo + "I", data[e + 8:e + 12])
    return tags


def _exif_orientation(data: bytes, fmt: str) -> int:
    """EXIF orientation tag (0x0112), 1 when absent or unreadable."""
    try:
        blob_at = None
        if fmt == "jpeg":
            for marker, a, b in _jpeg_segments(data):
                if marker == 0xE1 and data[a:a + 6] == b"Exif\x00\x00":
                    blob_at = a + 6
                    break
        elif fmt == "png":
            i = 8
            while i + 8 <= len(data):
                (length,) = struct.unpack(">I", data[i:i + 4])
                ctype = data[i + 4:i + 8]
                if ctype == b"eXIf":
                    blob_at = i + 8
                    break
                if ctype in (b"IDAT", b"IEND"):
                    break
                i += 12 + length
        elif fmt == "webp":
            i = 12
            while i + 8 <= len(data):
                ctype = data[i:i + 4]
                (length,) = struct.unpack("<I", data[i + 4:i + 8])
                if ctype == b"EXIF":
                    blob_at = i + 8
                    if data[blob_at:blob_at + 6] == b"Exif\x00\x00":
                        blob_at += 6
                    break
                i += 8 + length + (length & 1)
        elif fmt == "tiff":
            blob_at = 0
        if blob_at is None:
            return 1
        tags = _tiff_ifd0(data, blob_at) or {}
        value = tags.get(0x0112, 1)
        return value if 1 <= value <= 8 else 1
    except (struct.error, IndexError):
        return 1


def _apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels into display orientation (EXIF 2..8)."""
    if orientation == 2:
        return img[:, ::-1]
    if orientation == 3:
        return img[::-1, ::-1]
    if orientation == 4:
        return img[::-1]
    if orientation == 5:  # transpose
        return img.swapaxes(0, 1)
    if orientation == 6:  # rotate 90 clockwise
        return img.swapaxes(0, 1)[:, ::-1]
    if orientation == 7:  # transverse
        return img.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:  # rotate 90 counter-clockwise
        return img.swapaxes(0, 1)[::-1]
    return img


def _frame_count(data: bytes, fmt: str) -> int:
    """Frames/pages in a GIF or TIFF, counted from the bytes (1 for everything else, or when the
    structure cannot be followed: the decoder then reports the file)."""
    try:
        if fmt == "tiff":
            return _tiff_pages(data)
        if fmt == "gif":
            return _gif_frames(data)
    except (struct.error, IndexError):
        pass
    return 1


def _tiff_pages(data: bytes) -> int:
    """Image file directories in the IFD0 -> next chain (pages; sub-IFDs are not pages)."""
    bo = "<" if data[:2] == b"II" else ">"
    (off,) = struct.unpack(bo + "I", data[4:8])
    seen: set[int] = set()
    while off and off not in seen and off + 2 <= len(data):  # a loop in the chain ends the count
        seen.add(off)
        (count,) = struct.unpack(bo + "H", data[off:off + 2])
        nxt = off + 2 + 12 * count
        (off,) = struct.unpack(bo + "I", data[nxt:nxt + 4]) if nxt + 4 <= len(data) else (0,)
    return max(1, len(seen))


def _gif_frames(data: bytes) -> int:
    """Image descriptors in a GIF (frames), walking its blocks (GIF89a specification, section 17-27)."""

    def skip_sub_blocks(i: int) -> int:
        while data[i]:
            i += data[i] + 1
        return i + 1

    flags = data[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # header, screen descriptor, global colours
    frames = 0
    while i < len(data) and data[i] != 0x3B:  # trailer
        if data[i] == 0x21:  # extension: label, then sub-blocks
            i = skip_sub_blocks(i + 2)
        elif data[i] == 0x2C:  # image descriptor, local colours, LZW code size, sub-blocks
            frames += 1
            local = data[i + 9]
            i += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            i = skip_sub_blocks(i + 1)
        else:
            break
    return max(1, frames)


def _truncated(data: bytes, fmt: str) -> bool:
    if fmt == "jpeg":
        sos = None
        for marker, a, b in _jpeg_segments(data):
            if marker == 0xDA:
                sos = b
        # Inside entropy-coded data 0xFF is stuffed as FF00, so the first FFD9 after the first
        # scan is the real end-of-image marker (EXIF thumbnails sit before SOS).
        return sos is None or data.find(b"\xff\xd9", sos) < 0
    if fmt == "png":
        return data.rfind(b"IEND") < 0
    return False


class ImageTooLargeError(ValueError):
    """The image's declared (or decoded) size exceeds the pixel limit: refused before decoding."""


class NotAnImageError(ValueError):
    """The bytes are empty or no image format OpenCV can decode."""


# Signatures of the other formats OpenCV can decode, which _sniff does not name: JPEG 2000
# (codestream, JP2 box), OpenEXR, Radiance HDR, Sun raster, PFM, PAM, JPEG XL (codestream, box)
# and ISO BMFF images (AVIF/HEIF: an image brand after "ftyp" at offset 4, checked apart).
_OTHER_SIGNATURES = (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ", b"v/1\x01", b"#?RADIANCE", b"#?RGBE",
                     b"\x59\xa6\x6a\x95", b"PF\n", b"Pf\n", b"P7\n", b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")
_BMFF_IMAGE_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1")


def image_header(data: bytes, *, name: str, max_pixels: int | None = None,
                 known_only: bool = False) -> tuple[str, tuple[int, int] | None]:
    """The checks that need no decoding, on a file's bytes: (format, declared (width, height) or None).

    Raises ``NotAnImageError`` (empty; with ``known_only``, no image signature OpenCV decodes),
    ``ImageTooLargeError`` (declared size over the limit: a decompression bomb never allocates) or
    ``ValueError`` (empty declared size, truncated file), each message starting with ``name``.

    Args:
        data: the whole file.
        name: what the messages call it (a path, or a label for bytes that came from elsewhere).
        max_pixels: the limit (default ``pixel_limit()``).
        known_only: refuse bytes that start like no image format now, with the message the decoder
            would give after trying (a server answers garbage without reserving memory for it).
    """
    limit = pixel_limit() if max_pixels is None else max_pixels
    if not data:
        raise NotAnImageError(f"{name}: empty file (0 bytes), not an image")
    fmt = _sniff(data)
    bmff_image = data[4:8] == b"ftyp" and data[8:12] in _BMFF_IMAGE_BRANDS
    if known_only and fmt == "other" and not (data.startswith(_OTHER_SIGNATURES) or bmff_image):
        raise _not_readable(name)
    size = _declared_size(data, fmt)
    if size is not None and size[0] * size[1] > limit:
        raise ImageTooLargeError(
            f"{name}: declared image size {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.0f} MP) exceeds the limit "
            f"of {limit / 1e6:.0f} MP; if the image is genuine, raise the limit with SRDEPLOY_MAX_IMAGE_PIXELS")
    if size is not None and (size[0] == 0 or size[1] == 0):
        raise ValueError(f"{name}: declared image size {size[0]}x{size[1]} is empty; the file is corrupt")
    if _truncated(data, fmt):
        raise ValueError(f"{name}: truncated {fmt.upper()} file (no end-of-image marker); the file is incomplete")
    return fmt, size


def _not_readable(name: str) -> NotAnImageError:
    return NotAnImageError(f"{name}: not a readable image (OpenCV could not decode it)")


def read_image(path: str | os.PathLike, *, order: str = "RGB",
               max_pixels: int | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read an image file.

    Args:
        path: the file.
        order: "RGB" (returns gray H x W, RGB or RGBA H x W x C) or "BGR" (OpenCV order).
        max_pixels: refuse images whose declared width*height exceeds this (default
            ``pixel_limit()``: ``$SRDEPLOY_MAX_IMAGE_PIXELS`` or ``MAX_PIXELS``).

    Returns:
        (pixels, ImageMeta). Pixels are uint8, uint16 or float32 as stored, EXIF orientation
        applied, C-contiguous; gray + alpha is H x W x 2 (gray, alpha) in either order.
    """
    if order not in ("RGB", "BGR"):
        raise ValueError(f"order must be 'RGB' or 'BGR', got {order!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not an image")
    return decode_image(path.read_bytes(), name=str(path), order=order, max_pixels=max_pixels)


def decode_image(data: bytes, *, name: str, order: str = "RGB",
                 max_pixels: int | None = None) -> tuple[np.ndarray, ImageMeta]:
    """``read_image`` on a file's bytes (an upload): the same checks, pixels and messages.

    Args:
        data: the whole file.
        name: what messages and ``ImageMeta.path`` call it; never opened.
        order, max_pixels: as ``read_image``.

    Raises:
        ``NotAnImageError`` (415-like: empty or not an image), ``ImageTooLargeError`` (over the
        pixel limit) or ``ValueError`` (truncated, corrupt, animated, unsupported layout).
    """
    import cv2

    if order not in ("RGB", "BGR"):
        raise ValueError(f"order must be 'RGB' or 'BGR', got {order!r}")
    limit = pixel_limit() if max_pixels is None else max_pixels
    fmt, _ = image_header(data, name=name, max_pixels=limit)
    frames = _frame_count(data, fmt)
    if frames > 1:
        what = "animated GIF" if fmt == "gif" else f"multi-page {fmt.upper()}"
        raise ValueError(f"{name}: {what} with {frames} frames; srdeploy upscale writes still images and would keep "
                         f"only the first: upscale the animation with `srdeploy video -i {name} -o OUT.mkv`, or "
                         "split it into frames first")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        if fmt == "other":
            raise _not_readable(name)
        raise ValueError(f"{name}: corrupt {fmt.upper()} file (OpenCV could not decode it)")
    if img.shape[0] * img.shape[1] > limit:
        raise ImageTooLargeError(f"{name}: image size {img.shape[1]}x{img.shape[0]} exceeds the limit of "
                                 f"{limit / 1e6:.0f} MP; raise it with SRDEPLOY_MAX_IMAGE_PIXELS")
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"{name}: unsupported pixel type {img.dtype}; convert it to 8/16-bit")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4 and (fmt == "png" and data[25:26] == b"\x04"):
        img = np.ascontiguousarray(img[:, :, [0, 3]])  # PNG gray + alpha (decoded as BGRA): keep it gray
    if img.ndim == 3 and img.shape[2] == 4 and fmt == "gif" and img[:, :, 3].min() == img[:, :, 3].max() == 255:
        img = img[:, :, :3]  # a GIF decodes as BGRA; without transparent pixels it is plain colour
    if img.ndim == 3 and img.shape[2] not in (2, 3, 4):
        raise ValueError(f"{name}: {img.shape[2]}-channel images are not supported (gray, gray + alpha, RGB or "
                         "RGBA only)")
    orientation = _exif_orientation(data, fmt)
    img = _apply_orientation(img, orientation)
    if order == "RGB" and img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[:, :, [2, 1, 0, 3][: img.shape[2]]]
    img = np.ascontiguousarray(img)
    meta = ImageMeta(path=name, format=fmt, width=img.shape[1], height=img.shape[0],
                     channels=1 if img.ndim == 2 else img.shape[2], dtype=img.dtype.name,
                     orientation=orientation)
    return img, meta


def check_writable(path: str | os.PathLike, *, dtype, channels: int) -> None:
    """Raise if ``path``'s format cannot store ``dtype``/``channels`` without loss (no silent downgrade)."""
    import cv2

    path = Path(path)
    ext = path.suffix.lower()
    if not ext or not cv2.haveImageWriter(f"x{ext}"):
        raise ValueError(f"{path}: OpenCV cannot write {ext or 'files without an extension'}; "
                         f"use one of {', '.join(IMAGE_EXTS)}")
    dtype = np.dtype(dtype)
    if dtype == np.uint16 and ext not in _EXT_16BIT:
        raise ValueError(f"{path}: {ext} cannot store 16-bit pixels; write .png or .tiff (or convert to 8-bit first)")
    if dtype == np.float32 and ext not in _EXT_FLOAT:
        raise ValueError(f"{path}: {ext} cannot store float pixels; write .tiff")
    if channels in (2, 4) and ext not in _EXT_ALPHA:
        raise ValueError(f"{path}: {ext} has no alpha channel; write .png, .webp or .tiff to keep the transparency")


def _write_params(ext: str, quality: int | None) -> list[int]:
    import cv2

    if ext in QUALITY_RANGE:
        check_quality(quality, f"x{ext}")
    if ext in (".jpg", ".jpeg"):
        return [cv2.IMWRITE_JPEG_QUALITY, 95 if quality is None else quality]
    if ext == ".webp":
        return [cv2.IMWRITE_WEBP_QUALITY, 95 if quality is None else quality]
    return []


def write_image(path: str | os.PathLike, img: np.ndarray, *, order: str = "RGB", overwrite: bool = False,
                quality: int | None = None) -> Path:
    """Write an image atomically (temporary file in the same folder, then rename).

    Args:
        path: destination; the format comes from its extension.
        img: gray (H x W), gray + alpha (H x W x 2; written as RGBA with R = G = B), RGB(A) or BGR(A)
            (H x W x 3|4), uint8/uint16 (float32 for TIFF).
        order: channel order of ``img``: "RGB" or "BGR".
        overwrite: replace an existing file; otherwise an existing file raises FileExistsError.
        quality: JPEG/WebP quality (default 95).

    Returns:
        The written path.
    """
    import cv2

    if order not in ("RGB", "BGR"):
        raise ValueError(f"order must be 'RGB' or 'BGR', got {order!r}")
    path = Path(path)
    channels = 1 if img.ndim == 2 else img.shape[2]
    check_writable(path, dtype=img.dtype, channels=channels)
    if not overwrite and occupied(path):
        raise FileExistsError(f"{path}: already exists; pass --overwrite (overwrite=True) to replace it")
    img = _opencv_layout(img, order)
    params = _write_params(path.suffix.lower(), quality)
    # Keep the real extension last: OpenCV picks the encoder from it.
    with atomic_target(path, keep_suffix=True, overwrite=overwrite) as tmp:
        if not cv2.imwrite(str(tmp), img, params):
            raise OSError(f"{path}: OpenCV failed to write the image (disk full or unsupported format?)")
    return path


def _opencv_layout(img: np.ndarray, order: str) -> np.ndarray:
    """``img`` as OpenCV's encoders take it: BGR(A), and gray + alpha as RGBA with R = G = B."""
    channels = 1 if img.ndim == 2 else img.shape[2]
    if order == "RGB" and channels in (3, 4):
        img = img[:, :, [2, 1, 0, 3][:channels]]
    if channels == 2:  # OpenCV encodes 1, 3 or 4 channels: gray + alpha goes out as RGBA, R = G = B
        img = img[:, :, [0, 0, 0, 1]]
    return img


def encode_image(img: np.ndarray, ext: str, *, order: str = "RGB", quality: int | None = None,
                 name: str = "image") -> bytes:
    """``write_image``'s file contents as bytes (same encoder and parameters), for a response body.

    Args:
        img: as ``write_image`` takes it.
        ext: the format as a file extension (".png", ".jpg", ...).
        order: channel order of ``img``: "RGB" or "BGR".
        quality: JPEG/WebP quality (default 95).
        name: what messages call the output.
    """
    import cv2

    if order not in ("RGB", "BGR"):
        raise ValueError(f"order must be 'RGB' or 'BGR', got {order!r}")
    ext = ext.lower()
    channels = 1 if img.ndim == 2 else img.shape[2]
    check_writable(Path(f"{name}{ext}"), dtype=img.dtype, channels=channels)
    ok, buf = cv2.imencode(ext, _opencv_layout(img, order), _write_params(ext, quality))
    if not ok:
        raise OSError(f"{name}{ext}: OpenCV failed to encode the image")
    return buf.tobytes()
