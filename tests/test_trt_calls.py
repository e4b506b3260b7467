"""Call order and cleanup of the TensorRT/CUDA code, checked without a GPU (issue 17).

``cuda.bindings.runtime`` and ``tensorrt`` are replaced by *recording stand-ins*, injected through
the module that imports them (``srdeploy.runtime.backends.trt._import``,
``srdeploy.export.engine.import_tensorrt`` / ``import_cudart``). A stand-in only records which
calls we make, in which order and on which current device; it computes nothing, and these tests
never look at an output image or a time. Whether the real calls work is for tests/test_runtime_trt.py
and scripts/gpu_check.sh on a GPU machine.
"""

from __future__ import annotations

import gc
import hashlib
import json
import types
from pathlib import Path

import numpy as np
import pytest

from srdeploy.runtime.backends import trt as trt_backend
from srdeploy.runtime.backends.options import DEFAULT_TRT_TILE_PLAN, OrtOptions
from srdeploy.runtime.metadata import ModelInfo
from srdeploy.runtime.open import open_session

BUNDLED = Path(__file__).resolve().parent.parent / "models" / "srresnet_x4.onnx"
TRT_VERSION = "10.16.1.11"
ALLOCS = {"cudaMalloc": "cudaFree", "cudaMallocHost": "cudaFreeHost", "cudaStreamCreate": "cudaStreamDestroy"}
ON_DEVICE = ("cudaMalloc", "cudaMallocHost", "cudaMemcpyAsync", "execute_async_v3", "cudaStreamSynchronize",
             "cudaFree", "cudaFreeHost", "cudaStreamDestroy", "Builder", "deserialize_cuda_engine")


class Recorder:
    """The call log: (name, current device, argument) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, object]] = []
        self.current = 0

    def add(self, name: str, arg=None) -> None:
        self.calls.append((name, self.current, arg))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def devices(self, *names: str) -> set[int]:
        return {dev for name, dev, _ in self.calls if name in names}


class StreamHandle:
    """Like cuda-python's ``cudaStream_t``: an object, not an int; ``int()`` gives the address that
    TensorRT's ``execute_async_v3`` / ``set_optimization_profile_async`` take."""

    def __init__(self, address: int) -> None:
        self._address = address

    def __int__(self) -> int:
        return self._address

    __index__ = __int__

    def __repr__(self) -> str:
        return f"<cudaStream_t {self._address:#x}>"


def _stream(s):
    """cudart calls take the handle (cuda-python also converts an int, but srdeploy passes the handle)."""
    if not isinstance(s, StreamHandle):
        raise TypeError(f"stand-in cudart: expected the cudaStream_t from cudaStreamCreate, got {type(s).__name__}")
    return s


def stand_in_cudart(rec: Recorder, count: int = 2):
    """A recording stand-in for ``cuda.bindings.runtime``: (error, value) tuples as cuda-python returns.
    Every name it defines exists in the real module (test_cuda_bindings.py checks)."""
    ok = "cudaSuccess"
    handles = iter(range(0x1000, 0x100000, 0x100))
    pinned: dict[int, object] = {}  # host addresses must be readable by numpy: keep real ctypes blocks alive

    def call(name, value=None, arg=None):
        rec.add(name, arg)
        return (ok, value) if value is not None else (ok,)

    def set_device(d):
        rec.current = d
        return call("cudaSetDevice", arg=d)

    def malloc_host(n):
        import ctypes

        block = (ctypes.c_byte * n)()
        pinned[ctypes.addressof(block)] = block
        return call("cudaMallocHost", ctypes.addressof(block), arg=ctypes.addressof(block))

    def malloc(n):
        h = next(handles)
        return call("cudaMalloc", h, arg=h)

    def stream_create():
        h = StreamHandle(next(handles))
        return call("cudaStreamCreate", h, arg=h)

    return types.SimpleNamespace(
        cudaError_t=types.SimpleNamespace(cudaSuccess=ok, cudaErrorNoDevice="cudaErrorNoDevice",
                                          cudaErrorInsufficientDriver="cudaErrorInsufficientDriver"),
        cudaGetErrorString=lambda e: (ok, b"stand-in error"),
        cudaGetDeviceCount=lambda: (ok, count),
        cudaSetDevice=set_device,
        cudaGetDeviceProperties=lambda d: (ok, types.SimpleNamespace(name=f"Stand-in GPU {d}".encode(), major=9,
                                                                       minor=0)),
        cudaDriverGetVersion=lambda: (ok, 12080),
        cudaStreamCreate=stream_create,
        cudaStreamDestroy=lambda s: call("cudaStreamDestroy", arg=_stream(s)),
        cudaStreamSynchronize=lambda s: call("cudaStreamSynchronize", arg=_stream(s)),
        cudaMalloc=malloc,
        cudaMallocHost=malloc_host,
        cudaFree=lambda p: call("cudaFree", arg=p),
        cudaFreeHost=lambda p: (pinned.pop(p, None), call("cudaFreeHost", arg=p))[1],
        cudaMemcpyAsync=lambda dst, src, n, kind, s: (_stream(s), call("cudaMemcpyAsync", arg=kind))[1],
        cudaMemcpyKind=types.SimpleNamespace(cudaMemcpyHostToDevice="H2D", cudaMemcpyDeviceToHost="D2H"),
    )


