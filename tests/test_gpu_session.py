"""scripts/gpu_session.sh (issue 16): the GPU session script runs end to end on the CPU.

The CUDA run happens on a lent GPU; here `--device cpu --budget-min 1` proves the plumbing: every
phase is recorded, none crashes, and what finished left valid results. On a busy machine later
phases are skipped for lack of time (the script never overruns its budget): the test accepts
"time limit" / "skipped" but checks the output of every phase that finished.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_session.sh"
PHASES = ["tests", "train_its_cpu", "infer_fp32_480x270", "train", "eval_trained", "export", "verify"]


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    # timeout: a hang guard only (the script's own limit is its budget).
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=240)


def test_gpu_session_rejects_bad_arguments(tmp_path):
    for args, needle in ((["--device", "tpu"], "--device must be cuda or cpu"),
                         (["--budget-min", "0"], "--budget-min must be a positive number"),
                         (["--frobnicate"], "unknown argument")):
        r = _run(*args, "--out", str(tmp_path / "o"))
        assert r.returncode == 2 and needle in r.stderr, r.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    r = _run("--device", "cpu", "--out", str(tmp_path / "full"))
    assert r.returncode == 2 and "not empty" in r.stderr
    assert (tmp_path / "full" / "x").read_text() == "keep me"


@pytest.mark.slow
def test_gpu_session_runs_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "gpu_results"
    r = _run("--device", "cpu", "--budget-min", "1", "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    status = {p["phase"]: p["status"] for p in summary["phases"]}
    assert list(status) == PHASES, status
    assert "failed" not in status.values(), (status, r.stdout[-3000:])
    assert status["tests"] == "skipped" and summary["device"] == "cpu" and summary["budget_min"] == 1
    assert "tiny SRResNet" in summary["model_note"]
    for name in PHASES:
        assert status[name] in ("ok", "time limit", "skipped")
        if status[name] != "skipped" and name != "tests":
            assert (out / "logs" / f"{name}.log").is_file()
    if status["train_its_cpu"] == "ok":
        (result,) = summary["train_its"]["train_its_cpu"]["results"]
        assert result["its"] > 0 and result["precision"] == "fp32"
    if status["infer_fp32_480x270"] == "ok":
        fps = summary["infer_fps"]["infer_fp32_480x270"]
        assert fps["fps"] > 0 and fps["result"]["input"]["width"] == 480 and fps["result"]["backend"] == "torch"
    if status["train"] == "ok":
        tb = summary["train"]["time_budget"]
        assert tb["planned_iters"] >= tb["actual_iters"] > 0 and (out / "run" / "last.pt").is_file()
        s = summary["train"]["settings"]
        assert (s["loss"], s["crop"], s["lr"], s["init"]) == ("mse", 96, 1e-4, str(out / "tiny_srresnet.pt"))
    if status["eval_trained"] == "ok":
        assert [s["name"] for s in summary["eval_trained"]["sets"]] == ["Set5", "Set14"]
    if status["export"] == "ok":
        assert (out / "trained.onnx").is_file()
    if status["verify"] == "ok":
        assert summary["verify"] is not None
