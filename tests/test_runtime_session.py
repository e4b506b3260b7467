"""open_session and the ONNX Runtime / PyTorch adapters (CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from srdeploy.runtime.metadata import MetadataError
from srdeploy.runtime.open import backend_for, default_model_path, open_session


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny checkpoint, its fused ONNX export (with metadata) and a metadata-less copy."""
    import torch

    from srdeploy.export.fuse import fuse_bn
    from srdeploy.export.onnx_export import add_metadata, export_onnx
    from srdeploy.runtime.metadata import ModelInfo
    from srdeploy.train.archs import SRResNet, receptive_radius
    from srdeploy.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kwargs = dict(scale=2, num_blocks=2, channels=16)
    model = SRResNet(**kwargs)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    d = tmp_path_factory.mktemp("models")
    save_checkpoint(d / "tiny.pt", model, arch="SRResNet", kwargs=kwargs)
    export_onnx(fuse_bn(model.eval()), d / "bare.onnx")
    (d / "tiny.onnx").write_bytes((d / "bare.onnx").read_bytes())
    add_metadata(d / "tiny.onnx", ModelInfo(scale=2, receptive_radius=receptive_radius(model), arch="SRResNet"))
    with torch.no_grad():
        x = torch.rand(1, 3, 13, 17, generator=torch.Generator().manual_seed(1))
        ref = model.eval()(x).numpy()
    return {"dir": d, "pt": d / "tiny.pt", "onnx": d / "tiny.onnx", "bare": d / "bare.onnx",
            "x": x.numpy(), "ref": ref}


def test_ort_session_matches_pytorch(models):
    with open_session(models["onnx"], threads=1, graph_optimization="all") as s:
        assert s.backend == "onnxruntime" and s.device == "cpu" and s.precision == "fp32"
        assert s.info.scale == 2 and s.info.receptive_radius > 0
        assert s.details["providers"] == ["CPUExecutionProvider"]
        assert s.details["intra_op_threads"] == 1
        y = s.infer(models["x"])
        assert y.shape == (1, 3, 26, 34) and y.dtype == np.float32
        assert np.abs(y - models["ref"]).max() <= 1e-4
    with pytest.raises(RuntimeError, match="closed"):
        s.infer(models["x"])


def test_torch_backend_through_entry_point(models):
    with open_session(models["pt"]) as s:
        assert s.backend == "torch" and s.details["bn_folded"]
        assert s.info.scale == 2 and s.info.arch == "SRResNet"
        with open_session(models["onnx"]) as o:
            assert s.info.receptive_radius == o.info.receptive_radius
        assert np.abs(s.infer(models["x"]) - models["ref"]).max() <= 1e-5
    with pytest.raises(ValueError, match="fp16 runs on CUDA only"):
        open_session(models["pt"], precision="fp16")


def test_torch_backend_contract_is_the_exported_one(models, tmp_path):
    # One ModelInfo builder: a checkpoint opened on the torch backend describes itself exactly as
    # its `srdeploy export` does (only the exporter's own version, FLOP count and the tile margin it
    # measures are added there; the torch backend keeps the radius rule).
    from dataclasses import replace

    from srdeploy.export.pipeline import export_checkpoint

    r = export_checkpoint(models["pt"], tmp_path / "e.onnx", log=lambda *a: None)
    with open_session(models["pt"]) as t, open_session(r.onnx_path) as o:
        assert t.info.checkpoint_sha256 and t.info.arch_kwargs == {"scale": 2, "num_blocks": 2, "channels": 16}
        assert t.info.tile_margin is None and o.info.tile_margin is not None
        assert replace(t.info, version=o.info.version, flops_per_pixel=o.info.flops_per_pixel,
                       tile_margin=o.info.tile_margin) == o.info


def test_session_checks_input(models):
    with open_session(models["onnx"]) as s:
        with pytest.raises(TypeError, match="float32"):
            s.infer(models["x"].astype(np.float64))
        with pytest.raises(ValueError, match="expected"):
            s.infer(models["x"][0])


def test_unavailable_requests_are_errors(models):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeError, match="CUDAExecutionProvider.*only has .*CPUExecutionProvider"):
            open_session(models["onnx"], device="cuda")
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeError, match="TensorrtExecutionProvider"):
            open_session(models["onnx"], backend="onnxruntime-tensorrt")
    with pytest.raises(ValueError, match="precision 'fp16' requested"):
        open_session(models["onnx"], precision="fp16")
    with pytest.raises(ValueError, match="device must be"):
        open_session(models["onnx"], device="gpu")
    with pytest.raises(ValueError, match="cannot open a .onnx"):
        open_session(models["onnx"], backend="tensorrt")
    with pytest.raises(ValueError, match="unknown backend"):
        open_session(models["onnx"], backend="directml")
    with pytest.raises(ValueError, match="graph_optimization"):
        open_session(models["onnx"], graph_optimization="max")


def test_bad_model_files(models, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_session(tmp_path / "missing.onnx")
    with pytest.raises(MetadataError, match="not an srdeploy model.*add_metadata"):
        open_session(models["bare"])
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(models["onnx"].read_bytes()[:2000])
    with pytest.raises(ValueError, match="corrupt.onnx: ONNX Runtime cannot load"):
        open_session(corrupt)
    with pytest.raises(ValueError, match="unknown model file type"):
        open_session(tmp_path / "model.bin")
    notckpt = tmp_path / "x.pt"
    notckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="x.pt: not a valid srdeploy checkpoint"):
        open_session(notckpt)


def test_backend_for():
    assert backend_for("m.onnx") == "onnxruntime"
    assert backend_for("m.ENGINE") == "tensorrt" and backend_for("m.plan", "trt") == "tensorrt"
    assert backend_for("m.pt") == "torch"
    assert backend_for("m.onnx", "ort-trt") == "onnxruntime-tensorrt"
    with pytest.raises(ValueError, match="build-engine"):
        backend_for("m.onnx", "tensorrt")


def test_default_model_path(models, monkeypatch, tmp_path):
    monkeypatch.setenv("SRDEPLOY_MODEL", str(models["onnx"]))
    assert default_model_path() == models["onnx"]
    monkeypatch.setenv("SRDEPLOY_MODEL", str(tmp_path / "nope.onnx"))
    with pytest.raises(FileNotFoundError, match="SRDEPLOY_MODEL"):
        default_model_path()
    monkeypatch.delenv("SRDEPLOY_MODEL")
    # the bundled model: models/srresnet_x4.onnx (repository or installed package data)
    found = default_model_path()
    assert found.name == "srresnet_x4.onnx" and found.parent.name == "models" and found.is_file()
    # in a folder, FP32 models come before "fp16" ones, then alphabetical order
    import importlib.machinery
    import importlib.util

    import srdeploy.runtime.open as open_mod

    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("a_fp16.onnx", "c.onnx", "b.onnx", "notes.txt"):
        (folder / name).write_bytes(b"")
    spec = importlib.machinery.ModuleSpec("srdeploy.models", None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "srdeploy.models" else real_find_spec(name, *a))
    monkeypatch.setattr(open_mod, "__file__", str(tmp_path / "nowhere" / "runtime" / "open.py"))
    assert default_model_path() == folder / "b.onnx"
    # no model anywhere: a message saying what to do
    for f in folder.glob("*.onnx"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="no default model.*--model.*SRDEPLOY_MODEL"):
        default_model_path()
