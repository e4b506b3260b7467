"""srdeploy's CUDA runtime calls against the real ``cuda.bindings.runtime`` (issue 23, item 6).

cuda-python installs and imports without a GPU (the ``dev`` extra brings ``cuda-bindings``; torch's
CUDA wheels bring it too), so on a CPU machine these tests check that every name the code and the
recording stand-ins of test_trt_calls.py use exists in the real module, and run ``_cuda.py``'s
"no CUDA device" path through the real bindings. On a GPU machine the same tests read the real GPU.
"""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Every module that calls cuda-python (through ``Cuda``'s ``rt`` or a module bound to ``cudart``/``rt``).
CALLERS = ("runtime/backends/_cuda.py", "runtime/backends/trt.py", "export/engine.py")

cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda-bindings) is not installed: "
                             "pip install 'srdeploy[dev]'")


def _runtime_names(source: str) -> set[tuple[str, ...]]:
    """Attribute paths read from the CUDA runtime module: ``rt.X.Y``, ``cudart.X``, ``self.rt.X``,
    ``cuda.rt.X`` -> ("X", "Y"); plus ``cuda...`` names looked up by string (getattr on cudaError_t)."""
    found: set[tuple[str, ...]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            chain, cur = [], node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            chain.append(cur.id if isinstance(cur, ast.Name) else "")
            chain.reverse()  # e.g. ["self", "rt", "cudaError_t", "cudaSuccess"]
            for i, part in enumerate(chain[:-1]):
                if part in ("rt", "cudart") and chain[i + 1].startswith("cuda"):
                    found.add(tuple(chain[i + 1:]))
                    break
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                re.fullmatch(r"cudaError\w+", node.value):
            found.add(("cudaError_t", node.value))
    # Only the longest paths: ("cudaError_t",) is covered by ("cudaError_t", "cudaSuccess").
    return {p for p in found if not any(q[:len(p)] == p and q != p for q in found)}


def _resolves(path: tuple[str, ...]) -> bool:
    obj = cudart
    for part in path:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def test_every_cuda_runtime_name_the_code_uses_exists_in_cuda_bindings():
    used = set().union(*(_runtime_names((ROOT / f).read_text()) for f in CALLERS))
    calls = {p[0] for p in used}
    # the calls the TensorRT backend and build-engine make (so the scan cannot come back empty)
    assert {"cudaGetDeviceCount", "cudaSetDevice", "cudaGetDeviceProperties", "cudaMalloc", "cudaMallocHost",
            "cudaMemcpyAsync", "cudaStreamCreate", "cudaStreamSynchronize", "cudaStreamDestroy", "cudaFree",
            "cudaFreeHost", "cudaMemGetInfo", "cudaGetErrorString"} <= calls, sorted(calls)
    missing = sorted(".".join(p) for p in used if not _resolves(p))
    assert not missing, f"not in the installed cuda.bindings.runtime: {missing}"


def test_stand_ins_only_use_real_names():
    from test_trt_calls import Recorder, stand_in_cudart

    def walk(ns, prefix=()):
        for name, value in vars(ns).items():
            path = (*prefix, name)
            yield path
            if isinstance(value, types.SimpleNamespace):
                yield from walk(value, path)

    invented = sorted(".".join(p) for p in walk(stand_in_cudart(Recorder())) if not _resolves(p))
    assert not invented, f"the stand-in has names the real module lacks: {invented}"
    # and the call the stand-in's stream handle imitates returns an object, not an int
    assert not isinstance(cudart.cudaStream_t(0x10), int) and int(cudart.cudaStream_t(0x10)) == 0x10


def test_cuda_error_path_through_the_real_bindings():
    from srdeploy.runtime.backends._cuda import Cuda, import_cudart

    cuda = Cuda(import_cudart())
    assert cuda.rt is cudart
    err, *rest = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or rest[0] == 0:  # this machine: no driver or no GPU
        for call in (lambda: cuda.select(0), lambda: cuda.identity(0), lambda: cuda.free_memory(0)):
            with pytest.raises(RuntimeError, match=r"^no CUDA device: cudaGetDeviceCount says cudaError\w+: .+; "
                                                   r"this needs an NVIDIA GPU"):
                call()
        return
    count = rest[0]  # a GPU machine: the real device, and the out-of-range device error
    name, cc, _ = cuda.identity(0)
    assert name and re.fullmatch(r"\d+\.\d+", cc)
    with pytest.raises(RuntimeError, match=f"cuda:{count} requested but {count} CUDA device"):
        cuda.select(count)
    assert cuda.free_memory(0) > 0