PROFILE = [(1, 3, 16, 16), (1, 3, 64, 64), (2, 3, 64, 64)]  # the stand-in engine's profiles (min, opt, max)
CACHE_HEADER = b"stand-in timing cache v1;"


def _address(value, what: str) -> int:
    """TensorRT's Python API takes CUDA streams as ints (pybind ``size_t``), not cuda-python handles."""
    if not isinstance(value, int):
        raise TypeError(f"stand-in tensorrt: {what} takes the stream as an int, got {type(value).__name__}")
    return value


def _runtime_stand_in(rec: Recorder, refuse_profile: bool):
    """The stand-in ``tensorrt.Runtime`` (engine, execution context), as the real binding behaves."""

    class Context:
        def __init__(self):
            self.shape = None

        def set_optimization_profile_async(self, index, stream):
            rec.add("set_optimization_profile_async", index)
            _address(stream, "set_optimization_profile_async")
            if refuse_profile:  # what the real binding does: raise, never return False
                raise RuntimeError("stand-in: profile refused")
            return True

        def set_input_shape(self, name, shape):
            # The real call returns False for a shape outside the optimisation profile.
            mn, _, mx = PROFILE
            if len(shape) != 4 or not all(a <= v <= b for a, v, b in zip(mn, shape, mx)):
                return False
            self.shape = shape
            return True

        def get_tensor_shape(self, name):
            n, c, h, w = self.shape
            return (n, c, 4 * h, 4 * w)

        def set_tensor_address(self, name, address):
            return True

        def execute_async_v3(self, stream):
            rec.add("execute_async_v3", _address(stream, "execute_async_v3"))
            return True

    class Engine:
        num_io_tensors = 2
        num_optimization_profiles = 2

        def get_tensor_name(self, i):
            return ("lr", "sr")[i]

        def get_tensor_mode(self, name):
            return "INPUT" if name == "lr" else "OUTPUT"

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_profile_shape(self, name, index):
            return list(PROFILE)

        def create_execution_context(self):
            rec.add("create_execution_context")
            return Context()

    class Runtime:
        def __init__(self, logger):
            rec.add("Runtime")
            self._host_code = False

        @property
        def engine_host_code_allowed(self):
            return self._host_code

        @engine_host_code_allowed.setter
        def engine_host_code_allowed(self, value):
            rec.add("engine_host_code_allowed", value)
            self._host_code = value

        def deserialize_cuda_engine(self, data):
            rec.add("deserialize_cuda_engine")
            return Engine()

    return Runtime


