"""SRResNet/SRGAN generators as other codebases define them (written here, same parameter names).

Each class rebuilds one repository's generator with exactly its module structure, so that
repository's ``state_dict`` loads with ``strict=True``. Their ``forward`` stops at the last
layer with parameters: what each codebase does around the network (input normalisation, a
Tanh output in normalised space, ``(tanh + 1) / 2``, a clamp) is declared as data by its family
entry (``srdeploy.train.families``) and applied by ``families.Deployed``, so the exporter and
every backend see one contract: RGB (or gray) in [0, 1] in, [0, 1] out.

Each ``detect_*`` function reads a state dict's keys and shapes only (no tensor values, nothing
built) and returns the constructor keyword arguments, or None when the layout is not this
family's. Scale, channels and block counts all come from the shapes.

| class                 | repository                          | keys                                     |
|-----------------------|-------------------------------------|------------------------------------------|
| ``PyTorchGANGenerator``| eriklindernoren/PyTorch-GAN (srgan) | conv1, res_blocks.N.conv_block, conv2, upsampling, conv3 |
| ``MSRResNet``         | XPixelGroup/BasicSR                 | conv_first, body.N.conv1/2, upconv1/2, conv_hr, conv_last |
| ``LornatangSRResNet`` | Lornatang/SRGAN-PyTorch             | conv1, trunk.N.rcb, conv2, upsampling.N.upsample_block, conv3 |
| ``LeftthomasGenerator``| leftthomas/SRGAN                   | block1 .. block8                         |
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import torch
from torch import nn
from torch.nn import functional as F

StateDict = Mapping[str, torch.Tensor]


def _indices(sd: StateDict, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) over the keys of ``sd``."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.fullmatch(k))})


def _count(sd: StateDict, pattern: str, what: str) -> int:
    """How many consecutive indices 0..n-1 ``pattern`` finds; a gap means a damaged file."""
    found = _indices(sd, pattern)
    if found != list(range(len(found))):
        raise ValueError(f"the state dict's {what} are numbered {found[:8]}..., not 0..{len(found) - 1}; "
                         "the file is damaged or edited")
    return len(found)


def _log2_scale(n: int, what: str) -> int:
    if not 0 <= n <= 3:
        raise ValueError(f"{n} {what} (scale {2 ** n}); only scales 1 to 8 are supported")
    return 2 ** n


# ----------------------------------------------------------------------------- PyTorch-GAN srgan

class _GANResidual(nn.Module):
    def __init__(self, channels: int, eps: float, prelu: bool):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1), nn.BatchNorm2d(channels, eps=eps),
            nn.PReLU() if prelu else nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1), nn.BatchNorm2d(channels, eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class PyTorchGANGenerator(nn.Module):
    """PyTorch-GAN's ``implementations/srgan/models.py`` ``GeneratorResNet``.

    The current version (PReLU) builds ``nn.BatchNorm2d(64, 0.8)`` in the residual blocks and
    after ``conv2``: the second positional argument is **eps**, 0.8, not the momentum. The
    upsampling BatchNorms keep the default eps. The first version (commit 692e20d, ReLU) used the
    default eps everywhere. Both are rebuilt exactly; the output Tanh (``conv3.1``, no
    parameters) is the family's output convention.

    Args:
        in_channels, out_channels: image channels (3).
        n_residual_blocks: residual blocks (16).
        channels: feature channels (64 in the original, read from the weights here).
        scale: 2 ** number of upsampling stages (the original has 2: x4).
        activation: "prelu" (current version) or "relu" (first version).
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, n_residual_blocks: int = 16,
                 channels: int = 64, scale: int = 4, activation: str = "prelu"):
        super().__init__()
        if activation not in ("prelu", "relu") or scale not in (1, 2, 4, 8):
            raise ValueError(f"PyTorchGANGenerator: activation must be prelu/relu and scale 1/2/4/8, got "
                             f"{activation!r}, {scale}")
        prelu = activation == "prelu"
        eps = 0.8 if prelu else 1e-5

        def act() -> nn.Module:
            return nn.PReLU() if prelu else nn.ReLU()

        self.scale = scale
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, channels, 9, 1, 4), act())
        self.res_blocks = nn.Sequential(*[_GANResidual(channels, eps, prelu) for _ in range(n_residual_blocks)])
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.BatchNorm2d(channels, eps=eps))
        up: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            up += [nn.Conv2d(channels, channels * 4, 3, 1, 1), nn.BatchNorm2d(channels * 4), nn.PixelShuffle(2), act()]
        self.upsampling = nn.Sequential(*up)
        self.conv3 = nn.Sequential(nn.Conv2d(channels, out_channels, 9, 1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(x)
        out = out1 + self.conv2(self.res_blocks(out1))
        return self.conv3(self.upsampling(out))


def detect_pytorch_gan(sd: StateDict) -> dict | None:
    """PyTorchGANGenerator kwargs from a GeneratorResNet state dict; None for other layouts."""
    if not {"conv1.0.weight", "res_blocks.0.conv_block.0.weight", "conv2.1.running_var", "conv3.0.weight"} <= sd.keys():
        return None
    head = sd["conv1.0.weight"]
    # Four modules per stage (conv, BN, PixelShuffle, activation): the BNs sit at 1, 5, 9, ...
    bns = _indices(sd, r"upsampling\.(\d+)\.running_var")
    if bns != [1 + 4 * i for i in range(len(bns))]:
        raise ValueError(f"the state dict's upsampling BatchNorms sit at {bns}, not 1, 5, 9, ...; the file is "
                         "damaged or edited")
    stages = len(bns)
    return {"in_channels": int(head.shape[1]), "out_channels": int(sd["conv3.0.weight"].shape[0]),
            "n_residual_blocks": _count(sd, r"res_blocks\.(\d+)\.conv_block\.0\.weight", "residual blocks"),
            "channels": int(head.shape[0]), "scale": _log2_scale(stages, "upsampling stages"),
            "activation": "prelu" if "conv1.1.weight" in sd else "relu"}


# ----------------------------------------------------------------------------- BasicSR MSRResNet

class _ResidualNoBN(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class MSRResNet(nn.Module):
    """BasicSR's ``basicsr/archs/srresnet_arch.py`` ``MSRResNet`` (modified SRResNet, no BN).

    LeakyReLU(0.1) everywhere but inside the residual blocks (ReLU); the input, bilinearly
    upsampled (``align_corners=False``), is added to the output.

    Args:
        num_in_ch, num_out_ch: image channels (3).
        num_feat: feature channels (64).
        num_block: residual blocks (16).
        upscale: 2, 3 or 4.
    """

    def __init__(self, *, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 16,
                 upscale: int = 4):
        super().__init__()
        if upscale not in (2, 3, 4):
            raise ValueError(f"MSRResNet: upscale must be 2, 3 or 4, got {upscale}")
        self.scale = self.upscale = upscale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[_ResidualNoBN(num_feat) for _ in range(num_block)])
        if upscale == 4:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(2)
        else:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * upscale * upscale, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(upscale)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(F.leaky_relu(self.conv_first(x), 0.1))
        out = F.leaky_relu(self.pixel_shuffle(self.upconv1(out)), 0.1)
        if self.upscale == 4:
            out = F.leaky_relu(self.pixel_shuffle(self.upconv2(out)), 0.1)
        out = self.conv_last(F.leaky_relu(self.conv_hr(out), 0.1))
        return out + F.interpolate(x, scale_factor=self.upscale, mode="bilinear", align_corners=False)


def detect_msrresnet(sd: StateDict) -> dict | None:
    """MSRResNet kwargs from its state dict; None for other layouts."""
    if not {"conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight",
            "conv_last.weight"} <= sd.keys():
        return None
    first = sd["conv_first.weight"]
    feat = int(first.shape[0])
    if "upconv2.weight" in sd:
        upscale = 4
    else:
        ratio = int(sd["upconv1.weight"].shape[0]) // max(feat, 1)
        upscale = int(round(math.sqrt(ratio)))
    return {"num_in_ch": int(first.shape[1]), "num_out_ch": int(sd["conv_last.weight"].shape[0]), "num_feat": feat,
            "num_block": _count(sd, r"body\.(\d+)\.conv1\.weight", "residual blocks"), "upscale": upscale}


# ----------------------------------------------------------------------------- Lornatang SRGAN-PyTorch

class _RCB(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.rcb = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.PReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rcb(x) + x


class _LornatangUp(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.upsample_block = nn.Sequential(nn.Conv2d(channels, channels * 4, 3, 1, 1), nn.PixelShuffle(2),
                                            nn.PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample_block(x)


class LornatangSRResNet(nn.Module):
    """Lornatang/SRGAN-PyTorch ``model.py`` ``SRResNet`` (its SRGAN generator too).

    Args:
        in_channels, out_channels: image channels (3).
        channels: feature channels (64).
        num_rcb: residual conv blocks (16).
        upscale: 2, 4 or 8.
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, channels: int = 64, num_rcb: int = 16,
                 upscale: int = 4):
        super().__init__()
        if upscale not in (2, 4, 8):
            raise ValueError(f"LornatangSRResNet: upscale must be 2, 4 or 8, got {upscale}")
        self.scale = upscale
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, channels, 9, 1, 4), nn.PReLU())
        self.trunk = nn.Sequential(*[_RCB(channels) for _ in range(num_rcb)])
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        self.upsampling = nn.Sequential(*[_LornatangUp(channels) for _ in range(int(math.log2(upscale)))])
        self.conv3 = nn.Conv2d(channels, out_channels, 9, 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv1(x)
        return self.conv3(self.upsampling(self.conv2(self.trunk(first)) + first))


def detect_lornatang(sd: StateDict) -> dict | None:
    """LornatangSRResNet kwargs; None for other layouts."""
    if not {"conv1.0.weight", "trunk.0.rcb.0.weight", "conv2.0.weight", "conv3.weight"} <= sd.keys():
        return None
    head = sd["conv1.0.weight"]
    return {"in_channels": int(head.shape[1]), "out_channels": int(sd["conv3.weight"].shape[0]),
            "channels": int(head.shape[0]), "num_rcb": _count(sd, r"trunk\.(\d+)\.rcb\.0\.weight", "residual blocks"),
            "upscale": _log2_scale(_count(sd, r"upsampling\.(\d+)\.upsample_block\.0\.weight", "upsampling blocks"),
                                   "upsampling blocks")}


# ----------------------------------------------------------------------------- leftthomas SRGAN

class _LeftResidual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))


class _LeftUp(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.pixel_shuffle(self.conv(x)))


class LeftthomasGenerator(nn.Module):
    """leftthomas/SRGAN ``model.py`` ``Generator``: five residual blocks (``block2`` .. ``block6``).

    The original ends with ``(torch.tanh(block8) + 1) / 2``; that is the family's output
    convention here.

    Args:
        scale_factor: 2, 4 or 8.
        channels: feature channels (64 in the original, read from the weights here).
        in_channels: image channels (3).
    """

    def __init__(self, *, scale_factor: int = 4, channels: int = 64, in_channels: int = 3):
        super().__init__()
        if scale_factor not in (2, 4, 8):
            raise ValueError(f"LeftthomasGenerator: scale_factor must be 2, 4 or 8, got {scale_factor}")
        self.scale = scale_factor
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, channels, 9, padding=4), nn.PReLU())
        for i in range(2, 7):
            setattr(self, f"block{i}", _LeftResidual(channels))
        self.block7 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        up: list[nn.Module] = [_LeftUp(channels) for _ in range(int(math.log2(scale_factor)))]
        self.block8 = nn.Sequential(*up, nn.Conv2d(channels, in_channels, 9, padding=4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.block1(x)
        out = self.block6(self.block5(self.block4(self.block3(self.block2(first)))))
        return self.block8(first + self.block7(out))


def detect_leftthomas(sd: StateDict) -> dict | None:
    """LeftthomasGenerator kwargs; None for other layouts."""
    if not {"block1.0.weight", "block2.conv1.weight", "block6.bn2.running_var", "block7.0.weight"} <= sd.keys():
        return None
    head = sd["block1.0.weight"]
    return {"scale_factor": _log2_scale(_count(sd, r"block8\.(\d+)\.conv\.weight", "upsampling blocks"),
                                        "upsampling blocks"),
            "channels": int(head.shape[0]), "in_channels": int(head.shape[1])}
