"""Build and run the C++ benchmark ``cpp_bench/build/srbench`` from Python (``srdeploy bench --cpp``).

srbench times model-only inference on ONNX Runtime's C++ API (or TensorRT) with the same
deterministic input (``srdeploy.runtime.bench.deterministic_input``) and the same JSON schema
(``srdeploy.bench/1``) as the Python benchmark, so the two can be compared line by line: the C++
figure is the floor for Python's overhead.

Everything runs as subprocess argument lists (never a shell string). Nothing heavy is imported
at module level.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: Exit status of cpp_bench/build.sh when a prerequisite (cmake, compiler, ONNX Runtime library
#: or headers) is missing rather than the build failing.
BUILD_PREREQ_MISSING = 3

_SOURCES = ("CMakeLists.txt", "build.sh", "fetch_ort_headers.sh")


class CppBenchUnavailable(RuntimeError):
    """srbench cannot be built here: a prerequisite is missing (the message says which)."""


def cpp_bench_dir() -> Path:
    """The ``cpp_bench/`` source folder: ``$SRDEPLOY_CPP_BENCH_DIR``, else beside the package sources.

    The C++ sources are not part of the installed wheel; an editable install or a source checkout
    has them next to ``runtime/``.
    """
    env = os.environ.get("SRDEPLOY_CPP_BENCH_DIR")
    d = Path(env) if env else Path(__file__).resolve().parent.parent / "cpp_bench"
    if not (d / "build.sh").is_file():
        raise CppBenchUnavailable(
            f"C++ benchmark sources not found at {d} (no build.sh). Use a source checkout of srdeploy, "
            "or set SRDEPLOY_CPP_BENCH_DIR to its cpp_bench/ folder.")
    return d


def srbench_path() -> Path:
    """Where build.sh puts the executable: ``cpp_bench/build/srbench``."""
    return cpp_bench_dir() / "build" / "srbench"


def _stamp(src: Path) -> Path:
    # Touched after each successful build: ninja leaves srbench's mtime alone when nothing changed.
    return src / "build" / "srbench.stamp"


def _stale(exe: Path, src: Path) -> bool:
    stamp = _stamp(src)
    if not exe.is_file() or not stamp.is_file():
        return True
    built = stamp.stat().st_mtime
    files = [src / name for name in _SOURCES] + sorted((src / "src").glob("*"))
    return any(f.is_file() and f.stat().st_mtime > built for f in files)


def _loads(exe: Path) -> bool:
    """True when the binary starts and finds its ONNX Runtime library (it may have moved)."""
    try:
        return subprocess.run([str(exe), "--version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def build_cpp_bench(*, force: bool = False, cmake_args: list[str] | tuple[str, ...] = (),
                    timeout: float = 1800, verbose: bool = False) -> Path:
    """Build ``cpp_bench/build/srbench`` if needed (missing, older than its sources, or not loading).

    Args:
        force: run cpp_bench/build.sh even when the binary is up to date.
        cmake_args: extra CMake configure arguments, e.g. ``["-DSRBENCH_WITH_TENSORRT=ON"]``.
        timeout: seconds before the build is abandoned.
        verbose: stream the build output instead of capturing it.

    Returns:
        Path of the srbench executable.

    Raises:
        CppBenchUnavailable: cmake, a compiler, or ONNX Runtime (library or headers) is missing.
        RuntimeError: the build failed (the message ends with the build's last output lines).
    """
    src = cpp_bench_dir()
    exe = src / "build" / "srbench"
    if not force and not cmake_args and not _stale(exe, src) and _loads(exe):
        return exe
    env = dict(os.environ)
    # Build against the onnxruntime wheel of *this* interpreter, like the Python benchmark uses.
    env.setdefault("PYTHON", sys.executable)
    cmd = ["bash", str(src / "build.sh"), *cmake_args]
    try:
        proc = subprocess.run(cmd, cwd=src, env=env, timeout=timeout, text=True,
                              stdout=None if verbose else subprocess.PIPE,
                              stderr=None if verbose else subprocess.STDOUT)
    except FileNotFoundError as exc:
        raise CppBenchUnavailable(f"cannot run {cmd[0]}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"building srbench took longer than {timeout:.0f} s: {' '.join(cmd)}") from exc
    tail = "\n".join((proc.stdout or "").strip().splitlines()[-25:])
    if proc.returncode == BUILD_PREREQ_MISSING:
        raise CppBenchUnavailable(f"cannot build srbench: a prerequisite is missing:\n{tail}")
    if proc.returncode != 0 or not exe.is_file():
        raise RuntimeError(f"building srbench failed (exit {proc.returncode}; command: {' '.join(cmd)}):\n{tail}")
    _stamp(src).touch()
    return exe


def _parse_size(size) -> tuple[int, int]:
    """(width, height) from "WxH" or a pair, through the one parser."""
    from .parsing import parse_wh

    return parse_wh(size if isinstance(size, str) else "x".join(str(v) for v in size), what="size")


def run_cpp_bench(model, size, batch: int = 1, warmup: int = 5, iters: int = 30, json_path=None,
                  threads: int | None = None, *, backend: str = "ort", device: str = "cpu",
                  meta=None, precision: str | None = None, exe=None, build: bool = True,
                  timeout: float | None = None) -> dict:
    """Run srbench once and return its result (the ``srdeploy.bench/1`` JSON as a dict).

    Args:
        model: srdeploy ONNX model (backend "ort") or TensorRT engine (backend "trt").
        size: low-resolution input as ``"WxH"`` or ``(width, height)``.
        batch: images per inference.
        warmup: untimed iterations before timing.
        iters: timed iterations.
        json_path: where srbench writes the JSON (kept); None: a temporary file, removed after.
        threads: ONNX Runtime intra-op threads; None: srbench's default (physical cores, like ORT).
        backend: "ort" or "trt".
        device: "cpu", "cuda" or "cuda:N".
        meta: TensorRT only: the engine's metadata sidecar JSON or source .onnx.
        precision: TensorRT only: what the engine computes in, when its sidecar does not say.
        exe: srbench executable; None: cpp_bench/build/srbench, built first when ``build``.
        build: build srbench if needed (see build_cpp_bench).
        timeout: seconds before srbench is stopped (None: no limit).

    Raises:
        FileNotFoundError: the model file does not exist.
        CppBenchUnavailable: srbench is not built and cannot be built here.
        RuntimeError: srbench failed; the message is srbench's own (it names the file and the problem).
    """
    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"model file not found: {model}")
    w, h = _parse_size(size)
    if exe is None:
        exe = build_cpp_bench() if build else srbench_path()
    exe = Path(exe)
    if not exe.is_file():
        raise CppBenchUnavailable(f"srbench not found at {exe}; build it with `bash cpp_bench/build.sh`")

    tmpdir = None
    if json_path is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="srbench-")
        out = Path(tmpdir.name) / "result.json"
    else:
        out = Path(json_path)
    cmd = [str(exe), "--model", str(model), "--size", f"{w}x{h}", "--batch", str(int(batch)),
           "--warmup", str(int(warmup)), "--iters", str(int(iters)), "--json", str(out),
           "--backend", backend, "--device", device]
    if threads is not None:
        cmd += ["--threads", str(int(threads))]
    if meta is not None:
        cmd += ["--meta", str(meta)]
    if precision is not None:
        cmd += ["--precision", precision]
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"srbench did not finish within {timeout} s: {' '.join(cmd)}") from exc
        if proc.returncode != 0:
            msg = proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}"
            raise RuntimeError(f"{msg}\n(command: {' '.join(cmd)})")
        with open(out, encoding="utf-8") as f:
            result = json.load(f)
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
    return result


def measure_peak(threads: int | None = None, *, seconds: float = 1.5, exe=None, build: bool = True,
                 timeout: float = 120) -> dict:
    """This machine's FP32 FMA peak, measured by ``srbench --peak`` (``bench --peak``).

    srbench runs independent FMA chains on vector registers with the widest ISA the CPU has
    (AVX-512, else AVX2+FMA) on ``threads`` threads and reports the best of three rounds.

    Returns:
        ``{"gflops": float, "isa": str, "threads": int, "seconds": float}``.
    """
    if exe is None:
        exe = build_cpp_bench() if build else srbench_path()
    cmd = [str(exe), "--peak", "--seconds", str(float(seconds))]
    if threads is not None:
        cmd += ["--threads", str(int(threads))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"srbench --peak did not finish within {timeout} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.stderr.strip() or proc.stdout.strip()}\n(command: {' '.join(cmd)})")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("peak_gflops:")), None)
    if line is None:
        raise RuntimeError(f"srbench --peak printed no 'peak_gflops:' line: {proc.stdout.strip()[:200]}")
    parts = line.split()
    fields = dict(zip(parts[0::2], parts[1::2]))  # "peak_gflops: V isa: X threads: N"
    return {"gflops": float(fields["peak_gflops:"]), "isa": fields["isa:"], "threads": int(fields["threads:"]),
            "seconds": float(seconds)}
