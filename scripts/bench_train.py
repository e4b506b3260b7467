#!/usr/bin/env python
"""Training speed: iterations/s of the real training step (srdeploy.train.steps) for a model.

Default: SRResNet x4, 16 blocks, 64 channels, batch 16, HR crops 96 (LR 24x24), as the paper.
Measures, in the same run:
  - the full iteration (crops cut by the trainer's data path + forward/backward/Adam step),
  - the data path alone (CPU: SRTrainDataset in a DataLoader; CUDA: TensorCropper on the GPU),
and on CUDA also fp32 vs AMP (bf16 or fp16) and channels_last on/off, printed as ratios.

Examples:
  python scripts/bench_train.py                      # auto device, default model
  python scripts/bench_train.py --device cpu --steps 5 --threads 2
  python scripts/bench_train.py --kind srgan         # SRGAN step (VGG19 relu5_4 + discriminator)
  python scripts/bench_train.py --device cuda --precisions fp32,bf16,fp16 --channels-last-modes on,off

On a shared machine the figures depend on what else runs: the script prints the load average
so the reader can judge; compare ratios measured in one run rather than absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _images_folder(path: str | None) -> str:
    from srdeploy.train.data import data_root

    if path:
        return path
    t91 = data_root() / "train" / "T91"
    if t91.is_dir():
        return str(t91)
    raise SystemExit(f"bench_train: no training images at {t91}; pass --data FOLDER (or set SRDEPLOY_DATA)")


def make_precision(name: str, device):
    """The trainer's Precision for "auto" (what training picks), "fp32", "bf16" or "fp16".

    Explicit bf16/fp16 are for measuring each on CUDA; asking for them elsewhere is an error
    (never a silent fp32).
    """
    import torch

    from srdeploy.train import steps

    if name == "auto":
        return steps.resolve_precision(True, device)
    if name == "fp32":
        return steps.Precision("fp32", note="fp32")
    if device.type != "cuda":
        raise SystemExit(f"bench_train: precision {name} runs on CUDA only (training autocasts on CUDA)")
    if name == "bf16":
        if not torch.cuda.is_bf16_supported():
            raise SystemExit("bench_train: this GPU has no bf16 support")
        return steps.Precision("bf16", torch.bfloat16, note="autocast bf16")
    if name == "fp16":
        return steps.Precision("fp16", torch.float16, torch.amp.GradScaler("cuda"), note="autocast fp16 + GradScaler")
    raise SystemExit(f"bench_train: unknown precision {name!r}; choose auto, fp32, bf16 or fp16")


def make_step(cfg, device, fmt, precision):
    """The training step object (``SRResNetStep`` or ``SRGANStep``) for ``cfg`` on ``device``.

    Args:
        cfg: the resolved ``TrainConfig``.  device: torch device.
        fmt: memory format of the models (channels_last or preserve).  precision: a ``steps.Precision``.
    """
    import torch

    from srdeploy.train import steps
    from srdeploy.train.archs import Discriminator, SRResNet, VGGFeatures

    model = SRResNet(scale=cfg.scale, num_blocks=cfg.num_blocks, channels=cfg.channels).to(device, memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    common = dict(cfg=cfg, g_train=model, model=model, optimizer=optimizer, scheduler=scheduler, ema=None,
                  precision=precision)
    if cfg.kind != "srgan":
        return steps.SRResNetStep(**common)
    # Random VGG19 weights: speed does not depend on the weight values (never used to train).
    vgg = VGGFeatures(layer=cfg.vgg_layer, weights="random").to(device, memory_format=fmt)
    disc = Discriminator(base_channels=cfg.d_channels).to(device, memory_format=fmt)
    d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr)
    return steps.SRGANStep(**common, vgg=vgg, disc=disc, d_train=disc, d_optimizer=d_opt,
                           d_scheduler=torch.optim.lr_scheduler.LambdaLR(d_opt, lambda s: 1.0))


def time_iterations(it, *, total: int, warmup: int, sync, work=None) -> tuple[float, object]:
    """Seconds taken by iterations ``warmup`` to ``total`` of a loop over the batches of ``it``.

    Args:
        it: iterator of (lr, hr) batches.  total, warmup: iterations in all, untimed ones first.
        sync: waits for the device (timing starts and stops on a quiet device).
        work: called with each (lr, hr) batch (a training step); None times the data path alone.

    Returns:
        (seconds, what the last ``work`` call returned).
    """
    t0, out = None, None
    for i in range(total):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        lr, hr = next(it)
        if work is not None:
            out = work(lr, hr)
    sync()
    return time.perf_counter() - t0, out


def bench_one(args, *, amp: bool, channels_last: bool, precision_name: str | None = None) -> dict:
    """Time ``args.steps`` training iterations after ``args.warmup``; returns the figures.

    ``precision_name`` (auto/fp32/bf16/fp16) overrides ``amp`` (True = auto, False = fp32).
    """
    import torch

    from srdeploy.train import batches as train_batches
    from srdeploy.train import steps
    from srdeploy.train.config import TrainConfig
    from srdeploy.train.data import SRTrainDataset
    from srdeploy.train.distributed import resolve_device

    device = resolve_device(args.device)
    cfg = TrainConfig(kind=args.kind, data=[args.data], out="unused", batch_size=args.batch_size, crop=args.crop,
                      num_blocks=args.num_blocks, channels=args.channels, scale=args.scale, amp=amp,
                      channels_last=channels_last, device=str(device), vgg_weights="random").resolved(args.kind)
    cfg.validate()
    torch.manual_seed(0)
    cl = channels_last and device.type == "cuda"
    fmt = torch.channels_last if cl else torch.preserve_format
    precision = make_precision(precision_name or ("auto" if amp else "fp32"), device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    step = make_step(cfg, device, fmt, precision)

    dataset = SRTrainDataset(cfg.data, crop=cfg.crop, scale=cfg.scale, seed=0)
    total = args.warmup + args.steps
    gpu_crops = device.type == "cuda"
    if gpu_crops:
        cropper = train_batches.TensorCropper(dataset, device)

        def batches(n):
            return (cropper.batch(train_batches.step_indices(s, cfg.batch_size)) for s in range(n))
    else:
        def batches(n):
            return iter(torch.utils.data.DataLoader(dataset, batch_sampler=train_batches.StepBatches(0, n, cfg.batch_size),
                                                    num_workers=args.workers))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # Full iterations: data + step, as the training loop runs them; then the data path alone.
    def train_step(lr, hr):
        return step(steps.to_device(lr, device, cl), steps.to_device(hr, device, cl))

    full, last = time_iterations(batches(total), total=total, warmup=args.warmup, sync=sync, work=train_step)
    if not torch.isfinite(last["loss"]):
        raise SystemExit("bench_train: the loss became non-finite")
    data, _ = time_iterations(batches(total), total=total, warmup=args.warmup, sync=sync)
    result = {
        "kind": args.kind, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision.name, "channels_last": cl,
        "data_path": "gpu_crops" if gpu_crops else f"dataloader({args.workers} workers)",
        "model": f"SRResNet x{cfg.scale} {cfg.num_blocks}x{cfg.channels}", "batch_size": cfg.batch_size,
        "lr_crop": cfg.crop // cfg.scale, "steps": args.steps, "torch_threads": torch.get_num_threads(),
        "its": args.steps / full, "images_per_s": args.steps * cfg.batch_size / full,
        "data_its": args.steps / data,
    }
    if device.type == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--kind", default="srresnet", choices=("srresnet", "srgan"))
    p.add_argument("--data", help="folder of HR training images (default: T91 under the shared data root)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=96, help="HR crop (default 96 = 24x24 LR at x4)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--num-blocks", type=int, default=16)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="timed iterations (default: 10 on CPU, 100 on CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default: 2 CPU, 20 CUDA)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (CPU data path)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--precisions", metavar="LIST",
                   help="comma list of auto, fp32, bf16, fp16 (bf16/fp16: CUDA only); with --channels-last-modes, "
                        "every combination is measured (default CUDA: auto+CL, fp32+CL, auto without CL)")
    p.add_argument("--channels-last-modes", metavar="LIST", default=None,
                   help="comma list of on, off (channels_last applies on CUDA only)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)

    import torch

    from srdeploy.train.distributed import resolve_device

    args.data = _images_folder(args.data)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.steps = args.steps or (100 if cuda else 10)
    args.warmup = args.warmup if args.warmup is not None else (20 if cuda else 2)

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"bench_train: {os.cpu_count()} CPUs, load average {load}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    if args.precisions or args.channels_last_modes:
        precisions = (args.precisions or "auto").split(",")
        modes = [m.strip() == "on" for m in (args.channels_last_modes or "on").split(",")]
        variants = [(None, cl, name.strip()) for name in precisions for cl in modes]
    else:
        variants = [(True, True, None)] if not cuda else [(True, True, None), (False, True, None), (True, False, None)]
    results = []
    for amp, cl, name in variants:
        r = bench_one(args, amp=amp, channels_last=cl, precision_name=name)
        results.append(r)
        print(f"{r['kind']} {r['model']} batch {r['batch_size']} LR {r['lr_crop']}x{r['lr_crop']} on {r['device_name']} "
              f"[{r['precision']}, channels_last={r['channels_last']}, {r['data_path']}]: "
              f"{r['its']:.3f} it/s ({r['images_per_s']:.1f} images/s); data path alone {r['data_its']:.1f} it/s",
              flush=True)
    if cuda and not (args.precisions or args.channels_last_modes):
        base = results[0]["its"]
        print(f"ratio AMP {results[0]['precision']} / fp32: {base / results[1]['its']:.2f}x; "
              f"channels_last on / off: {base / results[2]['its']:.2f}x")
    if args.json:
        from srdeploy.runtime.atomic import write_json

        write_json(args.json, {"load_average": load, "results": results}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
