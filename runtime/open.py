"""``open_session``: pick the backend adapter from the model file and the request.

=================  ==========================  =====================================
file               backend="auto" opens with   other backends allowed
=================  ==========================  =====================================
``.onnx``          onnxruntime                 ``onnxruntime-tensorrt`` (ORT's TensorRT provider)
``.engine/.plan``  tensorrt (native)           -
``.pt/.pth``       torch (entry point)         -
=================  ==========================  =====================================

A requested backend, device or precision that cannot be honoured is an error, never a silent
fallback. The PyTorch adapter lives outside the runtime (it needs srdeploy.train and torch) and
is found through the ``srdeploy.backends`` entry-point group, so the runtime never imports torch.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

from .session import Session

BACKENDS = ("auto", "onnxruntime", "onnxruntime-tensorrt", "tensorrt", "torch")
_ALIASES = {"ort": "onnxruntime", "ort-trt": "onnxruntime-tensorrt", "trt": "tensorrt", "pytorch": "torch"}
_BY_SUFFIX = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt",
              ".pt": "torch", ".pth": "torch"}
_ALLOWED = {"onnxruntime": {"onnxruntime", "onnxruntime-tensorrt"}, "tensorrt": {"tensorrt"}, "torch": {"torch"}}
ENTRY_POINT_GROUP = "srdeploy.backends"


def backend_for(path: str | os.PathLike, backend: str = "auto") -> str:
    """The backend that opens ``path`` for the request ``backend`` (raises when they disagree)."""
    backend = _ALIASES.get(backend, backend)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    suffix = Path(path).suffix.lower()
    natural = _BY_SUFFIX.get(suffix)
    if natural is None:
        raise ValueError(f"{path}: unknown model file type {suffix!r}; expected .onnx (ONNX Runtime), "
                         ".engine/.plan (TensorRT) or .pt (PyTorch checkpoint)")
    if backend == "auto":
        return natural
    if backend not in _ALLOWED[natural]:
        hint = {"tensorrt": "build an engine with `srdeploy build-engine MODEL.onnx -o MODEL.engine`",
                "onnxruntime": "export an ONNX model with `srdeploy export CHECKPOINT -o MODEL.onnx`",
                "onnxruntime-tensorrt": "export an ONNX model with `srdeploy export CHECKPOINT -o MODEL.onnx`",
                "torch": "pass the training checkpoint (.pt)"}[backend]
        raise ValueError(f"{path}: backend {backend!r} cannot open a {suffix} file; {hint}")
    return backend


def open_session(path: str | os.PathLike, *, backend: str = "auto", device: str | None = None,
                 precision: str | None = None, threads: int | None = None, **options) -> Session:
    """Open an SR model for inference.

    Args:
        path: ``.onnx`` (ONNX Runtime), ``.engine``/``.plan`` (TensorRT) or ``.pt`` (PyTorch
            checkpoint; needs ``srdeploy[train]``).
        backend: "auto" (from the file), "onnxruntime", "onnxruntime-tensorrt", "tensorrt" or
            "torch" (aliases: ort, ort-trt, trt, pytorch).
        device: "cpu", "cuda" or "cuda:N"; None = "cpu" for ONNX Runtime and PyTorch, "cuda:0"
            for TensorRT (ONNX Runtime's TensorRT provider included).
        precision: "fp32" or "fp16"; None = what the model file computes (an engine's built
            precision, an ONNX file's metadata, fp32 for a checkpoint). An unavailable
            precision is an error.
        threads: CPU threads (ONNX Runtime intra-op threads, torch.set_num_threads).
        **options: backend-specific options: onnxruntime: ``inter_op_threads``,
            ``graph_optimization`` ("disable"|"basic"|"extended"|"all"), ``provider_options``,
            ``trt_cache_dir``; tensorrt: ``profile`` (optimisation profile index); torch:
            whatever the adapter documents.

    Returns:
        An open ``Session``; use it as a context manager or call ``close()``.
    """
    path = Path(path)
    chosen = backend_for(path, backend)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file does not exist")
    if precision not in (None, "fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    if chosen in ("onnxruntime", "onnxruntime-tensorrt"):
        from .ort_backend import OrtSession

        if chosen == "onnxruntime-tensorrt":
            return OrtSession(path, device=device or "cuda:0", provider="tensorrt", precision=precision,
                              threads=threads, **options)
        return OrtSession(path, device=device or "cpu", precision=precision, threads=threads, **options)
    if chosen == "tensorrt":
        from .trt_backend import TrtSession

        if threads is not None:
            raise ValueError("threads does not apply to the TensorRT backend")
        return TrtSession(path, device=device or "cuda:0", precision=precision, **options)
    # torch: an optional adapter registered by srdeploy.export (needs torch + srdeploy.train)
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "torch"]
    if not found:
        raise RuntimeError(f"{path}: no PyTorch backend is installed (entry point {ENTRY_POINT_GROUP}:torch); "
                           "install it with pip install 'srdeploy[train]', or export the checkpoint to ONNX "
                           "with `srdeploy export`")
    opener = found[0].load()
    kwargs = dict(options)
    if threads is not None:
        kwargs["threads"] = threads
    return opener(path, device=device or "cpu", precision=precision or "fp32", **kwargs)


def default_model_path() -> Path:
    """The bundled default model used when no ``--model`` is given.

    Looked up, first match wins:
      1. ``$SRDEPLOY_MODEL`` (a file path);
      2. ``*.onnx`` in the ``srdeploy.models`` package: the repository's ``models/`` folder,
         installed as package data (``site-packages/srdeploy/models/``) or, in an editable
         install / checkout, ``models/`` at the repository root.
    Within the folder, FP32 models are preferred over files whose name contains "fp16", then
    alphabetical order.
    """
    import importlib.util

    env = os.environ.get("SRDEPLOY_MODEL")
    if env:
        p = Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"SRDEPLOY_MODEL={env}: no such model file")
        return p
    folders: list[Path] = []
    try:
        spec = importlib.util.find_spec("srdeploy.models")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(p) for p in spec.submodule_search_locations]
    folders.append(Path(__file__).resolve().parent.parent / "models")  # checkout without install
    seen: list[Path] = []
    for folder in folders:
        if folder.resolve() in seen:
            continue
        seen.append(folder.resolve())
        found = sorted(folder.glob("*.onnx"), key=lambda p: ("fp16" in p.name.lower(), p.name))
        if found:
            return found[0]
    raise FileNotFoundError(
        "no default model: no *.onnx in " + ", ".join(str(f) for f in seen) + ". "
        "Pass --model MODEL.onnx (export one with `srdeploy export CHECKPOINT -o MODEL.onnx`) or set SRDEPLOY_MODEL.")
