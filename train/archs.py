"""Network architectures of SRGAN (Ledig et al., CVPR 2017).

Value-range contract (what deployment relies on): the generator takes RGB images in [0, 1],
NCHW float32, and returns RGB in [0, 1] (``output_range="clamp"``, the default, clamps; "tanh"
maps a tanh output from [-1, 1] to [0, 1]; "none" leaves the raw conv output for training
variants that want it). The ONNX exporter records this range in the model's metadata.

Architectures are registered by name in ``ARCHS`` so a checkpoint can rebuild its model from
``(arch, kwargs)`` alone.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from .radius import receptive_radius  # noqa: F401  (measured for any generator; see radius.py)

_OUTPUT_RANGES = ("clamp", "tanh", "none")


class ResidualBlock(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity skip (paper Fig. 4).

    Args:
        channels: feature channels in and out.
    """

    def __init__(self, *, channels: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class UpsampleBlock(nn.Module):
    """conv3x3 (C -> 4C) - PixelShuffle(2) - PReLU: one 2x sub-pixel upsampling stage.

    Args:
        channels: feature channels in and out.
    """

    def __init__(self, *, channels: int = 64):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """The SRResNet / SRGAN generator.

    9x9 conv + PReLU; ``num_blocks`` residual blocks; conv3x3 + BN and the long skip;
    log2(scale) sub-pixel upsampling stages; final 9x9 conv to RGB.

    Input: RGB in [0, 1], shape (N, 3, H, W), any H, W >= 1.
    Output: RGB in [0, 1] (see ``output_range``), shape (N, 3, scale*H, scale*W).

    Args:
        scale: upscaling factor, 2, 4 or 8.
        num_blocks: residual blocks (paper: 16).
        channels: feature channels (paper: 64).
        output_range: "clamp" (default) clamps to [0, 1]; "tanh" maps tanh to [0, 1];
            "none" returns the raw output (range not guaranteed).
    """

    def __init__(self, *, scale: int = 4, num_blocks: int = 16, channels: int = 64,
                 output_range: str = "clamp"):
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"SRResNet: scale must be 2, 4 or 8, got {scale!r}")
        if output_range not in _OUTPUT_RANGES:
            raise ValueError(f"SRResNet: output_range must be one of {_OUTPUT_RANGES}, got {output_range!r}")
        if num_blocks < 1 or channels < 1:
            raise ValueError(f"SRResNet: num_blocks and channels must be >= 1, got {num_blocks}, {channels}")
        self.scale = scale
        self.output_range = output_range
        self.head = nn.Conv2d(3, channels, 9, padding=4)
        self.head_act = nn.PReLU(channels)
        self.body = nn.Sequential(*[ResidualBlock(channels=channels) for _ in range(num_blocks)])
        self.body_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.body_bn = nn.BatchNorm2d(channels)
        self.upsample = nn.Sequential(*[UpsampleBlock(channels=channels) for _ in range(int(math.log2(scale)))])
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)

    def receptive_radius(self) -> int:
        """The exact receptive radius in input (LR) pixels, by walking the layers backwards.

        Construction order is forward order here. A kxk conv widens the dependency by (k-1)/2
        pixels at its resolution; going back through PixelShuffle(s), fine pixels p-r..p+r come
        from coarse pixels floor((p-r)/s)..floor((p+r)/s), at most ceil(r/s) away from floor(p/s).
        (Any other generator is measured by ``srdeploy.train.radius``'s probe.)
        """
        radius = 0
        for module in reversed(list(self.modules())):
            if isinstance(module, nn.PixelShuffle):
                radius = -(-radius // module.upscale_factor)
            elif isinstance(module, nn.Conv2d):
                radius += (module.kernel_size[0] - 1) // 2 * module.dilation[0]
        return radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head_act(self.head(x))
        out = self.body_bn(self.body_conv(self.body(feat))) + feat
        out = self.tail(self.upsample(out))
        if self.output_range == "clamp":
            # Clamp only at inference: in training a clamp would zero the gradient of
            # out-of-range pixels, which slows early training.
            return out if self.training else out.clamp(0.0, 1.0)
        if self.output_range == "tanh":
            return (torch.tanh(out) + 1.0) * 0.5
        return out


def detect_srresnet(sd) -> dict | None:
    """SRResNet kwargs (scale, num_blocks, channels) from a state dict's keys and shapes; None for
    other layouts. ``output_range`` has no weights of its own, so it is not detected."""
    if not {"head.weight", "body_conv.weight", "body_bn.running_var", "tail.weight"} <= sd.keys():
        return None
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("body.") and k.endswith(".conv1.weight")})
    stages = sorted({int(k.split(".")[1]) for k in sd if k.startswith("upsample.") and k.endswith(".conv.weight")})
    if blocks != list(range(len(blocks))) or stages != list(range(len(stages))):
        raise ValueError(f"the state dict's residual blocks {blocks[:8]} or upsampling stages {stages} are not "
                         "numbered 0..n-1; the file is damaged or edited")
    return {"scale": 2 ** len(stages), "num_blocks": len(blocks), "channels": int(sd["head.weight"].shape[0])}


class Discriminator(nn.Module):
    """The SRGAN discriminator (paper Fig. 4), returning one logit per image.

    Eight conv3x3 layers (64, 64, 128, 128, 256, 256, 512, 512 channels; every second one with
    stride 2) with LeakyReLU(0.2) and BatchNorm on every conv but the first; then adaptive
    average pooling (so any input size works, 96x96 in the paper gives 6x6), dense 1024,
    LeakyReLU(0.2), dense 1. Use with ``BCEWithLogitsLoss`` (no sigmoid here).

    Args:
        in_channels: image channels (3 for RGB).
        base_channels: channels of the first conv (paper: 64).
        pool_size: spatial size after adaptive pooling (paper's 96x96 crops give 6).
    """

    def __init__(self, *, in_channels: int = 3, base_channels: int = 64, pool_size: int = 6):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(8):
            c_out = base_channels * 2 ** (i // 2)
            stride = 2 if i % 2 == 1 else 1
            layers.append(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=(i == 0)))
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * pool_size * pool_size, 1024),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(1024, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x))).squeeze(1)


