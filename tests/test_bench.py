"""srdeploy bench: deterministic input, timings, schema-valid JSON, torch comparison, plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from srdeploy.cli import main
from srdeploy.runtime import bench
from srdeploy.runtime.bench import BenchConfig, deterministic_input, output_checksum, run_bench
from srdeploy.runtime.open import SessionRecipe
from srdeploy.runtime.parsing import parse_wh
from srdeploy.runtime.settings import RunSettings, TileSettings

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(ONNX, checkpoint) of the same tiny SRResNet x4 (2 blocks, 16 channels, BN folded in the ONNX)."""
    torch = pytest.importorskip("torch")
    from srdeploy.export.fuse import fuse_bn
    from srdeploy.export.onnx_export import add_metadata, export_onnx
    from srdeploy.runtime.metadata import ModelInfo
    from srdeploy.train.archs import SRResNet, receptive_radius
    from srdeploy.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kwargs = {"scale": 4, "num_blocks": 2, "channels": 16}
    model = SRResNet(**kwargs).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    folder = tmp_path_factory.mktemp("bench-model")
    ckpt = folder / "tiny.pt"
    save_checkpoint(ckpt, model, arch="SRResNet", kwargs=kwargs)
    onnx_path = folder / "tiny.onnx"
    export_onnx(fuse_bn(model), onnx_path)
    add_metadata(onnx_path, ModelInfo(scale=4, receptive_radius=receptive_radius(model), arch="SRResNet",
                                      arch_kwargs=kwargs))
    return onnx_path, ckpt


def validate(result: dict) -> None:
    schema = json.loads((Path(bench.__file__).with_name("bench_schema.json")).read_text())
    jsonschema.Draft202012Validator(schema).validate(result)


def test_deterministic_input_formula():
    x = deterministic_input((2, 3, 5, 7))
    assert x.dtype == np.float32 and x.shape == (2, 3, 5, 7)
    i = np.arange(x.size)
    assert np.array_equal(x.ravel(), ((i * 37 + 11) % 256).astype(np.float32) / np.float32(255))
    assert x.flat[0] == np.float32(11 / 255) and x.flat[1] == np.float32(48 / 255)
    assert x.flat[7] == np.float32(((7 * 37 + 11) % 256) / 255)
    # float32 division and float64-then-round agree for every value, so the C++ tool can use either
    k = np.arange(256)
    assert np.array_equal((k / 255.0).astype(np.float32), k.astype(np.float32) / np.float32(255))
    # large inputs: the index is int64, no wrap-around
    assert deterministic_input((1, 3, 1, 1 << 20)).flat[-1] == np.float32(((3 * (1 << 20) - 1) * 37 + 11) % 256 / 255)


def _run(model, **tiling) -> RunSettings:
    return RunSettings(SessionRecipe(str(model)), TileSettings(**{"tile": 0, **tiling}))


def test_summarize_and_parse_wh():
    t = bench.summarize([0.1, 0.2, 0.3, 0.4, 1.0], frames=2, out_pixels_per_frame=1_000_000)
    assert t["latency_ms"]["median"] == pytest.approx(300.0)
    assert t["latency_ms"]["p90"] == pytest.approx(760.0)
    assert t["fps"] == pytest.approx(2 / 0.3)
    assert t["megapixels_per_s"] == pytest.approx(2 / 0.3)
    assert parse_wh("64x48") == (64, 48)
    for bad in ("64", "axb", "0x4", "64x48x2"):
        with pytest.raises(ValueError, match="--size"):
            parse_wh(bad)


