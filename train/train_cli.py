"""``srdeploy train srresnet|srgan`` parsers; flags fill ``TrainConfig`` (names are a contract)."""

from __future__ import annotations

import argparse
from dataclasses import fields


def _add_common(p: argparse.ArgumentParser, *, lr: float, iters: int) -> None:
    p.add_argument("--data", nargs="+", required=True, metavar="FOLDER", help="folders of HR training images")
    p.add_argument("--val", nargs="*", default=[], metavar="FOLDER", help="validation folders (first selects best.pt)")
    p.add_argument("--out", required=True, help="run folder (last.pt, best.pt, metrics.csv, settings.json)")
    p.add_argument("--iters", type=int, default=iters, help=f"optimisation steps (default {iters})")
    p.add_argument("--batch-size", type=int, default=16, help="images per step, per process (default 16)")
    p.add_argument("--crop", type=int, default=96, help="HR crop size (default 96; LR crop = crop/scale)")
    p.add_argument("--scale", type=int, default=4, choices=(2, 4, 8))
    p.add_argument("--num-blocks", type=int, default=16, help="residual blocks (default 16)")
    p.add_argument("--channels", type=int, default=64, help="feature channels (default 64)")
    p.add_argument("--lr", type=float, default=lr, help=f"Adam learning rate (default {lr})")
    p.add_argument("--schedule", default=None, choices=("cosine", "constant", "step"), help="learning-rate schedule")
    p.add_argument("--lr-min-ratio", type=float, default=0.01, help="cosine: final lr / lr (default 0.01)")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of generator weights (0 = off)")
    p.add_argument("--val-every", type=int, default=1000, help="validate every N steps")
    p.add_argument("--save-every", type=int, default=500, help="write last.pt every N steps")
    p.add_argument("--log-every", type=int, default=50, help="append a metrics row every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable mixed precision on CUDA")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train SRResNet (pixel loss) or SRGAN (perceptual loss)",
                       description="Train the generator. Under torchrun, runs DistributedDataParallel.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)

    r = kinds.add_parser("srresnet", help="SRResNet with MSE (paper) or L1 pixel loss")
    _add_common(r, lr=1e-4, iters=100_000)
    r.add_argument("--loss", default="mse", choices=("mse", "l1"), help="pixel loss (default mse, as the paper)")
    r.set_defaults(func=_run_train, schedule_default="cosine")


def config_from_args(args: argparse.Namespace):
    """Fill a TrainConfig from parsed flags (only fields the parser defines)."""
    from .config import TrainConfig

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if values.get("schedule") is None:
        values["schedule"] = args.schedule_default
    return TrainConfig(**values)


def _run_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.kind == "srresnet":
        from .trainer import train_srresnet

        train_srresnet(cfg)
    else:
        from .trainer import train_srgan

        train_srgan(cfg)
    return 0
