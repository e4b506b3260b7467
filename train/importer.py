"""``srdeploy import``: weights from another codebase -> a self-describing srdeploy checkpoint.

Steps, each refusing with one line that names the file:

1. **Read** the file without running code: ``.safetensors`` through safetensors, anything else
   (``.pth``, ``.pt``, ``.ckpt``, ``.pth.tar``) with ``torch.load(weights_only=True)``. A pickled
   whole ``nn.Module`` (or anything else that needs ``weights_only=False``) is refused, never
   unpickled; the message says how to save its state dict in an environment that trusts it.
2. **Unwrap** the usual containers: ``params_ema`` (BasicSR / Real-ESRGAN EMA weights, preferred),
   ``params``, ``state_dict``, ``model``, ``generator``, ``netG``, one level of nesting, and key
   prefixes added by ``DataParallel`` (``module.``), ``torch.compile`` (``_orig_mod.``) or
   ``netG.``.
3. **Detect** the family from keys and shapes (``families.detect``, fixed order) or take
   ``--arch``; scale, channels and block counts come from the shapes. An unknown layout names
   the closest families.
4. **Check** by building the deployable model (weights ``strict``) and running it once: the
   output must be ``scale`` times the input and finite.
5. **Write** atomically: arch, kwargs, the weights as they came (unwrapped), the source file's
   sha256, the wrapper and prefix removed, the family's conventions and facts.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import families
from .checkpoint import FORMAT, FORMAT_VERSION, atomic_torch_save, library_versions
from .serialization import torch_load_safely

WRAPPERS = ("params_ema", "params", "state_dict", "model", "generator", "netG")
PREFIXES = ("module.", "_orig_mod.", "netG.")
SAFETENSORS = ".safetensors"


@dataclass(frozen=True)
class ImportResult:
    """What ``import_weights`` wrote."""

    output: Path
    family: str
    kwargs: dict
    facts: families.Facts
    conventions: families.Conventions
    wrapper: str | None
    prefix: str | None
    source_sha256: str
    tensors: int


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _refusal(path: Path, exc: ValueError) -> ValueError:
    """The weights-only loader's refusal, with how to convert the file where it is trusted."""
    m = re.search(r"holds a pickled ([\w.]+) object", str(exc))
    what = f"a pickled Python object ({m.group(1)})" if m else "something the safe loader refuses"
    return ValueError(
        f"{path}: holds {what}, not plain tensors; srdeploy never unpickles objects (that runs code from the file). "
        "Where you trust the file and have its code, save only its weights: python -c \"import torch; "
        f"m = torch.load('{path.name}', weights_only=False); torch.save(m.state_dict(), 'weights.pth')\" "
        "(for a checkpoint dict, save the generator's entry), then import weights.pth")


def read_weights(path: str | os.PathLike) -> object:
    """The file's content, read without running code (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file does not exist")
    if path.suffix.lower() == SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        return torch_load_safely(path, "a state dict")
    except ValueError as exc:
        if "holds a pickled" in str(exc) or "Weights only load failed" in str(exc):
            raise _refusal(path, exc) from None
        raise


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items())


def unwrap(obj: object, name: str = "file") -> tuple[dict, str | None, str | None]:
    """(state dict, wrapper key or None, removed prefix or None) of a loaded file's content."""
    wrapper = None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        raise ValueError(f"{name}: already an srdeploy checkpoint ({obj.get('arch')}); use it as it is")
    if not _is_state_dict(obj) and isinstance(obj, dict):
        for key in WRAPPERS:
            if _is_state_dict(obj.get(key)):
                obj, wrapper = obj[key], key
                break
        else:
            nested = [k for k, v in obj.items() if _is_state_dict(v)]
            if len(nested) == 1:
                obj, wrapper = obj[nested[0]], nested[0]
    if not _is_state_dict(obj):
        kind = type(obj).__name__
        keys = f" with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, dict) else ""
        raise ValueError(f"{name}: holds a {kind}{keys}, not a state dict (names -> tensors) or one of the usual "
                         f"wrappers ({', '.join(WRAPPERS)}); save the generator's state_dict() and import that")
    sd, prefix = dict(obj), None
    for p in PREFIXES:
        if all(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items()}
            prefix = (prefix or "") + p
    return sd, wrapper, prefix


