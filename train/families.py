"""The model families srdeploy runs: one table, tried in a fixed order (``FAMILIES``).

A family is a small frozen value: how to recognise its state dicts (``detect``: keys and shapes
-> constructor kwargs, or None), how to build its network, what its codebase does around the
network (``Conventions``: input normalisation, output transform) and what one model of it can
do (``Facts``: scale, channels, size multiple and minimum, fixed window, FP16, BatchNorm).
Adding a family touches this table only; every command (import, export, verify, eval,
build-engine, upscale --backend torch, quantize via export) reads models through it.

The deployed model always takes RGB (gray for 1-channel models) in [0, 1] and returns [0, 1]:
``deployable`` wraps a family's network in ``Deployed``, which applies the conventions, so BN
folding, ONNX export and every backend see one contract. srdeploy's own SRResNet already has it
and is not wrapped.

| family              | from                                  | input              | output                      |
|---------------------|---------------------------------------|--------------------|-----------------------------|
| SRResNet            | srdeploy train                        | [0, 1]             | its own head (clamp / tanh) |
| PyTorch-GAN-SRGAN   | eriklindernoren/PyTorch-GAN srgan     | ImageNet mean/std  | Tanh, denormalised, clamp   |
| BasicSR-MSRResNet   | XPixelGroup/BasicSR                   | [0, 1]             | clamp                       |
| Lornatang-SRResNet  | Lornatang/SRGAN-PyTorch               | [0, 1]             | clamp                       |
| leftthomas-SRGAN    | leftthomas/SRGAN                      | [0, 1]             | (tanh + 1) / 2              |
| spandrel            | whatever spandrel's registry detects  | [0, 1]             | clamp (as spandrel's call)  |
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from . import foreign_archs as fa
from . import spandrel_family
from .archs import SRResNet, detect_srresnet

StateDict = Mapping[str, torch.Tensor]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUTS = ("as_is", "clamp", "tanh_unit", "tanh_denorm")


@dataclass(frozen=True)
class Conventions:
    """What a codebase does around its network, as data (applied by ``Deployed``, stored in metadata).

    Attributes:
        mean, std: input normalisation: the network sees ``(x - mean) / std``; () = x as it is.
        output: "as_is" (the network already returns [0, 1]), "clamp" (clamp to [0, 1]),
            "tanh_unit" (``(tanh(y) + 1) / 2``), "tanh_denorm" (``tanh(y) * std + mean``: a Tanh
            output in the normalised space); every transform ends with a clamp to [0, 1].
        note: where the convention comes from, for docs and ``--list``.
    """

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    output: str = "clamp"
    note: str = ""

    def __post_init__(self):
        if self.output not in OUTPUTS or len(self.mean) != len(self.std):
            raise ValueError(f"Conventions: output must be one of {OUTPUTS} and mean/std the same length")

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def describe(self) -> str:
        pre = "ImageNet mean/std" if self.mean == IMAGENET_MEAN else (f"mean {self.mean} std {self.std}" if self.mean
                                                                      else "[0, 1]")
        post = {"as_is": "as the network returns it", "clamp": "clamp(y, 0, 1)",
                "tanh_unit": "clamp((tanh(y) + 1) / 2, 0, 1)",
                "tanh_denorm": "clamp(tanh(y) * std + mean, 0, 1)"}[self.output]
        return f"input {pre}; output {post}"


@dataclass(frozen=True)
class Facts:
    """What one model (a family with its kwargs) is and can do.

    Attributes:
        scale: output / input size (1, 2, 3, 4 or 8).
        in_channels, out_channels: 3 (RGB) or 1 (gray).
        size_multiple: input sides must be a multiple of this (the tiler pads to it).
        min_size: smallest input side.
        fixed_window: the graph is only right at the size it was traced at (exported at one window).
        fp16: FP16 inference is supported (else FP16 requests are refused).
        batchnorm: the network has BatchNorm layers (folded at export).
    """

    scale: int
    in_channels: int = 3
    out_channels: int = 3
    size_multiple: int = 1
    min_size: int = 1
    fixed_window: bool = False
    fp16: bool = True
    batchnorm: bool = False


@dataclass(frozen=True)
class Family:
    """One entry of ``FAMILIES``.

    Attributes:
        name: the checkpoint's ``arch`` (and ``srdeploy import --arch NAME``).
        origin: where the family comes from.
        keys: the state-dict keys that identify it (for ``--list`` and the docs).
        markers: top-level key prefixes, to name the closest families of an unknown layout.
        detect: state dict -> constructor kwargs, or None when the layout is another family's.
        build: kwargs -> network with random weights (None: loads only from weights, see ``load``).
        facts: kwargs -> ``Facts``.
        conventions: pre/post-processing of the family's codebase.
        load: (kwargs, state dict, name) -> loaded network, for families that cannot build from
            kwargs alone (spandrel); None = check kwargs against ``detect``, ``build``, load weights.
    """

    name: str
    origin: str
    keys: str
    markers: tuple[str, ...]
    detect: Callable[[StateDict], dict | None]
    build: Callable[..., nn.Module] | None
    facts: Callable[[dict], Facts]
    conventions: Conventions
    load: Callable[[dict, StateDict, str], nn.Module] | None = None


FAMILIES: tuple[Family, ...] = (
    Family("SRResNet", "srdeploy train (this project)", "head, body.N.{conv1,bn1,act,conv2,bn2}, body_conv, "
           "body_bn, upsample.N.conv, tail", ("head.", "body.", "body_conv.", "body_bn.", "upsample.", "tail."),
           detect_srresnet, SRResNet, lambda kw: Facts(scale=kw.get("scale", 4), batchnorm=True),
           Conventions(output="as_is", note="srdeploy's own contract")),
    Family("PyTorch-GAN-SRGAN", "eriklindernoren/PyTorch-GAN implementations/srgan (GeneratorResNet)",
           "conv1.{0,1}, res_blocks.N.conv_block.{0,1,2,3,4}, conv2.{0,1}, upsampling.{0,1,3,4,5,7}, conv3.0",
           ("conv1.", "res_blocks.", "conv2.", "upsampling.", "conv3."),
           fa.detect_pytorch_gan, fa.PyTorchGANGenerator,
           lambda kw: Facts(scale=kw["scale"], in_channels=kw["in_channels"], out_channels=kw["out_channels"],
                            batchnorm=True),
           Conventions(IMAGENET_MEAN, IMAGENET_STD, "tanh_denorm",
                       "its datasets.py normalises LR and HR with ImageNet mean/std; the Tanh output lives in that "
                       "normalised space")),
    Family("BasicSR-MSRResNet", "XPixelGroup/BasicSR basicsr/archs/srresnet_arch.py (MSRResNet)",
           "conv_first, body.N.conv{1,2}, upconv1[, upconv2], conv_hr, conv_last",
           ("conv_first.", "body.", "upconv1.", "upconv2.", "conv_hr.", "conv_last."),
           fa.detect_msrresnet, fa.MSRResNet,
           lambda kw: Facts(scale=kw["upscale"], in_channels=kw["num_in_ch"], out_channels=kw["num_out_ch"]),
           Conventions(note="BasicSR feeds RGB in [0, 1] and clamps when it writes images")),
    Family("Lornatang-SRResNet", "Lornatang/SRGAN-PyTorch model.py (SRResNet, the SRGAN generator)",
           "conv1.{0,1}, trunk.N.rcb.{0,1,2,3,4}, conv2.{0,1}, upsampling.N.upsample_block.{0,2}, conv3",
           ("conv1.", "trunk.", "conv2.", "upsampling.", "conv3."),
           fa.detect_lornatang, fa.LornatangSRResNet,
           lambda kw: Facts(scale=kw["upscale"], in_channels=kw["in_channels"], out_channels=kw["out_channels"],
                            batchnorm=True),
           Conventions(note="its forward ends with clamp_(0, 1)")),
    Family("leftthomas-SRGAN", "leftthomas/SRGAN model.py (Generator)",
           "block1.{0,1}, block2..block6.{conv1,bn1,prelu,conv2,bn2}, block7.{0,1}, block8.N.{conv,prelu}, block8.K",
           ("block1.", "block2.", "block3.", "block4.", "block5.", "block6.", "block7.", "block8."),
           fa.detect_leftthomas, fa.LeftthomasGenerator,
           lambda kw: Facts(scale=kw["scale_factor"], in_channels=kw["in_channels"], out_channels=kw["in_channels"],
                            batchnorm=True),
           Conventions(output="tanh_unit", note="its forward ends with (torch.tanh(block8) + 1) / 2")),
    Family("spandrel", "every architecture of spandrel's main registry (PyPI spandrel, MIT; never "
           "spandrel_extra_arches): ESRGAN/Real-ESRGAN RRDBNet incl. pixel-unshuffle x2/x1, Compact, SPAN, SwinIR, ...",
           "spandrel's key conditions per architecture", (),
           spandrel_family.detect, None,
           lambda kw: Facts(**{k: kw[k] for k in spandrel_family.FACT_KEYS if k != "tiling"}),
           Conventions(note="spandrel's contract: RGB in [0, 1], output clamped to [0, 1]"),
           load=spandrel_family.load),
)
BY_NAME = {f.name: f for f in FAMILIES}


def family(name: str) -> Family:
    """The family called ``name``; ValueError listing the families otherwise."""
    if name not in BY_NAME:
        raise ValueError(f"unknown model family {name!r}; families: {', '.join(BY_NAME)}")
    return BY_NAME[name]


def accepted_kwargs(fam: Family) -> set[str]:
    """Keyword arguments a checkpoint of this family may carry."""
    if fam.build is None:
        return {"architecture", "hyperparameters", *spandrel_family.FACT_KEYS}
    return {p.name for p in inspect.signature(fam.build).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_kwargs_fit(fam: Family, kwargs: dict, sd: StateDict, name: str = "checkpoint") -> None:
    """Refuse kwargs that disagree with the state dict's own shapes and counts, before anything is built.

    Detection reads keys and shapes only, so a checkpoint whose kwargs ask for 10**9 blocks is
    refused in microseconds instead of allocating until the OOM killer stops it.
    """
    check_fit(fam.name, fam.detect, fam.build, kwargs, sd, name, keys=fam.keys)


def check_fit(arch: str, detect: Callable[[StateDict], dict | None], build: Callable | None, kwargs: dict,
              sd: StateDict, name: str = "checkpoint", *, keys: str = "") -> None:
    """``check_kwargs_fit`` for any architecture with a ``detect`` (the training ones too).

    Args:
        arch: its name, for messages.
        detect: state dict -> the kwargs its shapes imply, or None for another layout.
        build: the constructor (its defaults stand for kwargs a checkpoint leaves out).
        kwargs, sd: the checkpoint's kwargs and weights.
        name: the file, for messages.
        keys: the layout's identifying keys, for messages.
    """
    try:
        found = detect(sd)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if found is None:
        raise ValueError(f"{name}: the weights are not a {arch} state dict" + (f" (its keys: {keys})" if keys else "")
                         + "; the file is damaged or not what its 'arch' says")
    defaults = {} if build is None else {p.name: p.default for p in inspect.signature(build).parameters.values()
                                         if p.default is not inspect.Parameter.empty}
    effective = {**defaults, **kwargs}
    wrong = [k for k in found if effective.get(k) != found[k]]
    if wrong:
        shown = ", ".join(f"{k}={effective.get(k)!r}" for k in wrong)
        weights = ", ".join(f"{k}={found[k]!r}" for k in wrong)
        raise ValueError(f"{name}: weights do not match {arch}({kwargs}): the kwargs say {shown} but the weights' "
                         f"shapes say {weights}; the file is damaged or its kwargs were edited: use the checkpoint as "
                         "it was written")


def load_network(fam: Family, kwargs: dict, sd: StateDict, name: str = "checkpoint") -> nn.Module:
    """The family's network with ``sd`` loaded (eval mode); kwargs are checked against ``sd`` first."""
    if fam.load is not None:
        return fam.load(kwargs, sd, name)
    check_kwargs_fit(fam, kwargs, sd, name)
    net = fam.build(**kwargs)
    net.load_state_dict(sd)
    return net.eval()


