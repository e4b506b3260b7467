"""ONNX Runtime GPU sessions that cannot end up on the CPU unnoticed (issue 23, items 1-3), on a CPU.

The installed onnxruntime is the CPU build. Stand-ins make it list GPU providers and behave as
onnxruntime-gpu does when something is wrong: two distributions installed, a CUDA library missing
(ORT logs an error on file descriptor 2 and creates the session on the CPU), a bad provider option
on an old ORT (it prints "EP Error ... Falling back" on stdout and retries on the CPU).
"""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest

from srdeploy.runtime.backends import _ortgpu
from srdeploy.runtime.backends import ort as ort_backend
from srdeploy.runtime.open import open_session

BUNDLED = Path(__file__).resolve().parent.parent / "models" / "srresnet_x4.onnx"
MISSING_CUBLAS = ("\x1b[1;31m2026-12-04 00:00:00.000 [E:onnxruntime:Default, provider_bridge_ort.cc:1480 "
                  "TryGetProviderInfo_CUDA] Failed to load library libonnxruntime_providers_cuda.so with error: "
                  "libcublasLt.so.12: cannot open shared object file: No such file or directory\x1b[m\n")


# ----------------------------------------------------------------------------- item 1: one distribution

def test_mixed_install_is_refused_for_gpu_and_explained_for_cpu(monkeypatch):
    both = ["onnxruntime 1.26.0", "onnxruntime-gpu 1.26.0"]
    with pytest.raises(RuntimeError, match=r"m.onnx: 2 ONNX Runtime distributions.*26996.*"
                                           r"pip uninstall -y onnxruntime onnxruntime-gpu.*srdeploy\[gpu\]"):
        _ortgpu.check_distributions("m.onnx", gpu=True, found=both)
    with pytest.warns(RuntimeWarning, match="only the CPU providers"):
        assert _ortgpu.check_distributions("m.onnx", gpu=False, found=both) == both
    assert _ortgpu.check_distributions("m.onnx", gpu=True, found=both[:1]) == both[:1]
    # Through a session: the check runs at session start, before any provider is asked for.
    monkeypatch.setattr(_ortgpu, "ort_distributions", lambda: both)
    with pytest.raises(RuntimeError, match="Keep exactly one"):
        open_session(BUNDLED, device="cuda")
    monkeypatch.setattr(_ortgpu, "_warned", set())
    with pytest.warns(RuntimeWarning), open_session(BUNDLED) as s:
        assert s.details["onnxruntime_distributions"] == both


def test_this_environment_has_exactly_one_onnxruntime():
    found = _ortgpu.ort_distributions()
    assert len(found) == 1, f"{found}: CI installs one ONNX Runtime (the cpu extra)"
    with open_session(BUNDLED) as s:
        assert s.details["onnxruntime_distributions"] == found


# ----------------------------------------------------------------------------- item 2: libraries

def _fake_ort(calls: list):
    return types.SimpleNamespace(preload_dlls=lambda: calls.append("preload_dlls") or print("Failed to load x"))


def test_missing_cuda_library_names_the_package(monkeypatch, capsys):
    monkeypatch.setattr(_ortgpu, "ort_cuda_major", lambda: 12)
    calls: list = []
    with pytest.raises(RuntimeError, match=r"m.onnx: ONNX Runtime's CUDA provider needs libcudnn.so.9.*"
                                           r"pip install nvidia-cudnn-cu12 \(pip install 'srdeploy\[gpu\]'"):
        _ortgpu.load_provider_libraries(_fake_ort(calls), "cuda", "m.onnx", loadable=lambda s: s != "libcudnn.so.9")
    assert calls == ["preload_dlls"] and "Failed to load" not in capsys.readouterr().out  # preloaded, quietly
    monkeypatch.setattr(_ortgpu, "ort_cuda_major", lambda: 13)
    with pytest.raises(RuntimeError, match=r"libcudart.so.13, libcublas.so.13.*nvidia-cuda-runtime nvidia-cublas "
                                           r"\(pip install 'srdeploy\[gpu-cu13\]'"):
        _ortgpu.load_provider_libraries(_fake_ort([]), "cuda", "m.onnx",
                                        loadable=lambda s: s not in ("libcudart.so.13", "libcublas.so.13"))
    _ortgpu.load_provider_libraries(_fake_ort([]), "cuda", "m.onnx", loadable=lambda s: True)  # all there


