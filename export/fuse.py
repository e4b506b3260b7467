"""Fold every BatchNorm into the convolution before it (inference-time equivalent).

For eval-mode BN with running mean m, variance v, weight g, bias b and eps e after a conv with
weight W and bias c:  y = g * (W x + c - m) / sqrt(v + e) + b, i.e. a conv with
W' = W * g / sqrt(v + e) (per output channel) and c' = (c - m) * g / sqrt(v + e) + b.
A BN directly after a conv folds even when a PixelShuffle follows the BN (the upsampling
stages are conv -> PixelShuffle without BN in SRResNet, so nothing to do there; a conv -> BN ->
PixelShuffle order folds like any conv -> BN).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class UnfoldableBatchNormError(ValueError):
    """A BatchNorm that does not directly follow a convolution."""


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a new conv equal to ``bn(conv(x))`` with ``bn`` in eval mode (float64 arithmetic)."""
    if conv.out_channels != bn.num_features:
        raise UnfoldableBatchNormError(f"fold_conv_bn: conv has {conv.out_channels} outputs, BN {bn.num_features}")
    if bn.running_mean is None or bn.running_var is None:
        raise UnfoldableBatchNormError("fold_conv_bn: BatchNorm without running statistics cannot be folded")
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode).to(conv.weight.device)
    with torch.no_grad():
        w = conv.weight.double()
        c = conv.bias.double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64,
                                                                         device=w.device)
        g = bn.weight.double() if bn.weight is not None else torch.ones_like(c)
        b = bn.bias.double() if bn.bias is not None else torch.zeros_like(c)
        inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
        fused.weight.copy_((w * (g * inv_std).view(-1, 1, 1, 1)).to(conv.weight.dtype))
        fused.bias.copy_(((c - bn.running_mean.double()) * g * inv_std + b).to(conv.weight.dtype))
    return fused


def _fuse_sequence(parent: nn.Module, prefix: str) -> None:
    """Fold conv -> BN pairs among ``parent``'s children, in registration (= forward) order."""
    names = list(parent._modules)
    last_conv: str | None = None
    for name in names:
        child = parent._modules[name]
        path = f"{prefix}{name}"
        if isinstance(child, nn.Conv2d):
            last_conv = name
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            if last_conv is None:
                raise UnfoldableBatchNormError(
                    f"fuse_bn: BatchNorm {path!r} does not follow a Conv2d in its parent module; "
                    "it cannot be folded (fold it by hand or change the architecture)")
            parent._modules[last_conv] = fold_conv_bn(parent._modules[last_conv], child)
            parent._modules[name] = nn.Identity()
            last_conv = None
        else:
            if len(child._modules):
                _fuse_sequence(child, path + ".")
            # Any other module between a conv and a BN (activation, PixelShuffle, ...) breaks
            # the adjacency: such a BN is an error, never folded across a non-linear step.
            if not isinstance(child, nn.Identity):
                last_conv = None


def fuse_bn(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every BatchNorm folded into its preceding conv.

    The caller's model is untouched. Adjacency is taken from module registration order inside
    each parent, which is the forward order for srdeploy's architectures (``SRResNet``
    registers conv1, bn1, act, conv2, bn2 and ..., body_conv, body_bn); a test proves the result
    equal to the original. A BatchNorm that does not directly follow a conv raises
    ``UnfoldableBatchNormError`` naming it; afterwards no BatchNorm remains.
    """
    fused = copy.deepcopy(model).eval()
    _fuse_sequence(fused, "")
    left = [n for n, m in fused.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:  # defensive: _fuse_sequence raises first
        raise UnfoldableBatchNormError(f"fuse_bn: BatchNorm left unfused: {left}")
    return fused
