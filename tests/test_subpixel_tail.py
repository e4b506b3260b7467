"""The sub-pixel tail rewrite (export/subpixel_tail.py): the same function, checked on real graphs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from _models import export_spread_model, spread_generator
from srdeploy.export.fuse import fuse_bn
from srdeploy.export.onnx_export import check_onnx, export_onnx, read_props
from srdeploy.export.subpixel_tail import KEY_REWRITES, fold_subpixel_tail, phase_weights
from srdeploy.runtime.metadata import INPUT_NAME


def _run(model_or_path, x):
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})[0]


def _randomize_prelu_slopes(model) -> None:
    from onnx import numpy_helper

    slopes = {n.input[1] for n in model.graph.node if n.op_type == "PRelu"}
    rng = np.random.default_rng(5)
    for i, init in enumerate(model.graph.initializer):
        if init.name in slopes:
            arr = numpy_helper.to_array(init)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(
                rng.uniform(-0.5, 0.8, arr.shape).astype(np.float32), init.name))


@pytest.mark.parametrize("scale", [4, 2])
def test_rewritten_graph_computes_the_same_function(tmp_path, scale):
    path = export_spread_model(tmp_path / "m.onnx", scale=scale)  # tanh output: Conv -> Tanh -> Add -> Div
    model = onnx.load(str(path))
    _randomize_prelu_slopes(model)  # a fresh model has every slope 0.25: the per-channel move would go unseen
    onnx.save(model, str(path))
    record = fold_subpixel_tail(model)
    assert record == {"rewrite": "subpixel_tail", "conv": "/tail/Conv", "kernel": [9, 5], "blocksize": 2,
                      "arithmetic_overhead": 1.2346}
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DepthToSpace") == scale // 2  # the last shuffle now moves the 3-colour phases only
    tail = next(n for n in model.graph.node if n.name == "/tail/Conv")
    weights = {i.name: i for i in model.graph.initializer}
    assert list(weights[tail.input[1]].dims) == [3 * 4, 16 * 4, 5, 5]
    onnx.save(model, str(tmp_path / "r.onnx"))
    check_onnx(tmp_path / "r.onnx")
    for shape in ((1, 3, 17, 23), (2, 3, 8, 5)):  # odd sizes: the phase padding must match at every border
        x = np.random.default_rng(1).random(shape, dtype=np.float32)
        ref, got = _run(path, x), _run(model, x)
        assert got.shape == ref.shape and float(ref.std()) > 0.1
        assert np.abs(got - ref).max() <= 1e-5


def test_phase_kernel_against_a_direct_convolution():
    """Conv KxK over DepthToSpace(y) == DepthToSpace(conv over y with the phase kernel), in torch."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    y = torch.from_numpy(rng.standard_normal((1, 12, 6, 7)).astype(np.float32))
    ref = torch.nn.functional.conv2d(torch.nn.functional.pixel_shuffle(y, 2), torch.from_numpy(w), padding=2)
    lo, hi = -1, 1  # floor((a + dy - 2) / 2) for a < 2, dy < 5
    w2 = torch.from_numpy(phase_weights(w, 2, lo, hi - lo + 1))
    got = torch.nn.functional.pixel_shuffle(torch.nn.functional.conv2d(y, w2, padding=1), 2)
    assert torch.allclose(got, ref, atol=1e-5)


def test_left_alone_when_it_would_not_pay_or_does_not_match(tmp_path):
    path = export_spread_model(tmp_path / "m.onnx", scale=2)
    model = onnx.load(str(path))
    assert fold_subpixel_tail(model, max_overhead=1.2) is None  # 9x9 at r=2 costs 1.23x: refused at 1.2
    shuffle = next(n for n in model.graph.node if n.op_type == "DepthToSpace")
    next(a for a in shuffle.attribute if a.name == "mode").s = b"DCR"
    assert fold_subpixel_tail(model) is None  # another channel order: not this rewrite's algebra
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in onnx.load(str(path)).graph.node]


def test_export_pipeline_rewrites_and_counts_flops_before(tmp_path):
    from srdeploy.export.pipeline import export_checkpoint
    from srdeploy.train.checkpoint import save_checkpoint

    kw = {"scale": 4, "num_blocks": 2, "channels": 16}
    model = spread_generator(**kw)
    save_checkpoint(tmp_path / "m.pt", model, arch="SRResNet", kwargs={**kw, "output_range": "tanh"})
    quiet = lambda *a: None  # noqa: E731
    plain = export_checkpoint(tmp_path / "m.pt", tmp_path / "plain.onnx", subpixel_tail=False, log=quiet)
    fast = export_checkpoint(tmp_path / "m.pt", tmp_path / "fast.onnx", log=quiet)
    assert KEY_REWRITES not in read_props(plain.onnx_path)
    assert json.loads(read_props(fast.onnx_path)[KEY_REWRITES])[0]["conv"] == "/tail/Conv"
    assert fast.info.flops_per_pixel == plain.info.flops_per_pixel > 0  # useful arithmetic, not the zero taps
    x = np.random.default_rng(2).random((1, 3, 13, 19), dtype=np.float32)
    with torch.no_grad():
        ref = fuse_bn(model)(torch.from_numpy(x)).numpy()
    assert np.abs(_run(fast.onnx_path, x) - ref).max() <= 1e-4
    export_onnx(fuse_bn(model), tmp_path / "traced.onnx")
    assert sum(n.op_type == "DepthToSpace" for n in onnx.load(str(tmp_path / "traced.onnx")).graph.node) == 2
