"""The one inference interface every backend adapter implements.

A ``Session`` runs an SR model on a batch: ``infer(x)`` takes float32 NCHW RGB in the model's
input range and returns float32 N x C x (scale*H) x (scale*W). Adapters are thin: the public
``infer`` checks the input, ``_infer`` does the backend's work. Tiling, images and video live
elsewhere and talk only to this interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metadata import ModelInfo


@dataclass(frozen=True)
class InputSpec:
    """Shape limits of a session's input: (min, max) per dim, None = unbounded.

    TensorRT engines have finite profiles; ONNX Runtime and PyTorch accept any size.
    ``opt`` is the preferred (N, C, H, W) where the backend has one (TensorRT profile opt).
    """

    channels: int = 3
    batch: tuple[int, int | None] = (1, None)
    height: tuple[int, int | None] = (1, None)
    width: tuple[int, int | None] = (1, None)
    opt: tuple[int, int, int, int] | None = None

    def check(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4 or shape[1] != self.channels:
            raise ValueError(f"Session.infer: expected (N, {self.channels}, H, W) input, got {shape}")
        for name, (lo, hi), v in (("batch", self.batch, shape[0]), ("height", self.height, shape[2]),
                                  ("width", self.width, shape[3])):
            if v < lo or (hi is not None and v > hi):
                raise ValueError(f"Session.infer: {name} {v} outside the model's range [{lo}, {hi}]; "
                                 "use tiling (--tile) or rebuild the engine with a wider profile")


class Session:
    """Base class of backend adapters. Use as a context manager; ``close()`` frees resources.

    Attributes:
        info: the model's contract (scale, ranges, receptive radius) from its metadata.
        input_spec: accepted input shapes.
        backend: "onnxruntime", "tensorrt" or "torch".
        device: where it runs, as the backend names it ("cpu", "cuda:0", ...).
        precision: what is actually computed ("fp32", "fp16").
        details: anything else worth recording in a benchmark (providers, threads, versions).
    """

    info: ModelInfo
    input_spec: InputSpec
    backend: str = ""
    device: str = "cpu"
    precision: str = "fp32"

    def __init__(self) -> None:
        self.details: dict = {}
        self._closed = False

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run the model on float32 NCHW input; returns float32 NCHW output."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__}.infer: session is closed")
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            raise TypeError(f"Session.infer: expected a float32 numpy array, got {getattr(x, 'dtype', type(x))}")
        self.input_spec.check(x.shape)
        y = self._infer(np.ascontiguousarray(x))
        s = self.info.scale
        expected = (x.shape[0], x.shape[1], x.shape[2] * s, x.shape[3] * s)
        if y.shape != expected:
            raise RuntimeError(f"{getattr(self, 'path', None) or type(self).__name__}: model returned {y.shape}, "
                               f"expected {expected} (scale {s} from metadata); the model file and its metadata "
                               "disagree")
        return y

    def _infer(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