def _builder_stand_in(rec: Recorder, plan: bytes, corrupt_cache: str):
    """The stand-in ``tensorrt.Builder`` and ``OnnxParser`` (config, timing cache, network)."""

    class TimingCache:
        def __init__(self, entries: bytes = b""):
            self.entries = entries

        def serialize(self):
            return memoryview(CACHE_HEADER + self.entries)

    class Config:
        def __init__(self):
            self.hardware_compatibility_level = None
            self.cache = None

        def create_timing_cache(self, blob):
            blob = bytes(blob)
            if not blob or blob.startswith(CACHE_HEADER):
                return TimingCache(blob[len(CACHE_HEADER):])
            rec.add("timing cache unreadable")  # TensorRT logs an error, then:
            return None if corrupt_cache == "none" else TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            if corrupt_cache == "mismatch" and cache.entries and not ignore_mismatch:
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def set_memory_pool_limit(self, pool, size):
            pass

        def clear_flag(self, flag):
            rec.add("clear_flag", flag)

        def set_flag(self, flag):
            rec.add("set_flag", flag)

        def add_optimization_profile(self, profile):
            return 0

        def __setattr__(self, name, value):
            if name == "hardware_compatibility_level" and value is not None:
                rec.add("hardware_compatibility_level", value)
            object.__setattr__(self, name, value)

    class Builder:
        def __init__(self, logger):
            rec.add("Builder")

        def create_network(self, flags):
            return types.SimpleNamespace(num_inputs=1, get_input=lambda i: types.SimpleNamespace(name="lr"))

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda *a: None)

        def build_serialized_network(self, network, config):
            rec.add("build_serialized_network")
            if config.cache is not None:  # the build times tactics into the attached cache
                config.cache.entries += b"tactic;"
            return plan

    class Parser:
        def __init__(self, network, logger):
            self.num_errors = 0

        def parse_from_file(self, path):
            return True

    return Builder, Parser


def stand_in_tensorrt(rec: Recorder, *, refuse_profile: bool = False, plan: bytes = b"stand-in plan",
                      corrupt_cache: str = "none"):
    """A recording stand-in for ``tensorrt`` (runtime and builder calls srdeploy makes).

    ``corrupt_cache``: what ``create_timing_cache`` returns for bytes it cannot read, as TensorRT
    releases differ: "none" (None) or "empty" (an empty cache); "mismatch": the bytes read, but
    ``set_timing_cache(..., ignore_mismatch=False)`` returns False (another GPU / version).
    """

    Runtime = _runtime_stand_in(rec, refuse_profile)
    Builder, Parser = _builder_stand_in(rec, plan, corrupt_cache)
    logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    return types.SimpleNamespace(
        __version__=TRT_VERSION, Logger=logger, Runtime=Runtime, Builder=Builder, OnnxParser=Parser,
        TensorIOMode=types.SimpleNamespace(INPUT="INPUT"), nptype=lambda dtype: np.float32,
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=0),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        BuilderFlag=types.SimpleNamespace(TF32="TF32", VERSION_COMPATIBLE="VERSION_COMPATIBLE"),
        HardwareCompatibilityLevel=types.SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS",
                                                         SAME_COMPUTE_CAPABILITY="SAME_COMPUTE_CAPABILITY"),
    )


def _engine(tmp_path, device: int = 1, **side) -> Path:
    """A plan file (stand-in bytes) with the sidecar build-engine would write on stand-in GPU ``device``."""
    engine_mod = pytest.importorskip("srdeploy.export.engine")
    plan = tmp_path / "m.engine"
    plan.write_bytes(b"stand-in plan")
    key = engine_mod.EngineKey(onnx_sha256="a" * 64, built_onnx_sha256="a" * 64, tensorrt_version=TRT_VERSION,
                               gpu_name=f"Stand-in GPU {device}", compute_capability="9.0", precision="fp32",
                               fp32_layers=(), profiles=(engine_mod.ShapeProfile.parse("1x3x16x16", "1x3x64x64",
                                                                                       "2x3x64x64"),),
                               workspace_bytes=1 << 30, builder_optimization_level=3, tf32=False)
    sidecar = engine_mod.make_sidecar(key=key, engine_file=plan, engine_sha256=hashlib.sha256(b"stand-in plan")
                                      .hexdigest(), onnx_file=tmp_path / "m.onnx",
                                      info=ModelInfo(scale=4, receptive_radius=40), extra_props=None,
                                      fp16_analysis=None, timing_cache=None, build_seconds=0.0,
                                      cuda_driver_version=12080)
    sidecar.update(side)
    (tmp_path / "m.engine.json").write_text(json.dumps(sidecar))
    return plan


