"""``srdeploy build-engine``: a TensorRT engine from an srdeploy ONNX model (TensorRT Python API).

The engine is a plain serialized plan (``trtexec --loadEngine`` loads it). Beside it,
``<engine>.json`` (the sidecar, keys in ``SIDECAR_KEYS``) records what the runtime must check
before loading (TensorRT version, GPU name and compute capability: engines only run where they
were built) and what was built (precision, FP32-pinned layers, profiles, workspace, ONNX sha256,
build time, the model's srdeploy metadata). The format (``SIDECAR_KEYS``, ``sidecar_path``,
``read_sidecar``/``write_sidecar``) is defined once in ``srdeploy.runtime.backends.trt``, whose
``check_sidecar`` validates it before loading; the runtime never imports this module. The GPU
identity recorded here is read by ``srdeploy.runtime.backends._cuda``, as the runtime reads it.

Precision: networks are built *strongly typed*: every layer runs in the type its ONNX tensors
have. An FP16 engine is built from the mixed-precision ONNX of ``fp16.to_fp16_onnx`` (FP16
weights and compute, float32 I/O, layers whose calibration activations exceed the FP16 safe
range kept FP32 through Cast nodes). That is how TensorRT 11 expresses FP16 (its weak-typing
``BuilderFlag.FP16`` and per-layer precision constraints were removed) and on TensorRT 10 it
enforces the pins exactly instead of treating them as hints. FP32 engines disable TF32, so
"fp32" means FP32. Nothing here imports tensorrt until a build starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from srdeploy.runtime.atomic import atomic_target
# Cuda and import_cudart as the TensorRT runtime uses them (runtime/backends/_cuda.py is private to the runtime).
from srdeploy.runtime.backends.trt import (HARDWARE_LEVELS, SIDECAR_FORMAT, SIDECAR_KEYS, Cuda, import_cudart,
                                           read_sidecar, sidecar_path, write_sidecar)
from srdeploy.runtime.metadata import INPUT_NAME, ModelInfo
from srdeploy.runtime.parsing import parse_shape

DEFAULT_WORKSPACE_GB = 4.0
DEFAULT_OPT_LEVEL = 3


# ----------------------------------------------------------------------------- shapes

def _shape_str(shape) -> str:
    return "x".join(str(v) for v in shape)


@dataclass(frozen=True)
class ShapeProfile:
    """One TensorRT optimisation profile of the input ``lr``: min <= opt <= max per dimension."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    @classmethod
    def parse(cls, min: str, opt: str, max: str) -> "ShapeProfile":
        """From '1x3x32x32'-style strings; validated."""
        return cls(parse_shape(min), parse_shape(opt), parse_shape(max)).validate()

    def validate(self, channels: int = 3) -> "ShapeProfile":
        """Raise ValueError unless min <= opt <= max in every dimension and C == ``channels``."""
        for name, shape in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            if len(shape) != 4 or any(int(v) < 1 for v in shape):
                raise ValueError(f"profile {name} {shape} is not four positive dims NxCxHxW")
            if shape[1] != channels:
                raise ValueError(f"profile {name} {_shape_str(shape)}: the model takes {channels} channels "
                                 f"(NxCxHxW), got C={shape[1]}")
        for i, dim in enumerate(("batch", "channels", "height", "width")):
            if not self.min[i] <= self.opt[i] <= self.max[i]:
                raise ValueError(f"profile {dim}: need min <= opt <= max, got {self.min[i]}, {self.opt[i]}, "
                                 f"{self.max[i]} (--min {_shape_str(self.min)} --opt {_shape_str(self.opt)} "
                                 f"--max {_shape_str(self.max)})")
        return self

    def as_dict(self) -> dict:
        return {"input": INPUT_NAME, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: dict) -> "ShapeProfile":
        return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"])).validate()


def profiles_from_args(mins, opts, maxs) -> list[ShapeProfile]:
    """Pair repeated ``--min/--opt/--max`` flags into profiles (the i-th of each forms profile i)."""
    mins, opts, maxs = list(mins or []), list(opts or []), list(maxs or [])
    if not (len(mins) == len(opts) == len(maxs)) or not mins:
        raise ValueError(f"give --min, --opt and --max once per profile (got {len(mins)}, {len(opts)}, "
                         f"{len(maxs)}), e.g. --min 1x3x32x32 --opt 1x3x256x256 --max 4x3x512x512")
    return [ShapeProfile.parse(a, b, c) for a, b, c in zip(mins, opts, maxs)]


