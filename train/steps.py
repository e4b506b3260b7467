"""One optimisation step: precision, EMA, and the step functions of the two kinds of run.

``SRResNetStep`` is a pixel-loss step of the generator; ``SRGANStep`` a generator step
(content + adversarial [+ pixel]) followed by a discriminator step. Both take a batch already on
the device and return the loss parts as device tensors (read back only when the loop checks).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn

from .losses import ContentLoss, GeneratorLoss, gan_loss, pixel_loss

SRGAN_PARTS = ["g_pixel", "g_content", "g_adv", "d_loss", "d_real", "d_fake"]


class NonFiniteLossError(FloatingPointError, RuntimeError):
    """The loss (or the weights) became NaN or inf; the last good checkpoint is kept.

    Also a RuntimeError, so the CLI prints its message (exit code 1) instead of a traceback.
    """


@dataclass
class Precision:
    """The arithmetic actually used: "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler)."""

    name: str
    dtype: torch.dtype | None = None
    scaler: "torch.amp.GradScaler | None" = None
    note: str = ""

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.dtype)


def resolve_precision(amp: bool, device: torch.device) -> Precision:
    """bf16 autocast where the GPU supports it natively, else fp16 with a GradScaler; fp32 on CPU.

    Args:
        amp: the ``--amp`` setting (``--no-amp`` gives fp32).
        device: the training device.
    """
    if device.type != "cuda":
        return Precision("fp32", note="mixed precision applies on CUDA only" if amp else "--no-amp")
    if not amp:
        return Precision("fp32", note="--no-amp")
    # including_emulation=False: bf16 emulated on pre-Ampere GPUs is slower than fp16
    # (the keyword exists from torch 2.3; older versions do not count emulation anyway).
    try:
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        bf16 = torch.cuda.is_bf16_supported()
    if bf16:
        return Precision("bf16", torch.bfloat16, note="autocast bf16")
    scaler = torch.amp.GradScaler("cuda") if hasattr(torch.amp, "GradScaler") else torch.cuda.amp.GradScaler()
    return Precision("fp16", torch.float16, scaler, note="autocast fp16 + GradScaler")


class EMA:
    """Exponential moving average of a model's parameters (buffers such as BN statistics copied).

    Args:
        model: the model to follow (unwrapped, not DDP).
        decay: weight of the old average per step, e.g. 0.999.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - self.decay)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)


def all_finite(*modules: nn.Module) -> bool:
    """True when every parameter of the modules (None skipped) is finite."""
    flags = [torch.isfinite(p).all() for m in modules if m is not None for p in m.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def backward(loss: torch.Tensor, precision: Precision) -> None:
    """``loss.backward()``, through the fp16 GradScaler when there is one."""
    (precision.scaler.scale(loss) if precision.scaler is not None else loss).backward()


def optimizer_step(optimizer: torch.optim.Optimizer, precision: Precision) -> None:
    """``optimizer.step()``, through the fp16 GradScaler when there is one."""
    if precision.scaler is not None:
        precision.scaler.step(optimizer)  # skips the step when the fp16 gradients overflowed
    else:
        optimizer.step()


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch on the training device, in channels-last layout when the run uses it."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class SRResNetStep:
    """One pixel-loss step of the generator."""

    parts: list[str] = []

    def __init__(self, *, cfg, g_train, model, optimizer, scheduler, ema, precision):
        self.g_train, self.model, self.optimizer, self.scheduler = g_train, model, optimizer, scheduler
        self.ema, self.precision = ema, precision
        self.criterion = pixel_loss(cfg.loss)

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.precision.autocast():
            sr = self.g_train(lr)
        loss = self.criterion(sr.float(), hr)
        self.optimizer.zero_grad(set_to_none=True)
        backward(loss, self.precision)
        optimizer_step(self.optimizer, self.precision)
        if self.precision.scaler is not None:
            self.precision.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return {"loss": loss.detach()}

    def state(self) -> dict:
        return {}


class SRGANStep:
    """One SRGAN step: the generator (content + adversarial [+ pixel]), then the discriminator.

    The generator's adversarial term runs the discriminator's plain module (not its DDP
    wrapper) with its parameters frozen, so no gradient or all-reduce is spent on D there; D's
    own update runs real and fake batches separately (each forward followed by its backward,
    as DDP expects), each with ``BCEWithLogitsLoss``.
    """

    parts = SRGAN_PARTS

    def __init__(self, *, cfg, g_train, model, optimizer, scheduler, ema, precision,
                 vgg, disc, d_train, d_optimizer, d_scheduler):
        self.g_train, self.model, self.optimizer, self.scheduler = g_train, model, optimizer, scheduler
        self.ema, self.precision = ema, precision
        self.disc, self.d_train, self.d_optimizer, self.d_scheduler = disc, d_train, d_optimizer, d_scheduler
        content = ContentLoss(vgg, rescale=cfg.vgg_rescale) if vgg is not None else None
        self.loss = GeneratorLoss(pixel=pixel_loss(cfg.loss), content=content, pixel_weight=cfg.pixel_weight,
                                  content_weight=cfg.content_weight, adv_weight=cfg.adv_weight)

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        prec = self.precision
        with prec.autocast():
            sr = self.g_train(lr)
        fake_logits = None
        if self.disc is not None:
            self.disc.requires_grad_(False)
            with prec.autocast():
                fake_logits = self.disc(sr)
        with prec.autocast():
            total, parts = self.loss(sr, hr, fake_logits)
        self.optimizer.zero_grad(set_to_none=True)
        backward(total, prec)
        optimizer_step(self.optimizer, prec)
        out = {"loss": total.detach(), **{k: v.detach() for k, v in parts.items()}}

        if self.disc is not None:
            self.disc.requires_grad_(True)
            self.d_optimizer.zero_grad(set_to_none=True)
            with prec.autocast():
                real_logits = self.d_train(hr)
            loss_real = gan_loss(real_logits, real=True)
            backward(loss_real, prec)
            with prec.autocast():
                fake_logits = self.d_train(sr.detach())
            loss_fake = gan_loss(fake_logits, real=False)
            backward(loss_fake, prec)
            optimizer_step(self.d_optimizer, prec)
            self.d_scheduler.step()
            out["d_loss"] = (loss_real + loss_fake).detach()
            out["d_real"] = torch.sigmoid(real_logits.detach().float()).mean()
            out["d_fake"] = torch.sigmoid(fake_logits.detach().float()).mean()
        if prec.scaler is not None:
            prec.scaler.update()  # once per iteration, after every optimizer stepped
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return out

    def state(self) -> dict:
        if self.disc is None:
            return {}
        return {"discriminator": {"arch": "Discriminator", "kwargs": {"base_channels": self.disc_channels},
                                  "state_dict": {k: v.detach().cpu() for k, v in self.disc.state_dict().items()}},
                "optimizer_d": self.d_optimizer.state_dict(), "scheduler_d": self.d_scheduler.state_dict()}

    @property
    def disc_channels(self) -> int:
        return self.disc.features[0].out_channels