def detect_discriminator(sd) -> dict | None:
    """Discriminator kwargs from a state dict's shapes; None for other layouts."""
    if not {"features.0.weight", "classifier.1.weight"} <= sd.keys():
        return None
    first = sd["features.0.weight"]
    dense_in = int(sd["classifier.1.weight"].shape[1])
    last = max((int(k.split(".")[1]) for k in sd if k.startswith("features.") and k.endswith(".weight")
                and sd[k].dim() == 4), default=0)
    pool = int(round((dense_in / int(sd[f"features.{last}.weight"].shape[0])) ** 0.5))
    return {"in_channels": int(first.shape[1]), "base_channels": int(first.shape[0]), "pool_size": pool}


# Index of the ReLU after conv{block}_{i} in torchvision's vgg19().features.
VGG19_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26, "relu5_4": 35}
# The paper's phi_{i,j} is the feature map of the j-th conv (after activation) before the i-th pool.
PHI_ALIASES = {"phi22": "relu2_2", "phi54": "relu5_4", "phi_2_2": "relu2_2", "phi_5_4": "relu5_4"}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# VGG19 ("configuration E"): conv3x3 channels per block, "M" = 2x2 max-pool.
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M")


def _vgg19_features(length: int) -> nn.Sequential:
    """The first ``length`` modules of VGG19's ``features``, indexed as torchvision's (so its
    state dict loads), built directly: torchvision's vgg19() would also allocate and initialise
    the 120 M-parameter classifier we never use."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in _VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = v
    return nn.Sequential(*layers[:length])


def _load_vgg19_weights(vgg: nn.Module, weights: str | os.PathLike | None) -> None:
    if weights == "random":
        return
    if weights is None:
        from torchvision.models import VGG19_Weights

        url = VGG19_Weights.IMAGENET1K_V1.url
        hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
        path = hub_dir / os.path.basename(url)
        if not path.is_file():
            raise FileNotFoundError(
                "VGGFeatures: pretrained VGG19 weights not found. The SRGAN content loss needs "
                f"ImageNet VGG19 weights; srdeploy never downloads them. Either place torchvision's "
                f"file at {path} (download {url} on a machine with internet and copy it there), or "
                "pass the file explicitly (srdeploy train srgan --vgg-weights FILE)."
            )
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"VGGFeatures: VGG19 weights file {path} does not exist")
    from .serialization import torch_load_safely

    what = "VGG19 weights (torchvision's vgg19-dcbb9e9d.pth or a features state dict)"
    state = torch_load_safely(path, what)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"VGGFeatures: {path} is not {what}: it holds a {type(state).__name__} of other things")
    # Accept the full torchvision state dict ("features.0.weight", "classifier...") or a
    # features-only one ("0.weight").
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")} or state
    try:
        missing, _ = vgg.load_state_dict(feats, strict=False)
    except RuntimeError:
        raise ValueError(f"VGGFeatures: {path} is not {what}: tensor shapes differ from VGG19's") from None
    needed = [k for k in missing if int(k.split(".")[0]) < len(vgg)]
    if needed:
        raise ValueError(f"VGGFeatures: {path} is not {what} (missing {needed[:4]}...)")


class VGGFeatures(nn.Module):
    """Frozen VGG19 feature extractor for the perceptual (content) loss.

    Takes RGB in [0, 1]; ImageNet normalisation is applied inside. Always in eval mode and
    without gradients for its own parameters.

    Args:
        layer: "relu5_4" (paper's phi_5,4, default), "relu2_2" (phi_2,2), or any key of
            ``VGG19_LAYERS`` / ``PHI_ALIASES``.
        weights: None loads torchvision's ImageNet weights from the torch hub cache (never
            downloads; a clear error says how to provide them), a path loads that file, and
            "random" keeps random initialisation (tests only: the loss is then meaningless).
    """

    def __init__(self, *, layer: str = "relu5_4", weights: str | os.PathLike | None = None):
        super().__init__()
        layer = PHI_ALIASES.get(layer, layer)
        if layer not in VGG19_LAYERS:
            raise ValueError(f"VGGFeatures: unknown layer {layer!r}; choose from {sorted(VGG19_LAYERS)}")
        self.layer = layer
        self.features = _vgg19_features(VGG19_LAYERS[layer] + 1)
        _load_vgg19_weights(self.features, weights)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGGFeatures":
        # Frozen feature extractor: never switch to training mode.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)


# name -> class; checkpoints store the name and the keyword arguments. The SR generators of other
# codebases are families (srdeploy.train.families), which build SRResNet through this table too.
ARCHS: dict[str, type[nn.Module]] = {
    "SRResNet": SRResNet,
    "Discriminator": Discriminator,
}
# name -> detect(state_dict) -> kwargs: checkpoints' kwargs are checked against their weights with it.
DETECT = {"SRResNet": detect_srresnet, "Discriminator": detect_discriminator}


def build_model(arch: str, **kwargs) -> nn.Module:
    """Build a registered architecture from its name and keyword arguments."""
    if arch not in ARCHS:
        raise ValueError(f"build_model: unknown architecture {arch!r}; registered: {sorted(ARCHS)}")
    return ARCHS[arch](**kwargs)
