"""TensorRT engine building: what needs no GPU (profiles, cache key, sidecar, FP16 analysis) on CPU.

The build itself needs CUDA + TensorRT: ``test_build_and_verify_engine`` is marked ``gpu`` and
skipped with the reason where they are missing (scripts/gpu_check.sh runs the same on a GPU box).
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from _models import export_random_checkpoint
from srdeploy.cli import main
from srdeploy.export.engine import (EngineKey, ShapeProfile, build_engine, make_sidecar, prepare_fp16_onnx,
                                    profiles_from_args)
from srdeploy.export.fp16 import (DEFAULT_THRESHOLD, FP16_MAX, analyse_activations, check_node_mapping,
                                  module_scope, nodes_to_pin, to_fp16_onnx)
from srdeploy.export.fuse import fuse_bn, randomize_bn
from srdeploy.export.onnx_export import export_onnx, read_metadata
from srdeploy.runtime.backends.trt import SIDECAR_KEYS, read_sidecar, sidecar_path, write_sidecar
from srdeploy.runtime.parsing import parse_shape
from srdeploy.runtime.metadata import INPUT_NAME, ModelInfo
from srdeploy.train.archs import SRResNet
from srdeploy.train.checkpoint import save_checkpoint

KW = {"scale": 2, "num_blocks": 2, "channels": 8}


# ----------------------------------------------------------------------------- profiles

def test_parse_shape():
    assert parse_shape("1x3x32x32") == (1, 3, 32, 32)
    assert parse_shape("4X3X512X256") == (4, 3, 512, 256)
    for bad in ("1x3x32", "1x3x0x32", "ax3x3x3", "", "1x3x32x32x1", "-1x3x4x4"):
        with pytest.raises(ValueError, match="NxCxHxW"):
            parse_shape(bad)


def test_profile_validation():
    p = ShapeProfile.parse("1x3x32x32", "1x3x256x256", "4x3x512x512")
    assert p.min == (1, 3, 32, 32) and p.max == (4, 3, 512, 512)
    with pytest.raises(ValueError, match="height: need min <= opt <= max"):
        ShapeProfile.parse("1x3x64x32", "1x3x32x256", "4x3x512x512")
    with pytest.raises(ValueError, match="batch"):
        ShapeProfile.parse("2x3x32x32", "1x3x64x64", "4x3x512x512")
    with pytest.raises(ValueError, match="3 channels"):
        ShapeProfile.parse("1x4x32x32", "1x4x64x64", "1x4x512x512")
    assert ShapeProfile.from_dict(p.as_dict()) == p


def test_profiles_from_repeated_flags():
    ps = profiles_from_args(["1x3x32x32", "1x3x256x256"], ["1x3x64x64", "1x3x512x512"],
                            ["1x3x128x128", "2x3x1024x1024"])
    assert len(ps) == 2 and ps[1].max == (2, 3, 1024, 1024)
    with pytest.raises(ValueError, match="once per profile"):
        profiles_from_args(["1x3x32x32"], ["1x3x64x64"], [])
    with pytest.raises(ValueError, match="once per profile"):
        profiles_from_args(None, None, None)


# ----------------------------------------------------------------------------- cache key

def _key(**changes) -> EngineKey:
    base = EngineKey(onnx_sha256="a" * 64, built_onnx_sha256="b" * 64, tensorrt_version="10.9.0.34",
                     gpu_name="NVIDIA H200", compute_capability="9.0", precision="fp16",
                     fp32_layers=("/body/body.0/conv1/Conv",),
                     profiles=(ShapeProfile.parse("1x3x32x32", "1x3x256x256", "4x3x512x512"),),
                     workspace_bytes=4 << 30, builder_optimization_level=3, tf32=False)
    return dataclasses.replace(base, **changes)


def test_cache_key_covers_every_field():
    base = _key()
    other = {"onnx_sha256": "c" * 64, "built_onnx_sha256": "d" * 64, "tensorrt_version": "10.9.0.35",
             "gpu_name": "NVIDIA H100", "compute_capability": "8.9", "precision": "fp32",
             "fp32_layers": ("/tail/Conv",), "profiles": (ShapeProfile.parse("1x3x32x32", "1x3x256x256",
                                                                             "4x3x512x640"),),
             "workspace_bytes": 2 << 30, "builder_optimization_level": 5, "tf32": True, "strongly_typed": False,
             "version_compatible": True, "hardware_compatibility": "ampere_plus", "format": "srdeploy.trt-engine/2"}
    fields = {f.name for f in dataclasses.fields(EngineKey)}
    assert fields == set(other), "a new EngineKey field needs a case here"
    digests = {base.digest()}
    for name, value in other.items():
        d = _key(**{name: value}).digest()
        assert d not in digests, f"changing {name} does not change the cache key"
        digests.add(d)
    # Deterministic, and independent of the order of the pinned-layer list.
    assert _key().digest() == base.digest()
    two = _key(fp32_layers=("x", "y")).digest()
    assert _key(fp32_layers=("y", "x")).digest() == two


# ----------------------------------------------------------------------------- sidecar

def _info() -> ModelInfo:
    return ModelInfo(scale=2, receptive_radius=12, arch="SRResNet", arch_kwargs=KW, checkpoint_sha256="e" * 64,
                     version="0.1.0")


def _sidecar(tmp_path, key=None):
    key = key or _key()
    engine = tmp_path / "model.engine"
    return make_sidecar(key=key, engine_file=engine, engine_sha256="f" * 64, onnx_file=tmp_path / "model.onnx",
                        info=_info(), extra_props={"srdeploy.weights": "ema"},
                        fp16_analysis={"threshold": DEFAULT_THRESHOLD, "fp32_nodes": list(key.fp32_layers)},
                        timing_cache=None, build_seconds=12.5, cuda_driver_version=12080)


def test_sidecar_round_trip_and_runtime_check(tmp_path):
    from srdeploy.runtime.backends.trt import check_sidecar, find_sidecar

    side = _sidecar(tmp_path)
    assert tuple(side) == SIDECAR_KEYS
    path = sidecar_path(tmp_path / "model.engine")
    assert path.name == "model.engine.json"
    write_sidecar(path, side)
    back = read_sidecar(path)
    assert back == json.loads(json.dumps(side))
    assert back["cache_key"] == _key().digest()
    assert back["metadata"]["srdeploy.precision"] == "fp16"  # the built precision, not the ONNX file's
    assert back["metadata"]["srdeploy.weights"] == "ema"
    # The runtime finds the sidecar where build-engine writes it and accepts it on the same machine ...
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    assert find_sidecar(engine) == path
    info = check_sidecar(back, engine, trt_version="10.9.0.34", gpu_name="NVIDIA H200", compute_capability="9.0")
    assert info.scale == 2 and info.receptive_radius == 12 and info.precision == "fp16"
    # ... and refuses another TensorRT version or another GPU, saying to rebuild.
    with pytest.raises(RuntimeError, match="rebuild"):
        check_sidecar(back, engine, trt_version="10.10.0.1", gpu_name="NVIDIA H200", compute_capability="9.0")
    with pytest.raises(RuntimeError, match="rebuild"):
        check_sidecar(back, engine, trt_version="10.9.0.34", gpu_name="NVIDIA L4", compute_capability="8.9")


def test_read_sidecar_rejects_malformed(tmp_path):
    p = tmp_path / "x.engine.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        read_sidecar(p)
    side = _sidecar(tmp_path)
    del side["gpu_name"]
    p.write_text(json.dumps(side))
    with pytest.raises(ValueError, match="gpu_name"):
        read_sidecar(p)
    p.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not an srdeploy engine sidecar"):
        read_sidecar(p)


# ----------------------------------------------------------------------------- FP16 analysis

def _model_with_huge_activations():
    """A fused tiny SRResNet whose body.0.conv1 output reaches ~1.4e5 (> FP16 max), and its s=1 twin.

    conv1 gets non-negative weights and no bias (so its output is a large sum), then is scaled
    by s = 1e5 while conv2's weights are scaled by 1/s. PReLU is positively homogeneous
    (prelu(s*x) = s*prelu(x)), so both models compute the same function; the weights still fit
    FP16 (max ~2.4e4), only the activations do not.
    """
    torch.manual_seed(0)
    ref = fuse_bn(randomize_bn(SRResNet(**KW)).eval())
    with torch.no_grad():
        ref.body[0].conv1.weight.abs_()
        ref.body[0].conv1.bias.zero_()
    model = fuse_bn(ref)  # a copy
    s = 1e5
    with torch.no_grad():
        blk = model.body[0]
        blk.conv1.weight.mul_(s)
        blk.conv2.weight.div_(s)
    assert float(blk.conv1.weight.detach().abs().max()) < FP16_MAX
    return model, ref


def test_module_scope_matches_exporter_names():
    assert module_scope("") == "/"
    assert module_scope("head") == "/head/"
    assert module_scope("body.0.conv1") == "/body/body.0/conv1/"
    assert module_scope("upsample.1.act") == "/upsample/upsample.1/act/"


def test_analysis_flags_forced_large_activations(tmp_path):
    model, ref = _model_with_huge_activations()
    x = torch.rand(1, 3, 20, 18)
    with torch.no_grad():
        assert float((model(x) - ref(x)).abs().max()) < 1e-4  # same function in FP32
    report = analyse_activations(model, [x.numpy(), torch.rand(1, 3, 9, 13)])
    assert report.max_out["body.0.conv1"] > FP16_MAX
    assert {"body.0.conv1", "body.0.act", "body.0"}.issubset(report.risky_out) or \
        {"body.0.conv1", "body.0.act"}.issubset(report.risky_out)
    assert "body.0.conv2" in report.risky_in and "body.0.conv2" not in report.risky_out
    assert "tail" not in report.risky_out and "head" not in report.risky_out
    assert report.images == ["input0", "input1"]

    # Ordinary model: nothing risky.
    plain = analyse_activations(ref, [x])
    assert not plain.risky_out and not plain.risky_in and plain.overall_max < DEFAULT_THRESHOLD


def test_pins_keep_fp16_onnx_finite(tmp_path):
    model, _ = _model_with_huge_activations()
    path = export_onnx(model, tmp_path / "m.onnx")
    src = onnx.load(str(path))
    check_node_mapping(model, src)
    report = analyse_activations(model, [torch.rand(1, 3, 24, 24)])
    pins = nodes_to_pin(report, model, src)
    assert {"/body/body.0/conv1/Conv", "/body/body.0/act/PRelu", "/body/body.0/conv2/Conv"}.issubset(pins)
    assert "/head/Conv" not in pins and "/tail/Conv" not in pins

    x = np.random.default_rng(0).random((1, 3, 21, 17), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()

    big = "/body/body.0/conv1/Conv_output_0"  # conv1's output tensor (~1e5)

    def run(m):
        """Output and conv1's tensor as the model stores it (exposed as an extra graph output)."""
        m = onnx.ModelProto.FromString(m.SerializeToString())
        elem = next(v.type.tensor_type.elem_type for v in m.graph.value_info if v.name == big)
        m.graph.output.append(onnx.helper.make_tensor_value_info(big, elem, None))
        p = tmp_path / "fp16.onnx"
        onnx.save(m, str(p))
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        out, mid = sess.run(None, {INPUT_NAME: x})
        return out, mid

    pinned, fp32_nodes = to_fp16_onnx(src, keep_fp32=pins)
    assert set(pins) <= set(fp32_nodes)
    inits = {i.name: i.data_type for i in pinned.graph.initializer}
    conv = {n.name: n for n in pinned.graph.node if n.op_type == "Conv"}
    assert inits[conv["/body/body.0/conv1/Conv"].input[1]] == onnx.TensorProto.FLOAT
    assert inits[conv["/head/Conv"].input[1]] == onnx.TensorProto.FLOAT16
    out, mid = run(pinned)
    assert mid.dtype == np.float32 and np.isfinite(mid).all() and np.abs(mid).max() > FP16_MAX
    assert np.isfinite(out).all() and np.abs(out - ref).max() <= 2 / 255

    # Without the pins that tensor is FP16 and overflows to inf: the analysis is what prevents it.
    # (ONNX Runtime's CPU provider may compute FP16 nodes in FP32 internally, so the final output
    # can survive here; on CUDA / TensorRT the overflow reaches the output.)
    unpinned, _ = to_fp16_onnx(src, keep_fp32=())
    _, mid16 = run(unpinned)
    assert mid16.dtype == np.float16 and not np.isfinite(mid16).all()


