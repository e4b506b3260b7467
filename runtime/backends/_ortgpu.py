"""ONNX Runtime's GPU providers: one ORT distribution, their libraries loaded, ORT's own errors kept.

Three ways a GPU session of ONNX Runtime ends up on the CPU without raising (issue 23):

1. Two ORT distributions installed together (``onnxruntime`` and ``onnxruntime-gpu`` both write
   ``site-packages/onnxruntime``): whichever came last owns the shared files, and then only the
   CPU providers work (onnxruntime#26996). ``check_distributions`` finds that at session start.
2. The CUDA provider dlopens the CUDA runtime, cuBLAS, cuRAND and cuDNN. From pip (the
   ``onnxruntime-gpu[cuda,cudnn]`` extras) they are not on the library path until
   ``onnxruntime.preload_dlls()`` loads them, and the TensorRT provider's ``libnvinfer.so.10``
   (tensorrt-cuNN-libs) is only loaded by importing ``tensorrt_libs``. ``load_provider_libraries``
   does both first and names a missing library with the package that brings it.
   ``get_available_providers()`` lists every compiled-in provider whether it can load or not, so
   attachment is judged on the created session's ``get_providers()``, never on that list.
3. A provider library that fails to load is logged by ORT on stderr and the session is created on
   the CPU; a bad provider option makes the Python API print "EP Error ... Falling back" on stdout
   and retry on the CPU. ``create_session`` turns the fallback off (``enable_fallback=0``, and
   ``disable_fallback()`` for ``run``), captures both streams while the session is created, and
   ``ort_error`` returns ORT's own words for the caller's message.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import re
import sys
import tempfile
import warnings

#: Distributions that install the ``onnxruntime`` package (one of them, and only one, may be present).
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                     "onnxruntime-qnn", "onnxruntime-rocm", "onnxruntime-migraphx", "onnxruntime-training",
                     "ort-nightly", "ort-nightly-gpu")
#: The srdeploy extra that brings onnxruntime-gpu and its libraries, by CUDA major version.
GPU_EXTRA = {12: "gpu", 13: "gpu-cu13"}
_MISSING_SO = re.compile(r"(lib[\w+-]+\.so(?:\.\d+)*): cannot open shared object file")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_warned: set[str] = set()


# ----------------------------------------------------------------------------- 1. one distribution

def ort_distributions() -> list[str]:
    """Installed distributions that provide the ``onnxruntime`` package, as "name version"."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return found


def check_distributions(path, *, gpu: bool, found: list[str] | None = None) -> list[str]:
    """Refuse (GPU provider) or warn about (CPU) more than one ONNX Runtime distribution.

    Args:
        path: the model, for the message.
        gpu: the session asks for a CUDA/TensorRT provider, which a mixed install cannot give.
        found: the installed distributions (default ``ort_distributions()``).

    Returns:
        The installed distributions (recorded in the session's details).
    """
    found = ort_distributions() if found is None else found
    if len(found) <= 1:
        return found
    names = " ".join(f.split()[0] for f in found)
    msg = (f"{len(found)} ONNX Runtime distributions are installed ({', '.join(found)}); they share one "
           "'onnxruntime' folder and only the CPU providers of the one installed last work (onnxruntime#26996). "
           f"Keep exactly one: pip uninstall -y {names}, then pip install 'srdeploy[gpu]' (NVIDIA GPU) or "
           "'srdeploy[cpu]'")
    if gpu:
        raise RuntimeError(f"{path}: {msg}")
    if msg not in _warned:  # the CPU provider still works: say it once per process
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return found


# ----------------------------------------------------------------------------- 2. libraries

def ort_cuda_major() -> int | None:
    """The CUDA major version this onnxruntime was built for (None: a CPU build or unknown)."""
    try:
        from onnxruntime.capi.build_and_package_info import cuda_version
    except ImportError:
        return None
    try:
        return int(str(cuda_version).split(".")[0])
    except ValueError:
        return None


def package_for(library: str, cuda_major: int) -> str:
    """The pip package that ships ``library`` (a soname) for this CUDA major version."""
    suffix = "-cu12" if cuda_major < 13 else ""
    for prefix, package in (("libcudart", f"nvidia-cuda-runtime{suffix}"), ("libcublas", f"nvidia-cublas{suffix}"),
                            ("libcurand", f"nvidia-curand{suffix}"), ("libcufft", f"nvidia-cufft{suffix}"),
                            ("libnvrtc", f"nvidia-cuda-nvrtc{suffix}"), ("libcudnn", f"nvidia-cudnn-cu{cuda_major}"),
                            ("libnvinfer", f"tensorrt-cu{cuda_major}-libs"),
                            ("libnvonnxparser", f"tensorrt-cu{cuda_major}-libs")):
        if library.startswith(prefix):
            return package
    return "the CUDA toolkit"


