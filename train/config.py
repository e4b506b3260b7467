"""Typed training settings. argparse only fills these; the resolved settings are saved with a run."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

KINDS = ("srresnet", "srgan")

# Per-kind defaults for the fields left at None (the paper's settings).
# SRResNet: MSE pixel loss, lr 1e-4 (we decay it with a cosine by default).
# SRGAN: VGG phi_5,4 content loss (features / 12.75) + 1e-3 x adversarial, no pixel loss,
# Adam lr 1e-4 then 1e-5 for the second half ("step" schedule).
KIND_DEFAULTS = {
    "srresnet": {"schedule": "cosine", "pixel_weight": 1.0, "content_weight": 0.0, "adv_weight": 0.0},
    "srgan": {"schedule": "step", "pixel_weight": 0.0, "content_weight": 1.0, "adv_weight": 1e-3},
}


@dataclass
class TrainConfig:
    """Settings shared by SRResNet (pixel loss) and SRGAN (perceptual loss) training.

    Fields left at ``None`` take the defaults of ``kind`` (``KIND_DEFAULTS``) when the run
    starts; the resolved values are what ``settings.json`` and the checkpoints record.

    Attributes:
        kind: "srresnet" or "srgan" (set by ``train_srresnet`` / ``train_srgan``).
        data: folders of HR training images.
        val: folders of HR validation images (PSNR/SSIM on Y, crop = scale); the first one
            selects ``best.pt``. Folder names must differ (they name the CSV columns).
        out: run folder (``last.pt``, ``best.pt``, ``metrics.csv``, ``settings.json``).
        scale, num_blocks, channels: generator architecture (SRGAN: taken from ``init``).
        iters: total optimisation steps (SRGAN paper: 1e5 at lr 1e-4 + 1e5 at 1e-5).
        batch_size: images per step, per process under torchrun (global = batch x world size).
        crop: HR crop size; the LR crop is crop / scale.
        lr: initial learning rate of the generator (Adam, betas 0.9/0.999).
        d_lr: SRGAN discriminator learning rate (None = ``lr``).
        lr_min_ratio: final learning rate as a fraction of ``lr`` for the cosine schedule.
        schedule: "cosine", "constant", or "step" (lr x 0.1 from half of ``iters``, the paper's
            SRGAN schedule); None = kind default (srresnet cosine, srgan step).
        loss: pixel loss, "mse" (paper) or "l1".
        pixel_weight: weight of the pixel loss (None = 1 for srresnet, 0 for srgan).
        adv_weight: weight of the adversarial loss (None = 1e-3 for srgan).
        content_weight: weight of the VGG content loss (None = 1 for srgan).
        vgg_layer: VGG19 layer of the content loss: "relu5_4" (phi_5,4, paper) or "relu2_2", ...
        vgg_weights: VGG19 ImageNet weights file; None = torchvision's torch-hub cache (never
            downloads: a clear error says how to provide the file). "random" keeps random
            weights: for tests only (the content loss is then meaningless); it is recorded.
        vgg_rescale: VGG features are divided by this before the MSE (paper: 12.75).
        d_channels: SRGAN discriminator base channels (paper: 64).
        init: SRGAN: checkpoint of a trained SRResNet to start from (its EMA weights if any).
        ema: EMA decay of the generator weights (0 = off; e.g. 0.999). When on, validation,
            ``best.pt`` selection, eval and export use the EMA weights (``ema_state_dict``).
        val_every, save_every, log_every: intervals in steps.
        seed: seed of the weight init and of the crops (crop i is a function of (seed, i)).
        workers: DataLoader worker processes (CPU data path).
        device: "auto", "cpu", "cuda", "cuda:1", ... (torchrun: cuda:LOCAL_RANK).
        amp: mixed precision on CUDA: bf16 where supported, else fp16 with a GradScaler.
            Ignored on CPU (fp32); the precision used is recorded in settings.json.
        channels_last: channels_last memory format on CUDA.
        gpu_crops: on CUDA, hold the training images on the GPU and cut / downscale the crops
            there (same crops as the CPU path); False uses a DataLoader with ``workers``.
        tensorboard: also log to TensorBoard (``out/tb``) when the package is installed.
        progress: a progress bar on stderr (``-q`` turns it off; the status lines and validation
            rows are printed either way).
        resume: continue from ``out/last.pt``. Changed optimisation settings (lr, d_lr,
            schedule, lr_min_ratio, iters, loss weights, ...) apply from the resumed step on;
            the schedule continues from that step with the new values.
        time_budget: seconds this invocation may take (``--time-budget 8m``), or None. The
            trainer measures it/s after a short warm-up and plans the iterations (at most
            ``iters``) so that the run, its validations and its final checkpoint end within
            the budget; the schedule spans the planned iterations. With ``resume``, the budget
            is for the steps added to the current one. ``iters`` then records the plan.
    """

    kind: str = "srresnet"
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
    d_lr: float | None = None
    lr_min_ratio: float = 0.01
    schedule: str | None = None
    loss: str = "mse"
    pixel_weight: float | None = None
    adv_weight: float | None = None
    content_weight: float | None = None
    vgg_layer: str = "relu5_4"
    vgg_weights: str | None = None
    vgg_rescale: float = 12.75
    d_channels: int = 64
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
    gpu_crops: bool = True
    tensorboard: bool = True
    progress: bool = True
    resume: bool = False
    time_budget: float | None = None

    def resolved(self, kind: str) -> "TrainConfig":
        """A copy with ``kind`` set and the ``None`` fields filled with that kind's defaults."""
        if kind not in KINDS:
            raise ValueError(f"train: unknown kind {kind!r}; choose from {KINDS}")
        values = {k: v for k, v in KIND_DEFAULTS[kind].items() if getattr(self, k) is None}
        if self.d_lr is None:
            values["d_lr"] = self.lr
        return replace(self, kind=kind, **values)

    def validate(self) -> None:
        """Raise ValueError on settings that cannot work, naming the flag (call on a resolved config)."""
        if self.kind not in KINDS:
            raise ValueError(f"train: unknown kind {self.kind!r}; choose from {KINDS}")
        if not self.data:
            raise ValueError("train: --data needs at least one folder of HR images")
        if self.scale not in (2, 4, 8):
            raise ValueError(f"train: --scale must be 2, 4 or 8, got {self.scale}")
        if self.crop % self.scale:
            raise ValueError(f"train: --crop {self.crop} must be a multiple of --scale {self.scale}")
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"train: --loss must be mse or l1, got {self.loss!r}")
        if self.schedule not in ("cosine", "constant", "step"):
            raise ValueError(f"train: --schedule must be cosine, constant or step, got {self.schedule!r}")
        for name in ("iters", "batch_size", "crop", "val_every", "save_every", "log_every",
                     "num_blocks", "channels", "d_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"train: --{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"train: --workers must be >= 0, got {self.workers}")
        for name in ("lr", "d_lr", "vgg_rescale"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"train: --{name.replace('_', '-')} must be a positive number, got {value}")
        if self.time_budget is not None and not (math.isfinite(self.time_budget) and self.time_budget > 0):
            raise ValueError(f"train: --time-budget must be a positive duration, got {self.time_budget}")
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ValueError(f"train: --lr-min-ratio must be in [0, 1], got {self.lr_min_ratio}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"train: --ema must be in [0, 1) (0 = off, e.g. 0.999), got {self.ema}")
        weights = {n: getattr(self, n) for n in ("pixel_weight", "content_weight", "adv_weight")}
        for name, value in weights.items():
            if value is None or not math.isfinite(value) or value < 0:
                raise ValueError(f"train: --{name.replace('_', '-')} must be a number >= 0, got {value}")
        if self.kind == "srresnet":
            if weights["content_weight"] or weights["adv_weight"]:
                raise ValueError("train srresnet: content/adversarial losses belong to SRGAN; "
                                 "use `srdeploy train srgan` for them")
            if not weights["pixel_weight"]:
                raise ValueError("train srresnet: --pixel-weight must be > 0 (it is the only loss)")
        elif not any(weights.values()):
            raise ValueError("train srgan: all loss weights are 0; set --content-weight, --adv-weight "
                             "or --pixel-weight")
        names = [Path(v).name for v in self.val]
        if len(set(names)) != len(names):
            raise ValueError(f"train: --val folders must have different names (they name the metrics "
                             f"columns), got {names}")

    def to_dict(self) -> dict:
        """Plain-JSON dict of the settings."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Rebuild from ``to_dict`` output or a run's settings.json (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        """Read a run's ``settings.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds of a duration such as "90s", "8m", "2h" or "45" (seconds).

    Raises ValueError naming the expected forms when ``text`` is none of them.
    """
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"train: --time-budget {text!r} is not a duration; write e.g. 90s, 8m or 2h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2).lower()]
