"""Reading PyTorch files safely: ``torch.load(weights_only=True)`` with one-line errors.

Every model file srdeploy reads (its own checkpoints, VGG weights, state dicts from other
codebases) goes through ``torch_load_safely``: the weights-only unpickler never runs code from
the file, and a refusal is one line naming the file, without torch's advice to load it unsafely.
This module imports nothing of srdeploy, so architectures and checkpoints can both use it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch


# Lines of torch.load's errors that are advice, not a diagnosis. Its advice to re-run with
# weights_only=False recommends running code from an untrusted file: never pass it on.
_TORCH_ADVICE = ("weights_only", "re-running", "in pytorch 2.6", "check the documentation", "torch.serialization",
                 "add_safe_globals", "safe_globals")


def load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one line, without torch's unsafe advice."""
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if refused:  # the one fact that matters; the rest of that paragraph is advice to load unsafely
        return f"{type(exc).__name__}: it holds a pickled {refused.group(1)} object, which the safe loader refuses"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [line for line in lines if not any(word in line.lower() for word in _TORCH_ADVICE)]
    reason = " ".join(kept)
    if isinstance(exc, EOFError) or not reason:
        return f"{type(exc).__name__}: truncated or not a PyTorch file" if isinstance(exc, EOFError) or not lines \
            else f"{type(exc).__name__}: rejected by the safe (weights-only) loader"
    return f"{type(exc).__name__}: {reason}"


def torch_load_safely(path: str | os.PathLike, what: str, *, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; any failure is a one-line ValueError naming the file.

    Args:
        path: an existing file.
        what: what the file should be, for the message ("not <what>"), e.g. "a valid srdeploy checkpoint".
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes), not {what}")
    if _is_torchscript(path):  # torch.load would hand it to torch.jit.load (with a warning) to be refused there
        raise ValueError(
            f"{path}: a TorchScript archive (compiled model code), not {what}; srdeploy never loads code from a "
            "file. Where you trust it, save only its weights: python -c \"import torch; "
            f"torch.save(torch.jit.load('{path.name}').state_dict(), 'weights.pth')\", then use weights.pth")
    try:
        # TorchVersion (a str subclass, no code) is allowed so checkpoints written before
        # library_versions() stored plain strings still load.
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, unsafe globals, ...
        raise ValueError(f"{path}: not {what} (torch.load failed: {load_failure(exc)})") from None


def _is_torchscript(path: Path) -> bool:
    """A zip whose records hold TorchScript's ``code/`` or ``constants.pkl`` (a torch.save zip has neither)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 1)[-1].startswith("code/") or n.endswith("/constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
