"""``open_session``: open a model on the backend the request and the file call for.

Opening is split in two, as Polygraphy separates loaders from runners: a ``SessionRecipe``
(model path, backend, device, precision, threads, backend options) is a small frozen, picklable
value that can be sent to another process (a Ray actor); ``open_session(recipe)`` opens it there.
Which backend opens which file, and where its adapter lives, is the one table in
``srdeploy.runtime.backends``. The PyTorch adapter lives outside the runtime (it needs
srdeploy.train and torch) and is found through the ``srdeploy.backends`` entry-point group, so the
runtime never imports torch. A requested backend, device or precision that cannot be honoured is
an error, never a silent fallback.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .backends import BY_NAME, ENTRY_POINT_GROUP, backend_for, parse_device
from .backends.options import make_options
from .contract import check_contract
from .metadata import PRECISIONS
from .session import Session

#: ``precision="auto"``: the fastest path a ``srdeploy tune`` profile measured on this machine within
#: its max loss, else the exact default; resolved by ``SessionRecipe.resolved`` (runtime/profile.py).
AUTO = "auto"


@dataclass(frozen=True)
class SessionRecipe:
    """Everything needed to open a session, and nothing that is open.

    Attributes:
        model: model file (``.onnx``, ``.engine``/``.plan``, ``.pt``).
        backend: backend name or alias; "auto" = from the file type.
        device: "cpu", "cuda" or "cuda:N"; None = the backend's default (see the table).
        precision: "fp32", "fp16", "bf16" (OpenVINO, CPUs with it) or "int8" (a quantized
            file, or the FP32 file's INT8 sibling ``NAME_int8.onnx`` beside it); None = what the
            model file computes; "auto" = what ``srdeploy tune`` measured fastest here within its
            max loss (``srdeploy.runtime.profile``), else None.
        threads: CPU threads (ONNX Runtime intra-op, torch); None = the backend's default.
        options: the backend's options dataclass (``srdeploy.runtime.backends.options``) or None.
        note: what "auto" chose and why (set by ``resolved``; the commands print it first).
    """

    model: str
    backend: str = "auto"
    device: str | None = None
    precision: str | None = None
    threads: int | None = None
    options: Any = None
    note: str = ""

    def resolved(self) -> "SessionRecipe":
        """The same recipe with the backend, device, precision and options made explicit (and checked).

        ``precision="auto"`` becomes the profile's choice (model file, backend, precision, threads)
        with a ``note``; ``"int8"`` on an FP32 ONNX file with an INT8 sibling becomes that sibling.
        """
        if self.precision == AUTO:
            from .profile import choose

            return choose(self).resolved()
        if self.precision == "int8":
            return _int8_sibling(self)._resolved()
        return self._resolved()

    def _resolved(self) -> "SessionRecipe":
        backend = backend_for(self.model, self.backend)
        device = self.device or BY_NAME[backend].default_device
        parse_device(device, backend=backend)
        if self.precision not in (None, *PRECISIONS):
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or {AUTO}, got {self.precision!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        return replace(self, model=str(self.model), backend=backend, device=device,
                       options=make_options(backend, self.options))


def _int8_sibling(recipe: SessionRecipe) -> SessionRecipe:
    """``precision="int8"`` on an FP32 ONNX file runs its INT8 sibling when one was quantized from it
    (named in ``note``); an INT8 file, or no sibling, is left to the backend (which refuses FP32)."""
    from .profile import find_int8_sibling, int8_sibling_name, read_props

    model = Path(recipe.model)
    if model.suffix.lower() != ".onnx" or not model.is_file() or not int8_sibling_name(model).is_file():
        return recipe
    if read_props(model).get("srdeploy.precision", "fp32") != "fp32":
        return recipe
    sibling, why = find_int8_sibling(model)
    if sibling is None:
        raise ValueError(f"{model}: precision int8 needs its INT8 model, and {why}")
    return replace(recipe, model=str(sibling), note=f"precision int8 -> {sibling} (the INT8 model quantized "
                                                    f"from {model.name})")


def _adapter(backend: str):
    """The Session class (or opener) of a backend, imported only now."""
    where = BY_NAME[backend].adapter
    if where.startswith("entry-point:"):
        name = where.split(":", 1)[1]
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            raise RuntimeError(f"no {backend} backend is installed (entry point {ENTRY_POINT_GROUP}:{name}); install "
                               "it with pip install 'srdeploy[train]', or export the checkpoint to ONNX with "
                               "`srdeploy export`")
        return found[0].load()
    module, attr = where.split(":")
    return getattr(importlib.import_module(f"{__package__}.backends.{module}"), attr)


def open_session(model: "str | os.PathLike | SessionRecipe", *, backend: str = "auto", device: str | None = None,
                 precision: str | None = None, threads: int | None = None, options: Any = None,
                 **option_kwargs) -> Session:
    """Open an SR model for inference.

    Args:
        model: a ``SessionRecipe``, or the model path (then the other arguments make the recipe):
            ``.onnx`` (ONNX Runtime), ``.engine``/``.plan`` (TensorRT) or ``.pt`` (PyTorch
            checkpoint; needs ``srdeploy[train]``).
        backend: "auto" (from the file) or a name/alias from ``srdeploy.runtime.backends``.
        device: "cpu", "cuda" or "cuda:N"; None = the backend's default ("cpu" for ONNX Runtime
            and PyTorch, "cuda:0" for TensorRT and ONNX Runtime's TensorRT provider).
        precision: "fp32", "fp16", "bf16", "int8" or "auto"; None = what the model file computes (an
            engine's built precision, an ONNX file's metadata, fp32 for a checkpoint). Unavailable
            = error (bf16 only on OpenVINO where the device has it). "int8" on an FP32 ONNX file
            opens its INT8 sibling ``NAME_int8.onnx``; "auto" is resolved from the ``srdeploy
            tune`` profile (see ``SessionRecipe``); the session's ``details["note"]`` says what ran.
        threads: CPU threads (ONNX Runtime intra-op threads, torch.set_num_threads).
        options: the backend's options dataclass (``OrtOptions``, ``TrtOptions``, ``TorchOptions``,
            ``OpenVinoOptions``)
            or a mapping of its fields; ``**option_kwargs`` are the same fields as keywords.
            Unknown fields are an error.

    Returns:
        An open ``Session``; use it as a context manager or call ``close()``.
    """
    if isinstance(model, SessionRecipe):
        if option_kwargs or options is not None or backend != "auto" or device or precision or threads:
            raise TypeError("open_session(recipe) takes no other arguments: put them in the recipe")
        recipe = model
    else:
        recipe = SessionRecipe(str(model), backend, device, precision, threads,
                               make_options(backend_for(model, backend), options, **option_kwargs))
    recipe = recipe.resolved()
    path = Path(recipe.model)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file does not exist")
    opener = _adapter(recipe.backend)
    if recipe.backend == "tensorrt" and recipe.threads is not None:
        raise ValueError("threads does not apply to the TensorRT backend")
    if recipe.backend == "torch":
        session = opener(path, device=recipe.device, precision=recipe.precision or "fp32", threads=recipe.threads,
                         options=recipe.options)
    else:
        session = opener(path, backend=recipe.backend, device=recipe.device, precision=recipe.precision,
                         threads=recipe.threads, options=recipe.options)
    try:  # the metadata against the graph: a wrong scale or radius is refused here, not after a run
        check_contract(session)
    except BaseException:
        session.close()
        raise
    if recipe.note:
        session.details = {**(getattr(session, "details", None) or {}), "note": recipe.note}
    return session


def describe_session(session: Session, model, upscaler=None) -> str:
    """The first line every runtime command prints: model, backend, providers, device, precision, tiling.

    Args:
        session: the open session.
        model: the model path as the user gave it (the session's own ``path`` wins: precision
            auto/int8 may run a sibling file).
        upscaler: the ``Upscaler`` (its ``describe()``, batch and feather), if the command tiles.
    """
    info = session.info
    used = session.details.get("providers") or session.details.get("gpu") or ""
    where = " ".join(str(part) for part in (session.backend, used, session.device, session.precision) if part)
    model = getattr(session, "path", None) or model
    line = f"model {model} (x{info.scale}, receptive radius {info.receptive_radius}) on {where}"
    if upscaler is not None:
        line += f"; {upscaler.describe()}, batch {upscaler.batch}" + (f", feather {upscaler.feather}" if upscaler.feather else "")
    if session.details.get("note"):  # what --precision auto chose and why: never silent
        line += f"; {session.details['note']}"
    return line


def default_model_path() -> Path:
    """The bundled default model used when no ``--model`` is given.

    Looked up, first match wins:
      1. ``$SRDEPLOY_MODEL`` (a file path);
      2. ``*.onnx`` in the ``srdeploy.models`` package: the repository's ``models/`` folder,
         installed as package data (``site-packages/srdeploy/models/``) or, in an editable
         install / checkout, ``models/`` at the repository root.
    Within the folder, FP32 models are preferred over files whose name contains "fp16" or "int8"
    (the bundled INT8 model is an alternative, not the default), then alphabetical order.
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
        found = sorted(folder.glob("*.onnx"), key=lambda p: ("fp16" in p.name.lower() or "int8" in p.name.lower(), p.name))
        if found:
            return found[0]
    raise FileNotFoundError(
        "no default model: no *.onnx in " + ", ".join(str(f) for f in seen) + ". "
        "Pass --model MODEL.onnx (export one with `srdeploy export CHECKPOINT -o MODEL.onnx`) or set SRDEPLOY_MODEL.")
