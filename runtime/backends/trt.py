"""Native TensorRT adapter (TensorRT 10 Python API + cuda-python), imported lazily.

An engine (``model.engine``) is a plain TensorRT plan; beside it ``srdeploy build-engine``
writes a JSON sidecar (``model.engine.json``; ``model.json`` is also accepted) recording the
TensorRT version, GPU name and compute capability, precision, optimisation profiles and the
model's srdeploy metadata (scale, receptive radius, ranges). Engines are specific to a TensorRT
version and a GPU, so a sidecar that disagrees with the running TensorRT or GPU is refused with
a message telling the user to rebuild the engine (``check_sidecar``, pure Python, tested on CPU).

Per call the input shape is set within the chosen profile (``input_spec`` comes from the
profile's min/max, so the tiler keeps tiles inside it); device and pinned host buffers grow on
demand and are reused; copies and execution are queued on one CUDA stream. Every CUDA runtime
call's error code and every TensorRT boolean result is checked.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import weakref
from pathlib import Path

import numpy as np

from ..atomic import write_json
from ..metadata import INPUT_NAME, OUTPUT_NAME, MetadataError, ModelInfo
from ..session import InputSpec, Session
from . import parse_device
from ._cuda import Cuda, import_cudart
from .options import TrtOptions

# ----------------------------------------------------------------------------- the sidecar format
# Written by srdeploy.export.engine (build-engine), read here; defined once, here, because the
# runtime must not import the exporter.
SIDECAR_FORMAT = "srdeploy.trt-engine/1"
# Every key the sidecar carries (tests check the writer emits exactly these).
SIDECAR_KEYS = (
    "format", "engine_file", "engine_sha256", "tensorrt_version", "gpu_name", "compute_capability",
    "cuda_driver_version", "precision", "fp32_layers", "strongly_typed", "tf32", "profiles", "workspace_bytes",
    "builder_optimization_level", "version_compatible", "hardware_compatibility", "onnx_file", "onnx_sha256", "built_onnx_sha256", "metadata", "fp16_analysis",
    "timing_cache", "build_seconds", "built_at", "srdeploy_version", "cache_key",
)
# Keys added after the format's first release: a sidecar without them gets these values.
SIDECAR_DEFAULTS = {"version_compatible": False, "hardware_compatibility": "none"}
#: ``build-engine --hardware-compatible`` levels (TensorRT's HardwareCompatibilityLevel, lower case).
HARDWARE_LEVELS = ("none", "ampere_plus", "same_compute_capability")
REBUILD = "rebuild the engine on this machine with `srdeploy build-engine MODEL.onnx -o {engine}`"


def sidecar_path(engine: str | os.PathLike) -> Path:
    """Where an engine's sidecar is written: ``<engine>.json`` (model.engine -> model.engine.json)."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def find_sidecar(engine: str | os.PathLike) -> Path:
    """The sidecar to read for an engine: ``<engine>.json``, else ``<engine stem>.json`` when only
    that exists (engines renamed by hand); ``sidecar_path`` where neither exists."""
    first = sidecar_path(engine)
    second = Path(engine).with_suffix(".json")
    return first if first.is_file() or not second.is_file() else second


def write_sidecar(path: str | os.PathLike, sidecar: dict) -> None:
    """Write a sidecar JSON atomically (``atomic.write_json``)."""
    write_json(path, sidecar, indent=2)


