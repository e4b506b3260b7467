"""Images, MATLAB-style bicubic downscaling, and the training / evaluation datasets.

LR images are made the way the SR literature (and the SRGAN paper's protocol) does: MATLAB's
``imresize(hr, 1/scale, 'bicubic')``, i.e. the cubic kernel with a = -0.5, widened by the scale
factor when downscaling (antialiasing), symmetric (mirror) padding at the borders, computed in
float64 and rounded to uint8 at the end. ``imresize`` below is a numpy re-implementation of that
function (no code taken from MATLAB or BasicSR); tests check it against Pillow's antialiased
bicubic, which uses the same kernel and differs only in border handling.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DATA_ENV = "SRDEPLOY_DATA"


def data_root() -> Path:
    """Where the shared images live: ``$SRDEPLOY_DATA``, else ``../shared/data`` beside the project."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    # train/data.py -> project root (checkout or editable install) -> ../shared/data; a
    # regular install lives in site-packages, so fall back to ../shared/data from the cwd.
    beside_checkout = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    if beside_checkout.is_dir():
        return beside_checkout
    return Path.cwd().parent / "shared" / "data"


def resolve_folder(name: str, what: str = "eval") -> str:
    """A folder of images as given, else under the data root (``Set5`` -> ``$SRDEPLOY_DATA/benchmark/Set5``).

    Args:
        name: the folder as the user wrote it.
        what: the command named in the error message.

    Raises:
        FileNotFoundError: listing every path tried.
    """
    given = Path(name)
    if given.is_dir():
        return name
    root = data_root()
    tried = [given] if given.is_absolute() else [given, root / given, root / "benchmark" / given]
    for path in tried[1:]:
        if path.is_dir():
            return str(path)
    raise FileNotFoundError(f"{what}: {name}: not a folder of images; tried {', '.join(str(p) for p in tried)} "
                            f"({DATA_ENV} is {os.environ.get(DATA_ENV) or 'unset'})")

def list_images(folder: str | os.PathLike) -> list[Path]:
    """Sorted image files in a folder (not recursive); an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of images (set {DATA_ENV} or pass the right path)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return files


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8 RGB, HxWx3 (gray and RGBA converted to RGB, alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):
                # 16-bit gray: keep the top 8 bits rather than letting PIL clip.
                arr = (np.asarray(im, dtype=np.uint32) >> 8).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from exc


def _cubic(x: np.ndarray) -> np.ndarray:
    # Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic').
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


@lru_cache(maxsize=256)
def _resize_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """(out_len, in_len) matrix applying MATLAB's bicubic resize along one axis."""
    antialias = scale < 1.0
    width = 4.0 / scale if antialias else 4.0
    out = np.arange(1, out_len + 1, dtype=np.float64)
    # Output pixel centres mapped into input coordinates (1-based, as MATLAB).
    u = out / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based input indices
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if antialias else _cubic(dist)
    w /= w.sum(axis=1, keepdims=True)
    # Symmetric padding: index 0 -> 1, -1 -> 2, in_len+1 -> in_len, ...
    idx0 = idx.astype(np.int64) - 1
    period = 2 * in_len
    idx0 = np.mod(idx0, period)
    idx0 = np.where(idx0 >= in_len, period - 1 - idx0, idx0)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(mat, (np.repeat(np.arange(out_len), taps), idx0.ravel()), w.ravel())
    return mat


