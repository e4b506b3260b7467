"""``srdeploy train srresnet|srgan`` parsers; flags fill ``TrainConfig`` (names are a contract).

No torch at import time: the handlers import the trainer when they run.
"""

from __future__ import annotations

import argparse
from dataclasses import fields


def _add_data_and_run(p: argparse.ArgumentParser, *, iters: int) -> None:
    p.add_argument("--data", nargs="+", required=True, metavar="FOLDER", help="folders of HR training images")
    p.add_argument("--val", nargs="*", default=[], metavar="FOLDER",
                   help="validation folders: PSNR/SSIM (Y, crop = scale); the first one selects best.pt")
    p.add_argument("--out", required=True, help="run folder (last.pt, best.pt, metrics.csv, settings.json)")
    p.add_argument("--iters", type=int, default=iters, help=f"optimisation steps (default {iters})")
    p.add_argument("--batch-size", type=int, default=16,
                   help="images per step, per process under torchrun (default 16)")
    p.add_argument("--crop", type=int, default=96, help="HR crop size (default 96; LR crop = crop/scale)")


def _add_optim_and_run(p: argparse.ArgumentParser, *, lr: float, schedule: str) -> None:
    p.add_argument("--lr", type=float, default=lr, help=f"Adam learning rate (default {lr})")
    p.add_argument("--schedule", default=None, choices=("cosine", "constant", "step"),
                   help=f"learning-rate schedule (default {schedule}; step = x0.1 for the second half)")
    p.add_argument("--lr-min-ratio", type=float, default=0.01, help="cosine: final lr / lr (default 0.01)")
    p.add_argument("--loss", default="mse", choices=("mse", "l1"), help="pixel loss (default mse, as the paper)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="EMA decay of the generator weights, e.g. 0.999 (default 0 = off); "
                        "validation, best.pt, eval and export then use the EMA weights")
    p.add_argument("--val-every", type=int, default=1000, help="validate every N steps (default 1000)")
    p.add_argument("--save-every", type=int, default=500, help="write last.pt every N steps (default 500)")
    p.add_argument("--log-every", type=int, default=50, help="append a metrics row every N steps (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weight init and the crops (default 0)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (CPU data path; default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--no-amp", dest="amp", action="store_false",
                   help="fp32 on CUDA (default: bf16 autocast where supported, else fp16 + GradScaler)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep NCHW-contiguous tensors on CUDA")
    p.add_argument("--no-gpu-crops", dest="gpu_crops", action="store_false",
                   help="on CUDA, cut crops on the CPU in a DataLoader (--workers) instead of on the GPU")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="do not log to OUT/tb even when tensorboard is installed")
    p.add_argument("-q", "--quiet", dest="progress", action="store_false",
                   help="no progress bar (status lines and validation rows are still printed)")
    p.add_argument("--resume", action="store_true",
                   help="continue OUT/last.pt: same step, optimizer, scheduler and RNG state; changed "
                        "--lr/--schedule/--iters apply from the resumed step")
    p.add_argument("--time-budget", type=_duration, default=None, metavar="DURATION",
                   help="end within this wall time (e.g. 90s, 8m, 2h): it/s is measured after a warm-up "
                        "and the iterations (at most --iters) planned so that validation and the final "
                        "checkpoint fit; the schedule spans them. With --resume: time for more steps")