def test_tensorrt_provider_needs_libnvinfer_10_and_says_so_on_tensorrt_11(monkeypatch):
    monkeypatch.setattr(_ortgpu, "ort_cuda_major", lambda: 12)
    cuda_ok = set(_ortgpu.cuda_libraries(12))
    with pytest.raises(RuntimeError, match=r"needs libnvinfer.so.10.*pip install tensorrt-cu12-libs"):
        _ortgpu.load_provider_libraries(_fake_ort([]), "tensorrt", "m.onnx", loadable=lambda s: s in cuda_ok)
    monkeypatch.setattr(_ortgpu, "ort_cuda_major", lambda: 13)
    cuda_ok = set(_ortgpu.cuda_libraries(13)) | {"libnvinfer.so.11"}
    with pytest.raises(RuntimeError, match=r"TensorRT 10 \(libnvinfer.so.10\).*has TensorRT 11.*--backend tensorrt"):
        _ortgpu.load_provider_libraries(_fake_ort([]), "tensorrt", "m.onnx", loadable=lambda s: s in cuda_ok)
    _ortgpu.load_provider_libraries(_fake_ort([]), "tensorrt", "m.onnx",
                                    loadable=lambda s: s in cuda_ok | {"libnvinfer.so.10"})


def test_cpu_build_skips_preloading():
    assert _ortgpu.ort_cuda_major() is None  # the CPU wheel records no CUDA version
    _ortgpu.load_provider_libraries(_fake_ort([]), "cuda", "m.onnx", loadable=lambda s: False)


# ----------------------------------------------------------------------------- item 3: no fallback

@pytest.fixture
def gpu_listed(monkeypatch):
    """The CPU onnxruntime listing the CUDA provider; ``behave`` decides what a CUDA session does."""
    import onnxruntime as ort

    real, seen = ort.InferenceSession, []
    state = {"behave": None}

    def session(path, sess_options=None, providers=None, **kwargs):
        seen.append(kwargs)
        return state["behave"](lambda: real(path, sess_options=sess_options, providers=["CPUExecutionProvider"]),
                               kwargs)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(ort_backend, "load_provider_libraries", lambda *a, **k: None)
    monkeypatch.setattr(ort_backend, "ort_cuda_major", lambda: 12)
    return state, seen


def test_missing_library_fallback_is_an_error_with_orts_own_message(gpu_listed, capfd):
    state, seen = gpu_listed

    def library_missing(cpu_session, kwargs):  # onnxruntime-gpu: log on fd 2, go on with the CPU
        os.write(2, MISSING_CUBLAS.encode())
        return cpu_session()

    state["behave"] = library_missing
    with pytest.raises(RuntimeError) as err:
        open_session(BUNDLED, device="cuda")
    msg = str(err.value)
    assert "did not attach CUDAExecutionProvider (attached: ['CPUExecutionProvider'])" in msg
    assert "libcublasLt.so.12: cannot open shared object file" in msg and "\x1b" not in msg
    assert "pip install nvidia-cublas-cu12 brings libcublasLt.so.12" in msg
    assert seen[-1] == {"enable_fallback": 0}
    assert "TryGetProviderInfo_CUDA" not in capfd.readouterr().err  # in the message, not printed twice


def test_old_ort_ep_error_fallback_is_an_error_and_not_printed(gpu_listed, capfd):
    state, _ = gpu_listed

    def ep_error(cpu_session, kwargs):  # an ORT that ignores enable_fallback: prints and retries on the CPU
        print("*************** EP Error ***************")
        print("EP Error Invalid CUDA EP option: cudnn_conv_algo when using ['CUDAExecutionProvider']")
        print("Falling back to ['CPUExecutionProvider'] and retrying.")
        return cpu_session()

    state["behave"] = ep_error
    with pytest.raises(RuntimeError, match=r"did not attach.*EP Error Invalid CUDA EP option: cudnn_conv_algo"):
        open_session(BUNDLED, device="cuda")
    assert "Falling back" not in capfd.readouterr().out


def test_attached_session_keeps_orts_warnings_and_has_no_run_fallback(capfd):
    import onnxruntime as ort

    real = ort.InferenceSession

    def warns(path, sess_options=None, providers=None, **kwargs):
        os.write(2, b"[W:onnxruntime:, stand-in] a provider warning\n")
        return real(path, sess_options=sess_options, providers=providers)

    fake = types.SimpleNamespace(InferenceSession=warns)
    sess, captured = _ortgpu.create_session(fake, BUNDLED, ort.SessionOptions(), ["CPUExecutionProvider"])
    assert "a provider warning" in captured and "a provider warning" in capfd.readouterr().err
    assert sess._enable_fallback is False  # ORT's run() would otherwise retry a failed GPU run on the CPU
    assert _ortgpu.ort_error("nothing to see\n") == ""


def test_missing_onnxruntime_says_which_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ort(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    with pytest.raises(ModuleNotFoundError, match=r"srdeploy\[cpu\].*srdeploy\[gpu\]") as err:
        ort_backend.OrtSession(BUNDLED)
    assert err.value.name == "onnxruntime"  # the CLI's one line then names the cpu extra
