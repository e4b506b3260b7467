"""ONNX Runtime adapter: CPU, CUDA and TensorRT execution providers.

The model's contract (scale, ranges, receptive radius) is read from the ONNX file's
``metadata_props`` through ONNX Runtime itself, so the ``onnx`` package is not needed.
A requested provider that ONNX Runtime cannot use is an error: ONNX Runtime itself silently
falls back to the CPU when a GPU provider fails to load, so the providers actually attached to
the session are checked after creation and recorded in ``details["providers"]``. Before a GPU
session: one ORT distribution, the CUDA/TensorRT libraries loaded, ORT's fallback off and its own
error captured (``_ortgpu``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..metadata import INPUT_NAME, OUTPUT_NAME, ModelInfo
from ..session import InputSpec, Session
from . import parse_device
from ._ortgpu import check_distributions, create_session, load_provider_libraries, ort_cuda_major, ort_error
from .options import GRAPH_OPT_LEVELS, OrtOptions

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}
assert tuple(_GRAPH_OPT) == GRAPH_OPT_LEVELS
# ORT exception types that mean "this file is not a loadable ONNX model" (the rest are provider errors).
_LOAD_ERRORS = ("InvalidProtobuf", "InvalidGraph", "NoSuchFile", "NoModel")
# TensorRT-provider options that lower precision behind the model's back.
_REDUCED_PRECISION_FLAGS = ("trt_fp16_enable", "trt_bf16_enable")


def trt_profile(options: OrtOptions, info: ModelInfo, channels: int = 3):
    """(min, opt, max) NCHW shapes of the TensorRT provider's profile for ``lr``.

    The explicit ``trt_profile_*`` options, else the profile that holds every window of the
    tiling ``options.trt_tile_plan`` (a ``TileSettings``): 1..batch tiles of up to tile + 2 * margin
    pixels (smaller images give smaller windows, so the minimum is 1x1), optimised for full tiles.
    The profile exists before any image is seen, so tile "auto" profiles ``DEFAULT_TILE``
    (``TileSettings.fixed_tile``); the auto chooser then stays inside it (the session's
    ``input_spec`` caps the window).
    """
    if options.trt_profile_min is not None:
        return options.trt_profile_min, options.trt_profile_opt, options.trt_profile_max
    tiling = options.trt_tile_plan
    tile = tiling.fixed_tile()
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    if th == 0 or tw == 0:
        raise ValueError("the TensorRT provider needs a bounded shape profile, and whole-image runs (tile 0) have "
                         "none: tile the input (--tile N), or pass OrtOptions(trt_profile_min=..., "
                         "trt_profile_opt=..., trt_profile_max=...)")
    from ..tiling import fit_size, window_size

    pad = tiling.pad_for(info.receptive_radius, info.tile_margin)
    rules = dict(multiple=info.size_multiple, minimum=info.min_size)
    full = (tiling.batch, channels, window_size(th, pad, **rules), window_size(tw, pad, **rules))
    low = fit_size(1, **rules)  # the smallest window the tiler makes
    return (1, channels, low, low), full, full


def _refuse_bf16(path: Path, provider: str) -> None:
    """bf16 from an FP32 file: ONNX Runtime has no such mode for convolutions, so it is an error.

    The CPU provider's only bf16 switch, ``mlas.enable_gemm_fastmath_arm64_bfloat16``, reaches
    MatMul/Gemm kernels on ARM64 alone; an SR model is convolutions, which would still compute in
    FP32 under a bf16 label. CUDA/TensorRT compute in the ONNX file's types. OpenVINO does run
    FP32 convolutions in bf16 on CPUs with AVX-512 BF16 or AMX.
    """
    raise ValueError(f"{path}: ONNX Runtime's {provider} has no bf16 mode for this model's convolutions (its only "
                     "bf16 switch covers MatMul on ARM64); use --backend openvino --precision bf16 on a CPU with "
                     "AVX-512 BF16 or AMX, or --precision fp32")


class OrtSession(Session):
    """An srdeploy ONNX model on ONNX Runtime.

    Args:
        path: the ``.onnx`` file (with srdeploy metadata).
        backend: "onnxruntime" (CPU or CUDA provider, from the device) or "onnxruntime-tensorrt"
            (ORT's TensorRT execution provider).
        device: "cpu", "cuda" or "cuda:N".
        precision: None = what the file computes (its ``srdeploy.precision`` metadata); a
            mismatch is an error (export the FP16 variant with ``srdeploy export --fp16``). The
            TensorRT provider never gets ``trt_fp16_enable``: FP16 there means model_fp16.onnx.
        threads: intra-op threads (None = ONNX Runtime's default, all cores).
        options: ``OrtOptions`` (inter-op threads, graph optimisation, provider options, TensorRT
            cache folder and shape profile).
    """

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, backend: str = "onnxruntime", device: str = "cpu",
                 precision: str | None = None, threads: int | None = None, options: OrtOptions | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as exc:  # the base install has none: it comes from the cpu or a gpu extra
            raise ModuleNotFoundError("ONNX Runtime is not installed: pip install 'srdeploy[cpu]' (or 'srdeploy[gpu]' "
                                      "on an NVIDIA GPU; never both)", name="onnxruntime") from exc

        options = options or OrtOptions()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model file does not exist")
        kind, index = parse_device(device, backend=backend)
        provider = "tensorrt" if backend == "onnxruntime-tensorrt" else kind
        wanted = PROVIDERS[provider]
        distributions = check_distributions(path, gpu=provider != "cpu")
        self._check_available(ort, path, device, wanted)
        if provider != "cpu":
            load_provider_libraries(ort, provider, path)
        opts = self._session_options(ort, threads, options)
        profile = None
        if provider == "tensorrt":
            # The TensorRT provider needs the model's precision and receptive radius before the
            # session exists (FP16 check, shape profile): read the contract on the CPU first.
            contract, _ = self._create(ort, path, "CPUExecutionProvider", self._session_options(ort, None, OrtOptions(
                graph_optimization="disable")), ["CPUExecutionProvider"])
            info = ModelInfo.from_props(dict(contract.get_modelmeta().custom_metadata_map), source=str(path))
            del contract
            self._check_trt_precision(path, info, precision, dict(options.provider_options))
            profile = trt_profile(options, info)
        providers = self._providers(provider, wanted, index, options, profile)
        self._sess, captured = self._create(ort, path, wanted, opts, providers, capture=provider != "cpu")
        used = self._sess.get_providers()
        if used[0] != wanted:  # ORT created the session on a fallback provider: never run there
            raise RuntimeError(f"{path}: ONNX Runtime did not attach {wanted} (attached: {used}): " + (
                ort_error(captured, ort_cuda_major()) or "it logged no error; check the CUDA/cuDNN/TensorRT "
                "libraries onnxruntime-gpu needs"))
        self.info = ModelInfo.from_props(dict(self._sess.get_modelmeta().custom_metadata_map), source=str(path))
        self._check_io(path)
        self.precision = self._precision(path, precision, wanted)
        self.input_spec = self._input_spec(profile)
        self.device = "cpu" if kind == "cpu" else f"cuda:{index}"
        self.path = path
        self.details = {
            "providers": used,
            "provider_options": {k: v for k, v in self._sess.get_provider_options().items()
                                 if k in used[:1]},
            "onnxruntime_version": ort.__version__,
            "onnxruntime_distributions": distributions,
            "intra_op_threads": threads,
            "inter_op_threads": options.inter_op_threads,
            "graph_optimization": options.graph_optimization,
            "mem_pattern": options.mem_pattern,
            "model": str(path),
        }
        if profile is not None:
            self.details["trt_profile"] = dict(zip(("min", "opt", "max"), profile))

    # ------------------------------------------------------------------ set-up steps
    @staticmethod
    def _check_available(ort, path: Path, device: str, wanted: str) -> None:
        available = ort.get_available_providers()
        if wanted not in available:
            raise RuntimeError(
                f"{path}: device {device!r} needs ONNX Runtime's {wanted}, but this onnxruntime "
                f"{ort.__version__} only has {', '.join(available)}. Install onnxruntime-gpu instead of "
                "onnxruntime (pip uninstall -y onnxruntime && pip install 'srdeploy[gpu]') or choose --device cpu.")

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
    def _create(ort, path: Path, wanted: str, opts, providers: list, capture: bool = False):
        """``(ort.InferenceSession, captured ORT output)``; a file ONNX Runtime cannot parse is reported
        as such, any other failure (bad provider option, missing library, TensorRT build error) with
        the provider's own message. ``capture`` (GPU providers): no CPU fallback, ORT's output kept."""
        try:
            if capture:
                return create_session(ort, path, opts, providers)
            return ort.InferenceSession(str(path), sess_options=opts, providers=providers), ""
        except Exception as exc:  # ORT raises its own exception types (InvalidProtobuf, Fail, EPFail, ...)
            if type(exc).__name__ in _LOAD_ERRORS:
                raise ValueError(f"{path}: ONNX Runtime cannot load this model ({type(exc).__name__}: {exc}); "
                                 "is it a valid ONNX file? Re-export it with `srdeploy export`.") from exc
            logged = ort_error(getattr(exc, "ort_output", ""), ort_cuda_major())
            raise RuntimeError(f"{path}: ONNX Runtime could not create a session on {wanted} "
                               f"({type(exc).__name__}: {exc})"
                               + (f"; ORT logged: {logged}" if logged and logged not in str(exc) else "")) from exc

    @staticmethod
    def _check_trt_precision(path: Path, info: ModelInfo, precision: str | None, popts: dict) -> None:
        """The TensorRT provider computes in the types the ONNX file has. Its ``trt_fp16_enable``
        would lower an FP32 model to FP16 with nothing pinned to FP32, bypassing srdeploy's FP16
        overflow analysis, so FP16 means the analysed ``model_fp16.onnx`` and nothing else."""
        lowered = [k for k in _REDUCED_PRECISION_FLAGS if str(popts.get(k, "")).lower() in ("1", "true")]
        if info.precision != "fp16" and (precision == "fp16" or lowered):
            what = f"provider option {', '.join(lowered)}" if lowered else "precision 'fp16'"
            raise ValueError(
                f"{path}: {what} on this {info.precision} model would run TensorRT in reduced precision without "
                "srdeploy's FP16 overflow analysis; export the analysed FP16 model with `srdeploy export "
                "CHECKPOINT --fp16` and pass model_fp16.onnx (or build an engine with `srdeploy build-engine --fp16`)")

    @staticmethod
    def _providers(provider: str, wanted: str, index: int, options: OrtOptions, profile) -> list:
        popts = dict(options.provider_options)
        if provider == "tensorrt":
            popts.setdefault("device_id", index)
            mn, opt, mx = (f"{INPUT_NAME}:" + "x".join(str(v) for v in s) for s in profile)
            popts.setdefault("trt_profile_min_shapes", mn)
            popts.setdefault("trt_profile_opt_shapes", opt)
            popts.setdefault("trt_profile_max_shapes", mx)
            if options.trt_cache_dir:
                popts.setdefault("trt_engine_cache_enable", True)
                popts.setdefault("trt_engine_cache_path", str(options.trt_cache_dir))
                popts.setdefault("trt_timing_cache_enable", True)
                # Without a path the provider writes the timing cache into the working directory.
                popts.setdefault("trt_timing_cache_path", str(options.trt_cache_dir))
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

    def _precision(self, path: Path, precision: str | None, wanted: str) -> str:
        file_precision = self.info.precision
        if precision == "bf16" and file_precision != "bf16":
            _refuse_bf16(path, wanted)
        if precision is not None and precision != file_precision:
            raise ValueError(
                f"{path}: precision {precision!r} requested but this model computes in {file_precision} on "
                f"{wanted}; use the {precision} ONNX variant (srdeploy export --fp16 writes model_fp16.onnx), "
                "or a TensorRT engine built with that precision")
        return file_precision

    def _input_spec(self, profile=None) -> InputSpec:
        if profile is not None:  # the TensorRT provider's profile bounds the input, as an engine's does
            mn, opt, mx = profile
            return InputSpec(channels=mn[1], batch=(mn[0], mx[0]), height=(mn[2], mx[2]), width=(mn[3], mx[3]),
                             opt=opt)
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
