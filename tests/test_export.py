"""ONNX export: dynamic axes, ONNX Runtime == PyTorch, metadata round trip, FP16 variant, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from _models import export_random_checkpoint
from srdeploy.cli import main
from srdeploy.export.onnx_export import check_onnx, read_metadata, read_props, sha256_file
from srdeploy.export.pipeline import export_checkpoint, fp16_path_for
from srdeploy.runtime.metadata import INPUT_NAME, OUTPUT_NAME, MetadataError, ModelInfo
from srdeploy.train.archs import Discriminator, SRResNet, receptive_radius
from srdeploy.train.checkpoint import save_checkpoint

KW = {"scale": 4, "num_blocks": 2, "channels": 16}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    return export_random_checkpoint(d / "tiny.pt", d / "model.onnx", KW, fp16=True)


def _ort(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})[0]


def test_symbolic_batch_height_width(exported):
    _, _, r = exported
    for path in (r.onnx_path, r.fp16_path):
        m = onnx.load(str(path))
        assert [i.name for i in m.graph.input] == [INPUT_NAME] and [o.name for o in m.graph.output] == [OUTPUT_NAME]
        dims_in = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
        dims_out = [d.dim_param or d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
        assert dims_in == ["batch", 3, "height", "width"]
        assert dims_out[0] == "batch" and dims_out[1] == 3
        assert isinstance(dims_out[2], str) and isinstance(dims_out[3], str)
        assert m.opset_import[0].version == 17
        check_onnx(path)  # full checker + strict shape inference


@pytest.mark.parametrize("shape", [(1, 3, 17, 23), (2, 3, 32, 48), (1, 3, 9, 40)])
def test_onnxruntime_equals_pytorch(exported, shape):
    model, _, r = exported
    x = np.random.default_rng(3).random(shape, dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()  # the unfused model
    out = _ort(r.onnx_path, x)
    assert out.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4)
    assert np.abs(out - ref).max() <= 1e-4


def test_metadata_round_trip(exported):
    model, ckpt, r = exported
    info = read_metadata(r.onnx_path)
    assert info == r.info
    assert info.scale == 4 and info.receptive_radius == receptive_radius(model) == 12
    assert info.input_range == (0.0, 1.0) and info.output_range == (0.0, 1.0)
    assert (info.channel_order, info.layout, info.precision) == ("RGB", "NCHW", "fp32")
    assert info.arch == "SRResNet" and info.arch_kwargs == KW
    assert info.checkpoint_sha256 == sha256_file(ckpt)
    import srdeploy

    assert info.version == srdeploy.__version__
    assert ModelInfo.from_props(info.to_props()) == info
    props = read_props(r.onnx_path)
    assert props["srdeploy.weights"] == "state_dict" and props["srdeploy.opset"] == "17"
    assert read_metadata(r.fp16_path).precision == "fp16"


@pytest.mark.slow
def test_fp16_variant_within_fp16_tolerance(exported, set5):
    from srdeploy.train.data import degrade, load_rgb, mod_crop, to_chw_float

    model, _, r = exported
    assert r.fp16_path == fp16_path_for(r.onnx_path)
    m = onnx.load(str(r.fp16_path))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O kept
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_weights = {n.input[1] for n in m.graph.node if n.op_type == "Conv"}
    inits = {i.name: i.data_type for i in m.graph.initializer}
    assert conv_weights and all(inits[w] == onnx.TensorProto.FLOAT16 for w in conv_weights)
    lr = to_chw_float(degrade(mod_crop(load_rgb(set5 / "bird.png"), 4), 4))[None]
    for x in (np.random.default_rng(0).random((1, 3, 33, 47), dtype=np.float32), lr):
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out = _ort(r.fp16_path, x)
        assert out.dtype == np.float32
        mse = float(np.mean((out.astype(np.float64) - ref) ** 2))
        assert np.abs(out - ref).max() <= 2 / 255
        assert 10 * np.log10(1 / mse) >= 45


def test_metadata_missing_is_refused(tmp_path, exported):
    _, _, r = exported
    m = onnx.load(str(r.onnx_path))
    del m.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    with pytest.raises(MetadataError, match="srdeploy export"):
        read_metadata(bare)


def test_static_shapes_rejected(tmp_path, exported):
    _, _, r = exported
    m = onnx.load(str(r.onnx_path))
    for d in m.graph.input[0].type.tensor_type.shape.dim:
        d.dim_value = 32
    static = tmp_path / "static.onnx"
    onnx.save(m, str(static))
    with pytest.raises(ValueError, match="symbolic"):
        check_onnx(static)


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous good model")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    bare = tmp_path / "bare.pt"
    torch.save(SRResNet(**KW).state_dict(), bare)
    disc = tmp_path / "disc.pt"
    save_checkpoint(disc, Discriminator(base_channels=8), arch="Discriminator", kwargs={"base_channels": 8})
    for bad, needle in ((corrupt, "not a valid srdeploy checkpoint"), (bare, "not an srdeploy checkpoint"),
                        (disc, "not an SR generator"), (tmp_path / "missing.pt", "does not exist")):
        assert main(["export", str(bad), "-o", str(out), "--overwrite"]) == 1
        err = capsys.readouterr().err
        assert needle in err and str(bad) in err, err
        assert "Traceback" not in err
    assert out.read_bytes() == b"previous good model"  # nothing already written is lost
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.pt", "corrupt.pt", "disc.pt", "model.onnx"]


def test_simplify_without_onnxslim_is_an_error_not_a_skip(tmp_path, exported, monkeypatch):
    _, ckpt, _ = exported
    monkeypatch.setitem(sys.modules, "onnxslim", None)  # import fails as if not installed
    with pytest.raises(RuntimeError, match=r"pip install 'srdeploy\[simplify\]'"):
        export_checkpoint(ckpt, tmp_path / "s.onnx", simplify=True, log=lambda *a: None)
    assert not (tmp_path / "s.onnx").exists()


@pytest.mark.slow
def test_simplify_with_onnxslim(tmp_path, exported):
    pytest.importorskip("onnxslim", reason="onnxslim not installed (pip install 'srdeploy[simplify]')")
    model, ckpt, _ = exported
    r = export_checkpoint(ckpt, tmp_path / "s.onnx", simplify=True, log=lambda *a: None)
    assert r.simplify["nodes_after"] <= r.simplify["nodes_before"]
    assert read_metadata(r.onnx_path) == r.info
    x = np.random.default_rng(0).random((1, 3, 21, 18), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(_ort(r.onnx_path, x) - ref).max() <= 1e-4


def test_cli_parsers_import_nothing_heavy():
    code = ("import sys, srdeploy.export.cli as c, argparse; p = argparse.ArgumentParser(); "
            "c.register(p.add_subparsers()); "
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'cv2', 'tensorrt') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "srdeploy", "--help"], capture_output=True, text=True)
    for cmd in ("export", "verify", "build-engine"):
        assert cmd in out.stdout


def test_cli_export_fp16_with_calib(tmp_path, exported, capsys):
    """docs/export.md: `srdeploy export CKPT -o model.onnx --fp16 --calib DIR` (also writes model_fp16.onnx)."""
    import json

    import cv2

    _, ckpt, _ = exported
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for name in ("one.png", "two.png"):
        cv2.imwrite(str(calib / name), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    out = tmp_path / "m.onnx"
    assert main(["export", str(ckpt), "-o", str(out), "--fp16", "--calib", str(calib)]) == 0, capsys.readouterr().err
    assert f"wrote {tmp_path / 'm_fp16.onnx'}" in capsys.readouterr().out
    assert read_metadata(out).precision == "fp32" and read_metadata(tmp_path / "m_fp16.onnx").precision == "fp16"
    analysis = json.loads(read_props(tmp_path / "m_fp16.onnx")["srdeploy.fp16_analysis"])
    assert analysis["calibration_inputs"] == ["one.png", "two.png"]  # the --calib images, not Set5
    assert analysis["threshold"] == 16384.0                           # docs/export.md: 2^14