class Deployed(nn.Module):
    """A family's network with its conventions applied: RGB (or gray) in [0, 1] in, [0, 1] out.

    Args:
        net: the family's network, weights loaded.
        conventions: the family's ``Conventions``.
        facts: the model's ``Facts`` (scale and channels become attributes here).
    """

    def __init__(self, net: nn.Module, conventions: Conventions, facts: Facts):
        super().__init__()
        self.net = net
        self.scale = facts.scale
        self.in_channels = facts.in_channels
        self.output = conventions.output
        self.clamp_output = True  # the radius probe turns it off (saturated pixels hide changes)
        self.normalise = bool(conventions.mean)
        if self.normalise:
            c = facts.in_channels
            self.register_buffer("mean", torch.tensor(conventions.mean[:c]).view(1, c, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(conventions.std[:c]).view(1, c, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            x = (x - self.mean) / self.std
        y = self.net(x)
        if self.output == "tanh_unit":
            y = (torch.tanh(y) + 1.0) * 0.5
        elif self.output == "tanh_denorm":
            y = torch.tanh(y) * self.std + self.mean
        return y.clamp(0.0, 1.0) if self.clamp_output else y


def deployable(arch: str, kwargs: dict, sd: StateDict, name: str = "checkpoint") -> nn.Module:
    """The model every command runs for a checkpoint of family ``arch``: network plus conventions.

    Returns srdeploy's SRResNet as it is (it already keeps the contract); any other family's
    network inside ``Deployed``. Every model has ``scale`` and ``in_channels`` attributes.
    """
    fam = family(arch)
    net = load_network(fam, kwargs, sd, name)
    facts = fam.facts(kwargs)
    if fam.conventions.output == "as_is" and not fam.conventions.mean:
        net.in_channels = facts.in_channels
        return net
    return Deployed(net, fam.conventions, facts).eval()


class UnknownLayout(ValueError):
    """No family recognises a state dict (the message names the closest ones)."""


def closest(sd: StateDict, n: int = 2) -> list[tuple[str, float]]:
    """The ``n`` families whose top-level key prefixes best cover ``sd``'s, with the share covered."""
    keys = list(sd)

    def share(markers: tuple[str, ...]) -> float:
        hit = sum(any(k.startswith(m) for m in markers) for k in keys) / len(keys)
        seen = sum(any(k.startswith(m) for k in keys) for m in markers) / len(markers)
        return round(min(hit, seen), 2)

    groups = [(fam.name, fam.markers) for fam in FAMILIES if fam.markers]
    # spandrel's architectures, each by its own markers (the family as a whole has none)
    groups += [(f"spandrel ({arch})", markers) for arch, markers in spandrel_family.MARKERS.items()]
    scores = [(name, share(markers)) for name, markers in groups] if keys else []
    return sorted((s for s in scores if s[1] > 0), key=lambda s: -s[1])[:n]


def detect(sd: StateDict, *, only: str | None = None) -> tuple[Family, dict]:
    """The first family (in ``FAMILIES`` order) whose ``detect`` recognises ``sd``, and its kwargs.

    Args:
        sd: a plain state dict (wrappers and ``module.`` prefixes already removed).
        only: try this family only (``srdeploy import --arch``).

    Raises:
        UnknownLayout: nothing recognises it (the message names the closest families).
        ValueError: a family recognises it but its numbering or shapes are inconsistent.
        ModuleNotFoundError: spandrel is needed and not installed.
    """
    fams = (family(only),) if only else FAMILIES
    for fam in fams:
        if fam.name == "spandrel":
            try:
                import spandrel  # noqa: F401
            except ModuleNotFoundError:
                if only:
                    raise
                continue
        found = fam.detect(sd)
        if found is not None:
            return fam, found
    near = closest(sd)
    hint = ("closest: " + ", ".join(f"{name} ({share:.0%} of the keys)" for name, share in near)) if near else \
        "no family shares its key names"
    try:
        import spandrel  # noqa: F401
        extra = ""
    except ModuleNotFoundError:
        extra = "; spandrel is not installed (pip install 'srdeploy[import]'), so its architectures were not tried"
    first = ", ".join(list(sd)[:3])
    raise UnknownLayout(f"unknown layout ({len(sd)} tensors, first keys {first}): {hint}{extra}. "
                        f"`srdeploy import --list` shows the supported families")
