"""Flags shared by the runtime commands (upscale, video, bench, and later batch/eval), declared once.

Also the one parser for "WxH"-style sizes and shapes, used by every command that takes them
(bench, verify, build-engine, the C++ benchmark wrapper). Parsers only: nothing heavy is imported.
"""

from __future__ import annotations

import argparse
import re

from ..backends import NAMES, canonical, help_text, model_help

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


# ----------------------------------------------------------------------------- sizes
def parse_dims(text: str, *, names: tuple[str, ...], example: str, optional_lead: int | None = None,
               what: str = "size") -> tuple[int, ...]:
    """Parse 'AxBx...' (also 'A*B', 'AXB') into positive integers.

    Args:
        text: the string.
        names: what each dimension is, e.g. ("width", "height") or ("N", "C", "H", "W").
        example: a valid example for the message.
        optional_lead: when given, one fewer dimension may be written and this value is put
            first (e.g. batch 1 for "HxW" given where "BxHxW" is expected).
        what: the flag or thing being parsed, for the message.
    """
    parts = re.split(r"[xX*]", str(text).strip())
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if optional_lead is not None and len(dims) == len(names) - 1:
        dims = (optional_lead, *dims)
    if len(dims) != len(names) or min(dims, default=0) < 1:
        short, long = "x".join(n[0].upper() for n in names), "x".join(n.upper() for n in names)
        form = short if short == long else f"{short} ({long})"
        raise ValueError(f"{what} {text!r} is not {form} with positive integers (e.g. {example})")
    return dims


def parse_size(text: str, what: str = "--size") -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    w, h = parse_dims(text, names=("width", "height"), example="128x128", what=what)
    return w, h


def parse_shape(text: str, what: str = "shape") -> tuple[int, int, int, int]:
    """'NxCxHxW' -> (N, C, H, W)."""
    return parse_dims(text, names=("N", "C", "H", "W"), example="1x3x256x256", what=what)  # type: ignore[return-value]


def parse_batch_hw(text: str, what: str = "size") -> tuple[int, int, int]:
    """'BxHxW' or 'HxW' (batch 1) -> (batch, H, W)."""
    return parse_dims(text, names=("B", "H", "W"), example="2x33x47", optional_lead=1, what=what)  # type: ignore


# ----------------------------------------------------------------------------- session flags
def backend_arg(text: str) -> str:
    """argparse ``type`` for --backend: a name or alias from the backend table, made canonical."""
    try:
        return canonical(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_session_args(p: argparse.ArgumentParser, *, threads: bool = True) -> None:
    """--model --backend --device --precision [--threads]: what ``session_recipe`` reads."""
    p.add_argument("--model", metavar="FILE",
                   help=f"{model_help()}; default: the bundled models/*.onnx (or $SRDEPLOY_MODEL)")
    p.add_argument("--backend", default="auto", type=backend_arg, metavar="{" + ",".join(NAMES) + "}",
                   help=help_text())
    p.add_argument("--device", default=None, metavar="DEV",
                   help="cpu, cuda or cuda:N; OpenVINO also gpu, gpu.N, npu where it reports them (default: the "
                        "backend's: cpu, or cuda:0 for TensorRT)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="compute precision (default: what the model file was built/exported/quantized for; bf16: "
                        "OpenVINO on CPUs with AVX-512 BF16/AMX); unavailable = error")
    if threads:
        p.add_argument("--threads", type=int, default=None, metavar="N",
                       help="CPU threads (ONNX Runtime intra-op / torch); default: the backend's (all cores)")


def parse_tile(text: str) -> int | str:
    """--tile: "auto" or a size in pixels >= 0."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--tile {text!r}: expected auto or a size in pixels >= 0 (0 = whole image)")
    return value


def parse_memory(text: str) -> int:
    """--max-memory: "1G", "512M", ... (binary units) in bytes."""
    from ..budget import parse_size as parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--max-memory: {exc}") from None


def add_tile_args(p: argparse.ArgumentParser, *, tile_default: int | str = "auto", tile_help: str | None = None,
                  batch_help: str = "tiles per inference call (default 1)") -> None:
    """--tile --max-memory --tile-pad --batch: what ``Upscaler`` takes."""
    p.add_argument("--tile", type=parse_tile, default=tile_default, metavar="N|auto",
                   help=tile_help or "tile size in input pixels; auto (default) = per image, the largest tile whose "
                                     "predicted peak memory fits --max-memory; 0 = whole image in one pass")
    p.add_argument("--max-memory", type=parse_memory, default=None, metavar="SIZE",
                   help="memory budget for --tile auto, e.g. 1G or 512M (binary units; default: 1G or half the "
                        "available RAM, whichever is smaller; on CUDA: the GPU's free memory)")
    p.add_argument("--tile-pad", type=int, default=None, metavar="N",
                   help="overlap margin in input pixels (default: the margin measured for the model at export, "
                        "metadata srdeploy.tile_margin: deviation < 0.5/255; for models without it 0.3 x the "
                        "receptive radius, at least 12; the radius itself gives exactly the whole-image result)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help=batch_help)


def check_tile_args(args: argparse.Namespace) -> None:
    """One message for out-of-range tile flags."""
    feather = getattr(args, "feather", 0) or 0
    if args.batch < 1 or (args.tile_pad is not None and args.tile_pad < 0) or feather < 0:
        raise ValueError("--tile-pad and --feather must be >= 0 and --batch >= 1")


def model_path(args: argparse.Namespace) -> str:
    """``--model``, else the bundled default model."""
    if args.model:
        return args.model
    from ..open import default_model_path

    return str(default_model_path())


def session_recipe(args: argparse.Namespace, **options):
    """The ``SessionRecipe`` the session flags describe (``options``: backend option fields)."""
    from ..backends import backend_for
    from ..backends.options import make_options
    from ..open import SessionRecipe

    model = model_path(args)
    backend = backend_for(model, args.backend)
    if backend == "onnxruntime-tensorrt" and hasattr(args, "tile") and "trt_tile_plan" not in options:
        # The provider's shape profile covers the windows these tile flags produce (no engine rebuilds).
        # The profile must exist before the session opens, so --tile auto profiles the default tile;
        # the auto chooser then stays inside it (the session's input_spec caps the window).
        from ..upscale import DEFAULT_TILE

        tile = DEFAULT_TILE if args.tile in (None, "auto") else args.tile
        options["trt_tile_plan"] = (tile, args.tile_pad, args.batch)
    return SessionRecipe(model, args.backend, args.device, args.precision, getattr(args, "threads", None),
                         make_options(backend, options))


def describe_session(session, model, upscaler=None) -> str:
    """The first line every runtime command prints: model, backend, providers, device, precision, tiling."""
    info = session.info
    used = session.details.get("providers") or session.details.get("gpu") or ""
    line = (f"model {model} (x{info.scale}, receptive radius {info.receptive_radius}) on {session.backend} "
            f"{used} {session.device} {session.precision}")
    if upscaler is not None:
        line += f"; {upscaler.describe()}, batch {upscaler.batch}" + (f", feather {upscaler.feather}" if upscaler.feather else "")
    return line