def _inject(monkeypatch, rec: Recorder, **trt_kw):
    monkeypatch.setattr(trt_backend, "_import", lambda: (stand_in_tensorrt(rec, **trt_kw), stand_in_cudart(rec)))


def _balanced(rec: Recorder) -> None:
    """Every allocation recorded was freed, each on the device it was made on."""
    made = {(name, arg): dev for name, dev, arg in rec.calls if name in ALLOCS}
    freed = {(name, arg): dev for name, dev, arg in rec.calls if name in ALLOCS.values()}
    assert {(ALLOCS[n], a): d for (n, a), d in made.items()} == freed


# ----------------------------------------------------------------------------- items 2, 7: runtime

def test_session_selects_its_device_on_every_entry_point(tmp_path, monkeypatch):
    rec = Recorder()
    _inject(monkeypatch, rec)
    session = open_session(_engine(tmp_path), device="cuda:1")
    names = rec.names()
    assert names.index("cudaSetDevice") < names.index("Runtime") < names.index("deserialize_cuda_engine")
    cudart = session._cuda.rt
    x = np.zeros((1, 3, 20, 24), np.float32)
    for _ in range(2):
        cudart.cudaSetDevice(0)  # another session (or thread) made GPU 0 current meanwhile
        session.infer(x)
    x = np.zeros((2, 3, 40, 40), np.float32)  # larger: buffers grow, re-allocated
    cudart.cudaSetDevice(0)
    session.infer(x)
    assert rec.names().count("cudaMalloc") == 4 and rec.names().count("execute_async_v3") == 3
    cudart.cudaSetDevice(0)
    session.close()
    assert rec.devices(*ON_DEVICE) == {1}, "an allocation, copy, launch or free ran on another GPU"
    _balanced(rec)
    session.close()  # closing twice frees nothing twice
    _balanced(rec)


def test_failed_init_frees_the_stream(tmp_path, monkeypatch):
    rec = Recorder()
    _inject(monkeypatch, rec, refuse_profile=True)
    with pytest.raises(RuntimeError, match="refused optimisation profile 1: stand-in: profile refused"):
        open_session(_engine(tmp_path), device="cuda:1", profile=1)
    assert "cudaStreamCreate" in rec.names() and "cudaStreamDestroy" in rec.names()
    assert rec.names().index("cudaStreamDestroy") > rec.names().index("set_optimization_profile_async")
    _balanced(rec)
    assert rec.devices("cudaStreamDestroy") == {1}


def test_unclosed_session_is_freed_by_its_finalizer(tmp_path, monkeypatch):
    rec = Recorder()
    _inject(monkeypatch, rec)
    session = open_session(_engine(tmp_path), device="cuda:1")
    session.infer(np.zeros((1, 3, 16, 16), np.float32))
    session._cuda.rt.cudaSetDevice(0)
    assert "cudaFreeHost" not in rec.names()
    del session
    gc.collect()
    assert rec.names().count("cudaFreeHost") == 2 and "cudaStreamDestroy" in rec.names()
    assert rec.devices("cudaFree", "cudaFreeHost", "cudaStreamDestroy") == {1}
    _balanced(rec)


# ----------------------------------------------------------------------------- item 6: compatible engines

def test_version_compatible_engine_allows_host_code(tmp_path, monkeypatch):
    rec = Recorder()
    _inject(monkeypatch, rec)
    # Built by an older 10.x, hardware-compatible with Ampere+: loads on this (stand-in) 10.16 / sm 9.0.
    engine = _engine(tmp_path, device=7, tensorrt_version="10.9.0.34", version_compatible=True,
                     hardware_compatibility="ampere_plus")
    with open_session(engine, device="cuda:1") as s:
        assert s.details["version_compatible"] and s.details["hardware_compatibility"] == "ampere_plus"
    names = rec.names()
    assert names.index("engine_host_code_allowed") < names.index("deserialize_cuda_engine")
    rec2 = Recorder()
    _inject(monkeypatch, rec2)
    with open_session(_engine(tmp_path), device="cuda:1"):
        pass
    assert "engine_host_code_allowed" not in rec2.names()  # ordinary plans carry no host code