def test_time_alternating_interleaves():
    order: list[str] = []
    times = bench.time_alternating({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                                   warmup=1, iters=4, block=2)
    assert len(times["a"]) == len(times["b"]) == 4
    assert order[2:] == ["a", "a", "a", "b", "b", "b", "a", "a", "a", "b", "b", "b"]


def test_run_bench_result_is_schema_valid_and_checksum_is_real(tiny):
    onnx_path, _ = tiny
    cfg = BenchConfig(_run(onnx_path, batch=2), width=20, height=12, warmup=1, iters=3)
    result = run_bench(cfg, log=lambda s: None)
    validate(result)
    bench.validate_result(result)
    assert result["backend"] == "onnxruntime" and result["precision"] == "fp32"
    assert result["input"] == {"batch": 2, "channels": 3, "height": 12, "width": 20, "tile": 0, "tile_pad": 12}
    assert result["model"]["scale"] == 4 and len(result["model"]["sha256"]) == 64
    # the checksum is the float64 sum of one real inference on the deterministic input
    from srdeploy.runtime.open import open_session

    with open_session(onnx_path) as s:
        y = s.infer(deterministic_input((2, 3, 12, 20)))
    assert y.shape == (2, 3, 48, 80)
    assert result["output_checksum"] == pytest.approx(float(y.astype(np.float64).sum()), rel=1e-6)
    assert output_checksum(y) != output_checksum(np.zeros_like(y))
    for key in ("model_only", "full_path"):
        t = result["results"][key]
        assert t["fps"] == pytest.approx(2 * 1000 / t["latency_ms"]["median"])
        assert t["megapixels_per_s"] == pytest.approx(t["fps"] * 48 * 80 / 1e6)
        assert t["latency_ms"]["min"] <= t["latency_ms"]["median"] <= t["latency_ms"]["p90"] <= t["latency_ms"]["max"]
    assert result["machine"]["cores"] >= 1 and result["versions"]["onnxruntime"]


def test_bench_tiled_model_only_matches_whole(tiny, monkeypatch):
    onnx_path, _ = tiny
    # The checksum is a sum, blind to tiles in the wrong place: keep the output arrays it is taken of.
    outputs: list[np.ndarray] = []
    real = bench.output_checksum
    monkeypatch.setattr(bench, "output_checksum", lambda y: outputs.append(np.array(y)) or real(y))
    whole = run_bench(BenchConfig(_run(onnx_path), width=40, height=36, warmup=0, iters=1,
                                  full_path=False), log=lambda s: None)
    tiled = run_bench(BenchConfig(_run(onnx_path, tile=16), width=40, height=36, warmup=0, iters=1,
                                  full_path=False), log=lambda s: None)
    assert tiled["input"]["tile"] == 16 and tiled["input"]["tile_pad"] == 12
    # tile_pad defaults to 12 = the tiny model's receptive radius: tiled output == whole output
    assert len(outputs) == 2 and outputs[0].shape == outputs[1].shape == (1, 3, 144, 160)
    assert outputs[0].std() > 0.01  # not a constant image
    assert np.abs(outputs[1] - outputs[0]).max() <= 1e-5
    assert tiled["output_checksum"] == pytest.approx(whole["output_checksum"], rel=1e-6)
    assert whole["output_checksum"] == pytest.approx(float(outputs[0].astype(np.float64).sum()), rel=1e-9)


def test_cli_json_compare_torch_and_video(tiny, tmp_path, capsys):
    onnx_path, ckpt = tiny
    out = tmp_path / "r.json"
    rc = main(["bench", "--model", str(onnx_path), "--size", "16x12", "--iters", "2", "--warmup", "1",
               "--threads", "1", "--json", str(out), "--compare-torch", str(ckpt), "--video", "--video-frames", "4"])
    err = capsys.readouterr().err
    assert rc == 0, err
    result = json.loads(out.read_text())
    validate(result)
    assert result["threads"]["intra_op"] == 1
    ct = result["results"]["compare_torch"]
    assert ct["speedup"] == pytest.approx(ct["ours"]["fps"] / ct["torch"]["fps"])
    assert ct["torch_threads"] == 1 and ct["batchnorm_layers_unfolded"] == 5
    # same model, same input: PyTorch (BN unfused) and ONNX Runtime (BN folded) agree
    assert ct["max_abs_diff"] < 1e-4
    assert "speed ratio ours / PyTorch eager" in err
    v = result["results"]["video"]
    assert v["frames"] == 4 and (v["width"], v["height"], v["out_width"], v["out_height"]) == (16, 12, 64, 48)
    assert v["ratio_to_model_only"] == pytest.approx(v["fps"] / result["results"]["model_only"]["fps"])


def test_cli_bench_errors(tiny, tmp_path, capsys):
    onnx_path, _ = tiny
    assert main(["bench", "--model", str(onnx_path), "--size", "12"]) == 1
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert main(["bench", "--model", str(tmp_path / "missing.onnx")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", "--model", str(onnx_path), "--iters", "0"]) == 1
    assert main(["bench", "--plot", str(tmp_path / "p.png")]) == 1
    assert "at least one" in capsys.readouterr().err


def test_bench_is_torch_free(tiny, tmp_path):
    # The benchmark (and the video pipeline it times) must run where torch cannot be imported.
    onnx_path, _ = tiny
    code = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import srdeploy.runtime.bench as b, srdeploy.runtime.media.video, srdeploy.runtime.plot, srdeploy.runtime.cli.bench
from srdeploy.runtime.open import SessionRecipe
from srdeploy.runtime.settings import RunSettings, TileSettings
run = RunSettings(SessionRecipe({str(onnx_path)!r}), TileSettings(tile=0))
r = b.run_bench(b.BenchConfig(run, width=8, height=8, warmup=0, iters=1, video="", video_frames=2),
                log=lambda s: None)
assert "torch" not in sys.modules or sys.modules["torch"] is None
print("ok", r["results"]["video"]["frames"])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok 2"


def _result(tool: str, backend: str, w: int, fps: float) -> dict:
    t = {"latency_ms": {"median": 1000 / fps, "p90": 1000 / fps}, "fps": fps, "megapixels_per_s": fps}
    return {"schema": "srdeploy.bench/1", "tool": tool, "timestamp": "2026-01-01T00:00:00Z",
            "model": {"path": "m.onnx", "sha256": "0" * 64, "scale": 4}, "backend": backend, "device": "cpu",
            "precision": "fp32", "input": {"batch": 1, "height": w, "width": w}, "warmup": 1, "iters": 1,
            "results": {"model_only": t, "full_path": t}, "machine": {"hostname": "h", "cpu": "c", "cores": 2},
            "versions": {"python": "3"}}


def test_plot_collects_series_and_writes_png(tmp_path):
    from srdeploy.runtime import plot

    files = []
    for i, (tool, backend, w, fps) in enumerate([("srdeploy bench", "onnxruntime", 128, 2.0),
                                                   ("srbench", "onnxruntime", 128, 2.5),
                                                   ("srdeploy bench", "onnxruntime", 64, 8.0)]):
        r = _result(tool, backend, w, fps)
        validate(r)
        files.append(tmp_path / f"r{i}.json")
        files[-1].write_text(json.dumps(r))
    sizes, series = plot.collect(plot.load_results(files))
    assert sizes == ["64x64", "128x128"]
    assert series == {"Python onnxruntime cpu fp32 default thr": {"128x128": 2.0, "64x64": 8.0},
                      "C++ onnxruntime cpu fp32 default thr": {"128x128": 2.5}}
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a benchmark result"):
        plot.load_results([bad])
    pytest.importorskip("matplotlib")
    png = tmp_path / "plot.png"
    assert main(["bench", "--plot", str(png), *map(str, files)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_plot_without_matplotlib_says_which_extra(tmp_path, monkeypatch, capsys):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(_result("srdeploy bench", "onnxruntime", 64, 1.0)))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["bench", "--plot", str(tmp_path / "p.png"), str(f)]) == 1  # exit policy: a missing optional package is an environment error
    assert "srdeploy[plot]" in capsys.readouterr().err
