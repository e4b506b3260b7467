"""Receptive radius of any generator, measured: an impulse probe, not a formula per architecture.

The receptive radius is how far (Chebyshev distance, in input pixels) the input pixels an output
pixel depends on can lie from it. A tile margin of at least that radius makes tiled inference
equal to whole-image inference. How it is measured, for any ``nn.Module``:

0. A model that knows its radius exactly (a ``receptive_radius()`` method, as srdeploy's
   SRResNet has: a walk over its layers) is asked; that costs nothing.
1. **Bound.** One small forward pass with hooks records every convolution's kernel, dilation
   and the resolution it runs at (its input size over the model's); the sum of their half
   widths, in input pixels, bounds the radius of any network built from convolutions and
   resampling (every path uses some of them), plus 2 pixels for interpolations.
2. **Probe.** On a random input of side ``2 * bound + 3``, the gradient of the centre pixel's
   outputs (every sub-pixel phase, every channel) with respect to the input is non-zero exactly
   on the input pixels they depend on; the farthest lies at the radius. A gradient reaching the
   probe's border means the network mixes more than its convolutions say (attention, global
   pooling): the probe grows until it stays inside, or up to ``limit``.

A gradient, not an impulse (run twice, compare outputs): a far pixel's influence on an output
near 1 can be far below float32 resolution, so the outputs compare equal and the radius comes out
too small (33 instead of 38 on a tiny Real-ESRGAN x2); its gradient is still a normal float. And
float32, not float64: CPU float64 convolutions take a slow path (71 s against 14 s for the
16-block SRResNet under load). An output clamp would zero the gradient of saturated pixels, so
the probe runs an unclamped copy. Networks whose bound exceeds ``limit / 2`` (a 23-block RRDBNet: about
350 pixels) are not probed (a forward pass at that size takes minutes on a CPU): the bound is
their radius, exact for a chain of convolutions. ``RadiusResult.method`` records which.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

PROBE_LIMIT = 256  # largest probe side (input pixels)


@dataclass(frozen=True)
class RadiusResult:
    """A measured receptive radius.

    Attributes:
        radius: input pixels.
        method: "probe" (measured at ``size``), "bound" (the convolution bound, too large to
            probe) or "limit" (the change still reached the border of the largest probe: the
            radius is at least ``radius``).
        size: side of the last probe input (0 for "bound").
    """

    radius: int
    method: str  # "architecture", "probe", "bound" or "limit"
    size: int = 0


def _first_conv(model: nn.Module) -> nn.Conv2d | None:
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def model_in_channels(model: nn.Module) -> int:
    """Image channels a generator takes: its ``in_channels`` attribute, else its first conv's."""
    if isinstance(getattr(model, "in_channels", None), int):
        return model.in_channels
    conv = _first_conv(model)
    return conv.in_channels if conv is not None else 3


def _unclamped(model: nn.Module) -> nn.Module:
    """A float32 eval copy whose output clamp (if any) is off, so saturated pixels still show changes."""
    m = copy.deepcopy(model).float().eval()
    for mod in m.modules():
        if getattr(mod, "output_range", None) == "clamp":  # srdeploy's SRResNet
            mod.output_range = "none"
        if getattr(mod, "clamp_output", None) is True:    # families.Deployed
            mod.clamp_output = False
    return m


def conv_bound(model: nn.Module, *, channels: int, multiple: int = 1, size: int = 16) -> int:
    """Sum of every convolution's half width in input pixels (see the module doc), plus 2."""
    n = max(size, multiple) // multiple * multiple
    total = 0.0

    def hook(mod, args, _out):
        nonlocal total
        res = args[0].shape[-1] / n  # this conv's resolution relative to the model input
        for k, d in zip(mod.kernel_size, mod.dilation):
            half = (k - 1) // 2 * d
            total += half / res / len(mod.kernel_size)  # mean over the two axes (square kernels: the same)
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            model(torch.rand(1, channels, n, n, dtype=next(model.parameters()).dtype))
    finally:
        for h in handles:
            h.remove()
    return math.ceil(total) + 2


def _probe(model: nn.Module, n: int, channels: int, scale: int, seed: int) -> tuple[int, bool]:
    """(radius seen, whether the dependency reached the probe border) from the gradient of the
    centre LR pixel's outputs (all sub-pixel phases, all channels) with respect to the input."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, channels, n, n, generator=gen).requires_grad_(True)
    c = n // 2
    model(x)[0, :, c * scale:(c + 1) * scale, c * scale:(c + 1) * scale].sum().backward()
    ys, xs = torch.nonzero(x.grad[0].abs().sum(0) > 0, as_tuple=True)
    if ys.numel() == 0:
        return 0, False
    r = int(max((ys - c).abs().max(), (xs - c).abs().max()))
    touches = bool(ys.min() == 0 or xs.min() == 0 or ys.max() == n - 1 or xs.max() == n - 1)
    return r, touches


def measure_radius(model: nn.Module, *, scale: int | None = None, channels: int | None = None, multiple: int = 1,
                   limit: int = PROBE_LIMIT) -> RadiusResult:
    """Measure a generator's receptive radius (see the module doc).

    Args:
        model: the generator (eval mode; any ``nn.Module`` mapping N x C x H x W to N x C x sH x sW).
        scale: its scale (default: ``model.scale``).
        channels: input channels (default: ``model_in_channels``).
        multiple: input sides must be a multiple of this (pixel-unshuffle models).
        limit: the largest probe side.
    """
    if callable(getattr(model, "receptive_radius", None)):
        return RadiusResult(int(model.receptive_radius()), "architecture")
    scale = int(scale if scale is not None else model.scale)
    channels = channels or model_in_channels(model)
    probe = _unclamped(model)
    bound = conv_bound(probe, channels=channels, multiple=multiple)

    def fit(v: int) -> int:
        return -(-v // multiple) * multiple

    n = fit(2 * bound + 3)
    if n > limit:
        return RadiusResult(bound, "bound")
    for p in probe.parameters():
        p.requires_grad_(False)  # only the input's gradient is needed
    while True:
        r, touches = _probe(probe, n, channels, scale, seed=0)
        if not touches:
            return RadiusResult(r, "probe", n)
        if n >= limit:
            return RadiusResult(max(r, n // 2), "limit", n)
        n = min(fit(2 * n + 1), fit(limit))


def receptive_radius(model: nn.Module, **kwargs) -> int:
    """The receptive radius in input (LR) pixels (``measure_radius(model, **kwargs).radius``)."""
    return measure_radius(model, **kwargs).radius
