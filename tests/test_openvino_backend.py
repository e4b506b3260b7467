"""The OpenVINO adapter (runtime/backends/openvino.py) on tiny exported models, CPU."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'srdeploy[openvino]')")

from srdeploy.runtime.backends.openvino import (OpenVinoOptions, OpenVinoSession, device_name,  # noqa: E402
                                                 to_openvino_ir)
from srdeploy.runtime.metadata import MetadataError  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_srresnet_x2, tmp_path_factory):
    """A tiny SRResNet x2 exported to ONNX with metadata, a metadata-less copy and an input."""
    src = tiny_srresnet_x2  # the shared tiny model (tests/conftest.py); outputs go to this module's folder
    d = tmp_path_factory.mktemp("ov")
    for name in ("tiny.onnx", "bare.onnx"):
        shutil.copy(src.parent / name, d / name)
    x = np.random.default_rng(1).random((1, 3, 13, 17), dtype=np.float32)
    import onnxruntime as ort

    ref = ort.InferenceSession(str(d / "tiny.onnx"), providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]
    return {"dir": d, "onnx": d / "tiny.onnx", "bare": d / "bare.onnx", "x": x, "ref": ref}


def test_fp32_matches_onnxruntime_and_records_f32(tiny):
    with OpenVinoSession(tiny["onnx"], threads=1) as s:
        assert s.backend == "openvino" and s.device == "cpu" and s.precision == "fp32"
        # OpenVINO's CPU default is bf16 where the CPU has it: the adapter must have asked for f32.
        assert s.details["inference_precision"] == "f32"
        assert s.details["threads"] == 1 and s.details["int8_layers"] == 0
        assert s.info.scale == 2 and s.info.arch == "SRResNet"
        y = s.infer(tiny["x"])
        assert y.shape == (1, 3, 26, 34) and y.dtype == np.float32
        assert np.abs(y - tiny["ref"]).max() <= 1e-4
        # A second, differently shaped call (dynamic H/W) is still right.
        y2 = s.infer(np.ascontiguousarray(tiny["x"][:, :, :9, :11]))
        assert y2.shape == (1, 3, 18, 22)


def test_ir_round_trip_keeps_metadata_and_fp32_weights(tiny, tmp_path):
    xml = to_openvino_ir(tiny["onnx"], tmp_path / "tiny.xml")
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert not list(tmp_path.glob(".*"))  # no temp files left
    with OpenVinoSession(xml) as s:
        assert s.info.scale == 2 and s.precision == "fp32"
        # compress_to_fp16=False: FP32 weights survive, so the IR computes the ONNX model's numbers
        assert np.abs(s.infer(tiny["x"]) - tiny["ref"]).max() <= 1e-4


def test_concurrent_conversions_to_one_ir_do_not_collide(tiny, tmp_path):
    """Each conversion writes under a name of its own, then renames: four at once all succeed, the IR
    is whole (its .bin matches its .xml) and no temporary file is left."""
    import concurrent.futures as cf

    xml = tmp_path / "shared.xml"
    with cf.ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _: to_openvino_ir(tiny["onnx"], xml), range(4)))
    assert done == [xml] * 4 and not list(tmp_path.glob(".*"))
    with OpenVinoSession(xml) as s:
        assert np.abs(s.infer(tiny["x"]) - tiny["ref"]).max() <= 1e-4


def test_model_without_metadata_is_refused(tiny, tmp_path):
    with pytest.raises(MetadataError, match="not an srdeploy model"):
        OpenVinoSession(tiny["bare"])
    with pytest.raises(MetadataError):
        to_openvino_ir(tiny["bare"], tmp_path / "bare.xml")
    assert not list(tmp_path.iterdir())


def test_unavailable_device_and_bad_threads(tiny):
    with pytest.raises(RuntimeError, match="not available; OpenVINO reports cpu"):
        OpenVinoSession(tiny["onnx"], device="npu.7")
    with pytest.raises(ValueError, match="threads"):
        OpenVinoSession(tiny["onnx"], threads=0)
    with pytest.raises(ValueError, match="performance_hint"):
        OpenVinoOptions(performance_hint="FASTEST")


def test_device_names():
    assert device_name("cpu", ["CPU", "GPU.0", "GPU.1"]) == "CPU"
    assert device_name("gpu", ["CPU", "GPU.0", "GPU.1"]) == "GPU"
    assert device_name("gpu:1", ["CPU", "GPU.0", "GPU.1"]) == "GPU.1"
    with pytest.raises(RuntimeError, match="gpu.0, gpu.1"):
        device_name("gpu.2", ["CPU", "GPU.0", "GPU.1"])
    with pytest.raises(ValueError):
        device_name("cpu; rm", ["CPU"])


@pytest.mark.parametrize("file_p, requested, caps, expect", [
    ("fp32", None, ["FP32", "INT8"], "fp32"),
    ("fp32", "bf16", ["BF16", "FP32"], "bf16"),
    ("fp32", "bf16", ["FP32", "INT8"], "not supported by OpenVINO on CPU"),  # a CPU without bf16
    ("fp32", "int8", ["FP32", "INT8"], "srdeploy quantize"),
    ("fp32", "fp16", ["FP32", "FP16"], "export the FP16 variant"),
    ("int8", None, ["FP32", "INT8"], "int8"),
    ("int8", "fp32", ["FP32", "INT8"], "quantized from"),
    ("fp16", None, ["FP32", "INT8"], "not supported"),
    ("fp32", "tf32", ["FP32"], "precision must be"),
])
def test_precision_rules(file_p, requested, caps, expect, tmp_path):
    if expect in ("fp32", "bf16", "int8"):
        assert OpenVinoSession._choose_precision(tmp_path, file_p, requested, caps, "CPU") == expect
    else:
        with pytest.raises((ValueError, RuntimeError), match=expect):
            OpenVinoSession._choose_precision(tmp_path, file_p, requested, caps, "CPU")


def test_bf16_where_the_cpu_has_it(tiny):
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(RuntimeError, match="precision bf16 is not supported"):
            OpenVinoSession(tiny["onnx"], precision="bf16")
        return
    with OpenVinoSession(tiny["onnx"], precision="bf16", threads=1) as s:
        assert s.precision == "bf16" and s.details["inference_precision"] == "bf16"
        y = s.infer(tiny["x"])
        err = np.abs(y - tiny["ref"]).max()
        assert 0 < err < 0.05  # bf16 (8-bit mantissa) really ran: close, but not FP32-exact


def test_openvino_missing_is_a_clear_error(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(RuntimeError, match=r"pip install 'srdeploy\[openvino\]'"):
        OpenVinoSession(tiny["onnx"])
