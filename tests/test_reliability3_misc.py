"""Issue 25 (reliability, round 3), the non-video items: concurrent image writers, dangling output
links, hostile ONNX metadata, OpenVINO weights outside the model's folder, INT8 memory bounds,
progress and message wording. Each test names the item it covers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from srdeploy.cli import main

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "models" / "srresnet_x4.onnx"


def _png(path: Path, seed: int, shape=(20, 16, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8))
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# ------------------------------------------------------------------ item 2: streamed writers claim the name
@pytest.mark.parametrize("ext", ["png", "tiff"])
def test_item2_streamed_writer_does_not_replace_a_file_that_appeared_meanwhile(tmp_path, ext):
    """Another writer finishes the same name while this one streams its bands: this one fails, the
    other's file stays, no temporary file is left. With overwrite it replaces."""
    from srdeploy.runtime.media.writers import write_bands

    dst = tmp_path / f"out.{ext}"
    img = np.full((8, 6, 3), 7, np.uint8)

    def bands():
        yield img[:4]
        dst.write_bytes(b"the other run's output")  # the concurrent run claimed the name first
        yield img[4:]

    with pytest.raises(FileExistsError, match=f"out.{ext}: already exists"):
        write_bands(dst, bands(), height=8, width=6, channels=3, dtype=np.uint8)
    assert dst.read_bytes() == b"the other run's output"
    assert _leftovers(tmp_path) == []
    write_bands(dst, bands(), height=8, width=6, channels=3, dtype=np.uint8, overwrite=True)
    np.testing.assert_array_equal(cv2.imread(str(dst)), img)


