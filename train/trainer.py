"""Training loops: SRResNet with a pixel loss, SRGAN with a perceptual (VGG + adversarial) loss.

Read top to bottom: helpers (device and process group, precision, EMA, data on the device,
metrics file), then ``_train``: checks that can fail early, start state (resume / init), models
and optimisers, the step loop with logging, validation and checkpoints. The two kinds differ
only in their step function (``_SRResNetStep``, ``_SRGANStep``).

Guarantees:
- Crop ``i`` of a run is a function of ``(seed, i)`` and step ``s`` uses items
  ``(s * world + rank) * batch ...``: a resumed run sees exactly the data it would have seen,
  with no data RNG state to save. On CPU, N steps == N/2 steps + ``--resume`` N/2 bitwise.
- Checkpoints are written atomically (temporary file + rename) by rank 0 only, after checking
  that the weights are finite; a killed run leaves the previous ``last.pt`` intact.
- A NaN/inf loss stops training with ``NonFiniteLossError``; the last good checkpoint is kept.
- Under ``torchrun`` every rank takes its own slice of the crop stream; rank 0 validates and
  writes while the others wait at a barrier (no collective runs during validation).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .archs import Discriminator, SRResNet, VGGFeatures
from .checkpoint import library_versions, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import SRTrainDataset, _resize_matrix, list_images
from .evaluate import evaluate, model_upscale
from .losses import ContentLoss, GeneratorLoss, gan_loss, pixel_loss

# On CUDA, reading the loss back every step would stall the GPU queue; the loss is summed on the
# device and checked every few steps (and at every log / validation / checkpoint step).
SYNC_EVERY_CUDA = 10
# Rank 0 validates and saves while the other ranks wait at a barrier: allow long validations.
DIST_TIMEOUT = timedelta(minutes=60)
BASE_COLUMNS = ["step", "loss", "lr", "its"]
SRGAN_PARTS = ["g_pixel", "g_content", "g_adv", "d_loss", "d_real", "d_fake"]
# Settings whose change on --resume does not alter the optimisation (no note printed).
_RESUME_NEUTRAL = {"resume", "device", "workers", "out", "tensorboard", "gpu_crops", "init",
                   "log_every", "val_every", "save_every", "val", "resolved"}


class NonFiniteLossError(FloatingPointError, RuntimeError):
    """The loss (or the weights) became NaN or inf; the last good checkpoint is kept.

    Also a RuntimeError, so the CLI prints its message (exit code 1) instead of a traceback.
    """


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available else cpu; an explicit cuda request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train: --device {name} requested but CUDA is not available; use --device cpu")
    return device


class DistInfo:
    """Rank and world size; a process group is set up when launched by torchrun.

    Args:
        device_name: the ``--device`` setting. Under torchrun, CUDA ranks use
            ``cuda:LOCAL_RANK`` with NCCL; "cpu" (or no CUDA) uses gloo.
    """

    def __init__(self, device_name: str):
        self._owns_group = False
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            import torch.distributed as dist

            use_cuda = torch.cuda.is_available() and not device_name.startswith("cpu")
            if use_cuda:
                torch.cuda.set_device(self.local_rank)
                self.device = torch.device(f"cuda:{self.local_rank}")
            else:
                self.device = torch.device("cpu")
            # A group set up by the caller (training inside a larger program) stays the caller's.
            self._owns_group = not dist.is_initialized()
            if self._owns_group:
                dist.init_process_group("nccl" if use_cuda else "gloo", timeout=DIST_TIMEOUT)
        else:
            self.device = resolve_device(device_name)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mean over ranks (the tensor itself when alone)."""
        if self.world == 1:
            return tensor
        import torch.distributed as dist

        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor / self.world

    @torch.no_grad()
    def average_buffers(self, *modules: nn.Module | None) -> None:
        """Average the floating-point buffers (BN running statistics) of modules over ranks."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for module in modules:
            if module is None:
                continue
            for buf in module.buffers():
                if buf.is_floating_point():
                    dist.all_reduce(buf)
                    buf.div_(self.world)

    def from_rank0(self, fn):
        """Run ``fn`` on rank 0 (it reads the files) and give every rank its result.

        An exception on rank 0 is raised on every rank, so all stop with the same message
        instead of the others hanging in the next collective.
        """
        if self.world == 1:
            return fn()
        import torch.distributed as dist

        payload = [None, None]
        if self.is_main:
            try:
                payload[0] = fn()
            except (ValueError, OSError, RuntimeError) as exc:
                payload[1] = (type(exc).__name__, str(exc))
        dist.broadcast_object_list(payload, src=0, device=self.device if self.device.type == "cuda" else None)
        if payload[1] is not None:
            kind, message = payload[1]
            raise {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError,
                   "FileExistsError": FileExistsError}.get(kind, RuntimeError)(message)
        return payload[0]

    def close(self) -> None:
        if self.world > 1 and self._owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


class StepBatches(torch.utils.data.Sampler):
    """Batches of item indices for steps ``start..iters-1``; rank r of w takes its own items."""

    def __init__(self, start: int, iters: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start, self.iters, self.batch_size, self.rank, self.world = start, iters, batch_size, rank, world

    def __len__(self) -> int:
        return max(0, self.iters - self.start)

    def __iter__(self):
        for step in range(self.start, self.iters):
            yield step_indices(step, self.batch_size, self.rank, self.world)


def step_indices(step: int, batch_size: int, rank: int = 0, world: int = 1) -> list[int]:
    """Dataset items of ``rank`` at ``step`` (0-based): disjoint over ranks and steps."""
    first = (step * world + rank) * batch_size
    return list(range(first, first + batch_size))


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Learning-rate multiplier at ``step`` for the configured schedule."""
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return 1.0 if step < cfg.iters // 2 else 0.1
    t = min(step / max(1, cfg.iters), 1.0)
    return cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


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


