"""The wheel carries every sub-package: setuptools silently drops packages pyproject does not list,
and an editable install (what the other tests run against) hides that."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Folder -> installed package, as pyproject's package-dir maps them.
MAPPED = {"cli": "srdeploy", "train": "srdeploy/train", "export": "srdeploy/export", "runtime": "srdeploy/runtime",
          "models": "srdeploy/models"}


def _source_modules() -> set[str]:
    """Every .py file under the mapped folders, as its path inside the wheel."""
    found = set()
    for folder, target in MAPPED.items():
        for f in (ROOT / folder).rglob("*.py"):
            if "__pycache__" in f.parts:
                continue
            found.add(f"{target}/{f.relative_to(ROOT / folder).as_posix()}")
    return found


@pytest.mark.slow
def test_wheel_holds_and_imports_every_module(tmp_path):
    # Build from a clean copy: setuptools reuses a build/ folder, whose stale files would hide a
    # package dropped from pyproject.
    src = tmp_path / "src"
    for name in (*MAPPED, "pyproject.toml", "README.md"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
        else:
            shutil.copy2(ROOT / name, src / name)
    wheel_dir = tmp_path / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(src)]
    r = subprocess.run(cmd[:4] + ["--no-build-isolation"] + cmd[4:], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:  # no setuptools/wheel in this environment: let pip fetch them
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = wheel_dir.glob("srdeploy-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    missing = sorted(_source_modules() - names)
    assert not missing, f"modules missing from the wheel (list their packages in pyproject): {missing}"
    for data in ("srdeploy/runtime/bench_schema.json", "srdeploy/models/srresnet_x4.onnx"):
        assert data in names
    # Import every module from the unpacked wheel (not the checkout) in a fresh interpreter.
    code = """
import importlib, pkgutil, sys
import srdeploy
assert srdeploy.__file__.startswith(sys.argv[1]), srdeploy.__file__
names = [m.name for m in pkgutil.walk_packages(srdeploy.__path__, prefix="srdeploy.")
         if not m.name.endswith("__main__")]  # __main__ would run the CLI
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    # PYTHONPATH comes before site-packages, so the wheel's srdeploy wins over the editable install.
    r = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # every module file but the __main__ ones was imported
    assert int(r.stdout.strip().splitlines()[-1]) >= len([m for m in _source_modules() if not m.endswith(
        "__main__.py")]) - len(MAPPED)


# ----------------------------------------------------------------------------- one ONNX Runtime per install (issue 23)

ORT = {"onnxruntime", "onnxruntime-gpu"}
ORT_SETS = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu", "gpu-cu12": "onnxruntime-gpu",
            "gpu-cu13": "onnxruntime-gpu", "gpu-cu13-trt11": "onnxruntime-gpu"}


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    import re

    return re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1).lower().replace("_", "-")


def test_base_plus_each_ort_extra_installs_exactly_one_onnxruntime():
    """onnxruntime and onnxruntime-gpu both install site-packages/onnxruntime; together only the CPU
    providers work (onnxruntime#26996). So the base has neither, each ORT extra brings exactly one,
    and no other extra brings any (a GPU install plus, say, export must not pull the CPU build)."""
    project = _project()
    assert not ORT & {_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert set(ORT_SETS) <= set(extras)
    for extra, requirements in extras.items():
        found = ORT & {_name(r) for r in requirements}
        assert found == ({ORT_SETS[extra]} if extra in ORT_SETS else set()), (extra, found)
        if extra in ORT_SETS and extra != "cpu":
            # onnxruntime-gpu's own extras bring the CUDA runtime, cuBLAS and cuDNN wheels it dlopens
            assert any(r.replace(" ", "").startswith("onnxruntime-gpu[cuda,cudnn]") for r in requirements), requirements
    # CI installs exactly one of them (the README's test command, which .ci/run mirrors).
    ci = (ROOT / ".ci" / "run").read_text()
    installs = [line for line in ci.splitlines() if "pip install" in line and not line.lstrip().startswith("#")]
    assert installs
    for line in installs:
        chosen = [e for e in line.split("[", 1)[1].split("]", 1)[0].split(",") if e in ORT_SETS] if "[" in line else []
        assert chosen == ["cpu"], line


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SRDEPLOY_PIP_RESOLVE"),
                    reason="resolves each install set against the package index with pip --dry-run; pip < 24 "
                           "downloads every wheel to do it (~1.5 GB of CUDA wheels per GPU set): set "
                           "SRDEPLOY_PIP_RESOLVE=1 to run it")
@pytest.mark.parametrize("extra", sorted(ORT_SETS))
def test_pip_resolves_each_set_to_exactly_one_onnxruntime(extra, tmp_path):
    import json

    project = _project()
    # tensorrt-cuNN on PyPI is a placeholder sdist that fetches its wheels from pypi.nvidia.com at
    # build time, and TensorRT requires no ONNX Runtime: resolve the rest of the set.
    requirements = [r for r in project["dependencies"] + project["optional-dependencies"][extra]
                    if not _name(r).startswith("tensorrt")]
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), *requirements], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    installed = {_name(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}
    assert installed & ORT == {ORT_SETS[extra]}, sorted(installed)
