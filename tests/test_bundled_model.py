"""The bundled default model: metadata, parity with its checkpoint, and quality vs bicubic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

MODELS = Path(__file__).resolve().parent.parent / "models"


def _bundle():
    # The INT8 models (``*_int8.onnx``, ``*_int8_trt.onnx``) are alternatives beside the default FP32 model.
    onnx_files = sorted(p for p in MODELS.glob("*.onnx") if not p.stem.endswith(("_int8", "_int8_trt")))
    ckpts = sorted(MODELS.glob("*.pt"))
    card = MODELS / "model_card.json"
    if not onnx_files or not ckpts or not card.is_file():
        pytest.fail(f"the bundled model is missing from {MODELS} (need *.onnx, *.pt and model_card.json)")
    return onnx_files, ckpts, json.loads(card.read_text())


def test_bundle_has_one_fp32_onnx_and_one_checkpoint_with_metadata():
    from srdeploy.export.onnx_export import read_metadata, sha256_file
    from srdeploy.train.archs import SRResNet, receptive_radius

    onnx_files, ckpts, card = _bundle()
    assert len(onnx_files) == 1 and len(ckpts) == 1
    info = read_metadata(onnx_files[0])
    assert info.precision == "fp32" and info.scale == 4
    assert info.arch == "SRResNet" and info.arch_kwargs == {"scale": 4, "num_blocks": 16, "channels": 64}
    assert info.receptive_radius == receptive_radius(SRResNet(**info.arch_kwargs))
    assert info.channel_order == "RGB" and info.input_range == (0.0, 1.0) and info.output_range == (0.0, 1.0)
    assert info.checkpoint_sha256 == sha256_file(ckpts[0])  # exported from exactly this checkpoint
    for path in (*onnx_files, *ckpts):
        assert path.stat().st_size < 8e6, f"{path} should stay small (about 6 MB)"


def test_bundled_models_carry_their_measured_tile_margin():
    """Issue 22's target for the bundled model: a measured margin of at most 12, below 0.5/255, in the
    FP32 file and its INT8 sibling (the runtime's default --tile-pad reads it)."""
    from srdeploy.export.margin import KEY_MARGIN_CURVE, THRESHOLD
    from srdeploy.runtime.profile import read_props
    from srdeploy.runtime.settings import TileSettings

    for path in (MODELS / "srresnet_x4.onnx", MODELS / "srresnet_x4_int8.onnx"):
        props = read_props(path)
        margin = int(props["srdeploy.tile_margin"])
        curve = dict(json.loads(props[KEY_MARGIN_CURVE])["curve"])
        assert margin <= 12 and curve[margin] < THRESHOLD * 255 and all(v >= THRESHOLD * 255 for m, v in curve.items()
                                                                         if m < margin), (path, curve)
        assert TileSettings().pad_for(40, margin) == margin


def test_bundled_int8_model_comes_from_the_fp32_one_within_the_loss_target():
    """Issue 12 item 5: models/*_int8.onnx made by bundle_model.py from the bundled FP32 model; card figures."""
    from srdeploy.export.onnx_export import read_metadata, read_props, sha256_file
    from srdeploy.export.quantize import KEY_INT8

    onnx_files, _, card = _bundle()
    int8 = sorted(MODELS.glob("*_int8.onnx"))
    assert [p.name for p in int8] == [card["onnx_int8"]]
    assert read_metadata(int8[0]).precision == "int8"
    meta = json.loads(read_props(int8[0])[KEY_INT8])
    assert meta["fp32_sha256"] == sha256_file(onnx_files[0])  # quantized from exactly the bundled FP32 model
    assert all(v["loss_db"] <= 0.05 for v in meta["validation"].values())
    dep = card["deployment"]
    for backend in ("onnxruntime", "openvino"):
        for s in ("Set5", "Set14"):
            assert dep["evals"]["FP32 onnxruntime"][s]["psnr"] - dep["evals"][f"INT8 {backend}"][s]["psnr"] <= 0.05
    assert all(abs(v) <= 0.01 for v in dep["checkpoint_vs_onnx_ort_db"].values())
    assert int8[0].stat().st_size < 3e6


def test_bundled_tensorrt_int8_model_is_what_tensorrt_parses_within_0_1_db():
    """Issue 23 item 4: models/*_int8_trt.onnx (bundle_model.py --trt-int8) from the bundled FP32 model:
    every Q/DQ zero point 0 and int8, no int32 bias DequantizeLinear, loss <= 0.1 dB on Set5/Set14."""
    import onnx

    from srdeploy.export.int8_trt import tensorrt_int8_problems
    from srdeploy.export.onnx_export import read_metadata, read_props, sha256_file
    from srdeploy.export.quantize import KEY_INT8

    onnx_files, _, card = _bundle()
    trt = sorted(MODELS.glob("*_int8_trt.onnx"))
    assert [p.name for p in trt] == [card["onnx_int8_trt"]]
    model = onnx.load(str(trt[0]))
    assert tensorrt_int8_problems(model) == []
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) == 3 * sum(n.op_type == "Conv" for n in model.graph.node)
    assert all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in qdq)
    assert not any(n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
                   and inits[n.input[0]].dtype == np.int32 for n in qdq)
    assert read_metadata(trt[0]).precision == "int8"
    meta = json.loads(read_props(trt[0])[KEY_INT8])
    assert meta["target"] == "tensorrt" and meta["fp32_sha256"] == sha256_file(onnx_files[0])
    assert set(meta["validation"]) == {"Set5", "Set14"}
    assert all(0 < v["loss_db"] <= 0.1 for v in meta["validation"].values())
    assert card["trt_int8"]["loss_db"] == pytest.approx({k: v["loss_db"] for k, v in meta["validation"].items()},
                                                        abs=1e-3)
    assert trt[0].stat().st_size < 3e6