# ----------------------------------------------------------------------------- cache key

@dataclass(frozen=True)
class EngineKey:
    """Everything that determines an engine's content; equal keys => the engine can be reused."""

    onnx_sha256: str
    built_onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    fp32_layers: tuple[str, ...]
    profiles: tuple[ShapeProfile, ...]
    workspace_bytes: int
    builder_optimization_level: int
    tf32: bool
    strongly_typed: bool = True
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    format: str = SIDECAR_FORMAT

    def digest(self) -> str:
        """sha256 of the key's canonical JSON."""
        d = asdict(self)
        d["profiles"] = [ShapeProfile(**p).as_dict() if isinstance(p, dict) else p.as_dict() for p in d["profiles"]]
        d["fp32_layers"] = sorted(d["fp32_layers"])
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- sidecar

def make_sidecar(*, key: EngineKey, engine_file: Path, engine_sha256: str, onnx_file: Path, info: ModelInfo,
                 extra_props: dict | None, fp16_analysis: dict | None, timing_cache: str | None,
                 build_seconds: float, cuda_driver_version: int | None) -> dict:
    """The sidecar dict (keys exactly ``SIDECAR_KEYS``)."""
    from srdeploy import __version__

    props = {**(extra_props or {}), **ModelInfo(**{**info.__dict__, "precision": key.precision}).to_props()}
    side = {
        "format": SIDECAR_FORMAT,
        "engine_file": engine_file.name,
        "engine_sha256": engine_sha256,
        "tensorrt_version": key.tensorrt_version,
        "gpu_name": key.gpu_name,
        "compute_capability": key.compute_capability,
        "cuda_driver_version": cuda_driver_version,
        "precision": key.precision,
        "fp32_layers": list(key.fp32_layers),
        "strongly_typed": key.strongly_typed,
        "tf32": key.tf32,
        "profiles": [p.as_dict() for p in key.profiles],
        "workspace_bytes": key.workspace_bytes,
        "builder_optimization_level": key.builder_optimization_level,
        "version_compatible": key.version_compatible,
        "hardware_compatibility": key.hardware_compatibility,
        "onnx_file": str(onnx_file),
        "onnx_sha256": key.onnx_sha256,
        "built_onnx_sha256": key.built_onnx_sha256,
        "metadata": props,
        "fp16_analysis": fp16_analysis,
        "timing_cache": timing_cache,
        "build_seconds": round(float(build_seconds), 3),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "srdeploy_version": __version__,
        "cache_key": key.digest(),
    }
    assert tuple(side) == SIDECAR_KEYS
    return side


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def read_checked_sidecar(path: str | os.PathLike) -> dict:
    """``read_sidecar`` plus a check that every recorded profile is valid."""
    data = read_sidecar(path)
    for p in data["profiles"]:
        ShapeProfile.from_dict(p)
    return data


# ----------------------------------------------------------------------------- TensorRT