def imresize(img: np.ndarray, scale: float | None = None, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """MATLAB-compatible bicubic ``imresize`` (antialiased when downscaling).

    Args:
        img: HxW or HxWxC array, uint8 or float.
        scale: resize factor (e.g. 0.25 for 4x downscaling); output size is ceil(scale * size).
        size: (height, width) of the output instead of ``scale``.

    Returns:
        uint8 input -> uint8 output (rounded and clipped, as MATLAB); float input -> float64.
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of scale or size")
    h, w = img.shape[:2]
    if size is None:
        out_h, out_w = int(math.ceil(h * scale)), int(math.ceil(w * scale))
        sh = sw = float(scale)
    else:
        out_h, out_w = size
        sh, sw = out_h / h, out_w / w
    x = img.astype(np.float64)
    mh = _resize_matrix(h, out_h, sh)
    mw = _resize_matrix(w, out_w, sw)
    # Rows first then columns, as MATLAB does for equal scales.
    y = np.tensordot(mh, x, axes=(1, 0))
    y = np.moveaxis(np.tensordot(mw, y, axes=(1, 1)), 0, 1)
    if img.dtype == np.uint8:
        return np.clip(np.round(y), 0, 255).astype(np.uint8)
    return y


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so height and width are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """The LR image for an HR uint8 image: bicubic downscaling by ``scale``, uint8."""
    if hr.shape[0] % scale or hr.shape[1] % scale:
        raise ValueError(f"degrade: HR size {hr.shape[:2]} is not a multiple of scale {scale}; mod_crop it first")
    return imresize(hr, 1.0 / scale)


def augment(img: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 dihedral transforms (flips and 90-degree rotations); code in 0..7."""
    if code & 1:
        img = img[:, ::-1]
    if code & 2:
        img = img[::-1, :]
    if code & 4:
        img = img.transpose(1, 0, 2)
    return img


class SRTrainDataset:
    """Random HR crops and their bicubic LR, from folders of HR images held in memory.

    Item ``i`` is fully determined by ``(seed, i)``: which image, where the crop is, which
    flip/rotation. So a run resumed at step s just continues at item s * batch_size, with no
    random state to save, and DDP ranks take disjoint items.

    Args:
        folders: folders of HR images (PNG/JPEG/BMP; gray and RGBA become RGB).
        crop: HR crop size (paper: 96); must be a multiple of ``scale``.
        scale: downscaling factor.
        augment: random flips and 90-degree rotations.
        seed: base seed.
        length: nominal number of items (iteration-based training samples with replacement).

    Returns items as float32 CHW arrays in [0, 1]: ``(lr, hr)``.
    """

    def __init__(self, folders, *, crop: int = 96, scale: int = 4, augment: bool = True,
                 seed: int = 0, length: int = 10**9):
        if crop % scale:
            raise ValueError(f"SRTrainDataset: crop {crop} must be a multiple of scale {scale}")
        self.crop, self.scale, self.augment, self.seed, self.length = crop, scale, augment, seed, length
        self.images = []
        for folder in ([folders] if isinstance(folders, (str, os.PathLike)) else folders):
            for path in list_images(folder):
                img = load_rgb(path)
                if min(img.shape[:2]) < crop:
                    continue  # too small for a crop; skipping keeps sampling uniform over the rest
                self.images.append(img)
        if not self.images:
            raise ValueError(f"SRTrainDataset: no image in {folders} is at least {crop}x{crop}")

    def __len__(self) -> int:
        return self.length

    def crop_params(self, index: int) -> tuple[int, int, int, int]:
        """(image, top, left, dihedral code) of item ``index``: the only random draws of an item,
        shared by ``crop_hr`` and the GPU cropper of the trainer so both cut identical crops."""
        rng = np.random.default_rng((self.seed, index))
        k = int(rng.integers(len(self.images)))
        h, w = self.images[k].shape[:2]
        top, left = int(rng.integers(h - self.crop + 1)), int(rng.integers(w - self.crop + 1))
        code = int(rng.integers(8)) if self.augment else 0
        return k, top, left, code

    def crop_hr(self, index: int) -> np.ndarray:
        """The uint8 HR crop of item ``index``."""
        k, top, left, code = self.crop_params(index)
        hr = augment(self.images[k][top: top + self.crop, left: left + self.crop], code)
        return np.ascontiguousarray(hr)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        hr = self.crop_hr(index)
        lr = degrade(hr, self.scale)
        return to_chw_float(lr), to_chw_float(hr)


def to_chw_float(img: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW in [0, 1]."""
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 255.0


def to_hwc_uint8(arr: np.ndarray) -> np.ndarray:
    """float 3xHxW in [0, 1] -> uint8 HxWx3, rounded (as images are saved)."""
    return np.clip(np.round(arr.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


class EvalSet:
    """Whole images of a benchmark folder: HR cropped to a multiple of ``scale``, LR by ``degrade``.

    Iterating yields ``(name, lr_uint8, hr_uint8)``.

    Args:
        folder: a folder of HR images.
        scale: the downscaling factor.
        read: image reader, ``path -> uint8 RGB HxWx3`` (default ``load_rgb``, Pillow; evaluation
            of deployed model files passes the runtime's OpenCV reader, which gives the same pixels).
    """

    def __init__(self, folder, *, scale: int = 4, read: Callable[[Path], np.ndarray] = load_rgb):
        self.folder = Path(folder)
        self.name = self.folder.name
        self.scale = scale
        self.read = read
        self.files = list_images(folder)

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self):
        for path in self.files:
            hr = self.read(path)
            # The metrics crop `scale` pixels per border and SSIM needs an 11x11 window after that.
            need = -(-(11 + 2 * self.scale) // self.scale) * self.scale
            if min(hr.shape[:2]) < need:
                raise ValueError(f"{path}: image {hr.shape[1]}x{hr.shape[0]} is too small to evaluate at x{self.scale} "
                                 f"(needs at least {need} pixels per side); remove it from the folder")
            hr = mod_crop(hr, self.scale)
            yield path.stem, degrade(hr, self.scale), hr
