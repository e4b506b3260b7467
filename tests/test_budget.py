"""runtime.budget: size parsing, the ONNX graph profile, the peak predictor and the tile chooser."""

from __future__ import annotations

import pytest

from srdeploy.runtime.budget import (HEADROOM, GraphProfile, ProfileError, choose_tile, format_size,
                                     predict_peak, profile_graph, profile_onnx, tile_overhead)
from srdeploy.runtime.open import default_model_path
from srdeploy.runtime.parsing import parse_bytes


@pytest.mark.parametrize("text,expected", [("1G", 1 << 30), ("512M", 512 << 20), ("1.5GB", 3 << 29),
                                           ("800MiB", 800 << 20), ("4096", 4096), (" 2 g ", 2 << 30),
                                           ("64k", 64 << 10)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "G", "1X", "-1G", "1 GB extra", "0"])
def test_parse_bytes_rejects(text):
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes(text)


def test_format_size():
    assert format_size(612 << 20) == "612 MiB"
    assert format_size(5 << 29) == "2.50 GiB"


def test_profile_of_bundled_model_matches_its_architecture():
    # 16-block SRResNet x4, 64 channels: the peak is at the last PReLU, which the sub-pixel tail
    # (export/subpixel_tail.py) runs before the last pixel shuffle: its 256-channel 2x input and
    # output (256 * 4 floats per LR pixel each) are both alive: 2048 floats = 8192 bytes per LR
    # pixel (as traced, the shuffle's 2x input and 4x output: the same 8192).
    p = profile_onnx(default_model_path())
    assert p.peak_bytes_per_pixel == 8192
    assert "PRelu" in p.peak_op and "upsample.1" in p.peak_op


def test_profile_reader_agrees_with_onnx_package(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    # conv(3->8) -> relu -> conv(8->32, stride 1) -> DepthToSpace(2) -> concat with an upsampled copy
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [8, 3, 3, 3], [0.0] * 216)
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [32, 8, 3, 3], [0.0] * 2304)
    nodes = [helper.make_node("Conv", ["input", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=2),
             helper.make_node("DepthToSpace", ["c"], ["e"], blocksize=2),
             helper.make_node("Concat", ["d", "e"], ["output"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], [w1, w2])
    model = helper.make_model(graph)
    inferred = onnx.shape_inference.infer_shapes(model)
    sizes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    # per 4x4 input: c = 32*16 elems, d = e = 8*64; peak at the Concat: c freed after e, so d + e + output
    assert sizes["c"] == [1, 32, 4, 4] and sizes["d"] == [1, 8, 8, 8]
    p = profile_graph(model.SerializeToString())
    expected = (8 * 64 + 8 * 64 + 16 * 64) * 4 / 16  # bytes per LR pixel
    assert p.peak_bytes_per_pixel == pytest.approx(expected)


def test_profile_unknown_operator_says_so(tmp_path):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
                              [helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.0] * 16)])
    with pytest.raises(ProfileError, match="MatMul.*--tile N"):
        profile_graph(helper.make_model(graph).SerializeToString(), source="m.onnx")


