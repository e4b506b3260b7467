"""``srdeploy verify``: passes the right model, fails (non-zero exit, names cases) on a wrong one."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from _models import export_random_checkpoint
from srdeploy.cli import main
from srdeploy.export.verify import (FP16_ATOL, FP32_ATOL, Tolerance, compare, fit_image, fit_sizes, judge,
                                    verify)
from srdeploy.runtime.parsing import parse_batch_hw
from srdeploy.runtime.session import InputSpec

KW = {"scale": 2, "num_blocks": 2, "channels": 8}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A checkpoint, its FP32 + FP16 exports, and an ONNX exported from *different* weights."""
    d = tmp_path_factory.mktemp("verify")
    _, ckpt, right = export_random_checkpoint(d / "right.pt", d / "right.onnx", KW, seed=0, fp16=True)
    _, _, wrong = export_random_checkpoint(d / "other.pt", d / "wrong.onnx", KW, seed=1)
    return ckpt, right.onnx_path, right.fp16_path, wrong.onnx_path


@pytest.mark.slow
def test_right_model_passes(models, tmp_path, capsys, set5):
    ckpt, onnx_path, _, _ = models
    out = tmp_path / "v.json"
    assert main(["verify", str(ckpt), str(onnx_path), "--images", str(set5), "--max-images", "2",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PASS" in text
    rep = json.loads(out.read_text())
    assert rep["ok"] and rep["precision"] == "fp32" and rep["tolerance"]["max_abs"] == FP32_ATOL
    shapes = [tuple(c["shape"]) for c in rep["cases"] if c["kind"] == "random"]
    assert len(shapes) >= 3 and len(set(shapes)) == len(shapes)
    assert any(h % 2 and w % 2 for _, _, h, w in shapes)  # odd sizes
    assert any(h != w for _, _, h, w in shapes)           # non-square
    assert [c["name"] for c in rep["cases"] if c["kind"] == "image"] == ["image baby.png", "image bird.png"]
    for c in rep["cases"]:
        assert c["max_abs"] <= FP32_ATOL and c["mean_abs"] <= c["max_abs"] and c["psnr"] > 80


def test_wrong_model_fails_and_names_cases(models, capsys):
    ckpt, _, _, wrong = models
    rc = main(["verify", str(ckpt), str(wrong), "--no-images", "--json", "-"])
    captured = capsys.readouterr()
    assert rc == 1
    rep = json.loads(captured.out)
    assert not rep["ok"] and rep["failed"] == [c["name"] for c in rep["cases"]]
    assert "FAILED cases: random 1x33x47" in captured.err
    assert any("different checkpoint" in n for n in rep["notes"])


@pytest.mark.slow
def test_fp16_model_uses_fp16_tolerance(models):
    ckpt, _, fp16_path, _ = models
    report = verify(ckpt, fp16_path, use_images=False)
    assert report.precision == "fp16"
    assert report.tolerance == Tolerance(FP16_ATOL, 45.0)
    assert report.ok, report.format_table()
    # Held to FP32's tolerance, FP16 weights do not pass: the tolerance is not vacuous.
    strict = verify(ckpt, fp16_path, use_images=False, atol=1e-6)
    assert not strict.ok


def test_cli_atol_and_min_psnr_flip_the_exit_status(models, capsys):
    """docs/export.md: `verify ... [--atol X] [--min-psnr DB]`; a loose bound passes, a strict one fails."""
    ckpt, onnx_path, fp16_path, _ = models
    quick = ["--no-images", "--sizes", "1x12x10", "--json", "-"]

    def run(model, *flags):
        rc = main(["verify", str(ckpt), str(model), *quick, *flags])
        rep = json.loads(capsys.readouterr().out)
        return rc, rep

    rc, rep = run(onnx_path)
    err = rep["cases"][0]["max_abs"]
    assert rc == 0 and rep["tolerance"] == {"max_abs": 1e-4, "min_psnr": None} and 0 < err <= 1e-4
    rc, rep = run(onnx_path, "--atol", f"{err / 2:g}")
    assert rc == 1 and rep["tolerance"]["max_abs"] == pytest.approx(err / 2, rel=1e-5) and not rep["ok"]
    assert "max abs" in rep["cases"][0]["reason"]
    # FP16: default 2/255 and 45 dB; --min-psnr above the measured PSNR fails, --atol/--min-psnr loose pass
    rc, rep = run(fp16_path)
    psnr = rep["cases"][0]["psnr"]
    assert rc == 0 and rep["tolerance"] == {"max_abs": 2 / 255, "min_psnr": 45.0} and 45 < psnr < 200
    rc, rep = run(fp16_path, "--min-psnr", f"{psnr + 1:.2f}")
    assert rc == 1 and "PSNR" in rep["cases"][0]["reason"]
    rc, rep = run(fp16_path, "--atol", f"{rep['cases'][0]['max_abs'] / 2:g}", "--min-psnr", "0")
    assert rc == 1 and "max abs" in rep["cases"][0]["reason"]
    rc, rep = run(fp16_path, "--atol", "1", "--min-psnr", "0")
    assert rc == 0 and rep["tolerance"] == {"max_abs": 1.0, "min_psnr": 0.0}


def test_missing_image_folder_is_a_clear_error(models, tmp_path):
    ckpt, onnx_path, _, _ = models
    with pytest.raises(FileNotFoundError, match="--images DIR"):
        verify(ckpt, onnx_path, images=tmp_path / "nope")


def test_fit_sizes_stays_inside_a_profile():
    spec = InputSpec(batch=(1, 2), height=(32, 128), width=(32, 128), opt=(1, 3, 64, 64))
    sizes, notes = fit_sizes([(1, 33, 47), (4, 16, 200)], spec)
    assert sizes == [(1, 33, 47), (2, 32, 128), (1, 32, 32)]  # clamped, plus the profile minimum
    assert len(notes) == 1 and "4x16x200" in notes[0]
    unbounded, notes = fit_sizes([(1, 5, 7)], InputSpec())
    assert unbounded == [(1, 5, 7)] and not notes


def test_fit_image_cuts_the_centre_or_skips():
    spec = InputSpec(batch=(1, 1), height=(32, 64), width=(32, 64), opt=(1, 3, 64, 64))
    lr = np.arange(3 * 70 * 40, dtype=np.float32).reshape(1, 3, 70, 40)
    cut, note = fit_image("a.png", lr, spec)
    assert cut.shape == (1, 3, 64, 40) and np.array_equal(cut, lr[:, :, 3:67]) and cut.flags.c_contiguous
    assert note == "a.png: LR 70x40 exceeds the model's maximum input; tested the centre 64x40"
    skipped, note = fit_image("b.png", lr[:, :, :20], spec)
    assert skipped is None and "b.png: LR 20x40 is below the model's minimum input" in note
    same, note = fit_image("c.png", lr, InputSpec())  # unbounded (ONNX Runtime): untouched, no note
    assert same is lr and note is None


def test_compare_and_judge():
    ref = np.zeros((1, 3, 4, 4), np.float32)
    out = ref.copy()
    out[0, 0, 0, 0] = 0.005
    mx, mean, psnr = compare(out, ref)
    assert mx == pytest.approx(0.005) and mean == pytest.approx(0.005 / 48)
    assert psnr == pytest.approx(10 * math.log10(1 / (0.005 ** 2 / 48)))
    assert judge(mx, psnr, Tolerance(FP16_ATOL, 45.0)) == (True, "")
    ok, why = judge(mx, psnr, Tolerance(FP32_ATOL))
    assert not ok and "max abs" in why
    assert compare(ref, ref)[2] == math.inf
    out[0, 1, 1, 1] = np.nan
    mx, _, psnr = compare(out, ref)
    assert judge(mx, psnr, Tolerance(1.0)) == (False, "non-finite output")
    with pytest.raises(ValueError, match="unknown model precision"):
        Tolerance.for_precision("int4")


def test_parse_size():
    assert parse_batch_hw("2x33x47") == (2, 33, 47) and parse_batch_hw("33x47") == (1, 33, 47)
    with pytest.raises(ValueError, match="BxHxW"):
        parse_batch_hw("0x3")
