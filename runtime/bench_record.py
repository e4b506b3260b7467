"""What a benchmark result records besides its timings, and its JSON schema.

The machine (host, CPU, cores, GPU) and the library versions go into every result; results follow
``bench_schema.json`` (schema ``srdeploy.bench/1``), shared with the C++ tool (cpp_bench), and are
written with ``atomic.write_json``. No numpy, no backend: only the standard library (``jsonschema`` to validate).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path

SCHEMA_ID = "srdeploy.bench/1"
TOOL = "srdeploy bench"
SCHEMA_PATH = Path(__file__).with_name("bench_schema.json")


# --------------------------------------------------------------------------- environment
def machine_info(device: str = "cpu") -> dict:
    """Hostname, CPU model, logical cores, OS and (where ``nvidia-smi`` exists) the GPU name."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"hostname": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count() or 1,
            "os": platform.platform(), "gpu": _gpu_name(device)}


def _gpu_name(device: str) -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    index = device.split(":", 1)[1] if device.startswith("cuda:") else "0"
    try:
        out = subprocess.run([smi, f"--id={index}", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    name, _, driver = out.splitlines()[0].partition(",")
    return f"{name.strip()} (driver {driver.strip()})" if driver.strip() else name.strip()


_DISTRIBUTIONS = ("srdeploy", "numpy", "onnxruntime", "onnxruntime-gpu", "opencv-python-headless", "opencv-python",
                  "tensorrt", "cuda-python", "torch")


def library_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Python and the installed versions of the libraries a benchmark can involve (no imports)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in _DISTRIBUTIONS:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    cv2 = sys.modules.get("cv2")  # the build actually loaded, if any
    if cv2 is not None:
        out["opencv"] = str(cv2.__version__)
    for key, value in (extra or {}).items():
        out[key] = str(value)
    return out


# --------------------------------------------------------------------------- the schema
def load_schema() -> dict:
    """The shared benchmark JSON schema (``bench_schema.json``)."""
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


def validate_result(result: dict) -> None:
    """Validate against the schema with ``jsonschema`` (a ValueError listing what is wrong)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(result), key=lambda e: list(e.path))
    if errors:
        raise ValueError("benchmark result does not follow bench_schema.json: " +
                         "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors))
