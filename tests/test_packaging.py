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
