"""Typed training settings. argparse only fills these; the resolved settings are saved with a run."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    """Settings shared by SRResNet (pixel loss) and SRGAN (perceptual loss) training.

    Attributes:
        data: folders of HR training images.
        val: folders of HR validation images (PSNR/SSIM on Y, crop = scale); the first one
            selects ``best.pt``.
        out: run folder (``last.pt``, ``best.pt``, ``metrics.csv``, ``settings.json``).
        scale, num_blocks, channels: generator architecture.
        iters: total optimisation steps.
        batch_size: images per step (per process under torchrun).
        crop: HR crop size; the LR crop is crop / scale.
        lr: initial learning rate (Adam).
        lr_min_ratio: final learning rate as a fraction of ``lr`` for the cosine schedule.
        schedule: "cosine", "constant", or "step" (lr x 0.1 at half of ``iters``, as the
            paper's SRGAN schedule).
        loss: "mse" (paper) or "l1" pixel loss.
        pixel_weight: weight of the pixel loss (SRGAN: 0 in the paper).
        adv_weight: weight of the adversarial loss (SRGAN: 1e-3).
        content_weight: weight of the VGG content loss (SRGAN: 1).
        vgg_layer: VGG feature layer for the content loss ("relu5_4" = phi_5,4).
        vgg_weights: VGG19 weights file; None = torchvision's cache (never downloads).
        vgg_rescale: divide VGG features by this (paper: 12.75).
        init: SRGAN: checkpoint of a trained SRResNet to start from.
        ema: EMA decay of generator weights (0 = off).
        val_every, save_every, log_every: intervals in steps.
        seed: seed of weights init and of the crops.
        workers: DataLoader worker processes.
        device: "auto", "cpu", "cuda", "cuda:1", ...
        amp: mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler).
        channels_last: channels_last memory format on CUDA.
        resume: continue from ``out/last.pt``.
    """

    data: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    out: str = "runs/srresnet"
    scale: int = 4
    num_blocks: int = 16
    channels: int = 64
    iters: int = 100_000
    batch_size: int = 16
    crop: int = 96
    lr: float = 1e-4
    lr_min_ratio: float = 0.01
    schedule: str = "cosine"
    loss: str = "mse"
    pixel_weight: float = 1.0
    adv_weight: float = 0.0
    content_weight: float = 0.0
    vgg_layer: str = "relu5_4"
    vgg_weights: str | None = None
    vgg_rescale: float = 12.75
    init: str | None = None
    ema: float = 0.0
    val_every: int = 1000
    save_every: int = 500
    log_every: int = 50
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    resume: bool = False

    def validate(self) -> None:
        """Raise ValueError on settings that cannot work, naming the flag."""
        if not self.data:
            raise ValueError("train: --data needs at least one folder of HR images")
        if self.crop % self.scale:
            raise ValueError(f"train: --crop {self.crop} must be a multiple of --scale {self.scale}")
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"train: --loss must be mse or l1, got {self.loss!r}")
        if self.schedule not in ("cosine", "constant", "step"):
            raise ValueError(f"train: --schedule must be cosine, constant or step, got {self.schedule!r}")
        for name in ("iters", "batch_size", "val_every", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train: --{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
