"""TensorRT adapter: the sidecar checks run on CPU; real engines need CUDA + TensorRT (skipped here)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from srdeploy.runtime.metadata import MetadataError, ModelInfo
from srdeploy.runtime.open import open_session
from srdeploy.runtime.backends.trt import check_sidecar, find_sidecar, sidecar_path

GPU = dict(trt_version="10.9.0.34", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


def _sidecar(tmp_path, **over) -> dict:
    """A sidecar as `srdeploy build-engine` writes it (its own writer, so the contract is shared)."""
    engine = pytest.importorskip("srdeploy.export.engine")
    key = engine.EngineKey(onnx_sha256="a" * 64, built_onnx_sha256="b" * 64, tensorrt_version=GPU["trt_version"],
                           gpu_name=GPU["gpu_name"], compute_capability=GPU["compute_capability"], precision="fp16",
                           fp32_layers=(), profiles=(engine.ShapeProfile.parse("1x3x16x16", "1x3x64x64",
                                                                               "2x3x96x96"),),
                           workspace_bytes=1 << 30, builder_optimization_level=3, tf32=False)
    side = engine.make_sidecar(key=key, engine_file=tmp_path / "m.engine", engine_sha256="c" * 64,
                               onnx_file=tmp_path / "m.onnx", info=ModelInfo(scale=4, receptive_radius=40),
                               extra_props=None, fp16_analysis=None, timing_cache=None, build_seconds=1.0,
                               cuda_driver_version=12080)
    side.update(over)
    return side


def test_sidecar_accepted_on_the_machine_that_built_it(tmp_path):
    info = check_sidecar(_sidecar(tmp_path), "m.engine", **GPU)
    assert info.scale == 4 and info.receptive_radius == 40 and info.precision == "fp16"
    assert check_sidecar(_sidecar(tmp_path), "m.engine", precision="fp16", **GPU).scale == 4


@pytest.mark.parametrize("field,value,message", [
    ("trt_version", "10.13.0.35", "TensorRT 10.9.0.34, this is TensorRT 10.13.0.35"),
    ("gpu_name", "NVIDIA A100-SXM4-80GB", "built for NVIDIA H100"),
    ("compute_capability", "8.0", "compute capability 9.0"),
])
def test_sidecar_mismatch_says_rebuild(tmp_path, field, value, message):
    with pytest.raises(RuntimeError, match="rebuild the engine") as info:
        check_sidecar(_sidecar(tmp_path), "m.engine", **{**GPU, field: value})
    assert message in str(info.value) and "m.engine" in str(info.value)


def test_sidecar_precision_and_metadata(tmp_path):
    with pytest.raises(ValueError, match="built for fp16"):
        check_sidecar(_sidecar(tmp_path), "m.engine", precision="fp32", **GPU)
    side = _sidecar(tmp_path)
    del side["metadata"]
    with pytest.raises(MetadataError, match="no srdeploy model metadata"):
        check_sidecar(side, "m.engine", **GPU)
    with pytest.raises(ValueError, match="format"):
        check_sidecar(_sidecar(tmp_path, format="other/1"), "m.engine", **GPU)
    with pytest.raises(ValueError, match="tensorrt_version"):
        check_sidecar({k: v for k, v in _sidecar(tmp_path).items() if k != "tensorrt_version"}, "m.engine", **GPU)


def test_sidecar_location(tmp_path):
    assert sidecar_path(tmp_path / "m.engine") == tmp_path / "m.engine.json"
    assert find_sidecar(tmp_path / "m.engine") == tmp_path / "m.engine.json"
    (tmp_path / "n.json").write_text("{}")
    assert find_sidecar(tmp_path / "n.plan") == tmp_path / "n.json"  # engines renamed by hand
    assert sidecar_path(tmp_path / "n.plan") == tmp_path / "n.plan.json"  # where build-engine writes


def test_engine_without_sidecar_or_tensorrt_is_a_clear_error(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(FileNotFoundError, match="sidecar .*missing.*build-engine"):
        open_session(engine)
    (tmp_path / "m.engine.json").write_text(json.dumps(_sidecar(tmp_path)))
    with pytest.raises(ValueError, match="tensorrt backend runs on 'cuda'"):
        open_session(engine, device="cpu")
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(ModuleNotFoundError, match=r"srdeploy\[gpu\]"):
            open_session(engine)


def test_cli_engine_without_tensorrt(tmp_path, capsys):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; this checks the message where it is not")
    from srdeploy.cli import main

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "m.engine.json").write_text(json.dumps(_sidecar(tmp_path)))
    img = tmp_path / "a.png"
    import cv2

    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    rc = main(["upscale", "-q", "-i", str(img), "-o", str(tmp_path / "o"), "--model", str(engine)])
    assert rc == 1 and "srdeploy[gpu]" in capsys.readouterr().err


def _cuda_and_tensorrt() -> str | None:
    """None when a real engine can be built and run here, else the reason to skip."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT (Python package 'tensorrt') is not installed"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "cuda-python is not installed"
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        return f"no CUDA device ({getattr(err, 'name', err)})"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_and_tensorrt() is not None, reason=str(_cuda_and_tensorrt()))
def test_tensorrt_engine_matches_onnxruntime(tmp_path):
    import torch

    from srdeploy.export.engine import ShapeProfile, build_engine
    from srdeploy.export.fuse import fuse_bn
    from srdeploy.export.onnx_export import add_metadata, export_onnx
    from srdeploy.runtime.tiling import tiled_infer
    from srdeploy.train.archs import SRResNet, receptive_radius

    torch.manual_seed(0)
    model = SRResNet(num_blocks=2, channels=16).eval()
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(fuse_bn(model), onnx_path)
    add_metadata(onnx_path, ModelInfo(scale=4, receptive_radius=receptive_radius(model)))
    build_engine(onnx_path, tmp_path / "tiny.engine",
                 profiles=[ShapeProfile.parse("1x3x16x16", "2x3x48x48", "2x3x64x64")], fp16=False)
    x = np.random.default_rng(0).random((3, 50, 90), dtype=np.float32)
    with open_session(onnx_path) as ort_s, open_session(tmp_path / "tiny.engine") as trt_s:
        assert trt_s.backend == "tensorrt" and trt_s.input_spec.height == (16, 64)
        ref = tiled_infer(ort_s, x, tile=0)
        got = tiled_infer(trt_s, x, tile=32, batch=2)  # tiles must fit the 64x64 profile
        assert np.abs(got - ref).max() <= 1e-3  # FP32 engine (TF32 off) vs ORT CPU
        small = x[:, :5, :7]  # below the profile minimum: padded up, cropped back
        assert tiled_infer(trt_s, small, tile=0).shape == (3, 20, 28)
    with pytest.raises(ValueError, match="built for fp32"):
        open_session(tmp_path / "tiny.engine", precision="fp16")
