"""Test models whose outputs cover the whole value range.

A randomly initialised SRResNet with the default clamp outputs dark images (mean 0.02-0.03, a third
to a half of the pixels clamped to 0), so a one-level uint8 tolerance is about 20% of a typical
value and an all-black or shifted output can pass a loose comparison. These models use the tanh
output with the last convolution scaled up, so outputs spread over [0, 1] (mean about 0.5, std
about 0.25, almost nothing at 0 or 1): every output value then moves every comparison.
"""

from __future__ import annotations

from pathlib import Path

TAIL_GAIN = 8.0  # tail conv x 8: tanh argument std ~1 (x 1 gives outputs in 0.42-0.59 only)


def spread_generator(*, scale: int = 4, num_blocks: int = 2, channels: int = 16, seed: int = 0):
    """An eval-mode SRResNet (tanh output, non-trivial BN statistics) with wide-range outputs."""
    import torch

    from srdeploy.export.fuse import randomize_bn
    from srdeploy.train.archs import SRResNet

    torch.manual_seed(seed)
    model = randomize_bn(SRResNet(scale=scale, num_blocks=num_blocks, channels=channels, output_range="tanh"),
                         seed=seed)
    with torch.no_grad():
        model.tail.weight.mul_(TAIL_GAIN)
        model.tail.bias.mul_(TAIL_GAIN)
    return model.eval()


def export_spread_model(path: Path, **kwargs) -> Path:
    """``spread_generator(**kwargs)``, BN folded, exported to ONNX at ``path`` with srdeploy metadata."""
    from srdeploy.export.fuse import fuse_bn
    from srdeploy.export.onnx_export import add_metadata, export_onnx
    from srdeploy.runtime.metadata import ModelInfo
    from srdeploy.train.archs import receptive_radius

    model = spread_generator(**kwargs)
    path = Path(path)
    export_onnx(fuse_bn(model), path)
    add_metadata(path, ModelInfo(scale=model.scale, receptive_radius=receptive_radius(model), arch="SRResNet",
                                 arch_kwargs={"scale": model.scale, "num_blocks": len(model.body),
                                              "channels": model.head.out_channels, "output_range": "tanh"}))
    return path
