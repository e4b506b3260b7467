"""The other codebases' generators as their own code computes them, for the family tests.

``srdeploy.train.foreign_archs`` rebuilds each generator as modules with the original parameter
names; these references are written independently, as functions over the state dict that follow
each repository's ``forward`` and its pre/post-processing line by line (eps of every BatchNorm,
PReLU with one slope, bilinear skip, Tanh in normalised space, ...). A family whose modules or
conventions drift from the original fails against them.

Also: how each codebase saves its weights, and BasicSR/Real-ESRGAN's new-arch RRDBNet keys made
from spandrel's old-arch module (spandrel converts them back when it loads them).
"""

from __future__ import annotations

import math
import re

import torch
from torch.nn import functional as F

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _conv(sd, name, x, pad):
    return F.conv2d(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"), padding=pad)


def _bn(sd, name, x, eps):
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=False, eps=eps)


def _prelu(sd, name, x):
    return F.prelu(x, sd[f"{name}.weight"])


def _count(sd, pattern):
    return len({m.group(1) for k in sd if (m := re.fullmatch(pattern, k))})


def pytorch_gan(sd, x):
    """PyTorch-GAN srgan GeneratorResNet (current version: PReLU, BatchNorm2d(c, 0.8) = eps 0.8 in the
    residual blocks and conv2, default eps in the upsampling), with its data pipeline's ImageNet
    normalisation around it: clamp(denorm(G(norm(x))), 0, 1)."""
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    out1 = _prelu(sd, "conv1.1", _conv(sd, "conv1.0", x, 4))
    out = out1
    for i in range(_count(sd, r"res_blocks\.(\d+)\..*")):
        p = f"res_blocks.{i}.conv_block"
        r = _prelu(sd, f"{p}.2", _bn(sd, f"{p}.1", _conv(sd, f"{p}.0", out, 1), 0.8))
        out = out + _bn(sd, f"{p}.4", _conv(sd, f"{p}.3", r, 1), 0.8)
    out = torch.add(out1, _bn(sd, "conv2.1", _conv(sd, "conv2.0", out, 1), 0.8))
    for j in range(_count(sd, r"upsampling\.(\d+)\.running_var")):
        b = 4 * j
        out = _prelu(sd, f"upsampling.{b + 3}",
                     F.pixel_shuffle(_bn(sd, f"upsampling.{b + 1}", _conv(sd, f"upsampling.{b}", out, 1), 1e-5), 2))
    y = torch.tanh(_conv(sd, "conv3.0", out, 4))
    return (y * IMAGENET_STD + IMAGENET_MEAN).clamp(0, 1)