def test_compatibility_rules_in_the_sidecar_check(tmp_path):
    side = json.loads((_engine(tmp_path).with_name("m.engine.json")).read_text())
    gpu = dict(trt_version=TRT_VERSION, gpu_name="Stand-in GPU 1", compute_capability="9.0")
    check = trt_backend.check_sidecar
    with pytest.raises(RuntimeError, match="--version-compatible"):
        check({**side, "tensorrt_version": "10.9.0.34"}, "m.engine", **gpu)
    vc = {**side, "version_compatible": True}
    check({**vc, "tensorrt_version": "10.9.0.34"}, "m.engine", **gpu)
    with pytest.raises(RuntimeError, match="same major version"):  # newer than the runtime, or another major
        check({**vc, "tensorrt_version": "10.20.0.1"}, "m.engine", **gpu)
    with pytest.raises(RuntimeError, match="same major version"):
        check({**vc, "tensorrt_version": "11.0.0.1"}, "m.engine", **gpu)
    with pytest.raises(RuntimeError, match="--hardware-compatible"):
        check(side, "m.engine", **{**gpu, "gpu_name": "Other GPU", "compute_capability": "8.6"})
    check({**side, "hardware_compatibility": "ampere_plus"}, "m.engine",
          **{**gpu, "gpu_name": "Other GPU", "compute_capability": "8.6"})
    with pytest.raises(RuntimeError, match="Ampere and newer"):
        check({**side, "hardware_compatibility": "ampere_plus"}, "m.engine", **{**gpu, "compute_capability": "7.5"})
    check({**side, "hardware_compatibility": "same_compute_capability"}, "m.engine", **{**gpu, "gpu_name": "Other"})
    with pytest.raises(RuntimeError, match="compute capability 9.0"):
        check({**side, "hardware_compatibility": "same_compute_capability"}, "m.engine",
              **{**gpu, "compute_capability": "8.9"})
    with pytest.raises(ValueError, match="unknown hardware_compatibility"):
        check({**side, "hardware_compatibility": "ampere+"}, "m.engine", **gpu)
    old = {k: v for k, v in side.items() if k not in trt_backend.SIDECAR_DEFAULTS}  # written before the keys
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert trt_backend.read_sidecar(tmp_path / "old.json")["hardware_compatibility"] == "none"


# ----------------------------------------------------------------------------- items 1, 6: build-engine

@pytest.mark.parametrize("compat", [False, True])
def test_build_engine_selects_the_device_before_the_builder(tmp_path, monkeypatch, compat):
    engine_mod = pytest.importorskip("srdeploy.export.engine")
    pytest.importorskip("onnx")
    rec = Recorder()
    monkeypatch.setattr(engine_mod, "import_tensorrt", lambda: stand_in_tensorrt(rec))
    monkeypatch.setattr(engine_mod, "import_cudart", lambda purpose=None: stand_in_cudart(rec))
    profile = engine_mod.ShapeProfile.parse("1x3x16x16", "1x3x64x64", "2x3x64x64")
    result = engine_mod.build_engine(BUNDLED, tmp_path / "m.engine", profiles=[profile], device=1,
                                     version_compatible=compat, hardware_compatibility="ampere_plus" if compat
                                     else "none", log=lambda *a: None)
    names = rec.names()
    assert ("cudaSetDevice", 1, 1) in rec.calls
    assert rec.devices("Builder", "build_serialized_network") == {1}, "the engine was built on another GPU"
    assert result.sidecar["gpu_name"] == "Stand-in GPU 1"
    assert result.sidecar["version_compatible"] is compat
    assert result.sidecar["hardware_compatibility"] == ("ampere_plus" if compat else "none")
    assert (("set_flag", 1, "VERSION_COMPATIBLE") in rec.calls) is compat
    assert (("hardware_compatibility_level", 1, "AMPERE_PLUS") in rec.calls) is compat
    assert names.index("cudaSetDevice") < names.index("Builder")
    with pytest.raises(ValueError, match="hardware-compatible must be one of"):
        engine_mod.build_engine(BUNDLED, tmp_path / "n.engine", profiles=[profile], hardware_compatibility="ampere+")