def import_tensorrt():
    """``tensorrt`` module, or ModuleNotFoundError saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ModuleNotFoundError(
            "build-engine needs TensorRT (Python package 'tensorrt', version 10 or later) and an NVIDIA GPU; "
            "install it with pip install 'srdeploy[gpu]' on a machine with CUDA", name="tensorrt") from exc
    return trt


def gpu_identity(device: int = 0) -> tuple[str, str, int | None]:
    """(GPU name, "major.minor" compute capability, CUDA driver version) of CUDA device ``device``,
    read exactly as the runtime reads it (``srdeploy.runtime.backends._cuda``)."""
    return Cuda(import_cudart("build-engine")).identity(device)


@dataclass
class BuildResult:
    """What ``build_engine`` did: the engine, its sidecar dict, and whether it was reused."""

    engine: Path
    sidecar: dict
    reused: bool = False
    notes: list[str] = field(default_factory=list)


def prepare_fp16_onnx(onnx_path: Path, checkpoint: str | os.PathLike | None, out_path: Path, *,
                      calib=None, threshold: float | None = None, log=print) -> tuple[dict, list[str]]:
    """Write the mixed-precision ONNX to ``out_path`` for an FP16 engine; returns (analysis, fp32 nodes).

    An ONNX already exported with ``--fp16`` (metadata precision "fp16") is copied as is with
    its recorded analysis. An FP32 ONNX needs the checkpoint it came from (its sha256 must
    match the metadata) so the activation analysis can run on the fused PyTorch model.
    """
    import onnx

    from .fp16 import fp16_from_fp32
    from .fuse import fuse_bn
    from .onnx_export import _atomic_save_onnx, read_props, sha256_file
    from .pipeline import KEY_FP16_ANALYSIS, KEY_WEIGHTS, load_generator

    props = read_props(onnx_path)
    info = ModelInfo.from_props(props, source=str(onnx_path))
    _refuse_undeclared_fp16(onnx_path, props, info, True)
    if info.precision == "fp16":
        analysis = json.loads(props.get(KEY_FP16_ANALYSIS) or "null")
        if analysis is None:
            raise ValueError(f"{onnx_path}: FP16 model without an FP16 safety analysis (srdeploy.fp16_analysis); "
                             "export it with `srdeploy export CHECKPOINT --fp16`")
        _atomic_save_onnx(onnx.load(str(onnx_path)), out_path)
        return analysis, list(analysis.get("fp32_nodes", []))
    if checkpoint is None:
        raise ValueError(f"{onnx_path} is an FP32 model; an FP16 engine needs the FP16 safety analysis, which runs "
                         "the checkpoint's model on calibration images. Pass --checkpoint CKPT (the checkpoint it "
                         "was exported from) or build from the FP16 ONNX that `srdeploy export --fp16` writes "
                         "(model_fp16.onnx)")
    if info.checkpoint_sha256 and info.checkpoint_sha256 != sha256_file(checkpoint):
        raise ValueError(f"{checkpoint}: not the checkpoint {onnx_path} was exported from (sha256 differs from its "
                         "metadata); pass the right --checkpoint")
    model, _, _ = load_generator(checkpoint, use_ema=props.get(KEY_WEIGHTS, "ema") != "state_dict")
    fused = fuse_bn(model)
    fp16_model, report = fp16_from_fp32(fused, onnx.load(str(onnx_path)), calib=calib, scale=info.scale,
                                        threshold=threshold, channels=info.channels, multiple=info.size_multiple)
    fp32_nodes = report.fp32_nodes
    meta = {p.key: p.value for p in fp16_model.metadata_props}
    meta[KEY_FP16_ANALYSIS] = json.dumps(report.summary(), sort_keys=True)
    meta["srdeploy.precision"] = "fp16"
    del fp16_model.metadata_props[:]
    for k, v in meta.items():
        e = fp16_model.metadata_props.add()
        e.key, e.value = k, v
    _atomic_save_onnx(fp16_model, out_path)
    log(f"FP16 analysis on {len(report.images)} calibration inputs: largest |activation| {report.overall_max:.4g} "
        f"(threshold {report.threshold:g}); kept in FP32: {', '.join(fp32_nodes) if fp32_nodes else 'none'}")
    return report.summary(), fp32_nodes


def build_engine(onnx_path: str | os.PathLike, output: str | os.PathLike, *, profiles: list[ShapeProfile],
                 fp16: bool = False, workspace_gb: float = DEFAULT_WORKSPACE_GB,
                 timing_cache: str | os.PathLike | None = None, calib: str | os.PathLike | None = None,
                 checkpoint: str | os.PathLike | None = None, fp16_threshold: float | None = None,
                 opt_level: int = DEFAULT_OPT_LEVEL, device: int = 0, force: bool = False,
                 version_compatible: bool = False, hardware_compatibility: str = "none",
                 log=print) -> BuildResult:
    """Build a TensorRT engine and its sidecar from an srdeploy ONNX model.

    Args:
        onnx_path: the srdeploy ONNX model (FP32, or the FP16 variant from ``export --fp16``).
        output: the engine file (plan); the sidecar goes to ``sidecar_path(output)``.
        profiles: one or more optimisation profiles of the input ``lr``.
        fp16: build FP16 (with FP16-safety pins); False builds FP32 with TF32 off.
        workspace_gb: builder workspace memory pool limit, GiB.
        timing_cache: file to read (if present) and update with TensorRT's timing cache.
        calib: calibration image folder for the FP16 analysis (default Set5 LR).
        checkpoint: checkpoint of an FP32 ONNX, needed for ``fp16`` (analysis).
        fp16_threshold: |activation| above which layers stay FP32 (default 2**14).
        opt_level: ``builder_optimization_level`` (0-5; TensorRT's default is 3).
        device: CUDA device index to build on (selected before TensorRT's builder is created, so
            the engine is built on, and the sidecar describes, that GPU).
        version_compatible: build with ``BuilderFlag.VERSION_COMPATIBLE`` (the plan embeds its lean
            runtime and loads on later TensorRT releases of the same major version; slower).
        hardware_compatibility: "none", "ampere_plus" (runs on any GPU of compute capability >= 8.0)
            or "same_compute_capability" (any GPU of the building GPU's compute capability).
        force: rebuild even when an up-to-date engine (same cache key) exists.
        log: progress printer.
    """
    from .onnx_export import read_props, sha256_file

    onnx_path, output = Path(onnx_path), Path(output)
    _check_build_request(onnx_path, profiles, opt_level, workspace_gb, hardware_compatibility)
    props = read_props(onnx_path)
    info = ModelInfo.from_props(props, source=str(onnx_path))
    _refuse_undeclared_fp16(onnx_path, props, info, fp16)
    built_precision = _built_precision(onnx_path, info, fp16)
    trt = import_tensorrt()  # fail fast, before any analysis work
    cuda, (gpu_name, cc, driver) = _build_gpu(device, hardware_compatibility)
    workspace_bytes = int(workspace_gb * (1 << 30))
    onnx_sha = sha256_file(onnx_path)
    output.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmpdir:
        analysis, fp32_layers, built_onnx = None, [], onnx_path
        if fp16:
            built_onnx = Path(tmpdir) / "model_fp16.onnx"
            analysis, fp32_layers = prepare_fp16_onnx(onnx_path, checkpoint, built_onnx, calib=calib,
                                                      threshold=fp16_threshold, log=log)
        key = EngineKey(onnx_sha256=onnx_sha, built_onnx_sha256=sha256_file(built_onnx),
                        tensorrt_version=trt.__version__, gpu_name=gpu_name, compute_capability=cc,
                        precision=built_precision, fp32_layers=tuple(fp32_layers),
                        profiles=tuple(profiles), workspace_bytes=workspace_bytes,
                        builder_optimization_level=opt_level, tf32=False,
                        version_compatible=version_compatible, hardware_compatibility=hardware_compatibility)
        side_path = sidecar_path(output)
        old = None if force else _reusable(output, side_path, key)
        if old is not None:
            log(f"{output} is up to date (same ONNX, TensorRT {key.tensorrt_version}, GPU, precision, profiles); "
                "pass --force to rebuild")
            return BuildResult(output, old, reused=True)
        cache_path = Path(timing_cache) if timing_cache else None
        log(f"building {built_precision.upper()} engine with TensorRT {trt.__version__} on {gpu_name} (sm {cc}), "
            f"{len(profiles)} profile(s), workspace {workspace_gb:g} GiB ...")
        data, cache_bytes, seconds = _build_plan(trt, onnx_path, built_onnx, profiles=profiles,
                                                 workspace_bytes=workspace_bytes, opt_level=opt_level,
                                                 cache_path=cache_path, cuda=cuda, device=device,
                                                 version_compatible=version_compatible,
                                                 hardware_compatibility=hardware_compatibility)
        _atomic_write_bytes(output, data)
        if cache_path is not None:
            _atomic_write_bytes(cache_path, cache_bytes)
        side = make_sidecar(key=key, engine_file=output, engine_sha256=hashlib.sha256(data).hexdigest(),
                            onnx_file=onnx_path, info=info,
                            extra_props={k: v for k, v in props.items() if k.startswith("srdeploy.")},
                            fp16_analysis=analysis, timing_cache=str(cache_path) if cache_path else None,
                            build_seconds=seconds, cuda_driver_version=driver)
        write_sidecar(side_path, side)
    log(f"wrote {output} ({len(data) / 1e6:.1f} MB) and {side_path.name} in {seconds:.1f} s")
    return BuildResult(output, side)


def _built_precision(onnx_path: Path, info: ModelInfo, fp16: bool) -> str:
    """The engine's precision for this model and ``--fp16``; refuses combinations that cannot build.

    An INT8 QDQ model builds as is (the strongly typed network computes what its Q/DQ nodes say),
    if TensorRT's parser takes its Q/DQ nodes: the CPU recipe of ``srdeploy quantize`` it does not.
    """
    if info.precision == "fp16" and not fp16:
        raise ValueError(f"{onnx_path} is the FP16 model; pass --fp16 to build an FP16 engine, or build FP32 from "
                         "the FP32 ONNX")
    if info.precision == "int8" and fp16:
        raise ValueError(f"{onnx_path} is an INT8 QDQ model (srdeploy quantize); build it without --fp16: its Q/DQ "
                         "nodes set the precision (explicit quantization)")
    if info.precision != "int8":
        return "fp16" if fp16 else "fp32"
    import onnx

    from .int8_trt import tensorrt_int8_problems

    problems = tensorrt_int8_problems(onnx.load(str(onnx_path)))
    if problems:
        raise ValueError(f"{onnx_path}: an INT8 model quantized for CPUs, which TensorRT cannot parse ("
                         f"{'; '.join(problems)}); quantize the FP32 model for TensorRT: `srdeploy quantize "
                         "MODEL.onnx -o MODEL_int8_trt.onnx --target tensorrt`")
    return "int8"


def _build_gpu(device: int, hardware_compatibility: str):
    """``(Cuda, (GPU name, compute capability, driver))`` of the GPU the engine is built on."""
    cuda = Cuda(import_cudart("build-engine"))
    gpu_name, cc, driver = cuda.identity(device)
    if hardware_compatibility == "ampere_plus" and int(cc.split(".")[0]) < 8:
        raise ValueError(f"--hardware-compatible ampere_plus needs an Ampere or newer GPU to build on; cuda:{device} "
                         f"is {gpu_name} (compute capability {cc})")
    return cuda, (gpu_name, cc, driver)


def _check_build_request(onnx_path: Path, profiles: list[ShapeProfile], opt_level: int, workspace_gb: float,
                         hardware_compatibility: str = "none") -> None:
    if hardware_compatibility not in HARDWARE_LEVELS:
        raise ValueError(f"--hardware-compatible must be one of {', '.join(HARDWARE_LEVELS)}, got "
                         f"{hardware_compatibility!r}")
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: ONNX file does not exist")
    if not profiles:
        raise ValueError("build-engine: at least one optimisation profile (--min/--opt/--max) is needed")
    channels, window = _model_input(onnx_path)
    for p in profiles:
        p.validate(channels)
        fixed = (1, channels, window, window)
        if window is not None and not p.min == p.opt == p.max == fixed:
            raise ValueError(f"{onnx_path}: exported at one fixed window {window}x{window} (--window); its engine "
                             f"profile must be exactly --min/--opt/--max {_shape_str(fixed)}, got "
                             f"{_shape_str(p.min)}/{_shape_str(p.opt)}/{_shape_str(p.max)}")
    if not 0 <= opt_level <= 5:
        raise ValueError(f"--opt-level must be 0..5, got {opt_level}")
    if workspace_gb <= 0:
        raise ValueError(f"--workspace must be > 0 GiB, got {workspace_gb}")


def _refuse_undeclared_fp16(onnx_path: Path, props: dict, info: ModelInfo, fp16: bool) -> None:
    """An FP16 engine of a model whose family declares FP16 unsupported (``srdeploy.facts``) is refused."""
    from .pipeline import KEY_FACTS

    if fp16 and json.loads(props.get(KEY_FACTS) or "{}").get("fp16", True) is False:
        raise ValueError(f"{onnx_path}: this {info.arch} model is declared not to run in FP16 (its family's facts, "
                         "srdeploy.facts: NaNs or overflow); build an FP32 engine (drop --fp16)")


def _model_input(onnx_path: Path) -> tuple[int, int | None]:
    """(channels, fixed window side or None) of an srdeploy ONNX model's input ``lr``."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    channels = dims[1].dim_value if len(dims) == 4 and dims[1].HasField("dim_value") else 3
    static = len(dims) == 4 and dims[2].HasField("dim_value") and dims[3].HasField("dim_value")
    return channels, (dims[2].dim_value if static else None)


def _reusable(output: Path, side_path: Path, key: EngineKey) -> dict | None:
    """The existing sidecar when ``output`` was built from exactly ``key`` (and is intact), else None."""
    from .onnx_export import sha256_file

    if not (output.is_file() and side_path.is_file()):
        return None
    try:
        old = read_checked_sidecar(side_path)
    except ValueError:
        return None
    if old["cache_key"] == key.digest() and old["engine_sha256"] == sha256_file(output):
        return old
    return None


def _attach_timing_cache(config, cache_path: Path) -> None:
    """Read ``cache_path`` (if present) into a timing cache and attach it; refuse one TensorRT cannot use.

    What TensorRT does with bytes it cannot read: ``create_timing_cache`` logs an error ("The timing
    cache will not be used") and returns None, or an *empty* cache, depending on the release; and
    ``set_timing_cache(..., ignore_mismatch=False)`` returns False for a cache from another GPU or
    TensorRT version. All three are refused: a build that silently starts from nothing and then
    overwrites the user's cache file would lose it.
    """
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(blob)
    size = lambda c: memoryview(c.serialize()).nbytes  # noqa: E731
    why = None
    if cache is None:
        why = "TensorRT could not read it"
    elif blob and size(cache) <= size(config.create_timing_cache(b"")):
        why = "TensorRT read it as an empty cache (unreadable or from another TensorRT version)"
    elif not config.set_timing_cache(cache, ignore_mismatch=False):
        why = "it does not match this TensorRT version / GPU"
    if why:
        raise RuntimeError(f"{cache_path}: timing cache refused: {why}; delete it or pass another --timing-cache path")


def _build_plan(trt, onnx_path: Path, built_onnx: Path, *, profiles: list[ShapeProfile], workspace_bytes: int,
                opt_level: int, cache_path: Path | None, cuda: Cuda, device: int, version_compatible: bool = False,
                hardware_compatibility: str = "none") -> tuple[bytes, bytes | None, float]:
    """Parse -> configure -> build on CUDA device ``device``; returns (plan bytes, timing cache
    bytes or None, build seconds)."""
    # TensorRT builds on the thread's current device: make it ``device`` first (as trtexec does),
    # or the plan is built for device 0 while the sidecar describes ``device``.
    cuda.select(device)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(built_onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    if network.num_inputs != 1 or network.get_input(0).name != INPUT_NAME:
        raise ValueError(f"{onnx_path}: expected one input {INPUT_NAME!r}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.builder_optimization_level = opt_level
    if hasattr(trt.BuilderFlag, "TF32"):  # on by default: FP32 convs would round inputs to 10 bits
        config.clear_flag(trt.BuilderFlag.TF32)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if hardware_compatibility != "none":
        level = getattr(trt.HardwareCompatibilityLevel, hardware_compatibility.upper(), None)
        if level is None:
            raise RuntimeError(f"TensorRT {trt.__version__} has no hardware compatibility level "
                               f"{hardware_compatibility.upper()}")
        config.hardware_compatibility_level = level
    for p in profiles:
        prof = builder.create_optimization_profile()
        prof.set_shape(INPUT_NAME, p.min, p.opt, p.max)
        if config.add_optimization_profile(prof) < 0:
            raise RuntimeError(f"TensorRT rejected profile {p.as_dict()}")
    if cache_path is not None:
        _attach_timing_cache(config, cache_path)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if plan is None:
        raise RuntimeError("TensorRT failed to build the engine (see its log above): often too small a "
                           "--workspace or a profile too large for GPU memory")
    cache_bytes = bytes(memoryview(config.get_timing_cache().serialize())) if cache_path is not None else None
    return bytes(memoryview(plan)), cache_bytes, seconds