def _self_check(model, facts: families.Facts, name: str) -> None:
    """One small forward pass: output shape ``scale`` x input, finite values."""
    side = max(facts.min_size, 8)
    side = -(-side // facts.size_multiple) * facts.size_multiple
    x = torch.rand(1, facts.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x)
    want = (1, facts.out_channels, side * facts.scale, side * facts.scale)
    if tuple(y.shape) != want:
        raise ValueError(f"{name}: the model returns {tuple(y.shape)} for a {tuple(x.shape)} input, not {want}; "
                         "the detected family or scale is wrong for these weights (try --arch)")
    if not torch.isfinite(y).all():
        raise ValueError(f"{name}: the model returns inf/NaN on a random input; the weights are broken")


def import_weights(source: str | os.PathLike, output: str | os.PathLike, *, arch: str | None = None,
                   scale: int | None = None, overwrite: bool = False) -> ImportResult:
    """Convert another codebase's generator weights into an srdeploy checkpoint (see the module doc).

    Args:
        source: the weights file (.pth, .pt, .ckpt, .pth.tar, .safetensors).
        output: the checkpoint to write (.pt), atomically.
        arch: force this family (``families.FAMILIES`` names) instead of detecting it.
        scale: the scale the user expects; a different detected scale is an error.
        overwrite: replace an existing ``output``.
    """
    source, output = Path(source), Path(output)
    if os.path.lexists(output) and not overwrite:  # a dangling symlink counts as an existing output
        raise FileExistsError(f"{output}: already exists; pass --overwrite to replace it")
    if output.resolve() == source.resolve():
        raise ValueError(f"{output}: is the source file; choose another -o")
    sd, wrapper, prefix = unwrap(read_weights(source), str(source))
    try:
        fam, kwargs = families.detect(sd, only=arch)
    except families.UnknownLayout as exc:
        forced = f" as {arch}" if arch else ""
        raise ValueError(f"{source}: cannot import{forced}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    facts = fam.facts(kwargs)
    if scale is not None and scale != facts.scale:
        raise ValueError(f"{source}: the weights are a x{facts.scale} {fam.name} model, not x{scale}; drop --scale "
                         "or import the right file")
    model = families.deployable(fam.name, kwargs, sd, str(source))
    _self_check(model, facts, str(source))
    record = {"source": source.name, "source_sha256": _sha256(source), "wrapper": wrapper, "prefix": prefix,
              "family": fam.name, "origin": fam.origin, "conventions": fam.conventions.as_dict(),
              "facts": asdict(facts)}
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": fam.name, "kwargs": kwargs,
            "scale": facts.scale, "state_dict": {k: v.detach().cpu().contiguous() for k, v in sd.items()},
            "import": record, "versions": library_versions()}
    atomic_torch_save(ckpt, output)
    return ImportResult(output=output, family=fam.name, kwargs=kwargs, facts=facts, conventions=fam.conventions,
                        wrapper=wrapper, prefix=prefix, source_sha256=record["source_sha256"], tensors=len(sd))


def family_table() -> list[str]:
    """Lines for ``srdeploy import --list``: each family, what identifies it, its conventions."""
    from .spandrel_family import MARKERS, describe_registry

    lines = []
    for fam in families.FAMILIES:
        lines.append(f"{fam.name}: {fam.origin}")
        lines.append(f"    keys: {fam.keys}")
        if not fam.markers:  # spandrel: its checks decide; these prefixes are what the common ones look like
            lines += [f"      {arch}: {', '.join(m.rstrip('.') for m in markers)}" for arch, markers in MARKERS.items()]
        lines.append(f"    conventions: {fam.conventions.describe()}; {fam.conventions.note}")
    found = describe_registry()
    lines.append("spandrel architectures tried, in order: " + (", ".join(a for a, _ in found) if found else
                                                             "none (spandrel is not installed: pip install "
                                                             "'srdeploy[import]')"))
    return lines
