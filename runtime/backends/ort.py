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

from ..metadata import INPUT_NAME, OUTPUT_NAME, ModelInfo
from ..session import InputSpec, Session
from . import parse_device
from .options import GRAPH_OPT_LEVELS, OrtOptions

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}
assert tuple(_GRAPH_OPT) == GRAPH_OPT_LEVELS


class OrtSession(Session):
    """An srdeploy ONNX model on ONNX Runtime.

    Args:
        path: the ``.onnx`` file (with srdeploy metadata).
        backend: "onnxruntime" (CPU or CUDA provider, from the device) or "onnxruntime-tensorrt"
            (ORT's TensorRT execution provider).
        device: "cpu", "cuda" or "cuda:N".
        precision: None = what the file computes (its ``srdeploy.precision`` metadata);
            "fp16" with the TensorRT provider enables its FP16 mode; any other mismatch is an
            error (export the FP16 variant with ``srdeploy export --fp16``).
        threads: intra-op threads (None = ONNX Runtime's default, all cores).
        options: ``OrtOptions`` (inter-op threads, graph optimisation, provider options, TensorRT
            cache folder).
    """

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, backend: str = "onnxruntime", device: str = "cpu",
                 precision: str | None = None, threads: int | None = None, options: OrtOptions | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = options or OrtOptions()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model file does not exist")
        kind, index = parse_device(device, backend=backend)
        provider = "tensorrt" if backend == "onnxruntime-tensorrt" else kind
        wanted = PROVIDERS[provider]
        self._check_available(ort, path, device, wanted)
        opts = self._session_options(ort, threads, options)
        providers = self._providers(provider, wanted, index, precision, options)
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types (InvalidProtobuf, Fail, ...)
            raise ValueError(f"{path}: ONNX Runtime cannot load this model ({type(exc).__name__}: {exc}); "
                             "is it a valid ONNX file? Re-export it with `srdeploy export`.") from exc
        used = self._sess.get_providers()
        if used[0] != wanted:
            raise RuntimeError(f"{path}: ONNX Runtime did not attach {wanted} (attached: {used}); "
                               "check the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs")
        self.info = ModelInfo.from_props(dict(self._sess.get_modelmeta().custom_metadata_map), source=str(path))
        self._check_io(path)
        self.precision = self._precision(path, provider, precision, wanted)
        self.input_spec = self._input_spec()
        self.device = "cpu" if kind == "cpu" else f"cuda:{index}"
        self.path = path
        self.details = {
            "providers": used,
            "provider_options": {k: v for k, v in self._sess.get_provider_options().items()
                                 if k in used[:1]},
            "onnxruntime_version": ort.__version__,
            "intra_op_threads": threads,
            "inter_op_threads": options.inter_op_threads,
            "graph_optimization": options.graph_optimization,
            "mem_pattern": options.mem_pattern,
            "model": str(path),
        }

    # ------------------------------------------------------------------ set-up steps
    @staticmethod
    def _check_available(ort, path: Path, device: str, wanted: str) -> None:
        available = ort.get_available_providers()
        if wanted not in available:
            raise RuntimeError(
                f"{path}: device {device!r} needs ONNX Runtime's {wanted}, but this onnxruntime "
                f"{ort.__version__} only has {', '.join(available)}. Install onnxruntime-gpu "
                "(pip install 'srdeploy[gpu]') or choose --device cpu.")

    @staticmethod
    def _session_options(ort, threads: int | None, options: OrtOptions):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _GRAPH_OPT[options.graph_optimization])
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            opts.intra_op_num_threads = threads
        if options.inter_op_threads is not None:
            opts.inter_op_num_threads = options.inter_op_threads
        # The memory-pattern planner pre-allocates one block for all of a shape's activations:
        # measured on the bundled model (CPU, scripts/bench_ort_memory.py), it costs 2.1x the
        # live tensors against 1.45x without it (window 280: 1382 vs 923 MiB), with no measurable
        # speed difference. Tiles all have one shape, so there is nothing for it to win.
        opts.enable_mem_pattern = options.mem_pattern
        return opts

    @staticmethod
    def _providers(provider: str, wanted: str, index: int, precision: str | None, options: OrtOptions) -> list:
        popts = dict(options.provider_options)
        if provider == "tensorrt":
            popts.setdefault("device_id", index)
            if precision == "fp16":
                popts.setdefault("trt_fp16_enable", True)
            if options.trt_cache_dir:
                popts.setdefault("trt_engine_cache_enable", True)
                popts.setdefault("trt_engine_cache_path", str(options.trt_cache_dir))
                popts.setdefault("trt_timing_cache_enable", True)
            # CUDA behind TensorRT for any node TensorRT rejects (recorded, not hidden).
            return [(wanted, popts), ("CUDAExecutionProvider", {"device_id": index})]
        if provider == "cuda":
            popts.setdefault("device_id", index)
            return [(wanted, popts)]
        return [(wanted, popts)] if popts else [wanted]

    def _check_io(self, path: Path) -> None:
        inputs, outputs = self._sess.get_inputs(), self._sess.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise ValueError(f"{path}: expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}, got "
                             f"{[i.name for i in inputs]} -> {[o.name for o in outputs]}; re-export it with "
                             "`srdeploy export`")
        if inputs[0].type != "tensor(float)" or outputs[0].type != "tensor(float)":
            raise ValueError(f"{path}: model input/output must be float32, got {inputs[0].type} -> "
                             f"{outputs[0].type}")

    def _precision(self, path: Path, provider: str, precision: str | None, wanted: str) -> str:
        file_precision = self.info.precision
        computed = "fp16" if (provider == "tensorrt" and precision == "fp16") else file_precision
        if precision is not None and precision != computed:
            raise ValueError(
                f"{path}: precision {precision!r} requested but this model computes in {file_precision} on "
                f"{wanted}; use the {precision} ONNX variant (srdeploy export --fp16), or the TensorRT "
                "provider / a TensorRT engine for fp16")
        return computed

    def _input_spec(self) -> InputSpec:
        dims = self._sess.get_inputs()[0].shape  # ints for fixed dims, strings for symbolic ones
        channels = dims[1] if len(dims) == 4 and isinstance(dims[1], int) else 3

        def rng(d) -> tuple[int, int | None]:
            return (d, d) if isinstance(d, int) and d > 0 else (1, None)

        return InputSpec(channels=channels, batch=rng(dims[0]), height=rng(dims[2]), width=rng(dims[3]))

    # ------------------------------------------------------------------ inference
    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    def close(self) -> None:
        self._sess = None
        super().close()
