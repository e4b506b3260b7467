"""Backend options as small frozen dataclasses (one per backend), instead of untyped ``**options``.

Plain values only (no onnxruntime/TensorRT/torch import), so a ``SessionRecipe`` holding them can
be pickled and sent to another process (a Ray actor) that opens the session itself.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..parsing import parse_shape
from ..settings import TileSettings

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")
#: The tiling a TensorRT-provider shape profile is derived from when none is given: tile "auto"
#: (the profile holds ``DEFAULT_TILE`` windows), the model's default margin, one tile per call.
DEFAULT_TRT_TILE_PLAN = TileSettings()


def _shape(value, what: str) -> tuple[int, int, int, int] | None:
    """An NCHW shape from a tuple or an 'NxCxHxW' string (None stays None), through ``parse_shape``."""
    if value is None:
        return None
    text = "x".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
    return parse_shape(text, what=what)


@dataclass(frozen=True)
class OrtOptions:
    """ONNX Runtime (and its TensorRT provider).

    Attributes:
        inter_op_threads: inter-op threads (None = ORT's default).
        graph_optimization: "disable", "basic", "extended" or "all".
        provider_options: extra options for the chosen provider, as ORT names them (a tuple of
            (key, value) pairs, so the dataclass stays hashable; a dict is accepted and converted).
        trt_cache_dir: engine and timing cache folder for the TensorRT provider (None = no cache).
        trt_profile_min, trt_profile_opt, trt_profile_max: the TensorRT provider's shape profile of
            the input ``lr`` (NCHW tuples or "NxCxHxW" strings; all three or none). Without a
            profile the provider builds an engine for the first input shape and rebuilds whenever
            a shape falls outside it, so one is always passed: these, or one derived from
            ``trt_tile_plan``.
        trt_tile_plan: the ``TileSettings`` the session will serve (a (tile, tile_pad, batch)
            tuple is taken too), used for the profile when no explicit one is given: windows up to
            tile + 2 * margin pixels, 1..batch tiles per call (``TileSettings.fixed_tile`` and
            ``pad_for`` resolve "auto" and the margin; tile 0 = whole images, which needs an
            explicit profile).
        mem_pattern: ORT's memory-pattern planner (``enable_mem_pattern``); off by default: it
            took 1.5x the activation memory for no speed gain (measured, see backends/ort.py).
    """

    inter_op_threads: int | None = None
    graph_optimization: str = "all"
    provider_options: tuple[tuple[str, Any], ...] = ()
    trt_cache_dir: str | None = None
    trt_profile_min: tuple[int, int, int, int] | None = None
    trt_profile_opt: tuple[int, int, int, int] | None = None
    trt_profile_max: tuple[int, int, int, int] | None = None
    trt_tile_plan: TileSettings = DEFAULT_TRT_TILE_PLAN
    mem_pattern: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.provider_options, dict):
            object.__setattr__(self, "provider_options", tuple(sorted(self.provider_options.items())))
        shapes = {}
        for name in ("trt_profile_min", "trt_profile_opt", "trt_profile_max"):
            shapes[name] = _shape(getattr(self, name), name)
            object.__setattr__(self, name, shapes[name])
        given = [v is not None for v in shapes.values()]
        if any(given) and not all(given):
            raise ValueError("give trt_profile_min, trt_profile_opt and trt_profile_max together (or none)")
        if all(given):
            mn, opt, mx = shapes.values()
            if mn[1] != opt[1] or opt[1] != mx[1] or not all(a <= b <= c for a, b, c in zip(mn, opt, mx)):
                raise ValueError(f"TensorRT profile needs min <= opt <= max per dim and one channel count, got "
                                 f"{mn}, {opt}, {mx}")
        if not isinstance(self.trt_tile_plan, TileSettings):
            tile, pad, batch = self.trt_tile_plan
            object.__setattr__(self, "trt_tile_plan", TileSettings(tile=tile, tile_pad=pad, batch=batch))
        if self.graph_optimization not in GRAPH_OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {GRAPH_OPT_LEVELS}, got {self.graph_optimization!r}")
        if self.inter_op_threads is not None and self.inter_op_threads < 1:
            raise ValueError(f"inter_op_threads must be >= 1, got {self.inter_op_threads}")


@dataclass(frozen=True)
class TrtOptions:
    """Native TensorRT.

    Attributes:
        profile: optimisation profile index to run with.
        check_gpu: verify the sidecar's TensorRT version and GPU against this machine.
    """

    profile: int = 0
    check_gpu: bool = True


@dataclass(frozen=True)
class TorchOptions:
    """The PyTorch adapter (``srdeploy.export.torch_backend``, found through an entry point).

    Attributes:
        fold_bn: fold BatchNorm into the convolutions (False = the training model as it is).
        use_ema: use the EMA weights when the checkpoint has them.
        channels_last: channels-last convolutions (None = on CUDA only).
    """

    fold_bn: bool = True
    use_ema: bool = True
    channels_last: bool | None = None


OPENVINO_HINTS = ("LATENCY", "THROUGHPUT")


@dataclass(frozen=True)
class OpenVinoOptions:
    """OpenVINO.

    Attributes:
        performance_hint: "LATENCY" (one request at a time, the runtime's use) or "THROUGHPUT".
        num_streams: parallel inference streams (None = what the hint chooses).
        cache_dir: OpenVINO model cache folder (compiled blobs; None = no cache).
    """

    performance_hint: str = "LATENCY"
    num_streams: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.performance_hint not in OPENVINO_HINTS:
            raise ValueError(f"openvino performance_hint must be one of {OPENVINO_HINTS}, "
                             f"got {self.performance_hint!r}")
        if self.num_streams is not None and self.num_streams < 1:
            raise ValueError(f"openvino num_streams must be >= 1, got {self.num_streams}")


OPTIONS: dict[str, type] = {"onnxruntime": OrtOptions, "onnxruntime-tensorrt": OrtOptions,
                            "tensorrt": TrtOptions, "torch": TorchOptions, "openvino": OpenVinoOptions}


def make_options(backend: str, options: Any = None, **kwargs) -> Any:
    """The backend's options dataclass from an instance, a mapping or keyword arguments.

    Unknown keys are an error naming the valid ones (never silently ignored).
    """
    cls = OPTIONS[backend]
    if options is not None and not isinstance(options, dict):
        if not isinstance(options, cls):
            raise TypeError(f"backend {backend!r} takes {cls.__name__}, got {type(options).__name__}")
        if kwargs:
            raise TypeError("pass backend options either as an options object or as keywords, not both")
        return options
    values = {**(options or {}), **kwargs}
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"backend {backend!r}: unknown option(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(names)) or 'none'}")
    return cls(**values)
