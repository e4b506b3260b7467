"""The ``srdeploy`` command: one entry point, one subcommand per job.

Each subpackage owns its subcommands in a ``cli`` module that only builds argparse parsers
(no torch, no onnxruntime at import time), so ``srdeploy --help`` and ``srdeploy upscale`` work
on an edge box without PyTorch. Handlers import their implementation when they run.

Exit status (README, "Errors and exit status"): 0 ok; 1 input or environment error (bad file, missing
optional package, backend unavailable, unexpected failure); 2 usage error (argparse);
130 interrupted by SIGINT (Ctrl-C); 143 terminated by SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from srdeploy import __version__

# Order here is the order in `srdeploy --help`.
_COMMAND_MODULES = ("srdeploy.demo", "srdeploy.train.cli", "srdeploy.export.cli", "srdeploy.runtime.cli")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
DEBUG_ENV = "SRDEPLOY_DEBUG"
_EXTRAS = {"torch": "train", "torchvision": "train", "onnx": "export", "onnxscript": "export", "PIL": "train",
           "tensorrt": "gpu", "cuda": "gpu", "matplotlib": "plot", "onnxslim": "simplify", "skimage": "dev",
           "ray": "cluster", "onnxruntime": "cpu", "starlette": "serve", "uvicorn": "serve", "multipart": "serve",
           "spandrel": "import", "safetensors": "import"}


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


def quiet_opencv() -> None:
    """Silence OpenCV's and FFmpeg's own log lines (``[ WARN:0@0.03] global cap.cpp ...``,
    ``moov atom not found``): our one-line errors report the condition. Set before cv2 is
    imported (it reads these once); a value the user exported is kept, for debugging."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_VIDEOIO_DEBUG", "0")
    if "cv2" in sys.modules:  # imported already (tests, library use): set it directly
        try:
            sys.modules["cv2"].utils.logging.setLogLevel(sys.modules["cv2"].utils.logging.LOG_LEVEL_SILENT)
        except AttributeError:
            pass


# torch.load's advice to retry with weights_only=False recommends running code from the file:
# it must never reach a user. Its whole paragraph is replaced by the one fact that matters.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TORCH_UNSAFE = re.compile(r"Weights only load failed.*", re.DOTALL)


def one_line(text: object) -> str:
    """A user-facing message on one line, without torch's advice to load files unsafely."""
    text = _ANSI.sub("", str(text))
    m = _TORCH_UNSAFE.search(text)
    if m:
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\.\s|\n|$)", m.group(0))
        what = detail.group(1).strip() if detail else "it holds more than tensors and plain containers"
        text = text[:m.start()] + f"the safe loader refused it: {what})"
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    # (srdeploy's own recipe for converting a file where it is trusted says so, and stays)
    text = " ".join(t for t in sentences if not ("weights_only" in t and "false" in t.lower())
                    or "where you trust the file" in t.lower())
    return text or "(no message)"


def main(argv: list[str] | None = None) -> int:
    quiet_opencv()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    prefix = f"srdeploy {args.command}"
    debug = bool(os.environ.get(DEBUG_ENV))
    # SIGTERM (kill, systemd, Docker, Kubernetes) is handled like Ctrl-C: KeyboardInterrupt in the
    # main thread, so temporary files are removed on the way out; the exit status says which.
    from srdeploy.runtime.interrupt import Terminated, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            rc = args.func(args)
    except KeyboardInterrupt as exc:
        term = isinstance(exc, Terminated)
        print(f"{prefix}: {'terminated (SIGTERM)' if term else 'interrupted'}", file=sys.stderr)
        return EXIT_SIGTERM if term else EXIT_SIGINT
    except ModuleNotFoundError as exc:  # optional dependency missing: say which extra
        if debug:
            raise
        top = (exc.name or "").split(".")[0]
        extra = _EXTRAS.get(top)
        hint = f"pip install 'srdeploy[{extra}]'" if extra else f"pip install {top}"
        print(f"{prefix}: error: needs the Python package {exc.name!r}, which is not installed. "
              f"Install it with: {hint}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, OSError, RuntimeError) as exc:
        # User-facing failures (bad file, bad flag value, backend unavailable) are raised with
        # a message that names the file and says what to do; print it without a traceback.
        if debug:
            raise
        # Library messages name their step ("eval: --scale ..."); the prefix already says it once.
        print(f"{prefix}: error: {one_line(exc).removeprefix(f'{args.command}: ')}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # last resort: anything else is still one line, not a traceback
        if debug:
            raise
        print(f"{prefix}: error: unexpected {type(exc).__name__}: {one_line(exc)} "
              f"(set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