def test_to_fp16_rejects_unknown_pins(tmp_path):
    torch.manual_seed(0)
    path = export_onnx(fuse_bn(SRResNet(**KW).eval()), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="not in the graph"):
        to_fp16_onnx(onnx.load(str(path)), keep_fp32=["/nope/Conv"])


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine")
    _, ckpt, r = export_random_checkpoint(d / "tiny.pt", d / "model.onnx", KW)
    return ckpt, r.onnx_path


@pytest.mark.slow
def test_prepare_fp16_onnx_from_fp32_and_checkpoint(tmp_path, fp32_onnx, data_root):
    ckpt, onnx_path = fp32_onnx
    out = tmp_path / "b.onnx"
    analysis, fp32 = prepare_fp16_onnx(onnx_path, ckpt, out, calib=None, log=lambda *a: None)  # Set5 LR
    assert fp32 == [] and analysis["threshold"] == DEFAULT_THRESHOLD
    assert analysis["calibration_inputs"] == ["baby.png", "bird.png", "butterfly.png", "head.png", "woman.png"]
    assert read_metadata(out).precision == "fp16"
    # No checkpoint -> says what to pass; another checkpoint -> refused.
    with pytest.raises(ValueError, match="--checkpoint"):
        prepare_fp16_onnx(onnx_path, None, tmp_path / "c.onnx")
    other = tmp_path / "other.pt"
    save_checkpoint(other, SRResNet(**KW), arch="SRResNet", kwargs=KW)
    with pytest.raises(ValueError, match="not the checkpoint"):
        prepare_fp16_onnx(onnx_path, other, tmp_path / "c.onnx")