# The first run, held inside the PNG writer (its temporary file complete) until the test says go.
HELD = r"""
import os, sys, time
import srdeploy.runtime.media.writers as wr
ready, go = sys.argv[1], sys.argv[2]
real = wr._write_png
def _write_png(f, *a, **k):
    real(f, *a, **k)
    open(ready, "w").close()
    t = time.monotonic()
    while not os.path.exists(go):
        if time.monotonic() - t > 120:
            raise SystemExit("the test never said go")
        time.sleep(0.02)
wr._write_png = _write_png
from srdeploy.cli import main
raise SystemExit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_item2_two_concurrent_upscales_to_one_new_png_exactly_one_succeeds(tmp_path, capsys):
    a, b = _png(tmp_path / "a.png", 1), _png(tmp_path / "b.png", 2)
    dst = tmp_path / "out" / "same.png"
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", HELD, ready, go, "upscale", "-q", "-i", a, "-o", dst,
                              "--model", BUNDLED, "--tile", "0"], stderr=subprocess.PIPE, text=True)
    try:
        t = time.monotonic()
        while not ready.exists():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() - t < 120
            time.sleep(0.05)
        assert not dst.exists()  # the first run holds its finished temporary file, unnamed yet
        assert main(["upscale", "-q", "-i", str(b), "-o", str(dst), "--model", str(BUNDLED), "--tile", "0"]) == 0
        second = cv2.imread(str(dst))
        go.touch()
        err = first.stderr.read()
        assert first.wait(timeout=120) == 1, err
    finally:
        go.touch()
        first.kill()
    assert f"{dst}: already exists; pass --overwrite" in err and "0 of 1 image(s) written" in err
    np.testing.assert_array_equal(cv2.imread(str(dst)), second)  # the survivor's output, untouched
    assert _leftovers(dst.parent) == []
    # the survivor's output is the solo run's
    assert main(["upscale", "-q", "-i", str(b), "-o", str(tmp_path / "solo.png"), "--model", str(BUNDLED),
                 "--tile", "0"]) == 0
    np.testing.assert_array_equal(second, cv2.imread(str(tmp_path / "solo.png")))


# ------------------------------------------------------------------ item 4: a dangling -o link is an output
@pytest.mark.parametrize("ext", ["png", "jpg", "tiff"])
def test_item4_dangling_symlink_output_is_refused_without_overwrite(tmp_path, capsys, ext):
    src = _png(tmp_path / "in.png", 0)
    link = tmp_path / f"out.{ext}"
    link.symlink_to(tmp_path / "elsewhere" / f"target.{ext}")
    args = ["upscale", "-q", "-i", str(src), "-o", str(link), "--model", str(BUNDLED), "--tile", "0"]
    assert main(args) == 1
    assert f"{link}: already exists; pass --overwrite" in capsys.readouterr().err
    assert link.is_symlink() and not (tmp_path / "elsewhere").exists()
    assert main([*args, "--overwrite"]) == 0
    assert not link.is_symlink() and cv2.imread(str(link)).shape == (80, 64, 3)


@pytest.mark.parametrize("command", ["export", "quantize", "import"])
def test_item4_export_quantize_import_refuse_a_dangling_link_too(tmp_path, capsys, command):
    models = BUNDLED.parent
    link = tmp_path / ("out.pt" if command == "import" else "out.onnx")
    link.symlink_to(tmp_path / "elsewhere" / link.name)
    src = {"export": models / "srresnet_x4.pt", "quantize": BUNDLED, "import": models / "srresnet_x4.pt"}[command]
    assert main([command, str(src), "-o", str(link)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert link.is_symlink() and not (tmp_path / "elsewhere").exists()


def test_item4_library_writers_treat_a_dangling_link_as_existing(tmp_path):
    from srdeploy.runtime.atomic import atomic_target
    from srdeploy.runtime.media.images import write_image
    from srdeploy.runtime.media.writers import write_bands

    img = np.zeros((4, 4, 3), np.uint8)
    for name, write in [("a.png", lambda p: write_bands(p, [img], height=4, width=4, channels=3, dtype=np.uint8)),
                        ("b.jpg", lambda p: write_image(p, img)),
                        ("c.bin", lambda p: atomic_target(p, overwrite=False).__enter__())]:
        link = tmp_path / name
        link.symlink_to(tmp_path / "missing" / name)
        with pytest.raises(FileExistsError, match="already exists"):
            write(link)
        assert link.is_symlink()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("encoder", ["ffmpeg", "opencv"])
def test_item4_dangling_symlink_video_output_is_refused_without_overwrite(tiny_srresnet_x2, tmp_path, capsys,
                                                                           encoder):
    from srdeploy.runtime.media.video import write_test_video

    src = write_test_video(tmp_path / "src.avi", width=20, height=16, frames=3, fps=12)
    link = tmp_path / "out.mkv"
    link.symlink_to(tmp_path / "elsewhere" / "target.mkv")
    args = ["video", "-q", "-i", str(src), "-o", str(link), "--model", str(tiny_srresnet_x2), "--encoder", encoder,
            "--no-audio", *(["--codec", "MJPG"] if encoder == "opencv" else [])]
    assert main(args) == 1
    assert f"{link}: output exists; pass --overwrite" in capsys.readouterr().err
    assert link.is_symlink() and not (tmp_path / "elsewhere").exists()
    assert main([*args, "--overwrite"]) == 0
    assert not link.is_symlink() and link.stat().st_size > 0


def test_item4_batch_plans_a_dangling_symlink_output_as_existing(tmp_path):
    from srdeploy.runtime.batch.job import Settings, plan_tasks

    src = _png(tmp_path / "in" / "a.png", 0)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").symlink_to(tmp_path / "nowhere.png")
    settings = Settings(model="m.onnx", backend="auto", device=None, precision=None, tile=None, tile_pad=None,
                        batch=1, feather=0, alpha="model", ext=None, suffix="", quality=None)
    tasks, problems = plan_tasks([(src, Path("a.png"))], tmp_path / "out", settings)
    assert problems == [] and [t["preexisting"] for t in tasks] == [True]


# ------------------------------------------------------------------ item 6: metadata checked against the graph
def _with_props(src: Path, dst: Path, **props: str) -> Path:
    """A copy of ``src`` with some srdeploy metadata values replaced (raw strings, as a hostile file has)."""
    import onnx

    model = onnx.load(str(src))
    for entry in model.metadata_props:
        key = entry.key.removeprefix("srdeploy.")
        if key in props:
            entry.value = props[key]
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("props, words", [
    ({"scale": "0"}, "srdeploy.scale=0 is not an integer scale from 1 to 16"),
    ({"scale": "-4"}, "srdeploy.scale=-4 is not"),
    ({"scale": "1000000000"}, "srdeploy.scale=1000000000 is not"),
    ({"receptive_radius": str(10 ** 9)}, "srdeploy.receptive_radius=1000000000 is not a radius from 0 to 1024"),
    ({"receptive_radius": "-1"}, "srdeploy.receptive_radius=-1 is not"),
    ({"input_range": "1,0"}, "srdeploy.input_range='1,0' is not a value range"),
    ({"output_range": "nan,1"}, "srdeploy.output_range='nan,1' is not a value range"),
    ({"output_range": "0,1e300"}, "srdeploy.output_range='0,1e+300' is not a value range"),
    ({"channel_order": "BGR"}, "srdeploy.channel_order='BGR' is not RGB"),
    ({"layout": "NHWC"}, "srdeploy.layout='NHWC' is not NCHW"),
    ({"precision": "int3"}, "srdeploy.precision='int3' is not one of"),
    ({"arch_kwargs": "[1, 2]"}, "srdeploy.arch_kwargs=[1, 2] is not a JSON object"),
    ({"arch_kwargs": "[" * 100000}, "malformed srdeploy metadata"),
    ({"scale": "4"}, "srdeploy.scale=4 but the graph scales by x2"),
    ({"receptive_radius": "500"}, "srdeploy.receptive_radius=500 exceeds the graph's own receptive field (at most"),
])
def test_item6_hostile_metadata_is_refused_when_the_model_opens(tiny_srresnet_x2, tmp_path, capsys, props, words):
    bad = _with_props(tiny_srresnet_x2, tmp_path / "hostile.onnx", **props)
    src = _png(tmp_path / "in.png", 0)
    opened = []
    import srdeploy.runtime.upscale as up

    real = up.Upscaler.__init__
    with pytest.MonkeyPatch.context() as mp:  # refused at open: no Upscaler is ever made
        mp.setattr(up.Upscaler, "__init__", lambda self, *a, **k: opened.append(1) or real(self, *a, **k))
        assert main(["upscale", "-q", "-i", str(src), "-o", str(tmp_path / "out.png"), "--model", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"srdeploy upscale: error: {bad}: "), err
    assert words in err, err
    assert opened == [] and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_item6_wrong_scale_is_refused_on_every_backend(tiny_srresnet_x2, tmp_path, backend):
    pytest.importorskip("openvino") if backend == "openvino" else None
    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.metadata import MetadataError

    bad = _with_props(tiny_srresnet_x2, tmp_path / "x3.onnx", scale="3")
    with pytest.raises(MetadataError, match=r"x3.onnx: metadata srdeploy.scale=3 but the graph scales by x2"):
        open_session(bad, backend=backend)


def _resize_model(path: Path, *, factor: float, scale: str, radius: str) -> Path:
    """lr -> Resize(x factor, nearest) -> sr, with srdeploy metadata: a graph the walk cannot size."""
    import onnx
    from onnx import TensorProto, helper

    from srdeploy.runtime.metadata import ModelInfo

    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, factor, factor])
    node = helper.make_node("Resize", ["lr", "", "scales"], ["sr"], mode="nearest")
    dims = ["n", 3, "h", "w"]
    graph = helper.make_graph([node], "resize", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["n", 3, "H", "W"])], [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    props = {**ModelInfo(scale=2, receptive_radius=1).to_props(), "srdeploy.scale": scale,
             "srdeploy.receptive_radius": radius}
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_item6_a_graph_the_walk_cannot_read_gets_a_probe(tmp_path):
    from srdeploy.runtime.contract import receptive_bound
    from srdeploy.runtime.metadata import MetadataError
    from srdeploy.runtime.open import open_session

    good = _resize_model(tmp_path / "good.onnx", factor=2, scale="2", radius="1")
    assert receptive_bound(good.read_bytes()) is None
    with open_session(good) as s:
        assert s.infer(np.zeros((1, 3, 5, 7), np.float32)).shape == (1, 3, 10, 14)
    bad = _resize_model(tmp_path / "bad.onnx", factor=2, scale="3", radius="1")
    with pytest.raises(MetadataError, match="bad.onnx: metadata srdeploy.scale=3 but the model turns a 1x3x16x16 "
                                            r"input into 1x3x32x32 \(x2\)"):
        open_session(bad)


@pytest.mark.parametrize("scale, blocks", [(2, 1), (8, 2), (4, 3), (4, 16)])
def test_item6_graph_receptive_bound_holds_the_true_radius_closely(tmp_path, scale, blocks):
    """The bound read off the ONNX graph is at least the architecture's radius (never refuses an
    honest export) and at most 2 pixels more (a hostile radius a few pixels out is still caught)."""
    from srdeploy.export.fuse import fuse_bn
    from srdeploy.export.onnx_export import export_onnx
    from srdeploy.runtime.contract import receptive_bound
    from srdeploy.train.archs import SRResNet, receptive_radius

    m = SRResNet(scale=scale, num_blocks=blocks, channels=8).eval()
    export_onnx(fuse_bn(m), tmp_path / "m.onnx")
    bound, factor = receptive_bound((tmp_path / "m.onnx").read_bytes())
    assert factor == scale
    assert receptive_radius(m) <= bound <= receptive_radius(m) + 2


def test_item6_bundled_models_keep_opening():
    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.contract import receptive_bound

    for name in ("srresnet_x4.onnx", "srresnet_x4_int8.onnx"):
        with open_session(ROOT / "models" / name) as s:
            bound, factor = receptive_bound((ROOT / "models" / name).read_bytes())
            assert factor == s.info.scale == 4 and s.info.receptive_radius <= bound < s.info.receptive_radius + 2


# ------------------------------------------------------------------ item 7: OpenVINO weights stay in the folder
@pytest.fixture(scope="module")
def bundled_ir(tmp_path_factory) -> Path:
    pytest.importorskip("openvino")
    from srdeploy.runtime.backends.openvino import to_openvino_ir

    return to_openvino_ir(BUNDLED, tmp_path_factory.mktemp("ir") / "real" / "m.xml")


def test_item7_openvino_refuses_a_bin_symlinked_outside_the_model_folder(bundled_ir, tmp_path):
    import shutil

    from srdeploy.runtime.open import open_session

    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(bundled_ir, model / "m.xml")
    (model / "m.bin").symlink_to(bundled_ir.with_suffix(".bin"))
    with pytest.raises(ValueError, match=f"{model / 'm.xml'}: its weights file m.bin resolves to "
                                         f"{bundled_ir.with_suffix('.bin')}, outside the model's folder"):
        open_session(model / "m.xml", backend="openvino")
    # a link that stays inside the folder is fine
    (model / "m.bin").unlink()
    (model / "weights").mkdir()
    shutil.copy(bundled_ir.with_suffix(".bin"), model / "weights" / "real.bin")
    (model / "m.bin").symlink_to(Path("weights") / "real.bin")
    with open_session(model / "m.xml", backend="openvino") as s:
        assert s.info.scale == 4


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_item7_item19_onnx_external_data_outside_the_folder_is_refused_with_the_reason(tmp_path, backend):
    """Both backends refuse ONNX external data that resolves outside the model's folder (ONNX
    Runtime's rule, which OpenVINO's frontend shares); the message keeps OpenVINO's reason, which
    came after two source-location lines and was cut off (item 19)."""
    if backend == "openvino":
        pytest.importorskip("openvino")
    import onnx

    from srdeploy.runtime.open import open_session

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "model").mkdir()
    onnx.save(onnx.load(str(BUNDLED)), str(tmp_path / "elsewhere" / "e.onnx"), save_as_external_data=True,
              location="e.data", size_threshold=0)
    (tmp_path / "model" / "e.onnx").write_bytes((tmp_path / "elsewhere" / "e.onnx").read_bytes())
    (tmp_path / "model" / "e.data").symlink_to(tmp_path / "elsewhere" / "e.data")
    with pytest.raises((ValueError, RuntimeError)) as err:
        open_session(tmp_path / "model" / "e.onnx", backend=backend)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'model' / 'e.onnx'}: ") and "\n" not in msg
    assert "outside" in msg or "escapes" in msg, msg
    assert "Exception from" not in msg and "failed at src/" not in msg


def test_item19_openvino_reason_drops_source_lines_only():
    from srdeploy.runtime.backends.openvino import _reason

    exc = RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\nCheck 'x' failed at src/a.cpp:4:\n"
                       "Cannot load library \"libopenvino_intel_gpu_plugin.so\": libOpenCL.so.1: cannot open\n\n")
    assert _reason(exc) == ("RuntimeError: Cannot load library \"libopenvino_intel_gpu_plugin.so\": libOpenCL.so.1: "
                            "cannot open")
    long = RuntimeError("Exception from src/x.cpp:1:\n" + "detail " * 80 + "THE REASON")
    assert _reason(long).endswith("THE REASON")  # not cut at a fixed length


# ------------------------------------------------------------------ item 17: INT8 (QDQ) models get a memory bound
def test_item17_int8_qdq_graph_is_profiled_like_its_fp32_source(tmp_path, capsys):
    """The QDQ model's convolutions take their weights from DequantizeLinear; the graph walk follows
    them back to the int8 initializers, so the INT8 model is sized like the FP32 one (ONNX Runtime's
    measured peak is the same for both: scripts/bench_memory.py, docs/edge.md)."""
    from srdeploy.runtime.budget import profile_onnx

    int8 = ROOT / "models" / "srresnet_x4_int8.onnx"
    assert profile_onnx(int8).peak_bytes_per_pixel == profile_onnx(BUNDLED).peak_bytes_per_pixel > 0
    src = _png(tmp_path / "in.png", 0, shape=(40, 36, 3))
    assert main(["upscale", "-q", "-i", str(src), "-o", str(tmp_path / "o.png"), "--model", str(int8),
                 "--max-memory", "300M"]) == 0
    err = capsys.readouterr().err
    assert "tile auto -> " in err and "(predicted peak " in err and "not predicted" not in err, err


# ------------------------------------------------------------------ item 18: quiet and noisy at the right times
def test_item18_folder_run_notes_the_tile_only_when_it_changes(tmp_path, capsys):
    folder = tmp_path / "in"
    for i, shape in enumerate([(16, 12, 3), (20, 18, 3), (26, 22, 3)]):  # all whole-image, peaks differ
        _png(folder / f"{i}.png", i, shape=shape)
    args = ["upscale", "-q", "-i", str(folder), "-o", str(tmp_path / "out"), "--model", str(BUNDLED)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "tile auto -> whole image" in err.splitlines()[0] and "note:" not in err, err
    _png(folder / "3.png", 3, shape=(300, 40, 3))  # too tall for the budget below: tiled, so noted once
    assert main([*args, "--overwrite", "--max-memory", "180M"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert len(notes) == 1 and "3.png: tile auto -> " in notes[0] and "whole image" not in notes[0], notes


def test_item18_a_single_image_shows_its_tiles(tmp_path, capsys, monkeypatch):
    import srdeploy.runtime.progress as progress
    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.upscale import Upscaler, upscale_files

    # The bars are recorded rather than read off stderr: tqdm redraws at most every 0.1 s, so
    # whether "2/2" is ever drawn before the (left=False) bar is cleared depends on the speed.
    bars, real = [], progress.progress_bar
    monkeypatch.setattr(progress, "progress_bar", lambda *a, **k: bars.append(real(*a, **k)) or bars[-1])
    src = _png(tmp_path / "in.png", 0, shape=(20, 40, 3))
    with open_session(BUNDLED) as s:
        upscale_files(Upscaler(s, tile=24), {src: tmp_path / "o.png"}, progress=True)  # 2 tiles
    tile_bars = [b for b in bars if b.format_dict["unit"] == "tile"]
    assert [(b.total, b.n) for b in tile_bars] == [(2, 2)]
    assert "/2 [" in capsys.readouterr().err  # enabled: drawn on stderr


def test_item18_message_wording(tmp_path, capsys):
    from srdeploy.runtime.budget import format_size

    assert [format_size(v) for v in (1024, 1536, 1 << 20, 700, 5 << 29)] == ["1 KiB", "2 KiB", "1 MiB", "700 B",
                                                                                "2.50 GiB"]
    assert main(["eval", str(BUNDLED)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("srdeploy eval: error: give a checkpoint") and "eval: eval:" not in err
    src = _png(tmp_path / "in.png", 0)
    pytest.importorskip("openvino")
    assert main(["upscale", "-q", "-i", str(src), "-o", str(tmp_path / "o.png"), "--model", str(BUNDLED),
                 "--backend", "openvino", "--max-memory", "1K", "--tile-pad", "2"]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert " on openvino cpu fp32; " in first and "max memory 1 KiB" in first and "  " not in first, first


@pytest.fixture(scope="module")
def int8_folders(set5, tmp_path_factory) -> dict:
    import shutil

    d = tmp_path_factory.mktemp("int8_folders")
    files = sorted(set5.iterdir())
    for name, chosen in (("calib", files[:2]), ("val", files[3:4])):
        (d / name).mkdir()
        for f in chosen:
            shutil.copy(f, d / name / f.name)
    return {"calib": d / "calib", "val": d / "val"}


@pytest.mark.slow
def test_item18_quantize_progress_silence_and_one_loss_sign(tiny_srresnet_x2, int8_folders, tmp_path, capsys):
    import re

    args = ["quantize", str(tiny_srresnet_x2), "--calib", str(int8_folders["calib"]), "--calib-images", "4",
            "--crop", "16", "--val", str(int8_folders["val"]), "--max-loss", "10", "--threads", "1"]
    assert main([*args, "-o", str(tmp_path / "q.onnx"), "-q"]) == 0
    out, err = capsys.readouterr()
    # -q: the result lines only; ONNX Runtime's calibration prints do not reach stdout
    assert [line.split(" ")[0] for line in out.splitlines()] == ["wrote", "kept", "Y-PSNR", "speed"], out
    assert err == "", err
    assert main([*args, "-o", str(tmp_path / "q2.onnx")]) == 0
    out, err = capsys.readouterr()
    assert "quantize: calibrating: " in err and "/4 [" in err and "eval val" in err  # bars while it works
    logged = re.search(r"0 node\(s\) in float: loss val (-?[0-9.]+) dB", err).group(1)
    printed = re.search(r"Y-PSNR loss vs FP32: val (-?[0-9.]+) dB \(", out).group(1)
    assert logged == printed, (err, out)  # one convention: the dB lost, positive = worse
    assert "Collecting tensor data" not in out + err


def test_item18_train_has_quiet(tmp_path, capsys, set5):
    data = tmp_path / "train"
    data.mkdir()
    for name in ("baby", "bird"):
        img = cv2.imread(str(set5 / f"{name}.png"))
        cv2.imwrite(str(data / f"{name}.png"), img[40:104, 40:104])
    base = ["train", "srresnet", "--data", str(data), "--iters", "3", "--batch-size", "2", "--crop", "16",
            "--num-blocks", "1", "--channels", "8", "--device", "cpu", "--no-tensorboard"]
    assert main([*base, "--out", str(tmp_path / "a"), "-q"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("train srresnet: 1 process(es) on cpu") and "3/3" not in err and "it/s" not in err, err
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    assert "3/3" in capsys.readouterr().err  # the bar, without -q
    # -q is not a setting of the run: resuming without it notes no change
    base[base.index("--iters") + 1] = "4"
    assert main([*base, "--out", str(tmp_path / "a"), "--resume"]) == 0
    changed = [line for line in capsys.readouterr().err.splitlines() if "changed settings" in line]
    assert len(changed) == 1 and "iters: 3 -> 4" in changed[0] and "progress" not in changed[0], changed


# ------------------------------------------------------------------ item 19: error lines name the right file
@pytest.mark.parametrize("which, cause", [
    ("segment", "segment 0 failed: the encoded segment holds -1 frames, expected 3"),
    ("join", "joining the segments failed: the joined video holds -1 frames, expected 3")])
def test_item19_video_errors_name_the_output_once_and_their_log(tiny_srresnet_x2, tmp_path, capsys, monkeypatch,
                                                                which, cause):
    from srdeploy.runtime.media import ffmpeg as ff
    from srdeploy.runtime.media.video import write_test_video

    src = write_test_video(tmp_path / "src.avi", width=20, height=16, frames=3, fps=12)
    out = tmp_path / "out.mkv"
    real = ff.count_packets

    def count(path, log):  # ffmpeg's count of the file just written comes back wrong
        is_join = Path(log).name == "join.log"
        return -1 if is_join == (which == "join") else real(path, log)

    monkeypatch.setattr(ff, "count_packets", count)
    assert main(["video", "-q", "-i", str(src), "-o", str(out), "--model", str(tiny_srresnet_x2), "--no-audio"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if ": error:" in line]
    assert len(err) == 1 and err[0].startswith(f"srdeploy video: error: {out}: {cause} (ffmpeg log: "), err
    assert err[0].count(f"{out}:") == 1 and "None" not in err[0] and ".tmp" not in err[0] and "partial" not in err[0]


@pytest.mark.parametrize("ext", ["png", "tiff"])
def test_item19_full_disk_names_the_output_not_the_input(tiny_srresnet_x2, full_disk, tmp_path, capsys, ext):
    src = tmp_path / "noise.png"
    cv2.imwrite(str(src), np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8))  # 1.9 MB out
    dst = full_disk / f"big.{ext}"
    assert main(["upscale", "-q", "-i", str(src), "-o", str(dst), "--model", str(tiny_srresnet_x2), "--tile", "0"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if ": error:" in line]
    assert len(err) == 1 and "No space left on device" in err[0] and str(dst) in err[0], err
    assert str(src) not in err[0] and ".tmp" not in err[0]
    assert list(full_disk.iterdir()) == []


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_item19_unwritable_folder_names_the_output_not_the_temporary_file(tmp_path, ext, unprivileged):
    """atomic_target's temporary name is an implementation detail: failing to create it names the output."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    src = _png(tmp_path / "in.png", 0)
    cmd = unprivileged([sys.executable, "-m", "srdeploy", "upscale", "-q", "-i", str(src), "-o", str(ro / f"o.{ext}"),
                        "--model", str(BUNDLED), "--tile", "0"])
    r = subprocess.run(cmd, capture_output=True, text=True)
    err = [line for line in r.stderr.splitlines() if ": error:" in line]
    assert r.returncode == 1 and len(err) == 1, r.stderr
    assert "Permission denied" in err[0] and str(ro / f"o.{ext}") in err[0] and ".tmp" not in err[0], err
    assert list(ro.iterdir()) == []


