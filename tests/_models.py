"""Test models whose outputs cover the whole value range.

A randomly initialised SRResNet with the default clamp outputs dark images (mean 0.02-0.03, a third
to a half of the pixels clamped to 0), so a one-level uint8 tolerance is about 20% of a typical
value and an all-black or shifted output can pass a loose comparison. These models use the tanh
output, with the last convolution normalised per output channel on a calibration input (its
output has mean 0 and std 1 there, as in LSUV initialisation), so outputs spread over [0, 1]:
mean about 0.5, std about 0.25, hardly any pixel at 0 or 1. Every output value then moves every
comparison.
"""

from __future__ import annotations

from pathlib import Path


def spread_generator(*, scale: int = 4, num_blocks: int = 2, channels: int = 16, seed: int = 0,
                     smooth: bool = False):
    """An eval-mode SRResNet (tanh output, non-trivial BN statistics) with wide-range outputs.

    ``smooth``: the sub-pixel convolutions give all positions of a 2x2 block the same weights, so
    upsampling is nearest-neighbour on features and the 9x9 tail smooths it. Outputs then follow
    the input's shapes instead of a random pixel-level pattern, which is what a lossy video codec
    (4:2:0 chroma, DCT) can reproduce.
    """
    import torch

    from srdeploy.export.fuse import randomize_bn
    from srdeploy.train.archs import SRResNet

    torch.manual_seed(seed)
    model = randomize_bn(SRResNet(scale=scale, num_blocks=num_blocks, channels=channels, output_range="tanh"),
                         seed=seed)
    model.eval()
    if smooth:
        with torch.no_grad():
            for block in model.upsample:  # PixelShuffle(2): output channel c*4 + k is position k of channel c
                w, b = block.conv.weight.view(-1, 4, *block.conv.weight.shape[1:]), block.conv.bias.view(-1, 4)
                w.copy_(w[:, :1].expand_as(w).clone())
                b.copy_(b[:, :1].expand_as(b).clone())
    # Untouched, the tail's output (tanh argument) has std ~0.05 and a per-channel offset: outputs
    # would sit in 0.42-0.59, or saturate in one channel if merely scaled up.
    seen = {}
    hook = model.tail.register_forward_hook(lambda _m, _a, out: seen.update(z=out))
    gen = torch.Generator().manual_seed(seed)
    calib = torch.rand(1, 3, 32, 32, generator=gen)
    if smooth:  # calibrate on smooth content too (a coarse random field, enlarged)
        calib = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=gen), size=(32, 32),
                                                mode="bilinear", align_corners=False)
    with torch.no_grad():
        model(calib)
        hook.remove()
        mean, std = seen["z"].mean(dim=(0, 2, 3)), seen["z"].std(dim=(0, 2, 3))
        model.tail.weight.div_(std[:, None, None, None])
        model.tail.bias.sub_(mean).div_(std)
    return model


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


def export_random_checkpoint(checkpoint: Path, onnx_path: Path, kwargs: dict, *, seed: int = 0, **export_kwargs):
    """An ``SRResNet(**kwargs)`` with random BN statistics (``seed``) saved as a checkpoint and exported.

    The checkpoint goes to ``checkpoint``, the ONNX file (``srdeploy export``'s pipeline, quiet) to
    ``onnx_path``; ``export_kwargs`` go to ``export_checkpoint`` (``fp16=True``, ...).
    Returns (the eval-mode model, the checkpoint path, the ``ExportResult``).
    """
    import torch

    from srdeploy.export.fuse import randomize_bn
    from srdeploy.export.pipeline import export_checkpoint
    from srdeploy.train.archs import SRResNet
    from srdeploy.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = randomize_bn(SRResNet(**kwargs), seed=seed).eval()
    save_checkpoint(checkpoint, model, arch="SRResNet", kwargs=kwargs)
    return model, checkpoint, export_checkpoint(checkpoint, onnx_path, log=lambda *a: None, **export_kwargs)