def test_build_engine_without_tensorrt_says_how_to_install(tmp_path, fp32_onnx, monkeypatch, capsys):
    _, onnx_path = fp32_onnx
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    profiles = profiles_from_args(["1x3x32x32"], ["1x3x64x64"], ["2x3x128x128"])
    with pytest.raises(ModuleNotFoundError, match=r"srdeploy\[gpu\]"):
        build_engine(onnx_path, tmp_path / "m.engine", profiles=profiles)
    rc = main(["build-engine", str(onnx_path), "-o", str(tmp_path / "m.engine"), "--min", "1x3x32x32",
               "--opt", "1x3x64x64", "--max", "2x3x128x128"])
    assert rc == 1 and "srdeploy[gpu]" in capsys.readouterr().err
    assert not (tmp_path / "m.engine").exists()
    # Bad profiles are reported before TensorRT is even needed.
    rc = main(["build-engine", str(onnx_path), "-o", str(tmp_path / "m.engine"), "--min", "1x3x64x64",
               "--opt", "1x3x32x32", "--max", "2x3x128x128"])
    assert rc == 1 and "min <= opt <= max" in capsys.readouterr().err


def _have_trt_gpu() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT (pip install 'srdeploy[gpu]') is not installed"
    try:
        from srdeploy.export.engine import gpu_identity

        gpu_identity(0)
    except Exception as exc:  # no driver / no device / no cuda-python
        return f"no usable CUDA GPU ({exc})"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_have_trt_gpu() is not None, reason=str(_have_trt_gpu()))
