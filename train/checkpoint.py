"""Self-describing checkpoints: architecture name + keyword arguments + weights (+ training state).

A checkpoint is a dict saved with ``torch.save`` and read back with ``weights_only=True``, so
loading a model file never runs code. Layout (format_version 1)::

    format: "srdeploy.checkpoint"      format_version: 1
    arch: "SRResNet"                   kwargs: {"scale": 4, "num_blocks": 16, ...}
    scale: 4                           state_dict: {...}
    ema_state_dict: {...} (optional)   plus anything training adds (step, optimizer, scheduler,
                                       settings, metrics, best_psnr, versions, rng, ...)
    import: {...} (imported models)    source file, its sha256, wrapper, conventions, facts

``arch`` is a training architecture (``archs.ARCHS``) or a model family (``families.FAMILIES``:
srdeploy's SRResNet and the generators of other codebases, which ``srdeploy import`` writes).
Before anything is built, the kwargs are checked against the weights' own shapes and counts
(``families.check_kwargs_fit``), so an edited file cannot make srdeploy allocate a huge model.

Writes are atomic: a temporary file in the same folder, fsync, then ``os.replace``, so a run
killed at any moment (SIGKILL included) leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import families
from .archs import ARCHS, DETECT
from .serialization import load_failure, torch_load_safely  # noqa: F401  (re-exported: older imports)

FORMAT = "srdeploy.checkpoint"
FORMAT_VERSION = 1


def library_versions() -> dict[str, str]:
    """Versions recorded in checkpoints and reports."""
    import numpy

    # str(): torch.__version__ is a TorchVersion object, which weights_only loading rejects.
    versions = {"python": platform.python_version(), "torch": str(torch.__version__), "numpy": str(numpy.__version__)}
    try:
        from importlib.metadata import version

        versions["srdeploy"] = version("srdeploy")
    except Exception:  # running from a checkout without install
        versions["srdeploy"] = "unknown"
    return versions


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, arch: str, kwargs: dict,
                    ema: nn.Module | None = None, **extra: Any) -> None:
    """Write a self-describing checkpoint atomically.

    Args:
        path: destination file (``.pt``).
        model: the model whose ``state_dict`` is saved (unwrap DDP first).
        arch: registered architecture name (a key of ``ARCHS``).
        kwargs: keyword arguments that rebuild the model with ``build_model(arch, **kwargs)``.
        ema: optional EMA copy of the model, saved as ``ema_state_dict``.
        **extra: training state (plain Python / tensors only: step, optimizer, settings, ...).
    """
    if arch not in ARCHS and arch not in families.BY_NAME:
        raise ValueError(f"save_checkpoint: unknown architecture {arch!r}")
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "kwargs": dict(kwargs),
        "scale": kwargs.get("scale"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "versions": library_versions(),
    }
    if ema is not None:
        ckpt["ema_state_dict"] = {k: v.detach().cpu() for k, v in ema.state_dict().items()}
    ckpt.update(extra)
    atomic_torch_save(ckpt, path)


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint (``weights_only=True``: never runs code from the file).

    Every problem with the file is a one-line ValueError (FileNotFoundError when missing) that
    names it: not loadable, not an srdeploy checkpoint, unknown architecture, ``kwargs`` that
    are not a mapping or that the architecture does not take.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file does not exist")
    ckpt = torch_load_safely(path, "a valid srdeploy checkpoint", map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not an srdeploy checkpoint (no 'format': {FORMAT!r} entry); bare state dicts "
                         "and other codebases' files: convert them with `srdeploy import FILE -o MODEL.pt`")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format_version {ckpt['format_version']} is newer than this "
                         f"srdeploy supports ({FORMAT_VERSION}); upgrade srdeploy")
    for key in ("arch", "kwargs", "state_dict"):
        if key not in ckpt:
            raise ValueError(f"{path}: srdeploy checkpoint is missing {key!r}")
    if ckpt["arch"] not in ARCHS and ckpt["arch"] not in families.BY_NAME:
        raise ValueError(f"{path}: unknown architecture {ckpt['arch']!r}; known: "
                         f"{sorted(set(ARCHS) | set(families.BY_NAME))}")
    _check_kwargs(ckpt["arch"], ckpt["kwargs"], path)
    return ckpt


def _accepted(arch: str) -> set[str]:
    import inspect

    if arch in families.BY_NAME:
        return families.accepted_kwargs(families.BY_NAME[arch])
    return {p.name for p in inspect.signature(ARCHS[arch]).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _check_kwargs(arch: str, kwargs: Any, name: Any) -> None:
    """``kwargs`` must be a mapping of keyword arguments that the architecture accepts."""
    if not isinstance(kwargs, dict):
        raise ValueError(f"{name}: checkpoint 'kwargs' must be a mapping of {arch} keyword arguments, got "
                         f"{type(kwargs).__name__}; the file is damaged or not written by srdeploy's save_checkpoint")
    accepted = _accepted(arch)
    unknown = sorted(str(k) for k in kwargs if k not in accepted)
    if unknown:
        raise ValueError(f"{name}: checkpoint kwargs {unknown} are not arguments of {arch} (it takes "
                         f"{sorted(accepted)}); the file was written by another version or program: re-save it "
                         "with srdeploy's save_checkpoint")


def _shape_mismatch(model: nn.Module, state: Any) -> str:
    """A short account of why ``state`` does not load into ``model``."""
    if not isinstance(state, dict):
        return f"the weights are a {type(state).__name__}, not a state dict"
    own = model.state_dict()
    wrong = [k for k in own if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} tensor(s) of the wrong shape, e.g. {k} {tuple(state[k].shape)} where the "
                     f"model has {tuple(own[k].shape)}")
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    return "; ".join(parts) or "the weights do not load"


def _training_model(arch: str, kwargs: dict, state: Any, name: Any) -> nn.Module:
    """A training architecture (``ARCHS``, e.g. the discriminator), kwargs checked against ``state`` first."""
    if not isinstance(state, dict):
        raise ValueError(f"{name}: weights do not match {arch}({kwargs}): the weights are a "
                         f"{type(state).__name__}, not a state dict")
    families.check_fit(arch, DETECT[arch], ARCHS[arch], kwargs, state, str(name))
    model = ARCHS[arch](**kwargs)
    model.load_state_dict(state)
    return model


def model_from_checkpoint(ckpt: dict | str | os.PathLike, *, use_ema: bool = True,
                          source: str | os.PathLike | None = None) -> nn.Module:
    """Rebuild the model of a checkpoint (EMA weights when present and ``use_ema``), in eval mode.

    A model family's checkpoint gives the deployable model (``families.deployable``: the network
    with its codebase's conventions applied, RGB [0, 1] in and out).

    Args:
        ckpt: a path, or a dict from ``load_checkpoint``.
        use_ema: prefer ``ema_state_dict`` when the checkpoint has one.
        source: the file name for messages when ``ckpt`` is a dict.

    Raises:
        ValueError: one line naming the file when the kwargs do not fit the weights (checked
            before anything is built), the architecture cannot be built from them, or the
            weights do not load.
    """
    name = source if source is not None else (ckpt if not isinstance(ckpt, dict) else "checkpoint")
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    arch, kwargs = ckpt["arch"], ckpt["kwargs"]
    _check_kwargs(arch, kwargs, name)
    key = "ema_state_dict" if use_ema and ckpt.get("ema_state_dict") else "state_dict"
    state = ckpt[key]
    if not isinstance(state, dict):
        raise ValueError(f"{name}: weights do not match {arch}({kwargs}): the {key} is a {type(state).__name__}, "
                         "not a state dict; the file is damaged")
    try:
        if arch in families.BY_NAME:
            model = families.deployable(arch, kwargs, state, str(name))
        else:
            model = _training_model(arch, kwargs, state, name)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"{name}: cannot build {arch} from the checkpoint's kwargs {kwargs} ({exc}); the file is "
                         "damaged or was not written by srdeploy") from None
    except RuntimeError as exc:  # load_state_dict: missing, unexpected or wrongly shaped tensors
        # kwargs already fit the weights' shapes, so building again for the account is bounded
        build = families.BY_NAME[arch].build if arch in families.BY_NAME else ARCHS[arch]
        why = _shape_mismatch(build(**kwargs), state) if build is not None else str(exc).splitlines()[0]
        raise ValueError(f"{name}: weights do not match {arch}({kwargs}): {why} ({key}); "
                         "the file is damaged or its kwargs were edited: use the checkpoint as it was written") from None
    except ValueError as exc:
        msg = str(exc)
        if not msg.startswith(str(name)):
            msg = f"{name}: cannot build {arch} from the checkpoint's kwargs {kwargs} ({msg}); the file is damaged " \
                  "or was not written by srdeploy"
        raise ValueError(msg) from None
    return model.eval()


# Model families whose checkpoints upscale images (what upscale, export, eval and bench can run).
GENERATORS = tuple(f.name for f in families.FAMILIES)


def load_generator(path: str | os.PathLike, *, use_ema: bool = True) -> tuple[nn.Module, dict]:
    """``(model, ckpt)`` for an SR generator checkpoint; a one-line ValueError naming the file otherwise.

    Refuses checkpoints of other registered architectures (SRGAN's discriminator) with what to
    use instead, on top of ``load_checkpoint`` and ``model_from_checkpoint``'s checks.
    """
    ckpt = load_checkpoint(path)
    if ckpt["arch"] not in GENERATORS:
        raise ValueError(f"{path}: holds a {ckpt['arch']}, not an SR generator ({', '.join(GENERATORS)}); "
                         "use the generator checkpoint of the run (last.pt or best.pt)")
    return model_from_checkpoint(ckpt, use_ema=use_ema, source=path), ckpt