def msrresnet(sd, x):
    """BasicSR MSRResNet: LeakyReLU 0.1, ReLU inside the blocks, bilinear input added; BasicSR clamps on save."""
    feat = F.leaky_relu(_conv(sd, "conv_first", x, 1), 0.1)
    out = feat
    for i in range(_count(sd, r"body\.(\d+)\.conv1\.weight")):
        out = out + _conv(sd, f"body.{i}.conv2", F.relu(_conv(sd, f"body.{i}.conv1", out, 1)), 1)
    if "upconv2.weight" in sd:
        upscale = 4
        out = F.leaky_relu(F.pixel_shuffle(_conv(sd, "upconv1", out, 1), 2), 0.1)
        out = F.leaky_relu(F.pixel_shuffle(_conv(sd, "upconv2", out, 1), 2), 0.1)
    else:
        upscale = int(math.sqrt(sd["upconv1.weight"].shape[0] // sd["conv_first.weight"].shape[0]))
        out = F.leaky_relu(F.pixel_shuffle(_conv(sd, "upconv1", out, 1), upscale), 0.1)
    out = _conv(sd, "conv_last", F.leaky_relu(_conv(sd, "conv_hr", out, 1), 0.1), 1)
    return (out + F.interpolate(x, scale_factor=upscale, mode="bilinear", align_corners=False)).clamp(0, 1)


def lornatang(sd, x):
    """Lornatang SRGAN-PyTorch SRResNet: bias-free convs in the trunk, clamp_(0, 1) at the end."""
    conv1 = _prelu(sd, "conv1.1", _conv(sd, "conv1.0", x, 4))
    out = conv1
    for i in range(_count(sd, r"trunk\.(\d+)\.rcb\.0\.weight")):
        p = f"trunk.{i}.rcb"
        r = _prelu(sd, f"{p}.2", _bn(sd, f"{p}.1", _conv(sd, f"{p}.0", out, 1), 1e-5))
        out = _bn(sd, f"{p}.4", _conv(sd, f"{p}.3", r, 1), 1e-5) + out
    out = _bn(sd, "conv2.1", _conv(sd, "conv2.0", out, 1), 1e-5) + conv1
    for j in range(_count(sd, r"upsampling\.(\d+)\.upsample_block\.0\.weight")):
        p = f"upsampling.{j}.upsample_block"
        out = _prelu(sd, f"{p}.2", F.pixel_shuffle(_conv(sd, f"{p}.0", out, 1), 2))
    return _conv(sd, "conv3", out, 4).clamp_(0.0, 1.0)


def leftthomas(sd, x):
    """leftthomas SRGAN Generator: five residual blocks, (tanh + 1) / 2 at the end."""
    block1 = _prelu(sd, "block1.1", _conv(sd, "block1.0", x, 4))
    out = block1
    for i in range(2, 7):
        p = f"block{i}"
        r = _prelu(sd, f"{p}.prelu", _bn(sd, f"{p}.bn1", _conv(sd, f"{p}.conv1", out, 1), 1e-5))
        out = out + _bn(sd, f"{p}.bn2", _conv(sd, f"{p}.conv2", r, 1), 1e-5)
    out = block1 + _bn(sd, "block7.1", _conv(sd, "block7.0", out, 1), 1e-5)
    n = _count(sd, r"block8\.(\d+)\.conv\.weight")
    for j in range(n):
        out = _prelu(sd, f"block8.{j}.prelu", F.pixel_shuffle(_conv(sd, f"block8.{j}.conv", out, 1), 2))
    return ((torch.tanh(_conv(sd, f"block8.{n}", out, 4)) + 1) / 2).clamp(0, 1)


def randomize(sd: dict, seed: int = 0) -> dict:
    """A state dict with random, non-trivial values: conv weights ~N(0, 1/fan_in), BatchNorm statistics
    and affine parameters far from identity, PReLU slopes in [0, 0.4]."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=gen) * 1.5 + 0.05
        elif k.endswith("running_mean"):
            out[k] = torch.randn(v.shape, generator=gen) * 0.5
        elif v.dim() == 4:
            out[k] = torch.randn(v.shape, generator=gen) / math.sqrt(v[0].numel())
        elif v.dim() == 1 and v.numel() == 1:  # PReLU with one slope
            out[k] = torch.rand(v.shape, generator=gen) * 0.4
        else:
            out[k] = torch.randn(v.shape, generator=gen) * 0.2 + (1.0 if k.endswith("weight") else 0.0)
    return out


def realesrgan_keys(old: dict) -> dict:
    """BasicSR / Real-ESRGAN RRDBNet keys (conv_first, body.N.rdbK.convJ, conv_body, conv_up1/2, conv_hr,
    conv_last) from spandrel's old-arch ESRGAN module keys (model.0, model.1.sub.N.RDBK.convJ.0, ...)."""
    ups = sorted({int(m.group(1)) for k in old if (m := re.fullmatch(r"model\.(\d+)\.weight", k))} - {0})
    n_blocks = max(int(m.group(1)) for k in old if (m := re.match(r"model\.1\.sub\.(\d+)\.", k)))
    last, hr = ups[-1], ups[-2]
    names = {0: "conv_first", last: "conv_last", hr: "conv_hr"}
    names.update({u: f"conv_up{i + 1}" for i, u in enumerate(ups[:-2])})
    new = {}
    for k, v in old.items():
        if m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", k):
            new[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
        elif m := re.fullmatch(rf"model\.1\.sub\.{n_blocks}\.(weight|bias)", k):
            new[f"conv_body.{m[1]}"] = v
        elif m := re.fullmatch(r"model\.(\d+)\.(weight|bias)", k):
            new[f"{names[int(m[1])]}.{m[2]}"] = v
        else:
            raise KeyError(k)
    return new