@pytest.mark.parametrize("constant", [False, True])
def test_profile_follows_resize_and_reshapes(constant):
    """Nearest/bilinear upsampling (RRDBNet, Compact, MSRResNet) scales the resolution by its constant
    scales, from an initializer or a Constant node; a pixel-unshuffle written as Reshape/Transpose keeps
    the element count, and the next conv's weights give back channels and resolution."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 12, 1, 1], [0.0] * 96)
    nodes = [helper.make_node("Reshape", ["input", "s6"], ["r"]),       # 1x3x(H/2)x2x(W/2)x2
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 1, 3, 5, 2, 4]),
             helper.make_node("Reshape", ["t", "s4"], ["u"]),           # 1x12x(H/2)x(W/2)
             helper.make_node("Conv", ["u", "w"], ["c"]),                # 8 channels at 1/2 resolution
             helper.make_node("Resize", ["c", "", "scales"], ["output"], mode="nearest")]
    inits = [w, helper.make_tensor("s6", TensorProto.INT64, [6], [1, 3, 2, 2, 2, 2]),
             helper.make_tensor("s4", TensorProto.INT64, [4], [1, 12, 2, 2])]
    if constant:
        nodes.insert(0, helper.make_node("Constant", [], ["scales"], value=scales))
    else:
        inits.append(scales)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], inits)
    p = profile_graph(helper.make_model(graph).SerializeToString())
    # per LR pixel: c = 8 * 0.25 = 2 elements, output = 8 elements (full resolution); peak: c + output
    assert p.peak_bytes_per_pixel == pytest.approx((2 + 8) * 4)
    assert p.peak_op == "Resize output"


_PROFILE = GraphProfile(peak_bytes_per_pixel=8192, peak_op="test")
_IMAGE = dict(height=3000, width=4000, channels=3, itemsize=1, scale=4)


def test_chooser_is_monotonic_in_budget():
    costs = []
    for mb in range(300, 4000, 100):
        p = choose_tile(_PROFILE, mb << 20, tile_pad=12, **_IMAGE)
        assert p.total <= HEADROOM * (mb << 20)
        costs.append(tile_overhead(3000, 4000, p.tile, 12))
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]


def test_chooser_fills_the_budget_with_the_cheapest_tiling():
    budget = 1 << 30
    p = choose_tile(_PROFILE, budget, tile_pad=12, **_IMAGE)
    th, tw = p.tile
    assert p.total <= HEADROOM * budget and tile_overhead(3000, 4000, p.tile, 12) < 1.3
    # every tiling the tiler can make with less overhead is predicted over the budget
    for kh in range(1, 40):
        for kw in range(1, 40):
            t = (-(-3000 // kh), -(-4000 // kw))
            if tile_overhead(3000, 4000, t, 12) < tile_overhead(3000, 4000, p.tile, 12) - 1e-9:
                assert predict_peak(_PROFILE, tile=t, tile_pad=12, **_IMAGE).total > HEADROOM * budget


def test_predictor_parts():
    streamed = predict_peak(_PROFILE, tile=256, tile_pad=12, **_IMAGE)
    held = predict_peak(_PROFILE, tile=256, tile_pad=12, streamed=False, **_IMAGE)
    assert streamed.image_out == 0 and held.image_out == 16000 * 12000 * 3
    assert streamed.image_in == 4000 * 3000 * 3
    # window 256 + 2 * 12 = 280 (cores near-equal: 4000 / 16 = 250 -> window 274)
    assert streamed.activations == pytest.approx(1.45 * 8192 * 274 * 274, rel=0.01)
    whole = predict_peak(_PROFILE, tile=0, tile_pad=12, height=100, width=50, channels=1, itemsize=2, scale=4)
    assert whole.activations == pytest.approx(1.45 * 8192 * 100 * 50, rel=1e-6)


def test_whole_image_when_it_fits():
    p = choose_tile(_PROFILE, 1 << 30, tile_pad=12, height=48, width=64, channels=3, itemsize=1, scale=4)
    assert p.tile == 0


@pytest.mark.parametrize("backend,precision", [("openvino", "fp32"), ("openvino", "int8")])
def test_openvino_paths_predict_with_their_own_activation_factor(backend, precision):
    """OpenVINO allocates less than the graph walk (measured 0.34-0.88x), ONNX Runtime more (1.26-1.54x):
    an Upscaler predicts each path's activations with its own factor, so tiles on OpenVINO are not
    chosen for ONNX Runtime's memory."""
    pytest.importorskip("openvino")
    from srdeploy.runtime.budget import ACTIVATION_FACTORS, ORT_ACTIVATION_FACTOR, activation_factor
    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.settings import TileSettings
    from srdeploy.runtime.upscale import Upscaler

    preds, chosen = {}, {}
    for b, p in (("onnxruntime", "fp32"), (backend, precision)):
        with open_session(default_model_path(), backend=b, precision=p, threads=1) as s:
            assert (s.backend, s.precision) == (b, p)
            preds[b] = Upscaler(s, TileSettings(tile=64)).predict(300, 400)
            chosen[b] = Upscaler(s, TileSettings()).predict(1500, 2000).tile  # tile auto, 1 GiB
            assert activation_factor(s) == ACTIVATION_FACTORS.get((b, p), ORT_ACTIVATION_FACTOR)
    ratio = preds[backend].activations / preds["onnxruntime"].activations
    assert ratio == pytest.approx(ACTIVATION_FACTORS[(backend, precision)] / ORT_ACTIVATION_FACTOR, rel=1e-3)
    assert ratio < 0.65
    area = {b: t[0] * t[1] if isinstance(t, tuple) else t * t for b, t in chosen.items()}
    assert area[backend] > area["onnxruntime"], chosen  # the budget buys larger (cheaper) tiles


def test_first_line_says_why_memory_was_not_predicted(tmp_path, capsys):
    """An ONNX graph with an operator the predictor cannot size: upscale's first line gives that reason
    (not "no ONNX graph", which is for engines and checkpoints) and the fixed tile it used instead."""
    pytest.importorskip("onnx")
    import cv2
    import numpy as np

    from _video import write_copy_model
    from srdeploy.cli import main

    model = write_copy_model(tmp_path / "copy.onnx")  # Resize + Gather: Gather is not sized
    cv2.imwrite(str(tmp_path / "in.png"), np.zeros((20, 30, 3), np.uint8))
    assert main(["upscale", "-i", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--model", str(model),
                 "--precision", "fp32"]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert "memory not predicted: operator Gather" in first and "--tile N" in first, first
    assert "no ONNX graph" not in first and str(model) + ": operator" not in first


def test_windows_are_predicted_as_the_tiler_makes_them_for_size_rules():
    """A model with a size multiple (SwinIR's window 8) or a minimum size gets windows rounded up and
    padded by the tiler; the predictor must size those windows, not the smaller ones (it would
    under-predict: the unsafe side)."""
    import dataclasses

    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.settings import TileSettings
    from srdeploy.runtime.tiling import plan_tiles
    from srdeploy.runtime.upscale import Upscaler

    plain = predict_peak(_PROFILE, tile=50, tile_pad=10, height=100, width=100, channels=3, itemsize=1, scale=4)
    mult = predict_peak(_PROFILE, tile=50, tile_pad=10, height=100, width=100, channels=3, itemsize=1, scale=4,
                        multiple=8)
    small = predict_peak(_PROFILE, tile=0, tile_pad=10, height=20, width=30, channels=3, itemsize=1, scale=4,
                         minimum=64, multiple=8)
    assert plain.activations == _PROFILE.activation_bytes(70, 70)
    assert mult.activations == _PROFILE.activation_bytes(80, 80)  # 50 + 2 x 10 + 7, rounded up to 8
    assert small.activations == _PROFILE.activation_bytes(64, 64)  # edge-padded to the minimum
    assert plan_tiles(100, 100, tile=50, tile_pad=10, multiple=8).rows.window == 80  # what the tiler runs
    assert plan_tiles(20, 30, tile=0, tile_pad=10, multiple=8, minimum=64).cols.window == 64
    with open_session(default_model_path(), threads=1) as s:
        s.info = dataclasses.replace(s.info, size_multiple=8)
        p = Upscaler(s, TileSettings(tile=50, tile_pad=10)).predict(100, 100)
    assert p.activations == int(1.45 * 8192 * 80 * 80)
