"""``srdeploy train`` (parser) and the checkpoint side of ``srdeploy eval``; implementations load on use."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    # ``srdeploy eval`` is registered by srdeploy.export.cli: it also evaluates deployed model files
    # through the runtime, which train may not import. The checkpoint path below stays here.
    from .train_cli import register_train  # argparse only, no torch

    register_train(sub)


def run_checkpoint_eval(args: argparse.Namespace, read=None) -> tuple[str, list, dict]:
    """``srdeploy eval CHECKPOINT FOLDER...`` and ``--bicubic``: the training code's PyTorch model, whole images.

    The caller (``srdeploy.export.cli``, which registers ``eval``) prints the table and writes
    ``--json``, as it does for model files, so both kinds of result are reported by one piece of code.

    Args:
        args: the parsed ``srdeploy eval`` flags.
        read: image reader ``path -> uint8 RGB HxWx3`` (None: ``data.load_rgb``, Pillow).

    Returns:
        (title, the ``SetResult`` per folder, record: model, backend, device, precision, scale).
    """
    from .data import load_rgb, resolve_folder
    from .evaluate import bicubic_upscale, evaluate

    # One positional list: "CHECKPOINT FOLDER..." or, with --bicubic, "FOLDER...".
    from pathlib import Path

    if args.bicubic:
        folders = list(args.paths)
        if any(Path(f).is_file() for f in folders):
            raise ValueError("eval: --bicubic takes folders only; drop the checkpoint or drop --bicubic")
    else:
        if len(args.paths) < 2 or Path(args.paths[0]).is_dir():
            raise ValueError("eval: give a checkpoint then at least one folder "
                             "(srdeploy eval CHECKPOINT FOLDER...), or --bicubic FOLDER...")
        args.checkpoint, folders = args.paths[0], list(args.paths[1:])
    folders = [resolve_folder(f) for f in folders]  # before loading a model: a typo fails at once
    if args.bicubic:
        scale = args.scale or 4
        title = f"bicubic x{scale}"
        upscale = lambda lr: bicubic_upscale(lr, scale)  # noqa: E731
    else:
        from .checkpoint import load_generator
        from .evaluate import model_upscale
        from .distributed import resolve_device

        model, ckpt = load_generator(args.checkpoint, use_ema=not args.no_ema)
        scale = int(model.scale)
        if args.scale and args.scale != scale:
            raise ValueError(f"eval: --scale {args.scale} does not match the checkpoint's scale {scale}")
        device = resolve_device(args.device or "auto")
        model = model.to(device)
        title = f"{args.checkpoint} ({ckpt['arch']} x{scale}, step {ckpt.get('step', '?')})"
        upscale = lambda lr: model_upscale(model, lr, device)  # noqa: E731
    results = evaluate(upscale, folders, scale=scale, progress=not args.quiet, read=read or load_rgb)
    record = {"model": None if args.bicubic else str(args.checkpoint),
              "backend": "bicubic" if args.bicubic else "torch (training code, whole image)",
              "device": None if args.bicubic else str(device), "precision": None if args.bicubic else "fp32",
              "scale": scale}
    return title, results, record

