"""Training loops: SRResNet with a pixel loss (MSE as in the paper, or L1).

Read top to bottom: set-up (device, process group, data, model, optimiser), resume, then the
step loop with logging, validation and checkpoints. Under ``torchrun`` each rank takes its own
slice of the (deterministic) crop stream and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .archs import SRResNet
from .checkpoint import library_versions, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import SRTrainDataset
from .evaluate import evaluate, model_upscale


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available else cpu; an explicit cuda request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train: --device {name} requested but CUDA is not available; use --device cpu")
    return device


class DistInfo:
    """Rank and world size; a process group is set up when launched by torchrun."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            import torch.distributed as dist

            use_cuda = torch.cuda.is_available() and device_name != "cpu"
            if use_cuda:
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group("nccl" if use_cuda else "gloo")
            self.device = torch.device(f"cuda:{self.local_rank}") if use_cuda else torch.device("cpu")
        else:
            self.device = resolve_device(device_name)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


class StepBatches(torch.utils.data.Sampler):
    """Batches of item indices for steps ``start..iters-1``; rank r of w takes its own items."""

    def __init__(self, start: int, iters: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start, self.iters, self.batch_size, self.rank, self.world = start, iters, batch_size, rank, world

    def __len__(self) -> int:
        return max(0, self.iters - self.start)

    def __iter__(self):
        for step in range(self.start, self.iters):
            first = (step * self.world + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Learning-rate multiplier at ``step`` for the configured schedule."""
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return 1.0 if step < cfg.iters // 2 else 0.1
    t = min(step / max(1, cfg.iters), 1.0)
    return cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def append_csv(path: Path, row: dict, columns: list[str]) -> None:
    """Append one row of metrics (missing columns left empty); the header goes with the first row."""
    exists = path.is_file() and path.stat().st_size > 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        if not exists:
            writer.writeheader()
        writer.writerow(row)


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


def train_srresnet(cfg: TrainConfig) -> dict:
    """Train the SRResNet generator with a pixel loss; returns the final metrics."""
    cfg.validate()
    dist_info = DistInfo(cfg.device)
    device = dist_info.device
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)

    arch_kwargs = {"scale": cfg.scale, "num_blocks": cfg.num_blocks, "channels": cfg.channels}
    model = SRResNet(**arch_kwargs).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s))
    start_step, best_psnr = 0, -math.inf

    if cfg.resume:
        last = out / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"train: --resume given but {last} does not exist")
        ckpt = load_checkpoint(last, map_location="cpu")
        if ckpt["kwargs"] != arch_kwargs:
            raise ValueError(f"train: {last} holds {ckpt['arch']}({ckpt['kwargs']}), not the requested {arch_kwargs}")
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_step = int(ckpt["step"])
        best_psnr = float(ckpt.get("best_psnr", -math.inf))
        torch.set_rng_state(ckpt["rng"]["torch"])

    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "settings.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    ddp_model = model
    if dist_info.world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    dataset = SRTrainDataset(cfg.data, crop=cfg.crop, scale=cfg.scale, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=StepBatches(start_step, cfg.iters, cfg.batch_size, dist_info.rank, dist_info.world),
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.workers > 0,
    )
    criterion = nn.MSELoss() if cfg.loss == "mse" else nn.L1Loss()

    def save(path: Path, step: int, metrics: dict) -> None:
        save_checkpoint(
            path, model, arch="SRResNet", kwargs=arch_kwargs,
            step=step, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            best_psnr=best_psnr, metrics=metrics, settings=asdict(cfg),
            rng={"torch": torch.get_rng_state()}, versions=library_versions(),
        )

    bar = None
    if dist_info.is_main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.iters, initial=start_step, desc="train srresnet", unit="it", dynamic_ncols=True)

    csv_columns = ["step", "loss", "lr", "its"] + [
        f"{Path(v).name}_{m}" for v in cfg.val for m in ("psnr", "ssim")]
    model.train()
    step = start_step
    metrics: dict = {}
    t_last, step_last, loss_sum, loss_n = time.perf_counter(), step, 0.0, 0
    for lr_batch, hr_batch in loader:
        lr_batch = lr_batch.to(device, non_blocking=True)
        hr_batch = hr_batch.to(device, non_blocking=True)
        loss = criterion(ddp_model(lr_batch), hr_batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"train: loss became {loss.item()} at step {step + 1}; stopped. The last good checkpoint "
                f"({out / 'last.pt'}) is kept: lower --lr and continue with --resume.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        loss_sum += loss.item()
        loss_n += 1

        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.5f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")

        if dist_info.is_main and (step % cfg.log_every == 0 or step % cfg.val_every == 0 or step == cfg.iters):
            now = time.perf_counter()
            metrics = {"step": step, "loss": round(loss_sum / loss_n, 6), "lr": scheduler.get_last_lr()[0],
                       "its": round((step - step_last) / (now - t_last), 3)}
            t_last, step_last, loss_sum, loss_n = now, step, 0.0, 0
            if cfg.val and (step % cfg.val_every == 0 or step == cfg.iters):
                metrics.update(validate(model, cfg.val, cfg.scale, device))
                first = f"{Path(cfg.val[0]).name}_psnr"
                if metrics[first] > best_psnr:
                    best_psnr = metrics[first]
                    save(out / "best.pt", step, metrics)
                bar.write(" ".join(f"{k}={v}" for k, v in metrics.items()))
            append_csv(out / "metrics.csv", metrics, csv_columns)
        if dist_info.is_main and (step % cfg.save_every == 0 or step == cfg.iters):
            save(out / "last.pt", step, metrics)

    if bar is not None:
        bar.close()
    dist_info.close()
    return metrics
