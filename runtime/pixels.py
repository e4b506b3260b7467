"""Pixels of one dtype <-> a model's value ranges: the one conversion for tiles, images and video.

Below ``upscale`` and ``media`` (both use it), so neither imports the other for it. numpy only.
"""

from __future__ import annotations

import numpy as np


class PixelMap:
    """Pixels of one dtype <-> the model's value ranges: the one conversion for tiles, images and video.

    Integer pixels map to the input range as ``value / max``; outputs map back from the output
    range, rounded and clipped. float32 pixels are taken as [0, 1] and returned unclipped.

    Args:
        info: the session's ``ModelInfo`` (input_range, output_range).
        dtype: pixel dtype (uint8, uint16 or float32).
    """

    def __init__(self, info, dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.maxval = float(np.iinfo(self.dtype).max) if self.dtype.kind == "u" else 1.0
        self.in_lo, in_hi = info.input_range
        self.out_lo, out_hi = info.output_range
        self.a_in = np.float32((in_hi - self.in_lo) / self.maxval)
        self.a_out = self.maxval / (out_hi - self.out_lo)

    def to_model(self, raw: np.ndarray) -> np.ndarray:
        """Raw pixels (any layout) -> float32 in the model's input range."""
        x = raw.astype(np.float32) * self.a_in
        if self.in_lo:
            x += np.float32(self.in_lo)
        return x

    def from_model(self, v: np.ndarray) -> np.ndarray:
        """float32 model output (any layout) -> pixels of ``dtype``."""
        if self.out_lo or self.a_out != 1.0:
            v = (v - np.float32(self.out_lo)) * np.float32(self.a_out)
        if self.dtype.kind == "u":
            v = np.clip(np.rint(v), 0, self.maxval)
        return v.astype(self.dtype, copy=False)
