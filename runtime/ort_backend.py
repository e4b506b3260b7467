"""ONNX Runtime adapter: CPU, CUDA and TensorRT execution providers.

The model's contract (scale, ranges, receptive radius) is read from the ONNX file's
``metadata_props`` through ONNX Runtime itself, so the ``onnx`` package is not needed.
A requested provider that ONNX Runtime cannot use is an error: ONNX Runtime itself silently
falls back to the CPU when a GPU provider fails to load, so the providers actually attached to
the session are checked after creation and recorded in ``details["providers"]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .metadata import INPUT_NAME, OUTPUT_NAME, ModelInfo
from .session import InputSpec, Session

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")


def _split_device(device: str) -> tuple[str, int]:
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return kind, int(index or 0)


class OrtSession(Session):
    """An srdeploy ONNX model on ONNX Runtime.

    Args:
        path: the ``.onnx`` file (with srdeploy metadata).
        device: "cpu", "cuda" or "cuda:N".
        provider: "cpu", "cuda" or "tensorrt" (ORT's TensorRT execution provider); None = the
            device's natural provider (cpu -> CPU, cuda -> CUDA).
        precision: None = what the file computes (its ``srdeploy.precision`` metadata);
            "fp16" with the TensorRT provider enables its FP16 mode; any other mismatch is an
            error (export the FP16 variant with ``srdeploy export --fp16``).
        threads: intra-op threads (None = ONNX Runtime's default, all cores).
        inter_op_threads: inter-op threads (None = default).
        graph_optimization: "disable", "basic", "extended" or "all" (default).
        provider_options: extra options for the chosen provider (ORT's own names).
        trt_cache_dir: engine cache folder for the TensorRT provider (None = no cache).
    """

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, device: str = "cpu", provider: str | None = None,
                 precision: str | None = None, threads: int | None = None, inter_op_threads: int | None = None,
                 graph_optimization: str = "all", provider_options: dict | None = None,
                 trt_cache_dir: str | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model file does not exist")
        kind, index = _split_device(device)
        provider = provider or kind
        if provider not in PROVIDERS:
            raise ValueError(f"onnxruntime provider must be one of {sorted(PROVIDERS)}, got {provider!r}")
        if (provider == "cpu") != (kind == "cpu"):
            raise ValueError(f"onnxruntime: provider {provider!r} does not run on device {device!r}")
        available = ort.get_available_providers()
        wanted = PROVIDERS[provider]
        if wanted not in available:
            raise RuntimeError(
                f"{path}: device {device!r} needs ONNX Runtime's {wanted}, but this onnxruntime "
                f"{ort.__version__} only has {', '.join(available)}. Install onnxruntime-gpu "
                "(pip install 'srdeploy[gpu]') or choose --device cpu.")
        if graph_optimization not in GRAPH_OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {GRAPH_OPT_LEVELS}, got {graph_optimization!r}")

        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[graph_optimization]
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            opts.intra_op_num_threads = threads
        if inter_op_threads is not None:
            opts.inter_op_num_threads = inter_op_threads

        popts = dict(provider_options or {})
        providers: list = []
        if provider == "tensorrt":
            popts.setdefault("device_id", index)
            if precision == "fp16":
                popts.setdefault("trt_fp16_enable", True)
            if trt_cache_dir:
                popts.setdefault("trt_engine_cache_enable", True)
                popts.setdefault("trt_engine_cache_path", str(trt_cache_dir))
                popts.setdefault("trt_timing_cache_enable", True)
            # CUDA behind TensorRT for any node TensorRT rejects (recorded, not hidden).
            providers = [(wanted, popts), ("CUDAExecutionProvider", {"device_id": index})]
        elif provider == "cuda":
            popts.setdefault("device_id", index)
            providers = [(wanted, popts)]
        else:
            providers = [(wanted, popts)] if popts else [wanted]

        try:
            self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types (InvalidProtobuf, Fail, ...)
            raise ValueError(f"{path}: ONNX Runtime cannot load this model ({type(exc).__name__}: {exc}); "
                             "is it a valid ONNX file? Re-export it with `srdeploy export`.") from exc

        used = self._sess.get_providers()
        if used[0] != wanted:
            raise RuntimeError(f"{path}: ONNX Runtime did not attach {wanted} (attached: {used}); "
                               "check the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs")

        props = self._sess.get_modelmeta().custom_metadata_map
        self.info = ModelInfo.from_props(dict(props), source=str(path))
        inputs, outputs = self._sess.get_inputs(), self._sess.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise ValueError(f"{path}: expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}, got "
                             f"{[i.name for i in inputs]} -> {[o.name for o in outputs]}; re-export it with "
                             "`srdeploy export`")
        if inputs[0].type != "tensor(float)" or outputs[0].type != "tensor(float)":
            raise ValueError(f"{path}: model input/output must be float32, got {inputs[0].type} -> "
                             f"{outputs[0].type}")

        file_precision = self.info.precision
        computed = "fp16" if (provider == "tensorrt" and precision == "fp16") else file_precision
        if precision is not None and precision != computed:
            raise ValueError(
                f"{path}: precision {precision!r} requested but this model computes in {file_precision} on "
                f"{wanted}; use the {precision} ONNX variant (srdeploy export --fp16), or the TensorRT "
                "provider / a TensorRT engine for fp16")
        self.precision = computed

        dims = inputs[0].shape  # ints for fixed dims, strings for symbolic ones
        channels = dims[1] if len(dims) == 4 and isinstance(dims[1], int) else 3

        def rng(d) -> tuple[int, int | None]:
            return (d, d) if isinstance(d, int) and d > 0 else (1, None)

        self.input_spec = InputSpec(channels=channels, batch=rng(dims[0]), height=rng(dims[2]),
                                    width=rng(dims[3]))
        self.device = "cpu" if kind == "cpu" else f"cuda:{index}"
        self.path = path
        self.details = {
            "providers": used,
            "provider_options": {k: v for k, v in self._sess.get_provider_options().items()
                                 if k in used[:1]},
            "onnxruntime_version": ort.__version__,
            "intra_op_threads": threads,
            "inter_op_threads": inter_op_threads,
            "graph_optimization": graph_optimization,
            "model": str(path),
        }

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    def close(self) -> None:
        self._sess = None
        super().close()
