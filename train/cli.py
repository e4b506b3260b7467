"""``srdeploy train`` (parser) and the checkpoint side of ``srdeploy eval``; implementations load on use."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    # ``srdeploy eval`` is registered by srdeploy.export.cli: it also evaluates deployed model files
    # through the runtime, which train may not import. The checkpoint path below stays here.
    from .train_cli import register_train  # argparse only, no torch

    register_train(sub)


def run_checkpoint_eval(args: argparse.Namespace) -> int:
    """``srdeploy eval CHECKPOINT FOLDER...`` and ``--bicubic``: the training code's PyTorch model, whole images."""
    from .evaluate import bicubic_upscale, evaluate, format_table

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
    folders = [_resolve_folder(f) for f in folders]  # before loading a model: a typo fails at once
    if args.bicubic:
        scale = args.scale or 4
        title = f"bicubic x{scale}"
        upscale = lambda lr: bicubic_upscale(lr, scale)  # noqa: E731
    else:
        from .checkpoint import load_generator
        from .evaluate import model_upscale
        from .trainer import resolve_device

        model, ckpt = load_generator(args.checkpoint, use_ema=not args.no_ema)
        scale = int(model.scale)
        if args.scale and args.scale != scale:
            raise ValueError(f"eval: --scale {args.scale} does not match the checkpoint's scale {scale}")
        device = resolve_device(args.device or "auto")
        model = model.to(device)
        title = f"{args.checkpoint} ({ckpt['arch']} x{scale}, step {ckpt.get('step', '?')})"
        upscale = lambda lr: model_upscale(model, lr, device)  # noqa: E731
    results = evaluate(upscale, folders, scale=scale, progress=not args.quiet)
    print(format_table(results, title))
    if args.json:
        record = {"model": None if args.bicubic else str(args.checkpoint),
                  "backend": "bicubic" if args.bicubic else "torch (training code, whole image)",
                  "device": None if args.bicubic else str(device), "precision": None if args.bicubic else "fp32"}
        Path(args.json).write_text(json.dumps({"title": title, "scale": scale, **record,
                                               "sets": [r.as_dict() for r in results]}, indent=2) + "\n")
    return 0


def _resolve_folder(name: str) -> str:
    """A folder as given, else under the data root (``Set5`` -> ``$SRDEPLOY_DATA/benchmark/Set5``);
    an error listing every path tried."""
    import os
    from pathlib import Path

    from .data import DATA_ENV, data_root

    given = Path(name)
    if given.is_dir():
        return name
    root = data_root()
    tried = [given] if given.is_absolute() else [given, root / given, root / "benchmark" / given]
    for path in tried[1:]:
        if path.is_dir():
            return str(path)
    raise FileNotFoundError(f"eval: {name}: not a folder of images; tried {', '.join(str(p) for p in tried)} "
                            f"({DATA_ENV} is {os.environ.get(DATA_ENV) or 'unset'})")
