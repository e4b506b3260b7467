"""cpp_bench/build/srbench: the C++ benchmark against Python ONNX Runtime on a tiny real model.

Builds srbench if needed (cpp_bench/build.sh). Skipped only when a build prerequisite is
genuinely missing (cmake, compiler, ONNX Runtime library/headers) outside CI; under CI
(env CI set) that is a failure, since .ci/run builds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SCHEMA = Path(__file__).resolve().parent.parent / "runtime" / "bench_schema.json"


@pytest.fixture(scope="module")
def srbench() -> Path:
    from srdeploy.runtime.cpp_bench import CppBenchUnavailable, build_cpp_bench

    try:
        return build_cpp_bench()
    except CppBenchUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"srbench cannot be built here: {exc}")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """SRResNet(num_blocks=2, channels=16), BN folded, exported with srdeploy metadata.

    output_range="tanh" so random weights give no clamped (constant) outputs: every output value
    then moves the checksum.
    """
    torch = pytest.importorskip("torch")
    from srdeploy.export.fuse import fuse_bn
    from srdeploy.export.onnx_export import add_metadata, export_onnx
    from srdeploy.runtime.metadata import ModelInfo
    from srdeploy.train.archs import SRResNet

    torch.manual_seed(0)
    model = fuse_bn(SRResNet(num_blocks=2, channels=16, output_range="tanh").eval())
    path = tmp_path_factory.mktemp("cppbench") / "tiny_x4.onnx"
    export_onnx(model, path)
    add_metadata(path, ModelInfo(scale=4, receptive_radius=10, arch="SRResNet",
                                 arch_kwargs={"num_blocks": 2, "channels": 16}))
    return path


def run(exe: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def python_output(model: Path, batch: int, height: int, width: int, threads: int) -> np.ndarray:
    import onnxruntime as ort

    from srdeploy.runtime.measure import deterministic_input

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"lr": deterministic_input((batch, 3, height, width))})[0]


def test_json_schema_and_checksum_match_python(srbench, tiny_model, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    # Non-square, odd size: a width/height swap in srbench would change both shape and checksum.
    batch, width, height, threads = 2, 37, 23, 1
    out = tmp_path / "sub" / "result.json"
    proc = run(srbench, "--model", tiny_model, "--size", f"{width}x{height}", "--batch", batch,
               "--warmup", 1, "--iters", 3, "--threads", threads, "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(result)
    assert not list(out.parent.glob("*.tmp"))  # the temporary file was renamed away

    assert result["tool"] == "srbench" and result["schema"] == "srdeploy.bench/1"
    assert result["model"]["sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert result["model"]["scale"] == 4 and result["model"]["arch"] == "SRResNet"
    assert (result["backend"], result["device"], result["precision"]) == ("onnxruntime", "cpu", "fp32")
    assert result["providers"] == ["CPUExecutionProvider"]
    assert result["threads"]["intra_op"] == threads
    assert result["input"] == {"batch": batch, "channels": 3, "height": height, "width": width, "tile": 0}
    assert (result["warmup"], result["iters"]) == (1, 3)
    assert result["versions"]["onnxruntime"]
    if not os.environ.get("ONNXRUNTIME_ROOT"):
        import onnxruntime as ort
        assert result["versions"]["onnxruntime"] == ort.__version__  # built against the wheel's library
    assert result["machine"]["cores"] >= 1 and result["machine"]["gpu"] is None

    mo = result["results"]["model_only"]
    lat = mo["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]
    assert mo["fps"] == pytest.approx(batch / (lat["median"] / 1000), rel=1e-9)
    assert mo["megapixels_per_s"] == pytest.approx(batch * 4 * height * 4 * width / 1e6 / (lat["median"] / 1000),
                                                   rel=1e-9)

    y = python_output(tiny_model, batch, height, width, threads)
    assert y.shape == (batch, 3, 4 * height, 4 * width)
    expected = float(y.astype(np.float64).sum())
    printed = float(re.search(r"^output_checksum: (\S+)$", proc.stdout, re.M).group(1))
    assert printed == result["output_checksum"]
    # The ORT parity check allows 1e-4 per element, i.e. 1e-4 * n on the sum; that is too loose
    # to notice a transposed input (its sum differs by ~1.2 here, 1e-4 * n = 8.2). Same library,
    # same input, same threads: the sums agree to the last bit in practice, so hold 1e-7 * n.
    tol = 1e-7 * y.size
    assert abs(result["output_checksum"] - expected) <= tol, (result["output_checksum"], expected)
    # ...and the checksum is sensitive at that tolerance: a W/H mix-up gives another sum.
    swapped = float(python_output(tiny_model, batch, width, height, threads).astype(np.float64).sum())
    assert abs(swapped - expected) > 100 * tol


def test_wrapper_matches_cli(srbench, tiny_model, tmp_path):
    from srdeploy.runtime.cpp_bench import run_cpp_bench

    result = run_cpp_bench(tiny_model, (16, 12), batch=1, warmup=0, iters=2, threads=1, exe=srbench)
    assert result["input"]["width"] == 16 and result["input"]["height"] == 12
    expected = float(python_output(tiny_model, 1, 12, 16, 1).astype(np.float64).sum())
    assert abs(result["output_checksum"] - expected) <= 1e-7 * 3 * 48 * 64

    kept = tmp_path / "kept.json"
    run_cpp_bench(tiny_model, "16x12", iters=1, warmup=0, threads=1, json_path=kept, exe=srbench)
    assert json.loads(kept.read_text())["iters"] == 1

    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        run_cpp_bench(tmp_path / "nope.onnx", "16x12", exe=srbench)
    with pytest.raises(ValueError, match="WxH"):
        run_cpp_bench(tiny_model, "16", exe=srbench)


def test_srdeploy_bench_cpp_runs_both_and_compares(srbench, tiny_model, tmp_path):
    out = tmp_path / "py.json"
    res = subprocess.run([sys.executable, "-m", "srdeploy", "bench", "--model", str(tiny_model), "--size", "21x13",
                          "--warmup", "1", "--iters", "2", "--threads", "1", "--no-full-path", "--json", str(out),
                          "--cpp"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Python/C++" in res.stderr
    py, cpp = json.loads(out.read_text()), json.loads(out.with_suffix(".cpp.json").read_text())
    assert py["tool"] == "srdeploy bench" and cpp["tool"] == "srbench"
    assert [py["input"][k] for k in ("batch", "height", "width")] == [cpp["input"][k] for k in ("batch", "height", "width")]
    assert py["output_checksum"] == pytest.approx(cpp["output_checksum"], abs=1e-7 * 3 * 13 * 21 * 16)


def test_gray_model_is_fed_one_channel_like_python(srbench, tmp_path):
    """A GRAY model (srdeploy import of a 1-channel generator) takes (N, 1, H, W): srbench reads the
    channel order from the metadata, so its input, JSON and checksum match srdeploy bench's."""
    torch = pytest.importorskip("torch")
    from srdeploy.export.onnx_export import add_metadata, export_onnx
    from srdeploy.runtime.metadata import ModelInfo

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.PixelShuffle(2), torch.nn.Tanh()).eval()
    path = export_onnx(model, tmp_path / "gray_x2.onnx", channels=1)
    add_metadata(path, ModelInfo(scale=2, receptive_radius=1, arch="tiny-gray", channel_order="GRAY"))
    out = tmp_path / "py.json"
    res = subprocess.run([sys.executable, "-m", "srdeploy", "bench", "--model", str(path), "--size", "21x13",
                          "--warmup", "1", "--iters", "2", "--threads", "1", "--no-full-path", "--json", str(out),
                          "--cpp"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    py, cpp = json.loads(out.read_text()), json.loads(out.with_suffix(".cpp.json").read_text())
    assert py["input"]["channels"] == cpp["input"]["channels"] == 1
    assert py["output_checksum"] == pytest.approx(cpp["output_checksum"], abs=1e-7 * 13 * 21 * 4)
    assert abs(py["output_checksum"]) > 1  # a non-trivial sum: a mis-fed input would move it


def test_missing_model(srbench, tmp_path):
    missing = tmp_path / "missing.onnx"
    out = tmp_path / "r.json"
    proc = run(srbench, "--model", missing, "--size", "8x8", "--json", out)
    assert proc.returncode != 0
    assert "not found" in proc.stderr and str(missing) in proc.stderr
    assert not out.exists()


def test_corrupt_model_keeps_previous_result(srbench, tiny_model, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(tiny_model.read_bytes()[:3000])  # truncated protobuf
    out = tmp_path / "r.json"
    out.write_text('{"previous": true}')
    proc = run(srbench, "--model", corrupt, "--size", "8x8", "--json", out)
    assert proc.returncode != 0
    assert str(corrupt) in proc.stderr and "cannot load ONNX model" in proc.stderr
    assert json.loads(out.read_text()) == {"previous": True}

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot an onnx model at all" * 10)
    proc = run(srbench, "--model", garbage, "--size", "8x8")
    assert proc.returncode != 0 and str(garbage) in proc.stderr

    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    proc = run(srbench, "--model", empty, "--size", "8x8")
    assert proc.returncode != 0 and "empty" in proc.stderr and str(empty) in proc.stderr


def test_refuses_model_without_srdeploy_metadata(srbench, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    # A valid ONNX model (identity-like upscale) that simply lacks the srdeploy contract.
    node = helper.make_node("Resize", ["lr", "", "scales"], ["sr"], mode="nearest")
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    graph = helper.make_graph([node], "plain",
                              [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, None)], [scales])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    proc = run(srbench, "--model", path, "--size", "8x8")
    assert proc.returncode != 0
    assert str(path) in proc.stderr and "not an srdeploy model" in proc.stderr and "srdeploy.scale" in proc.stderr


def test_metadata_scale_must_match_model(srbench, tiny_model, tmp_path):
    from srdeploy.export.onnx_export import add_metadata
    from srdeploy.runtime.metadata import ModelInfo

    wrong = tmp_path / "wrong_scale.onnx"
    wrong.write_bytes(tiny_model.read_bytes())
    add_metadata(wrong, ModelInfo(scale=2, receptive_radius=10))
    proc = run(srbench, "--model", wrong, "--size", "8x8")
    assert proc.returncode != 0
    assert "scale 2" in proc.stderr and "disagree" in proc.stderr


def test_bad_arguments(srbench, tiny_model):
    for args, needle in ((["--size", "8x8"], "--model is required"),
                         (["--model", tiny_model], "--size"),
                         (["--model", tiny_model, "--size", "8"], "WxH"),
                         (["--model", tiny_model, "--size", "8x8", "--iters", "0"], "--iters"),
                         (["--model", tiny_model, "--size", "8x8", "--backend", "tvm"], "--backend"),
                         (["--model", tiny_model, "--size", "8x8", "--bogus"], "--bogus")):
        proc = run(srbench, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr, (args, proc.stderr)


def test_unavailable_device_and_backend_fail_clearly(srbench, tiny_model):
    version = run(srbench, "--version")
    assert version.returncode == 0 and "onnxruntime" in version.stdout
    if "CUDAExecutionProvider" not in version.stdout:
        proc = run(srbench, "--model", tiny_model, "--size", "8x8", "--device", "cuda")
        assert proc.returncode != 0 and "CUDAExecutionProvider" in proc.stderr
    if "tensorrt: disabled" in version.stdout:
        proc = run(srbench, "--model", tiny_model, "--size", "8x8", "--backend", "trt", "--device", "cuda")
        assert proc.returncode != 0 and "without TensorRT" in proc.stderr


@pytest.mark.gpu
def test_tensorrt_engine(srbench, tmp_path):
    version = run(srbench, "--version").stdout
    if "tensorrt: enabled" not in version:
        pytest.skip("srbench was built without TensorRT (no TensorRT headers/libraries here)")
    engine = os.environ.get("SRDEPLOY_TEST_ENGINE")
    if not engine:
        pytest.skip("SRDEPLOY_TEST_ENGINE is not set. On a GPU machine `bash scripts/gpu_check.sh` builds engines and "
                    "sets it; by hand: `srdeploy build-engine model.onnx -o model.engine --min 1x3x16x16 --opt "
                    "1x3x64x64 --max 1x3x64x64`, then `SRDEPLOY_TEST_ENGINE=model.engine python -m pytest "
                    "tests/test_cpp_bench.py -k tensorrt` (the engine needs its .engine.json sidecar and must "
                    "accept 1x3x64x64)")
    out = tmp_path / "trt.json"
    proc = run(srbench, "--model", engine, "--size", "64x64", "--backend", "trt", "--device", "cuda",
               "--warmup", 2, "--iters", 5, "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["backend"] == "tensorrt" and result["device"].startswith("cuda") and result["machine"]["gpu"]