def cuda_libraries(cuda_major: int) -> list[str]:
    """Sonames the CUDA provider cannot run without (cuBLASLt before cuBLAS: load order)."""
    return [f"libcudart.so.{cuda_major}", f"libcublasLt.so.{cuda_major}", f"libcublas.so.{cuda_major}",
            "libcurand.so.10", "libcudnn.so.9"]


def _loadable(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)  # an already loaded library is found by its soname
    except OSError:
        return False
    return True


def load_provider_libraries(ort, provider: str, path, *, loadable=_loadable) -> None:
    """Load what the CUDA / TensorRT provider dlopens, so ORT finds it; raise naming what is missing.

    Args:
        ort: the onnxruntime module.
        provider: "cuda" or "tensorrt".
        path: the model, for messages.
        loadable: soname -> bool (tests pass a stand-in).
    """
    major = ort_cuda_major()
    if major is None:  # a CPU build: the provider check before this has already said so
        return
    if hasattr(ort, "preload_dlls"):  # onnxruntime >= 1.21; it prints its own "Failed to load" lines
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
            ort.preload_dlls()
    missing = [lib for lib in cuda_libraries(major) if not loadable(lib)]
    if provider == "tensorrt":
        with contextlib.suppress(ImportError):
            import tensorrt_libs  # noqa: F401  (tensorrt-cuNN-libs: loading it dlopens libnvinfer & co)
        if not loadable("libnvinfer.so.10"):
            newer = next((v for v in (11, 12) if loadable(f"libnvinfer.so.{v}")), None)
            if newer is not None:
                raise RuntimeError(
                    f"{path}: ONNX Runtime's TensorRT provider is built against TensorRT 10 (libnvinfer.so.10) and this "
                    f"environment has TensorRT {newer} (e.g. srdeploy[gpu-cu13-trt11]), which it cannot load. Use "
                    "--backend tensorrt with an engine from `srdeploy build-engine`, or install srdeploy[gpu-cu13] "
                    "(TensorRT 10) for --backend ort-trt")
            missing.append("libnvinfer.so.10")
    if missing:
        packages = " ".join(dict.fromkeys(package_for(lib, major) for lib in missing))
        raise RuntimeError(
            f"{path}: ONNX Runtime's {'TensorRT' if provider == 'tensorrt' else 'CUDA'} provider needs "
            f"{', '.join(missing)}, found neither in pip's nvidia/tensorrt wheels nor on the library path: "
            f"pip install {packages} (pip install 'srdeploy[{GPU_EXTRA.get(major, 'gpu')}]' brings them)")


# ----------------------------------------------------------------------------- 3. no fallback

@contextlib.contextmanager
def _fd_to(fd: int, sink):
    """Point file descriptor ``fd`` at ``sink`` (ORT's C++ logger writes to fd 2, not sys.stderr)."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(fd)
    os.dup2(sink.fileno(), fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def create_session(ort, path, opts, providers: list):
    """``ort.InferenceSession`` without ORT's CPU fallback; returns ``(session, captured output)``.

    stdout and stderr (file descriptor 2) are captured while the session is created. When the
    session got the first requested provider, the captured stderr is written back to stderr (ORT's
    warnings stay visible); otherwise, and for ORT's printed "EP Error ... Falling back" block, the
    text is only returned, for the caller's one-line error. On an exception it is attached to the
    exception as ``exc.ort_output``.
    """
    printed = io.StringIO()
    with tempfile.TemporaryFile() as sink:
        try:
            with contextlib.redirect_stdout(printed), _fd_to(2, sink):
                sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers, enable_fallback=0)
        except Exception as exc:
            sink.seek(0)
            exc.ort_output = printed.getvalue() + sink.read().decode(errors="replace")
            raise
        sink.seek(0)
        logged = sink.read().decode(errors="replace")
    first = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    if logged and sess.get_providers()[:1] == [first]:
        sys.stderr.write(logged)
    sess.disable_fallback()  # a provider failure in run() must not retry on the CPU either
    return sess, printed.getvalue() + logged


def ort_error(captured: str, cuda_major: int | None = None, limit: int = 400) -> str:
    """ORT's own error lines from captured output, as one line ("" when it logged none), plus the
    package that brings a library it could not open."""
    lines = []
    for raw in _ANSI.sub("", captured).splitlines():
        line = raw.strip()
        if re.search(r"\[[EF]:onnxruntime", line) or line.startswith("EP Error") or "Failed to" in line:
            line = re.sub(r"^\S+ \S+ \[[EFW]:onnxruntime:[^\]]*\] ", "", line)  # timestamp, severity, logger
            if line not in lines:
                lines.append(line)
    text = " | ".join(lines)
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    found = _MISSING_SO.search(captured)
    if found and cuda_major is not None:
        text += f" (pip install {package_for(found.group(1), cuda_major)} brings {found.group(1)})"
    return text
