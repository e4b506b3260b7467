"""The ``srdeploy`` command: one entry point, one subcommand per job.

Each subpackage owns its subcommands in a ``cli`` module that only builds argparse parsers
(no torch, no onnxruntime at import time), so ``srdeploy --help`` and ``srdeploy upscale`` work
on an edge box without PyTorch. Handlers import their implementation when they run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from srdeploy import __version__

# Order here is the order in `srdeploy --help`.
_COMMAND_MODULES = ("srdeploy.demo", "srdeploy.train.cli", "srdeploy.export.cli", "srdeploy.runtime.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srdeploy",
        description="Super-resolution (SRResNet/SRGAN) from training to verified deployment.",
    )
    parser.add_argument("--version", action="version", version=f"srdeploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except (ValueError, OSError, RuntimeError) as exc:
        # User-facing failures (bad file, bad flag value, backend unavailable) are raised with
        # a message that names the file and says what to do; print it without a traceback.
        # SRDEPLOY_DEBUG=1 shows the traceback for bug reports.
        if os.environ.get("SRDEPLOY_DEBUG"):
            raise
        print(f"srdeploy {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("srdeploy: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # optional dependency missing: say which extra
        extra = {"torch": "train", "torchvision": "train", "onnx": "export", "PIL": "train",
                 "tensorrt": "gpu", "cuda": "gpu", "matplotlib": "plot",
                 "ray": "cluster"}.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"srdeploy {args.command}: needs the Python package {exc.name!r}, which is not installed. "
              f"Install it with: pip install 'srdeploy[{extra}]'", file=sys.stderr)
        return 3
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