# ------------------------------------------------------------------ item 21: what gray + alpha is written as
def test_item21_gray_alpha_is_la_in_png_and_rgba_elsewhere(tmp_path):
    """The behaviour the corrected docs describe (docs/runtime.md said RGBA for every format): PNG
    keeps gray + alpha natively (colour type 4, LA), TIFF/WebP/BMP get RGBA with R = G = B."""
    import png

    rng = np.random.default_rng(0)
    la = np.dstack([rng.integers(0, 256, (12, 10)), rng.integers(0, 256, (12, 10))]).astype(np.uint8)
    src = tmp_path / "la.png"
    with open(src, "wb") as f:
        png.Writer(10, 12, greyscale=True, alpha=True).write(f, la.reshape(12, -1))
    for ext in ("png", "tiff", "webp", "bmp"):
        out = tmp_path / f"o.{ext}"
        assert main(["upscale", "-q", "-i", str(src), "-o", str(out), "--model", str(BUNDLED), "--tile", "0"]) == 0
        if ext == "png":
            assert out.read_bytes()[25] == 4  # IHDR colour type 4: greyscale with alpha (LA)
            assert png.Reader(filename=str(out)).read()[3]["planes"] == 2
        img = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        assert img.shape == (48, 40, 4) and (img[..., 0] == img[..., 2]).all()