def read_sidecar(path: str | os.PathLike) -> dict:
    """Read and shape-check a sidecar written by build-engine (ValueError when malformed)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable engine sidecar ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{path}: not an srdeploy engine sidecar (format {SIDECAR_FORMAT!r})")
    data = {**SIDECAR_DEFAULTS, **data}
    missing = [k for k in SIDECAR_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: engine sidecar lacks {', '.join(missing)}; rebuild the engine")
    return data


def _get(meta: dict, *keys: str):
    """First present key, also looking one level down in ``meta["gpu"]`` / ``meta["build"]``."""
    for key in keys:
        if key in meta:
            return meta[key]
        for sub in ("gpu", "build", "device"):
            if isinstance(meta.get(sub), dict) and key in meta[sub]:
                return meta[sub][key]
    return None


def _cc_str(cc) -> str:
    if isinstance(cc, (list, tuple)):
        return ".".join(str(int(v)) for v in cc)
    return str(cc)


def check_sidecar(meta: dict, engine: str | os.PathLike, *, trt_version: str, gpu_name: str,
                  compute_capability: str, precision: str | None = None) -> ModelInfo:
    """Validate an engine's sidecar against this machine; returns the model's ModelInfo.

    Args:
        meta: the parsed JSON sidecar.
        engine: engine path (for messages).
        trt_version: running TensorRT version (``tensorrt.__version__``).
        gpu_name: the CUDA device's name.
        compute_capability: the device's "major.minor".
        precision: requested precision (None = accept what the engine was built with).

    Raises:
        RuntimeError: TensorRT version or GPU mismatch (rebuild the engine).
        ValueError: malformed sidecar, precision mismatch; MetadataError: no srdeploy metadata.
    """
    rebuild = REBUILD.format(engine=engine)
    if meta.get("format", SIDECAR_FORMAT) != SIDECAR_FORMAT:
        raise ValueError(f"{engine}: sidecar format {meta.get('format')!r} is not {SIDECAR_FORMAT!r}; {rebuild}")
    built_trt = _get(meta, "tensorrt_version", "trt_version")
    if not built_trt:
        raise ValueError(f"{engine}: engine sidecar lacks 'tensorrt_version'; {rebuild}")
    version_compatible = bool(meta.get("version_compatible", False))
    if str(built_trt) != str(trt_version):
        if not (version_compatible and _version_runs(str(built_trt), str(trt_version))):
            why = ("version-compatible engines load on the same major version, at or after the one that built them"
                   if version_compatible else "engines only load on the TensorRT version that built them "
                   "(unless built with --version-compatible)")
            raise RuntimeError(f"{engine}: built with TensorRT {built_trt}, this is TensorRT {trt_version}; "
                               f"{why}: {rebuild}")
    built_cc = _get(meta, "compute_capability", "gpu_compute_capability")
    built_name = _get(meta, "gpu_name", "name")
    if isinstance(meta.get("gpu"), str):
        built_name = meta["gpu"]
    if built_cc is None or built_name is None:
        raise ValueError(f"{engine}: engine sidecar lacks the GPU name / compute capability; {rebuild}")
    level = str(meta.get("hardware_compatibility", "none")).lower()
    if level not in HARDWARE_LEVELS:
        raise ValueError(f"{engine}: unknown hardware_compatibility {level!r} in its sidecar (expected one of "
                         f"{', '.join(HARDWARE_LEVELS)}); {rebuild}")
    here, built = _cc_str(compute_capability), _cc_str(built_cc)
    if level == "ampere_plus":
        if int(here.split(".")[0]) < 8:
            raise RuntimeError(f"{engine}: built hardware-compatible for Ampere and newer GPUs (compute capability "
                               f">= 8.0), this GPU is {gpu_name} ({here}): {rebuild}")
    elif level == "same_compute_capability":
        if here != built:
            raise RuntimeError(f"{engine}: built for GPUs of compute capability {built}, this GPU is {gpu_name} "
                               f"({here}): {rebuild}")
    elif built != here or str(built_name) != str(gpu_name):
        raise RuntimeError(f"{engine}: built for {built_name} (compute capability {built}), "
                           f"this GPU is {gpu_name} ({here}); engines are specific "
                           f"to the GPU that built them (unless built with --hardware-compatible): {rebuild}")
    built_prec = _get(meta, "precision")
    if isinstance(built_prec, (list, tuple)):  # e.g. ["fp16", "fp32"] when layers were pinned to fp32
        built_prec = "fp16" if "fp16" in built_prec else (built_prec[0] if built_prec else None)
    if precision is not None and built_prec is not None and precision != str(built_prec).lower():
        raise ValueError(f"{engine}: precision {precision!r} requested but the engine was built for {built_prec}; "
                         "build one with that precision (srdeploy build-engine --fp16 for fp16)")
    props = meta.get("metadata") or meta.get("model_metadata") or meta.get("srdeploy_metadata")
    if not isinstance(props, dict):
        raise MetadataError(f"{engine}: engine sidecar has no srdeploy model metadata ('metadata'); rebuild the "
                            "engine from an srdeploy ONNX model with `srdeploy build-engine`")
    info = ModelInfo.from_props({k: str(v) for k, v in props.items()}, source=str(engine))
    if built_prec is not None:
        info = ModelInfo(**{**info.__dict__, "precision": str(built_prec).lower()})
    return info


def _version_runs(built: str, running: str) -> bool:
    """A version-compatible plan from TensorRT ``built`` loads on ``running``: same major, not older."""
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".") if x.isdigit())
    b, r = parts(built), parts(running)
    return bool(b and r) and b[0] == r[0] and r >= b


def _import():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ModuleNotFoundError("TensorRT is not installed: pip install 'srdeploy[gpu]' (tensorrt>=10) on a "
                                  "machine with an NVIDIA GPU", name="tensorrt") from exc
    return trt, import_cudart()


class _Buffer:
    """A device buffer plus a pinned host buffer of the same size, grown on demand."""

    def __init__(self, cuda: Cuda) -> None:
        self.cuda, self.nbytes, self.device, self.host = cuda, 0, None, None

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.nbytes:
            return
        self.free()
        self.device = self.cuda("cudaMalloc", self.cuda.rt.cudaMalloc(nbytes))
        self.host = self.cuda("cudaMallocHost", self.cuda.rt.cudaMallocHost(nbytes))
        self.nbytes = nbytes

    def host_array(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_byte * count).from_address(int(self.host))
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free(self) -> None:
        device, host = self.device, self.host
        self.device = self.host = None
        self.nbytes = 0
        if device is not None:
            self.cuda("cudaFree", self.cuda.rt.cudaFree(device))
        if host is not None:
            self.cuda("cudaFreeHost", self.cuda.rt.cudaFreeHost(host))


class _GpuState:
    """Everything a session holds on its GPU, released once: by ``close()``, by a failed
    ``__init__``, or by the session's finalizer when it is dropped unclosed (so pinned host and
    device memory do not live until exit). Holds no reference to the session, as a
    ``weakref.finalize`` callback must not."""

    def __init__(self, cuda: Cuda, device: int) -> None:
        self.cuda, self.device = cuda, device
        self.runtime = self.engine = self.context = self.stream = None
        self.bufs: list[_Buffer] = []

    def release(self) -> None:
        cuda = self.cuda
        errors: list[BaseException] = []

        def attempt(fn) -> None:
            try:
                fn()
            except Exception as exc:  # free everything else even when one call fails
                errors.append(exc)

        attempt(lambda: cuda.use(self.device))  # free on the GPU the memory lives on
        # TensorRT objects first (the context's activation memory lives on the device), then ours.
        self.context = self.engine = self.runtime = None
        for buf in self.bufs:
            attempt(buf.free)
        stream, self.stream = self.stream, None
        if stream is not None:
            attempt(lambda: cuda("cudaStreamDestroy", cuda.rt.cudaStreamDestroy(stream)))
        if errors:
            raise errors[0]


class TrtSession(Session):
    """A serialized TensorRT engine with its JSON sidecar.

    Args:
        path: the engine (``.engine``/``.plan``).
        device: "cuda" or "cuda:N"; selected again on every call into the session (inference,
            close), so sessions on several GPUs and calls from several threads stay on theirs.
        precision: None = as built; otherwise must equal the engine's built precision.
        options: ``TrtOptions``: ``profile`` (optimisation profile index to run with) and
            ``check_gpu`` (verify the sidecar's TensorRT version and GPU against this machine;
            keep True: engines built with ``--version-compatible`` / ``--hardware-compatible``
            are accepted where their sidecar says they run).
    """

    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike, *, backend: str = "tensorrt", device: str = "cuda:0",
                 precision: str | None = None, threads: int | None = None, options: TrtOptions | None = None) -> None:
        super().__init__()
        options = options or TrtOptions()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: engine file does not exist")
        if threads is not None:
            raise ValueError("threads does not apply to the TensorRT backend")
        _, dev = parse_device(device, backend="tensorrt")
        side = find_sidecar(path)
        if not side.is_file():
            raise FileNotFoundError(f"{path}: its JSON sidecar ({path.name}.json) is missing; it records the "
                                    "TensorRT version, GPU and model metadata the runtime needs: "
                                    + REBUILD.format(engine=path))
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{side}: unreadable engine sidecar ({exc}); " + REBUILD.format(engine=path)) from exc
        if isinstance(meta, dict):
            meta = {**SIDECAR_DEFAULTS, **meta}

        trt, cudart = _import()
        self._trt = trt
        self._cuda = Cuda(cudart)
        self._dev = dev
        self._gpu = _GpuState(self._cuda, dev)
        self._finalizer = weakref.finalize(self, self._gpu.release)
        try:
            self._open(path, side, meta, trt, precision, options)
        except BaseException:
            self._finalizer.detach()
            try:
                self._gpu.release()
            except Exception:  # the original error is the one to report
                pass
            raise

    def _open(self, path: Path, side: Path, meta: dict, trt, precision: str | None, options: TrtOptions) -> None:
        cuda, dev, gpu, profile = self._cuda, self._dev, self._gpu, options.profile
        cuda.select(dev)
        gpu_name, cc, _ = cuda.identity(dev)
        if options.check_gpu:
            self.info = check_sidecar(meta, path, trt_version=trt.__version__, gpu_name=gpu_name,
                                      compute_capability=cc, precision=precision)
        else:  # the caller vouches for the engine: check precision and metadata against its own record
            self.info = check_sidecar(meta, path, trt_version=str(_get(meta, "tensorrt_version", "trt_version")),
                                      gpu_name=str(_get(meta, "gpu_name", "name")),
                                      compute_capability=_cc_str(_get(meta, "compute_capability")),
                                      precision=precision)
        plan = path.read_bytes()
        if "engine_sha256" in meta:
            digest = hashlib.sha256(plan).hexdigest()
            if digest != meta["engine_sha256"]:
                raise ValueError(f"{side}: describes a different engine (sha256 mismatch); "
                                 + REBUILD.format(engine=path))

        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        if runtime is None:
            raise RuntimeError("TensorRT: could not create a runtime (see the TensorRT log above)")
        gpu.runtime = runtime
        if meta.get("version_compatible"):
            # A version-compatible plan embeds the lean runtime that runs it (host code): TensorRT
            # refuses to deserialize it unless the runtime allows that.
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(plan)
        del plan
        if engine is None:
            raise RuntimeError(f"{path}: TensorRT could not deserialize the engine (see its log above); "
                               + REBUILD.format(engine=path))
        gpu.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if sorted(names) != sorted([INPUT_NAME, OUTPUT_NAME]) or \
                engine.get_tensor_mode(INPUT_NAME) != trt.TensorIOMode.INPUT:
            raise ValueError(f"{path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, engine has {names}")
        self._in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(INPUT_NAME)))
        self._out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(OUTPUT_NAME)))
        nprof = engine.num_optimization_profiles
        if not 0 <= profile < nprof:
            raise ValueError(f"{path}: profile {profile} requested, the engine has {nprof} (0..{nprof - 1})")
        mn, opt, mx = (tuple(int(v) for v in s) for s in engine.get_tensor_profile_shape(INPUT_NAME, profile))
        self.input_spec = InputSpec(channels=mn[1], batch=(mn[0], mx[0]), height=(mn[2], mx[2]),
                                    width=(mn[3], mx[3]), opt=opt)
        context = engine.create_execution_context()
        if context is None:
            raise RuntimeError(f"{path}: TensorRT could not create an execution context (GPU out of memory?)")
        gpu.context = context
        gpu.stream = cuda("cudaStreamCreate", cuda.rt.cudaStreamCreate())
        if profile != 0:
            # The Python binding raises RuntimeError on failure (the C++ API returns false).
            try:
                ok = context.set_optimization_profile_async(profile, int(gpu.stream))
            except RuntimeError as exc:
                raise RuntimeError(f"{path}: TensorRT refused optimisation profile {profile}: {exc}") from exc
            if ok is False:
                raise RuntimeError(f"{path}: TensorRT refused optimisation profile {profile}")
        gpu.bufs = [_Buffer(cuda), _Buffer(cuda)]
        self.device = f"cuda:{dev}"
        self.precision = self.info.precision
        self.path = path
        self.details = {"tensorrt_version": trt.__version__, "gpu": gpu_name, "compute_capability": cc,
                        "profile": profile, "profiles": nprof, "profile_shapes": {"min": mn, "opt": opt, "max": mx},
                        "io_dtypes": [self._in_dtype.name, self._out_dtype.name], "sidecar": str(side),
                        "version_compatible": bool(meta.get("version_compatible")),
                        "hardware_compatibility": str(meta.get("hardware_compatibility", "none")),
                        "gpu_checked": bool(options.check_gpu), "model": str(path)}

    def _infer(self, x: np.ndarray) -> np.ndarray:
        cuda, rt, gpu = self._cuda, self._cuda.rt, self._gpu
        ctx = gpu.context
        cuda.use(self._dev)  # buffers and work go to this session's GPU, whatever is current now
        if not ctx.set_input_shape(INPUT_NAME, tuple(x.shape)):
            raise RuntimeError(f"TensorRT refused input shape {x.shape} (profile {self.input_spec})")
        out_shape = tuple(int(v) for v in ctx.get_tensor_shape(OUTPUT_NAME))
        if any(v < 0 for v in out_shape):
            raise RuntimeError(f"TensorRT could not infer the output shape for input {x.shape}")
        bin_, bout = gpu.bufs
        in_bytes = x.size * self._in_dtype.itemsize
        out_bytes = int(np.prod(out_shape)) * self._out_dtype.itemsize
        bin_.ensure(in_bytes)
        bout.ensure(out_bytes)
        host_in = bin_.host_array(x.shape, self._in_dtype)
        np.copyto(host_in, x, casting="same_kind" if self._in_dtype == x.dtype else "unsafe")
        stream = gpu.stream
        cuda("cudaMemcpyAsync(H2D)", rt.cudaMemcpyAsync(bin_.device, bin_.host, in_bytes,
                                                         rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        if not ctx.set_tensor_address(INPUT_NAME, int(bin_.device)):
            raise RuntimeError("TensorRT refused the input buffer address")
        if not ctx.set_tensor_address(OUTPUT_NAME, int(bout.device)):
            raise RuntimeError("TensorRT refused the output buffer address")
        if not ctx.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        cuda("cudaMemcpyAsync(D2H)", rt.cudaMemcpyAsync(bout.host, bout.device, out_bytes,
                                                         rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
        cuda("cudaStreamSynchronize", rt.cudaStreamSynchronize(stream))
        return bout.host_array(out_shape, self._out_dtype).astype(np.float32)  # copy out of pinned memory

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._finalizer()  # runs _GpuState.release once (device selected first); later calls do nothing
        finally:
            super().close()
