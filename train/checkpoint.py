"""Self-describing checkpoints: architecture name + keyword arguments + weights (+ training state).

A checkpoint is a dict saved with ``torch.save`` and read back with ``weights_only=True``, so
loading a model file never runs code. Layout (format_version 1)::

    format: "srdeploy.checkpoint"      format_version: 1
    arch: "SRResNet"                   kwargs: {"scale": 4, "num_blocks": 16, ...}
    scale: 4                           state_dict: {...}
    ema_state_dict: {...} (optional)   plus anything training adds (step, optimizer, scheduler,
                                       settings, metrics, best_psnr, versions, rng, ...)

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

from .archs import ARCHS, build_model

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
    if arch not in ARCHS:
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
    """Read and validate a checkpoint (``weights_only=True``: never runs code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file does not exist")
    try:
        # TorchVersion (a str subclass, no code) is allowed so checkpoints written before
        # library_versions() stored plain strings still load.
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, unsafe globals, ...
        raise ValueError(f"{path}: not a valid srdeploy checkpoint (torch.load failed: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not an srdeploy checkpoint (no 'format': {FORMAT!r} entry); "
                         "bare state dicts cannot be rebuilt, save with srdeploy.train.checkpoint.save_checkpoint")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format_version {ckpt['format_version']} is newer than this "
                         f"srdeploy supports ({FORMAT_VERSION}); upgrade srdeploy")
    for key in ("arch", "kwargs", "state_dict"):
        if key not in ckpt:
            raise ValueError(f"{path}: srdeploy checkpoint is missing {key!r}")
    if ckpt["arch"] not in ARCHS:
        raise ValueError(f"{path}: unknown architecture {ckpt['arch']!r}; registered: {sorted(ARCHS)}")
    return ckpt


def model_from_checkpoint(ckpt: dict | str | os.PathLike, *, use_ema: bool = True) -> nn.Module:
    """Rebuild the model of a checkpoint (EMA weights when present and ``use_ema``), in eval mode."""
    source = ckpt
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    model = build_model(ckpt["arch"], **ckpt["kwargs"])
    state = ckpt.get("ema_state_dict") if use_ema and ckpt.get("ema_state_dict") else ckpt["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        name = source if not isinstance(source, dict) else "checkpoint"
        raise ValueError(f"{name}: weights do not match {ckpt['arch']}({ckpt['kwargs']}): {exc}") from exc
    return model.eval()