@pytest.mark.parametrize("props", [{"scale": "1000000000"}, {"receptive_radius": str(10 ** 9)},
                                   {"arch_kwargs": "[" * 100000}])
def test_item6_hostile_metadata_costs_no_memory(tiny_srresnet_x2, tmp_path, props):
    """The refusal comes before anything is sized from the values: the whole command (interpreter and
    imports included) stays far under the issue's 500 MB. Its time (about 1 s here, the interpreter's
    start) is measured, not asserted: timed tests flake on a shared CI machine."""
    bad = _with_props(tiny_srresnet_x2, tmp_path / "hostile.onnx", **props)
    src = _png(tmp_path / "in.png", 0)
    cmd = [sys.executable, "-m", "srdeploy", "upscale", "-q", "-i", str(src), "-o", str(tmp_path / "out.png"),
           "--model", str(bad)]
    # Linux carries a process's peak RSS across fork and exec, so the command is started from a small
    # interpreter (not from pytest's large one) and measured there with wait4.
    proc = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, timeout=120)
    rc, seconds, max_kib = (float(v) for v in proc.stdout.split())
    print(f"refused in {seconds:.2f} s, max RSS {max_kib / 1024:.0f} MiB")
    assert rc == 1 and "hostile.onnx" in proc.stderr, proc.stderr
    assert max_kib < 500 * 1024, max_kib


MEASURE = """
import os, subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(p.pid, 0)
print(os.waitstatus_to_exitcode(status), time.monotonic() - t0, usage.ru_maxrss)
"""
