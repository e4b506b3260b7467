"""Every architecture spandrel (PyPI ``spandrel``, MIT) detects, as one srdeploy family.

spandrel keeps a registry of super-resolution architectures (ESRGAN/Real-ESRGAN RRDBNet with
its pixel-unshuffle x2/x1 variants, Real-ESRGAN Compact, SPAN, SwinIR, HAT, ...), each with a
``detect`` that looks at state-dict keys and a ``load`` that reads the hyperparameters off the
tensor shapes. srdeploy uses that registry as it is, never copies its code, and never uses
``spandrel_extra_arches`` (its architectures carry non-commercial licences). spandrel is
imported lazily: it is needed only for these models (``pip install 'srdeploy[import]'``).

Only the state dict is ever handed to spandrel: srdeploy reads files itself with
``weights_only=True`` (spandrel's own file loader would run TorchScript files). A checkpoint's
kwargs record what spandrel found (architecture, scale, channels, size requirements,
hyperparameters); loading never builds from them. It asks spandrel again, from the weights,
and refuses a checkpoint whose recorded kwargs disagree, so a file cannot make srdeploy build a
model larger than its weights.
"""

from __future__ import annotations

import warnings
from typing import Mapping

import torch
from torch import nn

StateDict = Mapping[str, torch.Tensor]

# Window-attention graphs build their attention masks and window partitions from Python ints
# taken from the input shape: traced once, they are only right at that size. They are exported
# at one fixed window and tiled at exactly that size (srdeploy export --window).
FIXED_WINDOW = frozenset({"SwinIR", "Swin2SR", "HAT", "DAT", "DRCT", "ATD", "RGT", "GRL", "CRAFT", "IPT", "SCUNet",
                          "Uformer", "FDAT", "MoESR"})
# The facts a spandrel checkpoint records beside the architecture id (srdeploy's names).
FACT_KEYS = ("scale", "in_channels", "out_channels", "size_multiple", "min_size", "fp16", "fixed_window", "batchnorm",
             "tiling")


# Top-level key prefixes of the spandrel architectures people deploy most, to name the closest one
# when a file is not recognised (spandrel's own checks say only yes or no). A hint, not a detector.
MARKERS: dict[str, tuple[str, ...]] = {
    "ESRGAN (original keys)": ("model.0.", "model.1.sub.", "model.3.", "model.6.", "model.8.", "model.10."),
    "Real-ESRGAN RRDBNet": ("conv_first.", "body.", "conv_body.", "conv_up1.", "conv_up2.", "conv_hr.",
                            "conv_last."),
    "Compact (SRVGGNetCompact)": ("body.",),
    "SwinIR": ("conv_first.", "patch_embed.", "layers.", "norm.", "conv_after_body.", "upsample.", "conv_last."),
    "SPAN": ("conv_1.", "block_1.", "block_2.", "block_3.", "conv_cat.", "conv_2.", "upsampler."),
}


def _registry():
    """spandrel's main registry (never the extra architectures)."""
    from spandrel import MAIN_REGISTRY  # ModuleNotFoundError -> "pip install 'srdeploy[import]'"

    return MAIN_REGISTRY


def _plain(value):
    """A JSON- and weights_only-safe copy of a hyperparameter value (classes become their names)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return getattr(value, "__name__", type(value).__name__)


def _arch_id(sd: StateDict) -> str | None:
    for support in _registry().architectures("detection"):
        if support.detect(sd):
            return str(support.architecture.id)
    return None


def _describe(sd: StateDict):
    """spandrel's ImageModelDescriptor of ``sd``, or a one-line ValueError why srdeploy cannot use it."""
    from spandrel import ImageModelDescriptor

    reg = _registry()
    arch = _arch_id(sd)
    if arch is None:
        return None
    with warnings.catch_warnings():  # its architectures' own deprecation notices (torch.meshgrid, ...)
        warnings.simplefilter("ignore", UserWarning)
        try:
            desc = reg[arch].architecture.load(dict(sd))
        except (RuntimeError, KeyError, ValueError, IndexError) as exc:  # a damaged file, or a variant it misreads
            first = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
            raise ValueError(f"spandrel takes this for {arch}, but its tensors do not fit that architecture ({first}); "
                             "the file may be damaged or truncated, or another variant of the architecture") from None
    if not isinstance(desc, ImageModelDescriptor) or desc.purpose not in ("SR", "Restoration"):
        raise ValueError(f"spandrel detects a {arch} model for {desc.purpose}, not an image-to-image upscaler; "
                         "srdeploy deploys super-resolution and restoration models only")
    if desc.input_channels != desc.output_channels or desc.input_channels not in (1, 3):
        raise ValueError(f"spandrel detects a {arch} model with {desc.input_channels} input and "
                         f"{desc.output_channels} output channels; srdeploy deploys RGB->RGB and gray->gray models")
    if desc.size_requirements.square:
        raise ValueError(f"spandrel detects a {arch} model that needs square inputs; srdeploy's tiler does not "
                         "produce those")
    return desc


def _facts(arch: str, desc) -> dict:
    req = desc.size_requirements
    return {"scale": int(desc.scale), "in_channels": int(desc.input_channels), "out_channels": int(desc.output_channels),
            "size_multiple": int(req.multiple_of), "min_size": max(1, int(req.minimum)),
            "fp16": bool(desc.supports_half), "fixed_window": arch in FIXED_WINDOW,
            "batchnorm": any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in desc.model.modules()),
            "tiling": desc.tiling.name.lower()}


def detect(sd: StateDict) -> dict | None:
    """srdeploy kwargs for a state dict that spandrel's registry detects; None when it detects nothing.

    spandrel reads the hyperparameters off the shapes while it builds the model, so this builds
    it once (its size is bounded by the weights themselves).
    """
    desc = _describe(sd)
    if desc is None:
        return None
    arch = str(desc.architecture.id)
    return {"architecture": arch, **_facts(arch, desc),
            "hyperparameters": _plain(getattr(desc.model, "hyperparameters", {}))}


def load(kwargs: dict, sd: StateDict, name: str = "checkpoint") -> nn.Module:
    """The network for ``sd``, built by spandrel from the weights; refuses kwargs that disagree.

    Args:
        kwargs: what ``detect`` recorded at import.
        sd: the state dict as imported.
        name: the file, for messages.
    """
    arch = _arch_id(sd)  # keys only: cheap, before anything is built
    if arch != kwargs.get("architecture"):
        raise ValueError(f"{name}: the weights are a {arch or 'layout spandrel does not detect'}, but the checkpoint "
                         f"says {kwargs.get('architecture')!r}; re-import the original file with srdeploy import")
    desc = _describe(sd)
    found = {"architecture": arch, **_facts(arch, desc),
             "hyperparameters": _plain(getattr(desc.model, "hyperparameters", {}))}
    wrong = sorted(k for k in found if kwargs.get(k) != found[k])
    if wrong:
        k = wrong[0]
        raise ValueError(f"{name}: checkpoint kwargs {wrong} disagree with the weights ({k} is {kwargs.get(k)!r}, the "
                         f"weights say {found[k]!r}); re-import the original file with srdeploy import")
    return desc.model.eval()


def describe_registry() -> list[tuple[str, str]]:
    """(architecture id, what identifies it) for ``srdeploy import --list``; empty without spandrel."""
    try:
        reg = _registry()
    except ModuleNotFoundError:
        return []
    return [(str(s.architecture.id), "spandrel's own key conditions") for s in reg.architectures("detection")]