def test_input_shape_outside_the_profile_is_refused(tmp_path, monkeypatch):
    rec = Recorder()
    _inject(monkeypatch, rec)
    with open_session(_engine(tmp_path), device="cuda:1") as session:
        with pytest.raises(RuntimeError, match=r"refused input shape \(1, 3, 80, 16\)"):
            session._infer(np.zeros((1, 3, 80, 16), np.float32))  # the tiler never sends this: the call checks
    assert "execute_async_v3" not in rec.names()


@pytest.mark.parametrize("corrupt", ["none", "empty", "mismatch"])
def test_timing_cache_is_reused_and_an_unusable_one_refused(tmp_path, monkeypatch, corrupt):
    engine_mod = pytest.importorskip("srdeploy.export.engine")
    pytest.importorskip("onnx")
    rec = Recorder()
    monkeypatch.setattr(engine_mod, "import_tensorrt", lambda: stand_in_tensorrt(rec, corrupt_cache=corrupt))
    monkeypatch.setattr(engine_mod, "import_cudart", lambda purpose=None: stand_in_cudart(rec))
    profile = engine_mod.ShapeProfile.parse("1x3x16x16", "1x3x64x64", "2x3x64x64")
    cache = tmp_path / "timing.cache"

    def build(name: str):
        return engine_mod.build_engine(BUNDLED, tmp_path / name, profiles=[profile], timing_cache=cache, force=True,
                                       log=lambda *a: None)

    build("a.engine")  # no cache yet: starts empty, written after the build
    assert cache.read_bytes() == CACHE_HEADER + b"tactic;"
    if corrupt != "mismatch":
        build("b.engine")  # read back and attached: the second build extends it
        assert cache.read_bytes() == CACHE_HEADER + b"tactic;tactic;"
        cache.write_bytes(b"\x00garbage from another release")
    keep = cache.read_bytes()
    why = {"none": "could not read it", "empty": "read it as an empty cache", "mismatch": "does not match"}[corrupt]
    with pytest.raises(RuntimeError, match=f"timing.cache: timing cache refused: TensorRT {why}|{why}"):
        build("c.engine")
    assert cache.read_bytes() == keep and not (tmp_path / "c.engine").exists()  # the user's cache is not lost
    assert rec.names().count("build_serialized_network") == (1 if corrupt == "mismatch" else 2)


# ----------------------------------------------------------------------------- items 3, 4, 8, 9: ORT provider

def test_trt_provider_profile_from_tile_plan_and_options():
    from srdeploy.runtime.backends.ort import trt_profile
    from srdeploy.runtime.settings import DEFAULT_TILE, TileSettings, default_tile_pad
    from srdeploy.runtime.tiling import plan_tiles

    info = ModelInfo(scale=4, receptive_radius=40)
    assert DEFAULT_TRT_TILE_PLAN == TileSettings() and DEFAULT_TRT_TILE_PLAN.fixed_tile() == DEFAULT_TILE
    window = DEFAULT_TILE + 2 * default_tile_pad(40)
    assert trt_profile(OrtOptions(), info) == ((1, 3, 1, 1), (1, 3, window, window), (1, 3, window, window))
    assert trt_profile(OrtOptions(trt_tile_plan=(128, 20, 4)), info)[2] == (4, 3, 168, 168)
    # the settings value itself; a (height, width) tile gives a non-square window
    assert OrtOptions(trt_tile_plan=(128, 20, 4)).trt_tile_plan == TileSettings(tile=128, tile_pad=20, batch=4)
    assert trt_profile(OrtOptions(trt_tile_plan=TileSettings(tile=(64, 96), batch=2)), info)[2] == (2, 3, 88, 120)
    with pytest.raises(ValueError, match="tile settings"):
        OrtOptions(trt_tile_plan=(128, -1, 1))
    swin = ModelInfo(scale=2, receptive_radius=40, size_multiple=8, min_size=16)  # SwinIR-like: windows as tiled
    assert trt_profile(OrtOptions(trt_tile_plan=(100, 10, 1)), swin)[::2] == ((1, 3, 16, 16), (1, 3, 128, 128))
    assert plan_tiles(1000, 1000, tile=100, tile_pad=10, multiple=8, minimum=16).rows.window == 128
    explicit = OrtOptions(trt_profile_min="1x3x8x8", trt_profile_opt=(1, 3, 64, 64), trt_profile_max="2x3x96x96")
    assert trt_profile(explicit, info) == ((1, 3, 8, 8), (1, 3, 64, 64), (2, 3, 96, 96))
    with pytest.raises(ValueError, match="whole-image"):
        trt_profile(OrtOptions(trt_tile_plan=(0, None, 1)), info)
    with pytest.raises(ValueError, match="together"):
        OrtOptions(trt_profile_min="1x3x8x8")
    with pytest.raises(ValueError, match="min <= opt <= max"):
        OrtOptions(trt_profile_min="1x3x8x8", trt_profile_opt="1x3x4x4", trt_profile_max="1x3x9x9")
    with pytest.raises(ValueError, match="NxCxHxW"):
        OrtOptions(trt_profile_min="1x3x8", trt_profile_opt="1x3x4x4", trt_profile_max="1x3x9x9")