def _duration(text: str) -> float:
    from .config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("train: ")) from None


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train SRResNet (pixel loss) or SRGAN (perceptual loss)",
                       description="Train the generator. Launched by torchrun, runs DistributedDataParallel "
                                   "(each rank its own data shard; rank 0 writes).")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)

    r = kinds.add_parser("srresnet", help="SRResNet with MSE (paper) or L1 pixel loss",
                         description="Train SRResNet with a pixel loss. Example: srdeploy train srresnet "
                                     "--data T91 BSDS200 --val Set5 --out runs/srresnet_x4")
    _add_data_and_run(r, iters=100_000)
    r.add_argument("--scale", type=int, default=4, choices=(2, 4, 8), help="upscaling factor (default 4)")
    r.add_argument("--num-blocks", type=int, default=16, help="residual blocks (default 16)")
    r.add_argument("--channels", type=int, default=64, help="feature channels (default 64)")
    r.add_argument("--init", metavar="CHECKPOINT",
                   help="start from this SRResNet checkpoint's weights (EMA if any; architecture taken "
                        "from it) with a fresh optimizer and schedule at step 0")
    _add_optim_and_run(r, lr=1e-4, schedule="cosine")
    r.set_defaults(func=_run_train)

    g = kinds.add_parser(
        "srgan", help="SRGAN from a trained SRResNet: VGG content + adversarial loss",
        description="Train SRGAN (Ledig et al. 2017) from a trained SRResNet: generator loss = "
                    "content_weight * MSE(VGG19 phi_5,4 / 12.75) + adv_weight * BCE(D(SR), real) "
                    "[+ pixel_weight * pixel loss]; discriminator with BCEWithLogitsLoss; Adam 1e-4, "
                    "x0.1 for the second half. The generator architecture comes from --init. Needs "
                    "ImageNet VGG19 weights (--vgg-weights FILE, or torchvision's cache); never downloads.")
    _add_data_and_run(g, iters=200_000)
    g.add_argument("--init", metavar="CHECKPOINT",
                   help="trained SRResNet to start from, e.g. runs/NAME/best.pt (required unless --resume)")
    g.add_argument("--vgg-weights", metavar="FILE",
                   help="VGG19 ImageNet weights (torchvision's vgg19-dcbb9e9d.pth or a features state "
                        "dict); default: torchvision's torch-hub cache")
    g.add_argument("--vgg-layer", default="relu5_4",
                   choices=("relu5_4", "relu2_2", "relu1_2", "relu3_4", "relu4_4", "phi54", "phi22"),
                   help="VGG19 feature layer of the content loss (default relu5_4 = phi_5,4, paper)")
    g.add_argument("--content-weight", type=float, default=None, help="VGG content loss weight (default 1)")
    g.add_argument("--adv-weight", type=float, default=None, help="adversarial loss weight (default 1e-3)")
    g.add_argument("--pixel-weight", type=float, default=None,
                   help="pixel loss weight (default 0, as the paper; --loss picks MSE or L1)")
    g.add_argument("--d-lr", type=float, default=None, help="discriminator learning rate (default: --lr)")
    g.add_argument("--d-channels", type=int, default=64, help="discriminator base channels (default 64)")
    _add_optim_and_run(g, lr=1e-4, schedule="step")
    # Tests / smoke runs only: a VGG19 with random weights makes the content loss meaningless,
    # so it is never a default and not advertised in --help.
    g.add_argument("--testing-random-vgg", action="store_true", help=argparse.SUPPRESS)
    g.set_defaults(func=_run_train)


def config_from_args(args: argparse.Namespace):
    """Fill a TrainConfig from parsed flags (only fields the parser defines); kind defaults apply later."""
    from .config import TrainConfig

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["kind"] = args.kind
    if getattr(args, "testing_random_vgg", False):
        if args.vgg_weights:
            raise ValueError("train srgan: give either --vgg-weights or --testing-random-vgg, not both")
        values["vgg_weights"] = "random"
    elif values.get("vgg_weights") == "random":
        raise ValueError("train srgan: --vgg-weights random is not a weights file; give the path of the "
                         "VGG19 ImageNet weights")
    return TrainConfig(**values)


def _process_started() -> float:
    """``time.perf_counter()`` value at this process's start (Linux /proc), else now.

    ``--time-budget`` counts the interpreter start and the torch import too: the budget is the
    wall time of the command.
    """
    import os
    import time

    now = time.perf_counter()
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return now
    return now - age if 0 <= age < 3600 else now


def _run_train(args: argparse.Namespace) -> int:
    started = _process_started()
    cfg = config_from_args(args)
    if args.kind == "srresnet":
        from .trainer import train_srresnet

        train_srresnet(cfg, clock=started)
    else:
        from .trainer import train_srgan

        train_srgan(cfg, clock=started)
    return 0
