"""scripts/gpu_check.sh cannot lie (issue 23, item 7): on a machine without a GPU, TensorRT or
onnxruntime-gpu, and without the benchmark data, it says so up front, runs what it can (export, the
ONNX Runtime CPU reference on synthetic images, the C++ build), skips every GPU check with its
reason, ends with the table, and reports "incomplete" (exit 2), never "passed"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.sh"


def _gpu_machine() -> bool:
    try:
        from srdeploy.runtime.backends._cuda import Cuda, import_cudart

        return Cuda(import_cudart()).device_count() > 0
    except Exception:  # no cuda-python, no driver, no device
        return False


@pytest.mark.slow
@pytest.mark.skipif(_gpu_machine(), reason="a CUDA device is present: run scripts/gpu_check.sh itself")
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_on_a_cpu_machine_is_incomplete_not_passed(tmp_path):
    pytest.importorskip("torch")
    env = {**os.environ, "PYTHON": sys.executable, "SRDEPLOY_DATA": str(tmp_path / "no-data")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this srdeploy
    r = subprocess.run(["bash", str(SCRIPT), "", str(tmp_path / "work")], env=env, capture_output=True, text=True,
                       timeout=900)
    out = r.stdout
    assert r.returncode == 2, out[-3000:] + r.stderr[-2000:]
    assert "this machine lacks: a CUDA GPU, TensorRT, onnxruntime-gpu" in out
    assert "images:       synthetic" in out and "GPU check incomplete" in out and "GPU check passed" not in out
    rows = [line.split("\t") for line in (tmp_path / "work" / "checks.tsv").read_text().splitlines()]
    status = {name: (gpu, state, why) for name, gpu, state, why in rows}
    assert status["export"][1] == status["upscale_ort_cpu"][1] == "passed"
    assert status["build_fp32"][1:] == ("skipped", "TensorRT not installed (pip install 'srdeploy[gpu]')")
    assert "no CUDA provider" in status["upscale_ort_cuda"][2] and "no CUDA device" in status["cuda_runtime"][2]
    assert all(state in ("skipped", "n/a") for gpu, state, _ in status.values() if gpu == "yes")
    assert len(rows) >= 25 and all(f"   {name} " in out for name in status)  # the closing table lists every check
