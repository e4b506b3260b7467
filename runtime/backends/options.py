"""Backend options as small frozen dataclasses (one per backend), instead of untyped ``**options``.

Plain values only (no onnxruntime/TensorRT/torch import), so a ``SessionRecipe`` holding them can
be pickled and sent to another process (a Ray actor) that opens the session itself.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class OrtOptions:
    """ONNX Runtime (and its TensorRT provider).

    Attributes:
        inter_op_threads: inter-op threads (None = ORT's default).
        graph_optimization: "disable", "basic", "extended" or "all".
        provider_options: extra options for the chosen provider, as ORT names them (a tuple of
            (key, value) pairs, so the dataclass stays hashable; a dict is accepted and converted).
        trt_cache_dir: engine and timing cache folder for the TensorRT provider (None = no cache).
        mem_pattern: ORT's memory-pattern planner (``enable_mem_pattern``); off by default: it
            took 1.5x the activation memory for no speed gain (measured, see backends/ort.py).
    """

    inter_op_threads: int | None = None
    graph_optimization: str = "all"
    provider_options: tuple[tuple[str, Any], ...] = ()
    trt_cache_dir: str | None = None
    mem_pattern: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.provider_options, dict):
            object.__setattr__(self, "provider_options", tuple(sorted(self.provider_options.items())))
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


OPTIONS: dict[str, type] = {"onnxruntime": OrtOptions, "onnxruntime-tensorrt": OrtOptions,
                            "tensorrt": TrtOptions, "torch": TorchOptions}


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
