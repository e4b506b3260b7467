"""INT8 quantization (export/quantize.py) and FLOP counting (export/flops.py) on a tiny model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from srdeploy.export.calib import calibration_crops
from srdeploy.export.quantize import QuantizeConfig, QuantizeError, quantize_model


@pytest.fixture(scope="module")
def tiny(tiny_srresnet_x2, tmp_path_factory, set5):
    """A tiny SRResNet x2 ONNX (metadata, BN with real statistics), a bare copy, calib and val folders."""
    src = tiny_srresnet_x2  # the shared tiny model (tests/conftest.py); outputs go to this module's folder
    d = tmp_path_factory.mktemp("int8")
    for name in ("tiny.onnx", "bare.onnx"):
        shutil.copy(src.parent / name, d / name)
    calib, val = d / "calib", d / "val"
    calib.mkdir()
    val.mkdir()
    files = sorted(set5.iterdir())
    for f in files[:3]:
        shutil.copy(f, calib / f.name)
    for f in files[3:5]:
        shutil.copy(f, val / f.name)
    return {"dir": d, "onnx": d / "tiny.onnx", "bare": d / "bare.onnx", "calib": calib, "val": val}


def _cfg(tiny, **kw) -> QuantizeConfig:
    base = dict(calib=(str(tiny["calib"]),), calib_images=6, crop=16, val=(str(tiny["val"]),), probe_images=2,
                threads=1)
    base.update(kw)
    return QuantizeConfig(**base)


def _run(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]


def test_calibration_crops_are_lr_of_training_crops(tiny):
    from srdeploy.train.data import SRTrainDataset

    crops, names = calibration_crops([tiny["calib"]], scale=2, count=4, crop=16, seed=3)
    assert len(crops) == 4 and len(names) == 4
    assert all(c.shape == (1, 3, 16, 16) and c.dtype == np.float32 for c in crops)
    again, _ = calibration_crops([tiny["calib"]], scale=2, count=4, crop=16, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(crops, again))  # seeded: reproducible
    ds = SRTrainDataset([str(tiny["calib"])], crop=32, scale=2, augment=False, seed=3)
    assert np.array_equal(crops[2][0], ds[2][0])  # the training pipeline's LR of the HR crop


def test_quantize_writes_int8_qdq_close_to_fp32(tiny):
    import onnx

    from srdeploy.export.quantize import KEY_INT8

    out = tiny["dir"] / "tiny_int8.onnx"
    rep = quantize_model(tiny["onnx"], out, _cfg(tiny, max_loss=10.0), log=lambda m: None)
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DequantizeLinear") > ops.count("Conv") > 0  # weights and inputs of every conv
    props = {p.key: p.value for p in model.metadata_props}
    assert props["srdeploy.precision"] == "int8" and props["srdeploy.scale"] == "2"
    meta = json.loads(props[KEY_INT8])
    assert meta["calibration"]["images"] == 6 and meta["calibration"]["method"] == "percentile"
    assert meta["float_nodes"] == [] and set(meta["validation"]) == {"val"}
    assert rep.float_nodes == [] and rep.loss_db["val"] == pytest.approx(meta["validation"]["val"]["loss_db"], abs=1e-3)
    x = np.random.default_rng(0).random((1, 3, 24, 20), dtype=np.float32)
    ref, q = _run(tiny["onnx"], x), _run(out, x)
    rel = np.abs(q - ref).max() / np.abs(ref).max()
    assert 0 < rel < 0.05  # quantized (not identical), yet close
    # The model input is quantized exactly (8-bit pixels): scale 1/255, zero point 0.
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert inits["lr_scale"] == pytest.approx(1 / 255) and int(inits["lr_zero_point"]) == 0


@pytest.mark.slow
def test_accuracy_aware_keeps_sensitive_convs_float(tiny):
    all_q = quantize_model(tiny["onnx"], tiny["dir"] / "a.onnx", _cfg(tiny, max_loss=10.0), log=lambda m: None)
    loss0 = max(all_q.loss_db.values())
    assert loss0 > 0.001  # the fully quantized tiny model does lose something
    target = loss0 / 3
    try:
        rep = quantize_model(tiny["onnx"], tiny["dir"] / "b.onnx", _cfg(tiny, max_loss=target), log=lambda m: None)
    except QuantizeError as exc:  # allowed only with every conv tried
        assert "even with" in str(exc) and not (tiny["dir"] / "b.onnx").exists()
        return
    assert rep.float_nodes and max(rep.loss_db.values()) <= target
    ranked = [n for n, _ in rep.sensitivity]
    assert rep.float_nodes == ranked[:len(rep.float_nodes)]  # most sensitive first


def test_bad_inputs_one_error_nothing_written(tiny, tmp_path):
    out = tmp_path / "x_int8.onnx"
    q = tiny["dir"] / "tiny_int8.onnx"
    if not q.exists():
        quantize_model(tiny["onnx"], q, _cfg(tiny, max_loss=10.0), log=lambda m: None)
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_model(q, out, _cfg(tiny))
    with pytest.raises(QuantizeError, match="not an srdeploy model"):
        quantize_model(tiny["bare"], out, _cfg(tiny))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(QuantizeError, match="holds no images"):
        quantize_model(tiny["onnx"], out, _cfg(tiny, calib=(str(empty),)))
    with pytest.raises(QuantizeError, match="--method"):
        quantize_model(tiny["onnx"], out, _cfg(tiny, method="kl"))
    with pytest.raises(QuantizeError, match="not in the graph"):
        quantize_model(tiny["onnx"], out, _cfg(tiny, exclude=("/no/such/Conv",)))
    existing = tmp_path / "exists.onnx"
    existing.write_bytes(b"keep")
    with pytest.raises(QuantizeError, match="--overwrite"):
        quantize_model(tiny["onnx"], existing, _cfg(tiny))
    assert existing.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "exists.onnx"]


def test_flops_per_pixel_counts_the_graph(tiny):
    import onnx

    from srdeploy.export.flops import flops_per_pixel

    # SRResNet x2, 16 channels, 2 blocks, 9x9 head/tail, one sub-pixel stage; per LR pixel:
    c = 16
    conv = lambda cin, cout, k, area=1: 2 * cin * k * k * cout * area + cout * area  # noqa: E731
    expect = (conv(3, c, 9) + c                                  # head + PReLU
              + 2 * (conv(c, c, 3) + c + conv(c, c, 3) + c)       # 2 blocks: conv, PReLU, conv, add
              + conv(c, c, 3) + c                                 # body conv + global add
              + conv(c, 4 * c, 3) + 4 * c                         # upsample conv + PReLU (after shuffle)
              + conv(c, 3, 9, area=4) + 3 * 4)                    # tail at 2x + clip
    assert flops_per_pixel(onnx.load(str(tiny["onnx"]))) == pytest.approx(expect)
    q = tiny["dir"] / "tiny_int8.onnx"
    if q.exists():  # QDQ nodes add no arithmetic: the INT8 model counts the same
        assert flops_per_pixel(onnx.load(str(q))) == pytest.approx(expect)


def test_int8_verify_tolerance_and_engine_precision(tiny, tmp_path):
    """verify's INT8 rule (measured, documented) and build-engine's refusal to add FP16 to a QDQ model."""
    from srdeploy.export.engine import build_engine, profiles_from_args
    from srdeploy.export.verify import INT8_ATOL, INT8_MIN_PSNR, Tolerance

    assert Tolerance.for_precision("int8") == Tolerance(INT8_ATOL, INT8_MIN_PSNR) == Tolerance(0.3, 28.0)
    q = tiny["dir"] / "tiny_int8.onnx"
    if not q.exists():
        quantize_model(tiny["onnx"], q, _cfg(tiny, max_loss=10.0), log=lambda m: None)
    profiles = profiles_from_args(["1x3x16x16"], ["1x3x32x32"], ["1x3x64x64"])
    with pytest.raises(ValueError, match="INT8 QDQ model.*without --fp16"):
        build_engine(q, tmp_path / "m.engine", profiles=profiles, fp16=True)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- --target tensorrt (issue 23, item 4)

def test_tensorrt_target_is_symmetric_int8_with_float_biases_and_an_exact_input(tiny):
    import onnx

    from srdeploy.export.int8_trt import CENTERED, tensorrt_int8_problems
    from srdeploy.export.quantize import KEY_INT8

    out = tiny["dir"] / "tiny_int8_trt.onnx"
    rep = quantize_model(tiny["onnx"], out, _cfg(tiny, max_loss=10.0, target="tensorrt"), log=lambda m: None)
    model = onnx.load(str(out))
    assert tensorrt_int8_problems(model) == []
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(qdq) == 3 * len(convs)  # per conv: Q + DQ of its input, DQ of its weights; no bias DQ
    for n in qdq:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name
    assert all(inits[c.input[2]].dtype == np.float32 for c in convs)  # biases stay float
    # The centred input is quantized exactly: int8, scale 1/255 (all 256 pixel levels), zero point 0.
    q_in = next(n for n in qdq if n.op_type == "QuantizeLinear" and n.input[0] == CENTERED)
    assert inits[q_in.input[1]] == pytest.approx(1 / 255)
    meta = json.loads({p.key: p.value for p in model.metadata_props}[KEY_INT8])
    assert meta["target"] == "tensorrt" and rep.target == "tensorrt" and rep.speed == {}
    # Every 8-bit input level survives the int8 input quantization; the file stays close to FP32.
    x = (np.arange(256, dtype=np.float32).reshape(1, 1, 16, 16).repeat(3, axis=1) / 255)
    ref, q = _run(tiny["onnx"], x), _run(out, x)
    assert 0 < np.abs(q - ref).max() / np.abs(ref).max() < 0.05


def test_build_engine_refuses_a_cpu_target_int8_model_before_tensorrt(tiny, tmp_path):
    from srdeploy.export.engine import build_engine, profiles_from_args

    q = tiny["dir"] / "tiny_int8.onnx"
    if not q.exists():
        quantize_model(tiny["onnx"], q, _cfg(tiny, max_loss=10.0), log=lambda m: None)
    profiles = profiles_from_args(["1x3x16x16"], ["1x3x32x32"], ["1x3x64x64"])
    with pytest.raises(ValueError, match=r"quantized for CPUs.*uint8.*int32 bias.*--target tensorrt"):
        build_engine(q, tmp_path / "m.engine", profiles=profiles)
    assert not list(tmp_path.iterdir())


def test_centred_input_computes_the_same_function(tiny):
    import onnx
    import onnxruntime as ort

    from srdeploy.export.int8_trt import center_input

    model = onnx.load(str(tiny["onnx"]))
    centred = center_input(onnx.load(str(tiny["onnx"])), input_name="lr", step=1 / 255)
    onnx.checker.check_model(centred, full_check=True)
    x = np.random.default_rng(1).random((2, 3, 21, 17), dtype=np.float32)  # borders included
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(  # noqa: E731
        None, {"lr": x})[0]
    assert np.abs(run(centred) - run(model)).max() < 1e-5
    assert sum(n.op_type == "Conv" and n.input[0] == "lr" for n in centred.graph.node) == 0


def test_exact_int8_input_centres_only_the_convolution_beside_a_skip():
    """BasicSR MSRResNet / Compact: the input feeds the first Conv and a bilinear skip. Only the Conv's
    copy is centred (the skip keeps reading the float input) and the function is unchanged; an input
    that is normalised first (Sub) cannot be exact int8, and the refusal says what to use instead."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from srdeploy.export.int8_trt import center_input

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    scales = numpy_helper.from_array(np.array([1, 1, 1, 1], np.float32), "scales")
    nodes = [helper.make_node("Conv", ["lr", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="/conv"),
             helper.make_node("Resize", ["lr", "", "scales"], ["r"], mode="linear", name="/skip"),
             helper.make_node("Add", ["c", "r"], ["sr"], name="/add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, [1, 3, 6, 7])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, [1, 3, 6, 7])], [w, b, scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = (rng.integers(0, 256, (1, 3, 6, 7)) / 255).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]
    center_input(model, input_name="lr", step=1 / 255)
    readers = {n.name: list(n.input) for n in model.graph.node if "lr" in n.input}
    assert set(readers) == {"/input/center", "/skip"}  # the skip reads the float input, untouched
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]
    assert np.abs(got - want).max() < 1e-5
    assert "b" not in {i.name for i in model.graph.initializer}  # the replaced bias is not left behind
    normalised = helper.make_model(helper.make_graph(
        [helper.make_node("Sub", ["lr", "b"], ["n"]), helper.make_node("Conv", ["n", "w"], ["sr"], pads=[1, 1, 1, 1])],
        "g", graph.input, graph.output, [w, b]), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match=r"feeds \['Sub'\]; quantize for the CPU \(--target cpu\)"):
        center_input(normalised, input_name="lr", step=1 / 255)
