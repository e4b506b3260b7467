"""Training loops: SRResNet with a pixel loss, SRGAN with a perceptual (VGG + adversarial) loss.

Read top to bottom: helpers (device and process group, precision, EMA, data on the device,
metrics file), the step functions of the two kinds (``_SRResNetStep``, ``_SRGANStep``), the
``--time-budget`` planner, then ``_Run``: one invocation in named steps (``set_up``: checks that
can fail early, start state, architecture, models and optimisers, ``resume``; then ``train``:
``one_step`` in a loop with ``validate`` and ``save`` at their intervals, and ``plan`` after the
warm-up of a time-budgeted run).

Guarantees:
- Crop ``i`` of a run is a function of ``(seed, i)`` and step ``s`` uses items
  ``(s * world + rank) * batch ...``: a resumed run sees exactly the data it would have seen,
  with no data RNG state to save. On CPU, N steps == N/2 steps + ``--resume`` N/2 bitwise.
- Checkpoints are written atomically (temporary file + rename) by rank 0 only, after checking
  that the weights are finite; a killed run leaves the previous ``last.pt`` intact.
- A NaN/inf loss stops training with ``NonFiniteLossError``; the last good checkpoint is kept.
- Under ``torchrun`` every rank takes its own slice of the crop stream; rank 0 validates and
  writes while the others wait at a barrier (no collective runs during validation).
- ``--resume`` with changed optimisation settings (lr, schedule, iters, ...) applies them from
  the resumed step: the schedule continues from that step with the new values, and
  settings.json records what is used. A resume with nothing left to do writes nothing.
- ``--time-budget``: it/s is measured after a warm-up, then the iterations are planned so that
  the run with its validations and final checkpoint ends within the budget; the schedule spans
  the plan. settings.json records the plan (``iters``, ``resolved.time_budget``) and the steps
  actually run; a run slower than measured stops early (recorded) rather than overrun.
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
from .checkpoint import library_versions, load_checkpoint, load_generator, save_checkpoint
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
                   "log_every", "val_every", "save_every", "val", "resolved", "time_budget"}


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
    if cfg.kind == "srgan" and not cfg.init:
        raise ValueError("train srgan: --init CHECKPOINT is required (a trained SRResNet, e.g. "
                         "runs/NAME/best.pt from `srdeploy train srresnet`)")
    if cfg.init:
        _, init = load_generator(cfg.init)  # builds it once: wrong kwargs or shapes fail here, naming the file
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


def train_srresnet(cfg: TrainConfig, *, stop_at: int | None = None, clock: float | None = None) -> dict:
    """Train the SRResNet generator with a pixel loss (MSE as the paper, or L1).

    Args:
        cfg: settings; fields left at None take the srresnet defaults.
        stop_at: stop this invocation after this step (writing ``last.pt``), as a time-limited
            job would; ``--resume`` continues. The schedule still spans ``cfg.iters``.
        clock: ``time.perf_counter()`` value from which ``cfg.time_budget`` counts (default:
            now; the CLI passes the process start).

    Returns:
        The last metrics row (step, loss, lr, its, and validation PSNR/SSIM when computed).
    """
    return _train(cfg.resolved("srresnet"), stop_at, clock)


def train_srgan(cfg: TrainConfig, *, stop_at: int | None = None, clock: float | None = None) -> dict:
    """Train SRGAN from a trained SRResNet (``cfg.init``) with the perceptual loss.

    Generator loss: ``content_weight * MSE(VGG(sr)/12.75, VGG(hr)/12.75) + adv_weight *
    BCEWithLogits(D(sr), real) + pixel_weight * pixel(sr, hr)``; discriminator:
    ``BCEWithLogits(D(hr), real) + BCEWithLogits(D(sr), fake)``; Adam (0.9, 0.999), lr 1e-4 then
    x0.1 for the second half by default. VGG19 weights must be available (``cfg.vgg_weights``
    or torchvision's cache): otherwise this fails before anything is written.

    Args:
        cfg: settings; fields left at None take the srgan defaults. The generator architecture
            comes from ``cfg.init`` (or from ``last.pt`` when resuming).
        stop_at, clock: as for ``train_srresnet``.

    Returns:
        The last metrics row.
    """
    return _train(cfg.resolved("srgan"), stop_at, clock)


def _train(cfg: TrainConfig, stop_at: int | None, clock: float | None = None) -> dict:
    clock = _now() if clock is None else clock  # --time-budget counts from here
    cfg.validate()
    dist_info = DistInfo(cfg.device)
    try:
        run = _Run(cfg, dist_info, stop_at=stop_at, clock=clock)
        run.set_up()
        return run.train()
    finally:
        dist_info.close()


# --- Time budget ----------------------------------------------------------------------------------
# Warm-up: the first steps are not timed (CUDA: cuDNN autotuning and lazy module loading; CPU:
# allocator growth, first data reads); then the plan is made once at least BUDGET_WARMUP_MIN_STEPS
# steps and BUDGET_WARMUP_FRACTION of the budget (at most BUDGET_WARMUP_MAX_S) were timed, or a
# quarter of the budget is gone. The plan keeps BUDGET_MARGIN of the budget (plus BUDGET_EXIT_S for
# leaving the process) in reserve.
BUDGET_UNTIMED_STEPS = {"cpu": 1, "cuda": 3}
BUDGET_WARMUP_MIN_STEPS = 3
BUDGET_WARMUP_FRACTION = 0.05
BUDGET_WARMUP_MAX_S = 15.0
BUDGET_MARGIN = 0.03
BUDGET_EXIT_S = 0.5


def _now() -> float:
    """The clock of the training loop and the time budget (one function, so tests can replace it)."""
    return time.perf_counter()


def plan_iterations(*, step: int, remaining_s: float, its: float, cap: int, val_every: int,
                    save_every: int, val_s: float, save_s: float, validate: bool) -> int:
    """The last step of a run that fits in ``remaining_s`` seconds from ``step``.

    Counts ``its`` steps per second, a validation (``val_s``, plus a possible ``best.pt``
    write) at every multiple of ``val_every`` and at the end, and a checkpoint (``save_s``) at
    every multiple of ``save_every`` and at the end. Never more than ``cap``; ``step`` itself
    when not even one more step fits.
    """

    def cost(end: int) -> float:
        saves = -(-end // save_every) - step // save_every
        vals = (-(-end // val_every) - step // val_every) if validate else 0
        return (end - step) / its + saves * save_s + vals * (val_s + save_s)

    if cap <= step or cost(step + 1) > remaining_s:
        return step
    lo, hi = step + 1, cap  # cost is non-decreasing in end: largest end with cost <= remaining_s
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= remaining_s:
            lo = mid
        else:
            hi = mid - 1
    return lo


class _Budget:
    """``--time-budget`` bookkeeping: the clock, the warm-up timing and the plan.

    Args:
        seconds: the budget.
        clock: ``_now()`` when the invocation started.
        cap: ``--iters``: the plan never exceeds it.
    """

    def __init__(self, seconds: float, clock: float, cap: int, untimed: int = 1):
        self.seconds, self.clock, self.cap, self.untimed = float(seconds), clock, int(cap), untimed
        self.timed_from_step: int | None = None
        self.timed_from: float | None = None
        self.overhead_s = 0.0  # validation / checkpoint time inside the timed window
        self.plan: dict | None = None

    def elapsed(self) -> float:
        return _now() - self.clock

    def warmup_done(self, step: int, start_step: int) -> bool:
        """Called after each step until it says True; starts the timer after the untimed steps."""
        if step - start_step == self.untimed:
            self.timed_from_step, self.timed_from, self.overhead_s = step, _now(), 0.0
            return False
        if self.timed_from is None:
            return self.elapsed() > 0.5 * self.seconds  # very slow first steps: plan with what we have
        timed = _now() - self.timed_from
        long_enough = timed >= min(BUDGET_WARMUP_FRACTION * self.seconds, BUDGET_WARMUP_MAX_S)
        return (step - self.timed_from_step >= BUDGET_WARMUP_MIN_STEPS and long_enough) or \
            self.elapsed() > 0.25 * self.seconds

    def its(self, step: int, start_step: int) -> float:
        """Measured steps per second (validation and checkpoint time excluded)."""
        if self.timed_from is None:  # no step was timed: the whole elapsed time per step
            return max(step - start_step, 1) / max(self.elapsed(), 1e-6)
        seconds = _now() - self.timed_from - self.overhead_s
        return max(step - self.timed_from_step, 1) / max(seconds, 1e-6)

    def reserve(self) -> float:
        return BUDGET_MARGIN * self.seconds + BUDGET_EXIT_S

    def out_of_time(self, final_s: float) -> bool:
        """True when one more step, the final validation and checkpoint would end past the budget."""
        its = self.plan["its"] if self.plan else 1e9
        return self.elapsed() + 1.0 / its + final_s + BUDGET_EXIT_S > self.seconds


# --- One training run, in named steps -------------------------------------------------------------
class _Run:
    """One invocation of the trainer, in named steps that can be read (and tested) alone.

    ``set_up`` (checks, start state, architecture, models and optimisers, ``resume``, data, run
    folder), then ``train``: a loop of ``one_step``, with ``validate`` and ``save`` at their
    intervals (and, with ``--time-budget``, ``plan`` after the warm-up).

    Args:
        cfg: resolved settings (``TrainConfig.resolved``).
        dist_info: rank / world size / device.
        stop_at: stop this invocation after this step (the schedule still spans ``cfg.iters``).
        clock: ``_now()`` when the invocation started (``--time-budget`` counts
            from it).
    """

    def __init__(self, cfg: TrainConfig, dist_info: DistInfo, *, stop_at: int | None = None,
                 clock: float | None = None):
        self.cfg, self.dist, self.stop_at = cfg, dist_info, stop_at
        self.device, self.main = dist_info.device, dist_info.is_main
        self.out = Path(cfg.out)
        self.clock = _now() if clock is None else clock
        self.budget: _Budget | None = None
        self.step = self.start_step = 0
        self.best_psnr, self.last_saved = -math.inf, None
        self.metrics: dict = {}
        self.ckpt = self.init = None
        self.bar = self.tb = None

    # --- set-up ---------------------------------------------------------------------------------
    def set_up(self) -> None:
        """Everything before the first step: fails cheaply (before any write) when it must."""
        self.check_inputs()
        start = self.dist.from_rank0(lambda: _read_start_state(self.cfg, self.out))
        self.ckpt, self.init = start.get("resume"), start.get("init")
        self.choose_architecture()
        self.build_models()
        if self.ckpt is not None:
            self.resume(self.ckpt)
        self.wrap_and_bind()
        if self.cfg.time_budget is not None:
            self.budget = _Budget(self.cfg.time_budget, self.clock, cap=self.cfg.iters,
                                  untimed=BUDGET_UNTIMED_STEPS.get(self.device.type, 1))
        self.end = self.cfg.iters if self.stop_at is None else min(self.cfg.iters, int(self.stop_at))
        if self.budget is not None:
            self.use_provisional_schedule()
        self.make_settings()

    def check_inputs(self) -> None:
        """Image folders and VGG weights: errors here come before a file is written or a step run."""
        cfg = self.cfg
        for folder in cfg.data + cfg.val:
            list_images(folder)
        self.vgg = None
        if cfg.kind == "srgan" and cfg.content_weight:
            # Raises VGGFeatures' message (how to supply the weights) when they are missing. Seeded
            # so that random test weights are the same on every rank and in a resumed run.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                self.vgg = VGGFeatures(layer=cfg.vgg_layer, weights=cfg.vgg_weights)
            if cfg.vgg_weights == "random" and self.main:
                _log("train srgan: WARNING: VGG19 has RANDOM weights (vgg_weights='random', meant for tests): "
                     "the content loss is meaningless for real training")

    def choose_architecture(self) -> None:
        """srresnet: from the flags (or --init); srgan: from --init; a resume: from last.pt."""
        cfg, ckpt, init = self.cfg, self.ckpt, self.init
        requested = {"scale": cfg.scale, "num_blocks": cfg.num_blocks, "channels": cfg.channels}
        if ckpt is not None or init is not None:
            self.arch_kwargs = dict((ckpt or init)["kwargs"])
        else:
            self.arch_kwargs = dict(requested)
        # srresnet takes its architecture from the flags unless it started from --init.
        from_file = cfg.kind == "srgan" or init is not None or bool((ckpt or {}).get("settings", {}).get("init"))
        if not from_file and ckpt is not None and any(self.arch_kwargs.get(k) != v for k, v in requested.items()):
            raise ValueError(f"train: {self.out / 'last.pt'} holds SRResNet({self.arch_kwargs}), not the requested "
                             f"{requested}; resume with the run's --scale/--num-blocks/--channels")
        if from_file:
            if self.main:
                _log(f"train {cfg.kind}: generator SRResNet({self.arch_kwargs}) from "
                     f"{self.out / 'last.pt' if ckpt is not None else cfg.init}")
            self.cfg = replace(cfg, **{k: self.arch_kwargs.get(k, v) for k, v in requested.items()})
            self.cfg.validate()  # crop vs the checkpoint's scale
        if ckpt is not None:
            # A resume continues the run's own start: its --init (never reloaded) stays recorded.
            old_init = ckpt.get("settings", {}).get("init")
            if self.cfg.init != old_init:
                if self.cfg.init and self.main:
                    _log(f"train: note: --init {self.cfg.init} is not used when resuming (the run started "
                         f"from {old_init})")
                self.cfg = replace(self.cfg, init=old_init)

    def build_models(self) -> None:
        """Generator, optimiser, schedule, precision; SRGAN's discriminator; EMA."""
        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        self.model = SRResNet(**self.arch_kwargs)
        if self.init is not None and self.ckpt is None:
            self.model.load_state_dict(self.init["state_dict"])
        self.channels_last = cfg.channels_last and device.type == "cuda"
        self.memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model.to(device, memory_format=self.memory_format)
        # The schedules read self.cfg when called, so a plan (--time-budget) or a resume with new
        # settings changes them from the next step on.
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(self.cfg, s))
        self.precision = resolve_precision(cfg.amp, device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels
        self.disc = self.d_optimizer = self.d_scheduler = None
        if cfg.kind == "srgan" and cfg.adv_weight:
            d_kwargs = {"base_channels": cfg.d_channels}
            if self.ckpt is not None and "discriminator" in self.ckpt:  # resume: the saved D's shape wins
                d_kwargs = dict(self.ckpt["discriminator"]["kwargs"])
                if d_kwargs.get("base_channels", cfg.d_channels) != cfg.d_channels:
                    if self.main:
                        _log(f"train srgan: note: --d-channels {cfg.d_channels} is not used when resuming: "
                             f"the saved discriminator has {d_kwargs['base_channels']}")
                    self.cfg = cfg = replace(cfg, d_channels=int(d_kwargs["base_channels"]))
            self.disc = Discriminator(**d_kwargs).to(device, memory_format=self.memory_format)
            self.d_optimizer = torch.optim.Adam(self.disc.parameters(), lr=cfg.d_lr, betas=(0.9, 0.999))
            self.d_scheduler = torch.optim.lr_scheduler.LambdaLR(self.d_optimizer, lambda s: lr_factor(self.cfg, s))
        if self.vgg is not None:
            self.vgg.to(device, memory_format=self.memory_format)
        self.ema = EMA(self.model, cfg.ema) if cfg.ema > 0 else None

    # --- resume ---------------------------------------------------------------------------------
    def resume(self, ckpt: dict) -> None:
        """Restore weights, optimiser, schedule position, EMA, scaler and RNG from ``ckpt``.

        Optimisation settings given now (lr, d_lr, schedule, lr_min_ratio, iters) apply from the
        resumed step: the schedule continues from that step with the new values (the restored
        scheduler would otherwise keep the old base learning rate).
        """
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.start_step = self.step = self.last_saved = int(ckpt["step"])
        self.best_psnr = float(ckpt.get("best_psnr", -math.inf))
        if self.precision.scaler is not None and ckpt.get("scaler"):
            self.precision.scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt.get("rng", {}))
        if self.ema is not None and ckpt.get("ema_state_dict"):
            self.ema.module.load_state_dict(ckpt["ema_state_dict"])
        elif ckpt.get("ema_state_dict") and self.main:
            _log("train: note: the checkpoint has EMA weights but --ema is 0; they are dropped")
        self._resume_discriminator(ckpt)
        self.apply_schedule()

    def _resume_discriminator(self, ckpt: dict) -> None:
        if self.disc is None:
            return
        if "discriminator" not in ckpt:
            _log("train srgan: note: the checkpoint has no discriminator; starting a fresh one")
            return
        self.disc.load_state_dict(ckpt["discriminator"]["state_dict"])
        self.d_optimizer.load_state_dict(ckpt["optimizer_d"])
        self.d_scheduler.load_state_dict(ckpt["scheduler_d"])

    def apply_schedule(self) -> None:
        """Set every learning rate to ``base * lr_factor(cfg, step)`` for the current cfg and step.

        Identical to what the scheduler computed when nothing changed; with a new lr, schedule
        or iters, the next step uses the new values.
        """
        pairs = [(self.scheduler, self.cfg.lr)]
        if self.d_scheduler is not None:
            pairs.append((self.d_scheduler, self.cfg.d_lr))
        for scheduler, base in pairs:
            scheduler.base_lrs = [base for _ in scheduler.base_lrs]
            for group in scheduler.optimizer.param_groups:
                group["initial_lr"] = base
                group["lr"] = base * lr_factor(self.cfg, scheduler.last_epoch)
            scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]

    def use_provisional_schedule(self) -> None:
        """Before the --time-budget plan: a schedule long enough that its warm-up steps sit at its start.

        A resumed run guesses its plan from the it/s its checkpoint recorded (the warm-up is a few
        percent of the budget, so the guess only matters for those steps).
        """
        its = (self.ckpt or {}).get("metrics", {}).get("its") if self.ckpt is not None else None
        guess = self.step + max(1, round(float(its) * self.budget.seconds)) if its else 10**9
        self.cfg = replace(self.cfg, iters=guess)
        self.apply_schedule()

    def wrap_and_bind(self) -> None:
        """DDP wrappers (torchrun) and the step function of the kind."""
        self.g_train, self.d_train = self.model, self.disc
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_train = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            if self.disc is not None:
                self.d_train = nn.parallel.DistributedDataParallel(self.disc, device_ids=ids)
        common = dict(cfg=self.cfg, g_train=self.g_train, model=self.model, optimizer=self.optimizer,
                      scheduler=self.scheduler, ema=self.ema, precision=self.precision)
        if self.cfg.kind == "srgan":
            self.step_fn = _SRGANStep(**common, vgg=self.vgg, disc=self.disc, d_train=self.d_train,
                                      d_optimizer=self.d_optimizer, d_scheduler=self.d_scheduler)
        else:
            self.step_fn = _SRResNetStep(**common)
        self.names = ["loss"] + list(self.step_fn.parts)

    def make_settings(self) -> None:
        """What settings.json and the checkpoints record: the values used, not only those asked for."""
        cfg = self.cfg
        self.gpu_crops = self.device.type == "cuda" and cfg.gpu_crops
        self.resolved = {
            "device": str(self.device), "precision": self.precision.name, "precision_note": self.precision.note,
            "channels_last": self.channels_last,
            "data_path": "gpu_crops" if self.gpu_crops else f"dataloader({cfg.workers} workers)",
            "world_size": self.dist.world, "global_batch_size": cfg.batch_size * self.dist.world,
            "start_step": self.start_step, "generator": {"arch": "SRResNet", "kwargs": self.arch_kwargs},
            "vgg_weights": ("RANDOM (tests only)" if cfg.vgg_weights == "random"
                            else cfg.vgg_weights or "torchvision cache") if self.vgg is not None else None,
            "init_weights": self.init["source"] if self.init is not None and self.ckpt is None else None,
            "versions": library_versions(),
        }
        # Under --time-budget "iters" is recorded once planned (until then it is the cap).
        self.settings = {**cfg.to_dict(), "resolved": self.resolved}
        if self.budget is not None:
            self.settings["iters"] = self.budget.cap
            self.resolved["time_budget"] = {"budget_s": self.budget.seconds, "iters_cap": self.budget.cap,
                                            "planned_iters": None, "actual_iters": None}

    def open_run_folder(self) -> None:
        """Rank 0: settings.json, metrics.csv cut back to the start step, TensorBoard, the first line."""
        cfg, out = self.cfg, self.out
        self.columns = BASE_COLUMNS + list(self.step_fn.parts) + [
            f"{Path(v).name}_{m}" for v in cfg.val for m in ("psnr", "ssim")]
        if not self.main:
            return
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.pt.*.tmp"):  # left by a save killed mid-write (SIGKILL)
            stale.unlink(missing_ok=True)
        if self.ckpt is not None:
            changes = _settings_changes(self.ckpt.get("settings", {}), self.settings)
            if self.budget is not None:  # iters is re-planned (logged with the plan), not a change
                changes = [c for c in changes if not c.startswith("iters: ")]
            if changes:
                _log(f"train: note: resuming with changed settings, applied from step {self.start_step}: "
                     + "; ".join(changes))
        _write_json_atomic(out / "settings.json", self.settings)
        self.columns = prepare_metrics_csv(out / "metrics.csv", self.columns, keep_upto_step=self.start_step)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"), purge_step=self.start_step + 1)
            except ImportError:
                self.tb = None
        budget = f", time budget {self.budget.seconds:g} s (iters planned after a warm-up)" if self.budget else ""
        _log(f"train {cfg.kind}: {self.dist.world} process(es) on {self.device}, precision {self.precision.name} "
             f"({self.precision.note}), steps {self.start_step}..{self.end} of {self.settings['iters']}{budget}, "
             f"out {out}")

    def batches(self):
        """(lr, hr) batches from the start step on; item i of the run is crop i, whichever path cuts it."""
        cfg, rank, world = self.cfg, self.dist.rank, self.dist.world
        dataset = SRTrainDataset(cfg.data, crop=cfg.crop, scale=cfg.scale, seed=cfg.seed)
        if self.gpu_crops:
            cropper = TensorCropper(dataset, self.device)

            def on_device():
                step = self.start_step
                while step < self.end:  # self.end may shrink when a --time-budget plan is made
                    yield cropper.batch(step_indices(step, cfg.batch_size, rank, world))
                    step += 1

            return on_device()
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=StepBatches(self.start_step, self.end, cfg.batch_size, rank, world),
            num_workers=cfg.workers, pin_memory=self.device.type == "cuda", persistent_workers=False)

    # --- one step, validate, save ---------------------------------------------------------------
    def one_step(self, lr_batch: torch.Tensor, hr_batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Move a batch to the device and run one optimisation step; returns the loss parts."""
        lr_batch = _to_device(lr_batch, self.device, self.channels_last)
        hr_batch = _to_device(hr_batch, self.device, self.channels_last)
        parts = self.step_fn(lr_batch, hr_batch)
        self.step += 1
        return parts

    def validate(self) -> dict:
        """PSNR/SSIM of the deployed weights (EMA when on) on the --val folders (rank 0)."""
        eval_model = self.ema.module if self.ema is not None else self.model
        return validate(eval_model, self.cfg.val, self.cfg.scale, self.device)

    def save(self, path: Path, metrics: dict) -> None:
        """Write a checkpoint of the current step (rank 0; atomic)."""
        save_checkpoint(
            path, self.model, arch="SRResNet", kwargs=self.arch_kwargs,
            ema=self.ema.module if self.ema is not None else None,
            kind=self.cfg.kind, step=self.step, optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.precision.scaler.state_dict() if self.precision.scaler is not None else None,
            best_psnr=self.best_psnr, metrics=metrics, settings=self.settings, rng=_rng_state(),
            precision=self.precision.name, world_size=self.dist.world, planned_iters=self.cfg.iters,
            **self.step_fn.state(),
        )

    def check_finite(self, means: list[float], checked: int) -> None:
        if all(math.isfinite(v) for v in means):
            return
        step, cfg = self.step, self.cfg
        where = f"at step {step}" if step == checked + 1 else f"between steps {checked + 1} and {step}"
        kept = (f"The last good checkpoint {self.out / 'last.pt'} (step {self.last_saved}) is kept"
                if self.last_saved is not None else "No checkpoint was written yet")
        bad = ", ".join(f"{n}={v}" for n, v in zip(self.names, means) if not math.isfinite(v))
        raise NonFiniteLossError(
            f"train {cfg.kind}: loss became non-finite ({bad}) {where}; stopped. {kept}. Lower --lr "
            f"(or try --no-amp) and continue with --resume.")

    def check_weights(self) -> None:
        """Before validating or saving: BN statistics averaged over ranks, weights finite."""
        # BN running statistics are per rank under DDP (it broadcasts rank 0's at each forward,
        # then each rank updates them on its own shard): average them so validation and the
        # checkpoint use every rank's data, and every rank holds the same model afterwards.
        self.dist.average_buffers(self.model, self.disc, self.ema.module if self.ema is not None else None)
        # Adam can turn a finite loss with overflowing gradients into non-finite weights:
        # never write those (every rank checks its identical copy, so all stop together).
        if not _all_finite(self.model, self.disc):
            raise NonFiniteLossError(
                f"train {self.cfg.kind}: weights became non-finite at step {self.step}; stopped before saving. "
                f"The last good checkpoint {self.out / 'last.pt'} (step {self.last_saved}) is kept: lower --lr "
                "and continue with --resume.")

    # --- time budget ----------------------------------------------------------------------------
    def plan(self, val_s: float, save_s: float) -> None:
        """After the warm-up: the iterations that fit in the budget; the schedule spans them."""
        budget, cfg = self.budget, self.cfg

        def make_plan():
            its = budget.its(self.step, self.start_step)
            remaining = budget.seconds - budget.elapsed() - budget.reserve()
            planned = plan_iterations(step=self.step, remaining_s=remaining, its=its, cap=budget.cap,
                                      val_every=cfg.val_every, save_every=cfg.save_every, val_s=val_s,
                                      save_s=save_s, validate=bool(cfg.val))
            return {"planned_iters": planned, "its": round(its, 4), "warmup_steps": self.step - self.start_step,
                    "validation_s": round(val_s, 3), "checkpoint_s": round(save_s, 3),
                    "planned_at_s": round(budget.elapsed(), 3)}

        plan = self.dist.from_rank0(make_plan)  # every rank follows rank 0's measurement
        budget.plan = plan
        planned = plan["planned_iters"]
        self.cfg = replace(self.cfg, iters=planned)
        self.end = planned if self.stop_at is None else min(planned, int(self.stop_at))
        self.apply_schedule()
        self.settings["iters"] = planned
        self.resolved["time_budget"].update(plan)
        if self.bar is not None:
            self.bar.total = planned
            self.bar.refresh()
        if self.main:
            _write_json_atomic(self.out / "settings.json", self.settings)
            left = planned - self.step
            _log(f"train {cfg.kind}: time budget {budget.seconds:g} s: {plan['its']:.3f} it/s after "
                 f"{plan['warmup_steps']} warm-up steps, validation {val_s:.2f} s, checkpoint {save_s:.2f} s -> "
                 f"{planned} iterations ({left} more)" + ("; the budget allows no more steps" if left <= 0 else ""))

    def finish_budget(self) -> None:
        if self.budget is None or not self.main:
            return
        tb = self.resolved["time_budget"]
        tb.update({"actual_iters": self.step, "elapsed_s": round(self.budget.elapsed(), 3)})
        _write_json_atomic(self.out / "settings.json", self.settings)
        if self.budget.plan is not None and self.step < tb["planned_iters"]:
            _log(f"train {self.cfg.kind}: stopped at step {self.step} of the planned {tb['planned_iters']} "
                 "to stay within --time-budget (the machine got slower than measured)")

    # --- the loop -------------------------------------------------------------------------------
    def train(self) -> dict:
        """Run the steps from the start step to the end; returns the last metrics row."""
        cfg = self.cfg
        if self.start_step >= self.end:
            # Nothing to do: no file is touched (settings.json keeps what the run used).
            if self.main:
                _log(f"train {cfg.kind}: already at step {self.start_step} (iters {cfg.iters}); nothing to do")
            return dict(self.ckpt.get("metrics", {})) if self.ckpt is not None else {}
        self.open_run_folder()
        self.dist.barrier()
        if self.main:
            from tqdm import tqdm

            self.bar = tqdm(total=self.settings["iters"], initial=self.start_step, desc=f"train {cfg.kind}",
                            unit="it", dynamic_ncols=True, mininterval=1.0)
        try:
            self._loop()
            self.finish_budget()
        finally:
            if self.bar is not None:
                self.bar.close()
            if self.tb is not None:
                self.tb.close()
        return self.metrics

    def _loop(self) -> None:
        cfg, device, budget = self.cfg, self.device, self.budget
        sync_every = 1 if device.type == "cpu" else SYNC_EVERY_CUDA
        self.model.train()
        checked = self.step
        acc, acc_n = None, 0
        t_last, step_last = _now(), self.step
        warming_up = budget is not None
        final_s = 0.0  # --time-budget: measured cost of the final validation + checkpoint
        for lr_batch, hr_batch in self.batches():
            if self.step >= self.end:  # a plan shortened the run (DataLoader batches prefetched)
                break
            parts = self.one_step(lr_batch, hr_batch)
            step = self.step
            vec = torch.stack([parts[n].float() if n in parts else torch.zeros((), device=device)
                               for n in self.names])
            acc, acc_n = (vec if acc is None else acc + vec), acc_n + 1

            planning = False
            if warming_up:
                if device.type == "cuda" and budget.timed_from is None:
                    torch.cuda.synchronize(device)  # the timer starts when the untimed steps really ended
                done = budget.warmup_done(step, self.start_step) if self.main else False
                if self.dist.world > 1:  # every rank ends the warm-up at rank 0's step
                    done = bool(self.dist.all_reduce_mean(torch.tensor([float(done)], device=device)).item() > 0)
                if done:
                    warming_up, planning = False, True
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
            elif budget is not None and budget.plan is not None and self.dist.world == 1 and step < self.end \
                    and budget.out_of_time(final_s):
                self.end = step  # slower than measured: stop here rather than overrun the budget
            final = step == self.end
            is_val = bool(cfg.val) and (step % cfg.val_every == 0 or step == self.cfg.iters or planning
                                        or (final and budget is not None))
            is_save = step % cfg.save_every == 0 or final or planning
            is_log = step % cfg.log_every == 0 or final or is_val
            if is_log or is_save or step % sync_every == 0:
                means = (self.dist.all_reduce_mean(acc) / acc_n).tolist()
                self.check_finite(means, checked)
                checked = step
                if self.bar is not None:
                    self.bar.set_postfix(loss=f"{means[0]:.5f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                                         refresh=False)
            if self.bar is not None:
                self.bar.update(1)

            t_extra = _now()
            val_s = save_s = 0.0
            if is_val or is_save:
                self.check_weights()
            if self.main and is_log:
                now = _now()
                metrics = {"step": step, "lr": self.scheduler.get_last_lr()[0],
                           "its": round((step - step_last) / (now - t_last), 3)}
                metrics.update({n: float(f"{v:.6g}") for n, v in zip(self.names, means) if n in parts})
                if is_val:
                    t0 = _now()
                    metrics.update(self.validate())
                    first = f"{Path(cfg.val[0]).name}_psnr"
                    if metrics[first] > self.best_psnr:
                        self.best_psnr = metrics[first]
                        self.save(self.out / "best.pt", metrics)
                    val_s = _now() - t0
                    self.bar.write(" ".join(f"{k}={v}" for k, v in metrics.items()))
                append_csv(self.out / "metrics.csv", metrics, self.columns)
                if self.tb is not None:
                    for k, v in metrics.items():
                        if k != "step":
                            self.tb.add_scalar(k, v, step)
                self.metrics = metrics
            if is_log:
                acc, acc_n = None, 0
            if self.main and is_save:
                t0 = _now()
                self.save(self.out / "last.pt", self.metrics)
                save_s = _now() - t0
            if is_save:
                self.last_saved = step
            if is_val or is_save:
                self.dist.barrier()  # the other ranks wait here while rank 0 validates and writes
            if budget is not None:
                budget.overhead_s += _now() - t_extra if (is_val or is_save) else 0.0
            if planning:
                self.plan(val_s, save_s)
                final_s = val_s + save_s
                if self.main and self.step >= self.end:  # no more steps fit: last.pt records the plan
                    self.save(self.out / "last.pt", self.metrics)
            if is_log:
                t_last, step_last = _now(), step
