"""The one table of inference backends: names, aliases, file types, devices, where the adapter lives.

Strings only, so every CLI can build its ``--backend`` choices and help from it without importing
onnxruntime, TensorRT or torch; ``srdeploy.runtime.open`` reads it to pick and import the adapter.

=========================  =========  ==========================  ===============  ===============
backend                    aliases    opens                       auto for         default device
=========================  =========  ==========================  ===============  ===============
``onnxruntime``            ort        .onnx                       .onnx            cpu
``onnxruntime-tensorrt``   ort-trt    .onnx (ORT's TensorRT EP)   -                cuda:0
``tensorrt``               trt        .engine .plan .trt          .engine .plan    cuda:0
``torch``                  pytorch    .pt .pth (checkpoints)      .pt .pth         cpu
``openvino``               ov         .onnx .xml (OpenVINO IR)    .xml             cpu (gpu, npu)
=========================  =========  ==========================  ===============  ===============

A requested backend, device or precision that cannot be honoured is an error, never a fallback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Backend:
    """One row of the table.

    Attributes:
        name: canonical name (``--backend`` value).
        aliases: other accepted names.
        suffixes: model file types this backend opens.
        auto_suffixes: file types for which ``--backend auto`` chooses it.
        devices: device kinds it runs on ("cpu", "cuda", "gpu", "npu"); "cuda" accepts "cuda:N",
            "gpu"/"npu" (OpenVINO's names) accept "gpu.N" or "gpu:N".
        default_device: device when none is given.
        adapter: "module:attribute" of the Session class or opener (relative to this package),
            or "entry-point:NAME" for adapters that live outside the runtime (torch).
        hint: how to get a file this backend opens (for error messages).
    """

    name: str
    aliases: tuple[str, ...]
    suffixes: tuple[str, ...]
    auto_suffixes: tuple[str, ...]
    devices: tuple[str, ...]
    default_device: str
    adapter: str
    hint: str


TABLE: tuple[Backend, ...] = (
    Backend("onnxruntime", ("ort",), (".onnx",), (".onnx",), ("cpu", "cuda"), "cpu", "ort:OrtSession",
            "export an ONNX model with `srdeploy export CHECKPOINT -o MODEL.onnx`"),
    Backend("onnxruntime-tensorrt", ("ort-trt",), (".onnx",), (), ("cuda",), "cuda:0", "ort:OrtSession",
            "export an ONNX model with `srdeploy export CHECKPOINT -o MODEL.onnx`"),
    Backend("tensorrt", ("trt",), (".engine", ".plan", ".trt"), (".engine", ".plan", ".trt"), ("cuda",), "cuda:0",
            "trt:TrtSession", "build an engine with `srdeploy build-engine MODEL.onnx -o MODEL.engine`"),
    Backend("torch", ("pytorch",), (".pt", ".pth"), (".pt", ".pth"), ("cpu", "cuda"), "cpu", "entry-point:torch",
            "pass the training checkpoint (.pt; needs pip install 'srdeploy[train]')"),
    Backend("openvino", ("ov",), (".onnx", ".xml"), (".xml",), ("cpu", "gpu", "npu"), "cpu",
            "openvino:OpenVinoSession", "pass an .onnx model or OpenVINO IR (.xml); needs pip install "
            "'srdeploy[openvino]'"),
)

ENTRY_POINT_GROUP = "srdeploy.backends"
BY_NAME: dict[str, Backend] = {b.name: b for b in TABLE}
ALIASES: dict[str, str] = {a: b.name for b in TABLE for a in b.aliases}
#: ``--backend`` choices: "auto" and the canonical names (aliases are accepted too).
NAMES: tuple[str, ...] = ("auto",) + tuple(b.name for b in TABLE)
MODEL_SUFFIXES: tuple[str, ...] = tuple(dict.fromkeys(s for b in TABLE for s in b.suffixes))


def help_text() -> str:
    """One-line ``--backend`` help for every CLI."""
    names = ", ".join(f"{b.name} ({'/'.join(b.aliases)})" if b.aliases else b.name for b in TABLE)
    return f"inference backend: auto (from the model file), {names}; default auto. An unavailable backend is an error"


def model_help() -> str:
    """One-line description of the model files the runtime opens."""
    parts = [f"{'/'.join(b.suffixes)} ({b.name})" for b in TABLE if b.auto_suffixes]
    return "model: " + ", ".join(parts)


def canonical(backend: str) -> str:
    """The canonical backend name for a name or alias (ValueError when unknown)."""
    name = ALIASES.get(backend, backend)
    if name not in NAMES:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(NAMES)} "
                         f"(aliases: {', '.join(f'{a}={n}' for a, n in ALIASES.items())})")
    return name


def backend_for(path: str | os.PathLike, backend: str = "auto") -> str:
    """The backend that opens ``path`` for the request ``backend`` (raises when they disagree)."""
    backend = canonical(backend)
    suffix = Path(path).suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise ValueError(f"{path}: unknown model file type {suffix!r}; expected "
                         + ", ".join(f"{'/'.join(b.auto_suffixes)} ({b.name})" for b in TABLE if b.auto_suffixes))
    if backend == "auto":
        return next(b.name for b in TABLE if suffix in b.auto_suffixes)
    if suffix not in BY_NAME[backend].suffixes:
        raise ValueError(f"{path}: backend {backend!r} cannot open a {suffix} file; {BY_NAME[backend].hint}")
    return backend


def parse_device(device: str, *, backend: str | None = None) -> tuple[str, int]:
    """``"cpu"`` -> ("cpu", 0); ``"cuda"``/``"cuda:N"`` -> ("cuda", N). The one device parser.

    OpenVINO's device kinds ``gpu`` and ``npu`` take an index as ``gpu.N`` (OpenVINO's form) or
    ``gpu:N``; the index is 0 when none is given.

    Args:
        device: the device string.
        backend: when given, the device kind must be one this backend runs on.
    """
    text = str(device)
    if text.lower().startswith(("gpu.", "npu.")):
        text = text[:3] + ":" + text[4:]
    kind, sep, index = text.lower().partition(":")
    if kind not in ("cpu", "cuda", "gpu", "npu") or (sep and not index.isdigit()) or (kind == "cpu" and sep):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N' (OpenVINO: 'gpu', 'gpu.N', 'npu'), got {device!r}")
    if backend is not None:
        row = BY_NAME[canonical(backend)]
        if kind not in row.devices:
            where = " or ".join(f"'{k}' or '{k}:N'" if k == "cuda" else f"'{k}'" for k in row.devices)
            raise ValueError(f"{row.name} backend runs on {where}, not {device!r} (device must be one of these)")
    return kind, int(index or 0)