def test_build_and_verify_engine(tmp_path, fp32_onnx):
    from srdeploy.export.verify import verify

    ckpt, onnx_path = fp32_onnx
    profiles = profiles_from_args(["1x3x16x16"], ["1x3x64x64"], ["2x3x128x128"])
    for fp16 in (False, True):
        engine = tmp_path / f"m{int(fp16)}.engine"
        r = build_engine(onnx_path, engine, profiles=profiles, fp16=fp16, checkpoint=ckpt,
                         timing_cache=tmp_path / "timing.cache", log=lambda *a: None)
        assert r.sidecar["precision"] == ("fp16" if fp16 else "fp32")
        assert read_sidecar(sidecar_path(engine))["engine_sha256"] == r.sidecar["engine_sha256"]
        report = verify(ckpt, engine, use_images=False)
        assert report.ok, report.format_table()
        again = build_engine(onnx_path, engine, profiles=profiles, fp16=fp16, checkpoint=ckpt, log=lambda *a: None)
        assert again.reused


def test_fp32_model_already_nonfinite_is_refused():
    torch.manual_seed(0)
    model = fuse_bn(SRResNet(**KW).eval())
    with torch.no_grad():
        model.body[1].conv2.bias[0] = float("inf")
    report = analyse_activations(model, [torch.rand(1, 3, 8, 8)])
    assert "body.1.conv2" in report.nonfinite and "head" not in report.nonfinite
    with pytest.raises(RuntimeError, match="inf/NaN"):
        report.check_finite()


def test_to_fp16_leaves_integer_shape_arithmetic_alone(tmp_path):
    """A pixel-unshuffle written as Shape -> Gather -> Div/Mul -> Reshape (Real-ESRGAN x1/x2 through
    spandrel) computes int64 shapes: the FP16 copy keeps them int64 (no Cast into them) and runs."""
    import onnxruntime as ort

    torch.manual_seed(0)

    class Unshuffled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(12, 12, 3, padding=1)
            self.up = torch.nn.PixelShuffle(2)

        def forward(self, x):
            b, c, h, w = x.shape
            y = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
            return self.up(self.conv(y))

    path = export_onnx(Unshuffled().eval(), tmp_path / "u.onnx", sample_size=(8, 8))
    src = onnx.load(str(path))
    assert any(n.op_type in ("Mul", "Div") for n in src.graph.node)  # the shape arithmetic is there
    half, fp32_nodes = to_fp16_onnx(src)
    inferred = {v.name: v.type.tensor_type.elem_type for v in half.graph.value_info}
    for n in half.graph.node:
        if n.op_type in ("Mul", "Div", "Gather", "Shape"):
            assert all(inferred.get(o, onnx.TensorProto.INT64) == onnx.TensorProto.INT64 for o in n.output), n
    assert not [n for n in fp32_nodes if "Mul" in n or "Div" in n]  # integer nodes are not "kept in FP32"
    x = np.random.default_rng(0).random((1, 3, 12, 16), dtype=np.float32)
    got = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})
    assert got[0].shape == (1, 3, 12, 16) and np.abs(got[0] - want[0]).max() <= 2 / 255