@pytest.fixture
def trt_provider_listed(monkeypatch):
    """onnxruntime as installed (CPU), except that it lists the TensorRT provider and records the
    providers of each session; creating a TensorRT-provider session fails as the provider would."""
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import EPFail

    real, seen = ort.InferenceSession, []

    def session(path, sess_options=None, providers=None, **kwargs):
        seen.append(providers)
        if providers and providers[0][0] == "TensorrtExecutionProvider":
            raise EPFail("stand-in: TensorRT EP could not build an engine")
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    return seen


def test_trt_provider_gets_profile_and_cache_paths_and_its_error_is_reported(tmp_path, trt_provider_listed):
    cache = tmp_path / "trt_cache"
    with pytest.raises(RuntimeError) as err:
        open_session(BUNDLED, backend="ort-trt", device="cuda:1",
                     options=OrtOptions(trt_cache_dir=str(cache), trt_tile_plan=(128, 16, 2)))
    assert "stand-in: TensorRT EP could not build an engine" in str(err.value)
    assert "valid ONNX file" not in str(err.value) and "TensorrtExecutionProvider" in str(err.value)
    trt_name, popts = trt_provider_listed[-1][0]
    assert popts["trt_profile_min_shapes"] == "lr:1x3x1x1"
    assert popts["trt_profile_opt_shapes"] == popts["trt_profile_max_shapes"] == "lr:2x3x160x160"
    assert popts["trt_timing_cache_path"] == popts["trt_engine_cache_path"] == str(cache)
    assert popts["device_id"] == 1 and "trt_fp16_enable" not in popts


def test_trt_provider_refuses_unchecked_fp16(tmp_path, trt_provider_listed):
    with pytest.raises(ValueError, match=r"precision 'fp16'.*srdeploy export CHECKPOINT --fp16.*model_fp16.onnx"):
        open_session(BUNDLED, backend="ort-trt", precision="fp16")
    with pytest.raises(ValueError, match="trt_fp16_enable"):
        open_session(BUNDLED, backend="ort-trt", options=OrtOptions(provider_options={"trt_fp16_enable": True}))
    # Only the CPU read of the model's contract ran: no TensorRT-provider session was attempted.
    assert all(p == ["CPUExecutionProvider"] for p in trt_provider_listed)


def test_unparsable_model_is_still_called_invalid(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ValueError, match="is it a valid ONNX file"):
        open_session(bad)


def test_cli_tile_flags_give_the_trt_provider_profile():
    import argparse

    from srdeploy.runtime.cli import add_session_args, add_tile_args, settings_from_args
    from srdeploy.runtime.settings import TileSettings

    p = argparse.ArgumentParser()
    add_session_args(p)
    add_tile_args(p)
    args = p.parse_args(["--model", str(BUNDLED), "--backend", "ort-trt", "--tile", "192", "--tile-pad", "16",
                         "--batch", "4"])
    run = settings_from_args(args)
    assert run.recipe.options.trt_tile_plan == run.tiling == TileSettings(tile=192, tile_pad=16, batch=4)
    args = p.parse_args(["--model", str(BUNDLED), "--backend", "ort-trt"])
    assert settings_from_args(args).recipe.options.trt_tile_plan == DEFAULT_TRT_TILE_PLAN
    assert settings_from_args(p.parse_args(["--model", str(BUNDLED)])).recipe.options.trt_tile_plan == \
        DEFAULT_TRT_TILE_PLAN