@pytest.mark.slow
def test_bundled_tensorrt_int8_loss_on_set5_through_onnxruntime(set5):
    """The recorded Set5 loss of the TensorRT INT8 file, measured again through the runtime on the CPU."""
    from srdeploy.export.runtime_eval import evaluate_model_file
    from srdeploy.runtime.open import SessionRecipe
    from srdeploy.runtime.settings import DEFAULT_TILE, RunSettings, TileSettings

    _, _, card = _bundle()
    run = RunSettings(SessionRecipe(str(MODELS / card["onnx_int8_trt"]), "onnxruntime", threads=2),
                      TileSettings(tile=DEFAULT_TILE))
    (result,), _ = evaluate_model_file(run, [set5])
    loss = card["trt_int8"]["fp32_psnr"]["Set5"] - result.psnr
    assert 0 < loss <= 0.1
    assert result.psnr == pytest.approx(card["trt_int8"]["int8_psnr"]["Set5"], abs=0.002)


def test_runtime_default_model_is_the_bundled_onnx():
    from srdeploy.runtime.open import default_model_path

    onnx_files, _, _ = _bundle()
    assert default_model_path().resolve() == onnx_files[0].resolve()


@pytest.mark.slow
def test_bundled_onnx_reproduces_checkpoint_through_verify(set5, tmp_path):
    onnx_files, ckpts, _ = _bundle()
    report = tmp_path / "verify.json"
    res = subprocess.run([sys.executable, "-m", "srdeploy", "verify", str(ckpts[0]), str(onnx_files[0]),
                          "--images", str(set5), "--json", str(report)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(report.read_text())
    assert data["ok"] is True and data["failed"] == []
    assert any("Set5" in c["name"] or "baby" in c["name"] for c in data["cases"])  # real images ran


@pytest.mark.slow
def test_bundled_model_beats_bicubic_on_set5_by_the_stated_margin(set5):
    """A careless retrain cannot silently ship a worse model: the card's Set5 gain must hold."""
    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.upscale import Upscaler
    from srdeploy.train.evaluate import bicubic_upscale, evaluate

    onnx_files, _, card = _bundle()
    stated = card["figures"]["Set5"]
    with open_session(onnx_files[0]) as session:
        upscaler = Upscaler(session, tile=0)  # whole image: the card's figures are whole-image
        (model,) = evaluate(upscaler.upscale, [set5], scale=4)
    (bicubic,) = evaluate(lambda lr: bicubic_upscale(lr, 4), [set5], scale=4)
    gain = model.psnr - bicubic.psnr
    assert gain >= stated["gain_db"] - 0.05, (model.psnr, bicubic.psnr, stated)
    assert model.psnr == pytest.approx(stated["model_psnr"], abs=0.05)
    assert np.isfinite(model.ssim) and model.ssim > bicubic.ssim
