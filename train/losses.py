"""Losses of SRResNet and SRGAN training (Ledig et al. 2017).

- Pixel loss: MSE (the paper's SRResNet) or L1.
- Content loss: MSE between VGG19 feature maps of SR and HR, the features divided by 12.75
  (the paper's rescaling, which brings phi_5,4 to a range comparable with the pixel MSE).
- Adversarial loss: ``BCEWithLogitsLoss`` on discriminator logits. The generator is trained to
  make D(SR) look real (the non-saturating -log D(G(x)) of the paper), the discriminator to
  tell D(HR) = real from D(SR) = fake.

All losses are computed in float32, also under autocast, so fp16 features cannot overflow the
squared differences.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def pixel_loss(kind: str = "mse") -> nn.Module:
    """``nn.MSELoss()`` (paper) or ``nn.L1Loss()``.

    Args:
        kind: "mse" or "l1".
    """
    if kind == "mse":
        return nn.MSELoss()
    if kind == "l1":
        return nn.L1Loss()
    raise ValueError(f"pixel_loss: kind must be mse or l1, got {kind!r}")


class ContentLoss(nn.Module):
    """VGG content loss: ``MSE(phi(sr) / rescale, phi(hr) / rescale)``.

    Args:
        features: a frozen feature extractor (``srdeploy.train.archs.VGGFeatures``) taking RGB
            in [0, 1].
        rescale: divide the features by this before the MSE (paper: 12.75).
    """

    def __init__(self, features: nn.Module, *, rescale: float = 12.75):
        super().__init__()
        self.features = features
        self.rescale = float(rescale)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the target side needs no graph
            target = self.features(hr).float() / self.rescale
        return F.mse_loss(self.features(sr).float() / self.rescale, target)


def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """``BCEWithLogitsLoss`` of discriminator logits against an all-real or all-fake target.

    Args:
        logits: raw discriminator outputs (no sigmoid), any shape.
        real: True for the target "real" (1), False for "fake" (0).
    """
    logits = logits.float()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


class GeneratorLoss(nn.Module):
    """Weighted SRGAN generator loss; returns the total and its parts.

    ``total = pixel_weight * pixel(sr, hr) + content_weight * content(sr, hr)
    + adv_weight * BCE(D(sr), real)``. Parts with weight 0 are neither computed nor reported.

    Args:
        pixel: pixel loss module (``pixel_loss``), or None.
        content: ``ContentLoss``, or None.
        pixel_weight, content_weight, adv_weight: weights (paper: 0, 1, 1e-3).
    """

    def __init__(self, *, pixel: nn.Module | None, content: nn.Module | None,
                 pixel_weight: float = 0.0, content_weight: float = 1.0, adv_weight: float = 1e-3):
        super().__init__()
        if content_weight and content is None:
            raise ValueError("GeneratorLoss: content_weight > 0 needs a ContentLoss")
        if pixel_weight and pixel is None:
            raise ValueError("GeneratorLoss: pixel_weight > 0 needs a pixel loss")
        self.pixel, self.content = pixel, content
        self.pixel_weight, self.content_weight, self.adv_weight = pixel_weight, content_weight, adv_weight

    def forward(self, sr: torch.Tensor, hr: torch.Tensor,
                fake_logits: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Args: sr, hr: images (N, 3, H, W) in [0, 1]; fake_logits: D(sr) (needed when adv_weight > 0)."""
        parts: dict[str, torch.Tensor] = {}
        total = sr.new_zeros((), dtype=torch.float32)
        if self.pixel_weight:
            parts["g_pixel"] = self.pixel(sr.float(), hr.float())
            total = total + self.pixel_weight * parts["g_pixel"]
        if self.content_weight:
            parts["g_content"] = self.content(sr, hr)
            total = total + self.content_weight * parts["g_content"]
        if self.adv_weight:
            if fake_logits is None:
                raise ValueError("GeneratorLoss: adv_weight > 0 needs the discriminator logits of sr")
            parts["g_adv"] = gan_loss(fake_logits, real=True)
            total = total + self.adv_weight * parts["g_adv"]
        return total, parts
