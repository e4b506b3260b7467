"""The srdeploy command: help, subcommand help, and eval."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

SUBCOMMANDS = ["demo", "eval", "train", "export", "verify", "build-engine", "upscale", "video", "bench"]


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "srdeploy", *args], capture_output=True, text=True, **kw)


def test_help_lists_subcommands(capsys):
    from srdeploy.cli import build_parser

    out = run("--help")
    assert out.returncode == 0
    # every subcommand is listed: one per line, indented 4 (help text continues at 16)
    listed = set(re.findall(r"^    ([a-z][a-z-]*)(?:\s|$)", out.stdout, flags=re.M))
    assert set(SUBCOMMANDS) <= listed, sorted(set(SUBCOMMANDS) - listed)
    for cmd in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([cmd, "--help"])
        assert exc.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: srdeploy {cmd}"), cmd


def test_eval_bicubic_table_and_json(set5, set14, tmp_path):
    out = run("eval", "--bicubic", str(set5), str(set14), "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    assert "Set5" in out.stdout and "Set14" in out.stdout and "28.43" in out.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    sets = {s["name"]: s for s in data["sets"]}
    assert sets["Set5"]["images"] == 5 and sets["Set14"]["images"] == 14
    assert sets["Set14"]["psnr"] == pytest.approx(26.09, abs=0.01)


def test_eval_checkpoint(set5, tmp_path):
    from srdeploy.train.archs import SRResNet
    from srdeploy.train.checkpoint import save_checkpoint

    kwargs = {"scale": 4, "num_blocks": 1, "channels": 8}
    save_checkpoint(tmp_path / "m.pt", SRResNet(**kwargs), arch="SRResNet", kwargs=kwargs, step=3)
    out = run("eval", str(tmp_path / "m.pt"), str(set5), "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert "step 3" in out.stdout and "Set5" in out.stdout


def test_eval_bad_checkpoint_is_a_clear_error(set5, tmp_path):
    (tmp_path / "bad.pt").write_text("nope")
    out = run("eval", str(tmp_path / "bad.pt"), str(set5))
    assert out.returncode == 1
    assert "bad.pt: not a valid srdeploy checkpoint" in out.stderr and "Traceback" not in out.stderr
    out = run("eval", str(set5))
    assert out.returncode == 1 and "give a checkpoint" in out.stderr


def _tiny_images(folder):
    import cv2
    import numpy as np

    folder.mkdir()
    cv2.imwrite(str(folder / "small.png"), np.full((9, 9, 3), 90, np.uint8))    # 81 pixels
    cv2.imwrite(str(folder / "large.png"), np.full((17, 21, 3), 90, np.uint8))  # 357 pixels
    return folder


def test_max_image_pixels_env_refuses_larger_images(tmp_path):
    """docs/runtime.md: images over SRDEPLOY_MAX_IMAGE_PIXELS are reported by name; the batch goes on, exit 1."""
    import os

    src = _tiny_images(tmp_path / "in")
    env = {**os.environ, "SRDEPLOY_MAX_IMAGE_PIXELS": "100"}
    env.pop("SRDEPLOY_DEBUG", None)
    out = run("upscale", "-q", "-i", str(src), "-o", str(tmp_path / "out"), env=env, timeout=300)
    assert out.returncode == 1, out.stderr
    refused = [line for line in out.stderr.splitlines() if "large.png" in line and "error" in line]
    assert refused and "SRDEPLOY_MAX_IMAGE_PIXELS" in refused[0], out.stderr
    assert "small.png" not in " ".join(line for line in out.stderr.splitlines() if "error" in line)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small.png"]


def test_debug_env_shows_traceback_only_when_set(tmp_path):
    """README: errors are one line naming the file; SRDEPLOY_DEBUG=1 shows the traceback."""
    import os

    src = _tiny_images(tmp_path / "in")
    args = ("upscale", "-q", "-i", str(src / "small.png"), "-o", str(tmp_path / "o.png"),
            "--model", str(tmp_path / "missing.onnx"))
    env = {k: v for k, v in os.environ.items() if k != "SRDEPLOY_DEBUG"}
    plain = run(*args, env=env, timeout=300)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.onnx" in lines[0], plain.stderr
    debug = run(*args, env={**env, "SRDEPLOY_DEBUG": "1"}, timeout=300)
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "missing.onnx" in debug.stderr and not (tmp_path / "o.png").exists()