class TensorCropper:
    """The crops of ``SRTrainDataset``, cut and downscaled on the training device.

    The HR images are held on the device as uint8; crop ``i`` uses the same ``(seed, i)`` draws
    as ``SRTrainDataset.crop_hr`` (image, position, flip/rotation) and the LR is the same
    MATLAB-style bicubic as ``degrade`` (one float64 matrix product per axis, rounded to uint8),
    so a run gets the same batches on CPU and GPU (LR may differ by one grey level where the
    float64 sum lands on .5 in a different order). Used on CUDA so data never waits for the CPU.

    Args:
        dataset: the training dataset (its images, crop, scale, seed, augment).
        device: where to hold the images and cut the crops.
    """

    def __init__(self, dataset: SRTrainDataset, device: torch.device):
        self.ds = dataset
        self.device = device
        self.images = [torch.from_numpy(np.ascontiguousarray(img)).to(device) for img in dataset.images]
        n = dataset.crop // dataset.scale
        self.down = torch.from_numpy(_resize_matrix(dataset.crop, n, 1.0 / dataset.scale)).to(device)

    def params(self, index: int) -> tuple[int, int, int, int]:
        """(image, top, left, dihedral code) of item ``index``: the dataset's own draws."""
        return self.ds.crop_params(index)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(lr, hr) float32 NCHW in [0, 1] on the device for dataset items ``indices``."""
        c = self.ds.crop
        crops = []
        for index in indices:
            k, top, left, code = self.params(index)
            t = self.images[k][top: top + c, left: left + c]
            if code & 1:
                t = t.flip(1)
            if code & 2:
                t = t.flip(0)
            if code & 4:
                t = t.transpose(0, 1)
            crops.append(t)
        hr8 = torch.stack(crops).permute(0, 3, 1, 2)
        lr = torch.matmul(torch.matmul(self.down, hr8.double()), self.down.T)
        lr = lr.round_().clamp_(0, 255).float() / 255.0
        return lr.contiguous(), hr8.float().contiguous() / 255.0


def validate(model: nn.Module, folders, scale: int, device: torch.device) -> dict:
    """PSNR/SSIM per validation folder: {"<set>_psnr": .., "<set>_ssim": ..}."""
    was_training = model.training
    model.eval()
    try:
        results = evaluate(lambda lr: model_upscale(model, lr, device), folders, scale=scale)
    finally:
        model.train(was_training)
    out = {}
    for r in results:
        out[f"{r.name}_psnr"] = round(r.psnr, 4)
        out[f"{r.name}_ssim"] = round(r.ssim, 5)
    return out


def append_csv(path: Path, row: dict, columns: list[str]) -> None:
    """Append one row of metrics (missing columns left empty); the header goes with the first row."""
    exists = path.is_file() and path.stat().st_size > 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
        if not exists:
            writer.writeheader()
        writer.writerow(row)


def prepare_metrics_csv(path: Path, columns: list[str], keep_upto_step: int) -> list[str]:
    """Make ``metrics.csv`` ready for a (re)started run; returns the columns to write.

    Rows after ``keep_upto_step`` (logged after the checkpoint a resume starts from) are dropped
    so steps never repeat, and the header becomes the old columns plus any new ones, so rows
    stay aligned. Rewritten atomically.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return list(columns)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        old_columns = list(reader.fieldnames or [])
        rows = [r for r in reader if _int_or_none(r.get("step")) is not None
                and int(r["step"]) <= keep_upto_step]
    merged = old_columns + [c for c in columns if c not in old_columns]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=merged, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return merged


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _rng_state() -> dict:
    """Every RNG a training process may touch, in types ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    """Restore ``_rng_state`` output (older checkpoints hold only "torch")."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                             s["cached_gaussian"]))
    if "python" in state:
        s = state["python"]
        random.setstate((s["version"], tuple(s["internal"]), s["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _all_finite(*modules: nn.Module) -> bool:
    flags = [torch.isfinite(p).all() for m in modules if m is not None for p in m.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def _backward(loss: torch.Tensor, precision: Precision) -> None:
    (precision.scaler.scale(loss) if precision.scaler is not None else loss).backward()


def _optimizer_step(optimizer: torch.optim.Optimizer, precision: Precision) -> None:
    if precision.scaler is not None:
        precision.scaler.step(optimizer)  # skips the step when the fp16 gradients overflowed
    else:
        optimizer.step()


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _read_start_state(cfg: TrainConfig, out: Path) -> dict:
    """Rank 0: the checkpoint to resume from or the SRGAN init weights, checked for the run."""
    last = out / "last.pt"
    if cfg.resume:
        if not last.is_file():
            raise FileNotFoundError(f"train: --resume given but {last} does not exist; "
                                    "start the run without --resume")
        ckpt = load_checkpoint(last, map_location="cpu")
        kind = ckpt.get("kind", "srresnet")  # checkpoints of the first trainer had no "kind"
        if kind != cfg.kind:
            raise ValueError(f"train: {last} is a {kind} run; resume it with `srdeploy train {kind} --resume`")
        if ckpt["arch"] != "SRResNet" or "optimizer" not in ckpt or "step" not in ckpt:
            raise ValueError(f"train: {last} holds no training state (optimizer, step); cannot resume from it")
        return {"resume": ckpt}
    if last.is_file():
        raise FileExistsError(f"train: {out} already holds a run ({last}); continue it with --resume, "
                              "or choose another --out")
    if cfg.kind == "srgan":
        if not cfg.init:
            raise ValueError("train srgan: --init CHECKPOINT is required (a trained SRResNet, e.g. "
                             "runs/NAME/best.pt from `srdeploy train srresnet`)")
        init = load_checkpoint(cfg.init, map_location="cpu")
        if init["arch"] != "SRResNet":
            raise ValueError(f"train srgan: --init {cfg.init} holds a {init['arch']}, not an SRResNet generator")
        # The deployed weights of the init run: EMA when it kept one (as eval/export use).
        state = init.get("ema_state_dict") or init["state_dict"]
        return {"init": {"kwargs": dict(init["kwargs"]), "state_dict": state,
                         "source": "ema_state_dict" if init.get("ema_state_dict") else "state_dict"}}
    return {}


def _settings_changes(old: dict, new: dict) -> list[str]:
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in new
            if k in old and k not in _RESUME_NEUTRAL and old[k] != new[k]]


class _SRResNetStep:
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
        _backward(loss, self.precision)
        _optimizer_step(self.optimizer, self.precision)
        if self.precision.scaler is not None:
            self.precision.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return {"loss": loss.detach()}

    def state(self) -> dict:
        return {}

    def load_state(self, ckpt: dict) -> None:
        pass


class _SRGANStep:
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
        _backward(total, prec)
        _optimizer_step(self.optimizer, prec)
        out = {"loss": total.detach(), **{k: v.detach() for k, v in parts.items()}}

        if self.disc is not None:
            self.disc.requires_grad_(True)
            self.d_optimizer.zero_grad(set_to_none=True)
            with prec.autocast():
                real_logits = self.d_train(hr)
            loss_real = gan_loss(real_logits, real=True)
            _backward(loss_real, prec)
            with prec.autocast():
                fake_logits = self.d_train(sr.detach())
            loss_fake = gan_loss(fake_logits, real=False)
            _backward(loss_fake, prec)
            _optimizer_step(self.d_optimizer, prec)
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

    def load_state(self, ckpt: dict) -> None:
        if self.disc is None:
            return
        if "discriminator" not in ckpt:
            _log("train srgan: note: the checkpoint has no discriminator; starting a fresh one")
            return
        self.disc.load_state_dict(ckpt["discriminator"]["state_dict"])
        self.d_optimizer.load_state_dict(ckpt["optimizer_d"])
        self.d_scheduler.load_state_dict(ckpt["scheduler_d"])


def train_srresnet(cfg: TrainConfig, *, stop_at: int | None = None) -> dict:
    """Train the SRResNet generator with a pixel loss (MSE as the paper, or L1).

    Args:
        cfg: settings; fields left at None take the srresnet defaults.
        stop_at: stop this invocation after this step (writing ``last.pt``), as a time-limited
            job would; ``--resume`` continues. The schedule still spans ``cfg.iters``.

    Returns:
        The last metrics row (step, loss, lr, its, and validation PSNR/SSIM when computed).
    """
    return _train(cfg.resolved("srresnet"), stop_at)


def train_srgan(cfg: TrainConfig, *, stop_at: int | None = None) -> dict:
    """Train SRGAN from a trained SRResNet (``cfg.init``) with the perceptual loss.

    Generator loss: ``content_weight * MSE(VGG(sr)/12.75, VGG(hr)/12.75) + adv_weight *
    BCEWithLogits(D(sr), real) + pixel_weight * pixel(sr, hr)``; discriminator:
    ``BCEWithLogits(D(hr), real) + BCEWithLogits(D(sr), fake)``; Adam (0.9, 0.999), lr 1e-4 then
    x0.1 for the second half by default. VGG19 weights must be available (``cfg.vgg_weights``
    or torchvision's cache): otherwise this fails before anything is written.

    Args:
        cfg: settings; fields left at None take the srgan defaults. The generator architecture
            comes from ``cfg.init`` (or from ``last.pt`` when resuming).
        stop_at: as for ``train_srresnet``.

    Returns:
        The last metrics row.
    """
    return _train(cfg.resolved("srgan"), stop_at)


def _train(cfg: TrainConfig, stop_at: int | None) -> dict:
    cfg.validate()
    dist_info = DistInfo(cfg.device)
    try:
        return _run(cfg, dist_info, stop_at)
    finally:
        dist_info.close()


def _run(cfg: TrainConfig, dist_info: DistInfo, stop_at: int | None) -> dict:
    device, main = dist_info.device, dist_info.is_main
    out = Path(cfg.out)

    # --- Everything that can fail cheaply fails here, before a file is written or a step run.
    for folder in cfg.data + cfg.val:
        list_images(folder)
    vgg = None
    if cfg.kind == "srgan" and cfg.content_weight:
        # Raises VGGFeatures' message (how to supply the weights) when they are missing. Seeded
        # so that random test weights are the same on every rank and in a resumed run.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            vgg = VGGFeatures(layer=cfg.vgg_layer, weights=cfg.vgg_weights)
        if cfg.vgg_weights == "random" and main:
            _log("train srgan: WARNING: VGG19 has RANDOM weights (vgg_weights='random', meant for tests): "
                 "the content loss is meaningless for real training")
    start = dist_info.from_rank0(lambda: _read_start_state(cfg, out))
    ckpt, init = start.get("resume"), start.get("init")

    # --- Architecture: srresnet from the flags; srgan from --init; a resume from last.pt.
    if ckpt is not None or init is not None:
        arch_kwargs = dict((ckpt or init)["kwargs"])
    else:
        arch_kwargs = {"scale": cfg.scale, "num_blocks": cfg.num_blocks, "channels": cfg.channels}
    requested = {"scale": cfg.scale, "num_blocks": cfg.num_blocks, "channels": cfg.channels}
    if cfg.kind == "srresnet" and ckpt is not None and any(arch_kwargs.get(k) != v for k, v in requested.items()):
        raise ValueError(f"train: {out / 'last.pt'} holds SRResNet({arch_kwargs}), not the requested {requested}")
    if cfg.kind == "srgan":
        taken = {k: arch_kwargs.get(k, v) for k, v in requested.items()}
        if main:
            _log(f"train srgan: generator SRResNet({arch_kwargs}) from "
                 f"{out / 'last.pt' if ckpt is not None else cfg.init}")
        cfg = replace(cfg, **taken)
        cfg.validate()  # crop vs the checkpoint's scale

    # --- Models and optimisers.
    torch.manual_seed(cfg.seed)
    model = SRResNet(**arch_kwargs)
    if init is not None:
        model.load_state_dict(init["state_dict"])
    channels_last = cfg.channels_last and device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    model.to(device, memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s))
    precision = resolve_precision(cfg.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels

    disc = d_optimizer = d_scheduler = None
    if cfg.kind == "srgan" and cfg.adv_weight:
        d_kwargs = {"base_channels": cfg.d_channels}
        if ckpt is not None and "discriminator" in ckpt:  # resume: the saved D's shape wins
            d_kwargs = dict(ckpt["discriminator"]["kwargs"])
        disc = Discriminator(**d_kwargs).to(device, memory_format=memory_format)
        d_optimizer = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr, betas=(0.9, 0.999))
        d_scheduler = torch.optim.lr_scheduler.LambdaLR(d_optimizer, lambda s: lr_factor(cfg, s))
    if vgg is not None:
        vgg.to(device, memory_format=memory_format)

    start_step, best_psnr, last_saved = 0, -math.inf, None
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_step = last_saved = int(ckpt["step"])
        best_psnr = float(ckpt.get("best_psnr", -math.inf))
        if precision.scaler is not None and ckpt.get("scaler"):
            precision.scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt.get("rng", {}))
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    if ema is not None and ckpt is not None and ckpt.get("ema_state_dict"):
        ema.module.load_state_dict(ckpt["ema_state_dict"])
    elif ckpt is not None and ckpt.get("ema_state_dict") and main:
        _log("train: note: the checkpoint has EMA weights but --ema is 0; they are dropped")

    g_train, d_train = model, disc
    if dist_info.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        g_train = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if disc is not None:
            d_train = nn.parallel.DistributedDataParallel(disc, device_ids=ids)

    common = dict(cfg=cfg, g_train=g_train, model=model, optimizer=optimizer, scheduler=scheduler,
                  ema=ema, precision=precision)
    if cfg.kind == "srgan":
        step_fn = _SRGANStep(**common, vgg=vgg, disc=disc, d_train=d_train, d_optimizer=d_optimizer,
                             d_scheduler=d_scheduler)
    else:
        step_fn = _SRResNetStep(**common)
    if ckpt is not None:
        step_fn.load_state(ckpt)

    # --- Data: item i of the run is crop i, whichever path cuts it.
    end = cfg.iters if stop_at is None else min(cfg.iters, int(stop_at))
    dataset = SRTrainDataset(cfg.data, crop=cfg.crop, scale=cfg.scale, seed=cfg.seed)
    gpu_crops = device.type == "cuda" and cfg.gpu_crops
    if gpu_crops:
        cropper = TensorCropper(dataset, device)
        batches = (cropper.batch(step_indices(s, cfg.batch_size, dist_info.rank, dist_info.world))
                   for s in range(start_step, end))
    else:
        batches = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=StepBatches(start_step, end, cfg.batch_size, dist_info.rank, dist_info.world),
            num_workers=cfg.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )

    # --- Run folder (rank 0 only).
    resolved = {
        "device": str(device), "precision": precision.name, "precision_note": precision.note,
        "channels_last": channels_last, "data_path": "gpu_crops" if gpu_crops else f"dataloader({cfg.workers} workers)",
        "world_size": dist_info.world, "global_batch_size": cfg.batch_size * dist_info.world,
        "start_step": start_step, "generator": {"arch": "SRResNet", "kwargs": arch_kwargs},
        "vgg_weights": ("RANDOM (tests only)" if cfg.vgg_weights == "random" else cfg.vgg_weights or "torchvision cache")
        if vgg is not None else None,
        "init_weights": init["source"] if init is not None else None,
        "versions": library_versions(),
    }
    settings = {**cfg.to_dict(), "resolved": resolved}
    columns = BASE_COLUMNS + list(step_fn.parts) + [
        f"{Path(v).name}_{m}" for v in cfg.val for m in ("psnr", "ssim")]
    tb = None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.pt.*.tmp"):  # left by a save killed mid-write (SIGKILL)
            stale.unlink(missing_ok=True)
        if ckpt is not None:
            changes = _settings_changes(ckpt.get("settings", {}), settings)
            if changes:
                _log("train: note: resuming with changed settings: " + "; ".join(changes))
        _write_json_atomic(out / "settings.json", settings)
        columns = prepare_metrics_csv(out / "metrics.csv", columns, keep_upto_step=start_step)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                tb = SummaryWriter(str(out / "tb"), purge_step=start_step + 1)
            except ImportError:
                tb = None
        _log(f"train {cfg.kind}: {dist_info.world} process(es) on {device}, precision {precision.name} "
             f"({precision.note}), steps {start_step}..{end} of {cfg.iters}, out {out}")
    dist_info.barrier()

    def save(path: Path, step: int, metrics: dict) -> None:
        save_checkpoint(
            path, model, arch="SRResNet", kwargs=arch_kwargs, ema=ema.module if ema is not None else None,
            kind=cfg.kind, step=step, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            scaler=precision.scaler.state_dict() if precision.scaler is not None else None,
            best_psnr=best_psnr, metrics=metrics, settings=settings, rng=_rng_state(),
            precision=precision.name, world_size=dist_info.world, **step_fn.state(),
        )

    if start_step >= end:
        if main:
            _log(f"train {cfg.kind}: already at step {start_step} (iters {cfg.iters}); nothing to do")
        return dict(ckpt.get("metrics", {})) if ckpt is not None else {}

    bar = None
    if main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.iters, initial=start_step, desc=f"train {cfg.kind}", unit="it",
                   dynamic_ncols=True, mininterval=1.0)

    names = ["loss"] + list(step_fn.parts)
    sync_every = 1 if device.type == "cpu" else SYNC_EVERY_CUDA
    eval_model = ema.module if ema is not None else model
    model.train()
    step, checked = start_step, start_step
    metrics: dict = {}
    acc, acc_n = None, 0
    t_last, step_last = time.perf_counter(), step
    for lr_batch, hr_batch in batches:
        lr_batch = _to_device(lr_batch, device, channels_last)
        hr_batch = _to_device(hr_batch, device, channels_last)
        parts = step_fn(lr_batch, hr_batch)
        step += 1
        vec = torch.stack([parts[n].float() if n in parts else torch.zeros((), device=device) for n in names])
        acc, acc_n = (vec if acc is None else acc + vec), acc_n + 1

        is_val = bool(cfg.val) and (step % cfg.val_every == 0 or step == cfg.iters)
        is_save = step % cfg.save_every == 0 or step == end
        is_log = step % cfg.log_every == 0 or step == end or is_val
        if is_log or is_save or step % sync_every == 0:
            means = (dist_info.all_reduce_mean(acc) / acc_n).tolist()
            if not all(math.isfinite(v) for v in means):
                where = f"at step {step}" if step == checked + 1 else f"between steps {checked + 1} and {step}"
                kept = (f"The last good checkpoint {out / 'last.pt'} (step {last_saved}) is kept"
                        if last_saved is not None else "No checkpoint was written yet")
                bad = ", ".join(f"{n}={v}" for n, v in zip(names, means) if not math.isfinite(v))
                raise NonFiniteLossError(
                    f"train {cfg.kind}: loss became non-finite ({bad}) {where}; stopped. {kept}. Lower --lr "
                    f"(or try --no-amp) and continue with --resume.")
            checked = step
            if bar is not None:
                bar.set_postfix(loss=f"{means[0]:.5f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
        if bar is not None:
            bar.update(1)

        if is_val or is_save:
            # BN running statistics are per rank under DDP (it broadcasts rank 0's at each forward,
            # then each rank updates them on its own shard): average them so validation and the
            # checkpoint use every rank's data, and every rank holds the same model afterwards.
            dist_info.average_buffers(model, disc, ema.module if ema is not None else None)
            # Adam can turn a finite loss with overflowing gradients into non-finite weights:
            # never write those (every rank checks its identical copy, so all stop together).
            if not _all_finite(model, disc):
                raise NonFiniteLossError(
                    f"train {cfg.kind}: weights became non-finite at step {step}; stopped before saving. "
                    f"The last good checkpoint {out / 'last.pt'} (step {last_saved}) is kept: lower --lr "
                    "and continue with --resume.")
        if main and is_log:
            now = time.perf_counter()
            metrics = {"step": step, "lr": scheduler.get_last_lr()[0], "its": round((step - step_last) / (now - t_last), 3)}
            metrics.update({n: float(f"{v:.6g}") for n, v in zip(names, means) if n in parts})
            if is_val:
                metrics.update(validate(eval_model, cfg.val, cfg.scale, device))
                first = f"{Path(cfg.val[0]).name}_psnr"
                if metrics[first] > best_psnr:
                    best_psnr = metrics[first]
                    save(out / "best.pt", step, metrics)
                bar.write(" ".join(f"{k}={v}" for k, v in metrics.items()))
            append_csv(out / "metrics.csv", metrics, columns)
            if tb is not None:
                for k, v in metrics.items():
                    if k != "step":
                        tb.add_scalar(k, v, step)
        if is_log:
            acc, acc_n = None, 0
        if main and is_save:
            save(out / "last.pt", step, metrics)
        if is_save:
            last_saved = step
        if is_val or is_save:
            dist_info.barrier()  # the other ranks wait here while rank 0 validates and writes
        if is_log:
            t_last, step_last = time.perf_counter(), step

    if bar is not None:
        bar.close()
    if tb is not None:
        tb.close()
    return metrics
