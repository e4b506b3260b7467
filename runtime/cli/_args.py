"""Flags shared by the runtime commands (upscale, video, bench, batch, eval), declared once, and
``settings_from_args``: the one place they become a ``RunSettings`` (recipe + tiling).

Parsers only: nothing heavy is imported. The text parsers themselves (sizes, shapes, bytes) are
library code in ``srdeploy.runtime.parsing``; ``describe_session`` is in ``srdeploy.runtime.open``.
"""

from __future__ import annotations

import argparse

from ..backends import NAMES, canonical, help_text, model_help
from ..settings import ALPHA_MODES, DEFAULT_TILE, RunSettings, TileSettings

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "auto")


# ----------------------------------------------------------------------------- session flags
def backend_arg(text: str) -> str:
    """argparse ``type`` for --backend: a name or alias from the backend table, made canonical."""
    try:
        return canonical(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_session_args(p: argparse.ArgumentParser, *, threads: bool = True, precision: str | None = None) -> None:
    """--model --backend --device --precision [--threads]: what ``session_recipe`` reads.

    ``precision``: the --precision default ("auto" in upscale, video, batch and serve: docs/tune.md).
    """
    p.add_argument("--model", metavar="FILE",
                   help=f"{model_help()}; default: the bundled models/*.onnx (or $SRDEPLOY_MODEL)")
    p.add_argument("--backend", default="auto", type=backend_arg, metavar="{" + ",".join(NAMES) + "}",
                   help=help_text())
    p.add_argument("--device", default=None, metavar="DEV",
                   help="cpu, cuda or cuda:N; OpenVINO also gpu, gpu.N, npu where it reports them (default: the "
                        "backend's: cpu, or cuda:0 for TensorRT)")
    p.add_argument("--precision", default=precision, choices=PRECISIONS,
                   help="compute precision; unavailable = error. fp32/fp16/bf16/int8 (bf16: OpenVINO on CPUs with "
                        "AVX-512 BF16/AMX; int8: a quantized file, or MODEL_int8.onnx beside an FP32 MODEL.onnx); "
                        "auto = the fastest path `srdeploy tune` measured on this machine within its --max-loss, "
                        "else the exact default (the first line says which and why). Default: "
                        + (precision or "what the model file was built/exported/quantized for"))
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


def bytes_arg(flag: str):
    """argparse ``type`` for a size flag: "1G", "512M", ... (binary units) in bytes; errors name ``flag``."""
    def parse(text: str) -> int:
        from ..parsing import parse_bytes

        try:
            return parse_bytes(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{flag}: {exc}") from None

    return parse


def add_tile_args(p: argparse.ArgumentParser, *, tile_default: int | str = "auto", tile_help: str | None = None,
                  batch_help: str = "tiles per inference call (default 1)") -> None:
    """--tile --max-memory --tile-pad --batch: what ``Upscaler`` takes."""
    p.add_argument("--tile", type=parse_tile, default=tile_default, metavar="N|auto",
                   help=tile_help or "tile size in input pixels; auto (default) = per image, the largest tile whose "
                                     "predicted peak memory fits --max-memory; 0 = whole image in one pass")
    p.add_argument("--max-memory", type=bytes_arg("--max-memory"), default=None, metavar="SIZE",
                   help="memory budget for --tile auto, e.g. 1G or 512M (binary units; default: 1G or half the "
                        "available RAM, whichever is smaller; on CUDA: the GPU's free memory)")
    p.add_argument("--tile-pad", type=int, default=None, metavar="N",
                   help="overlap margin in input pixels (default: the margin measured for the model at export, "
                        "metadata srdeploy.tile_margin: deviation < 0.5/255; for models without it 0.3 x the "
                        "receptive radius, at least 12; the radius itself gives exactly the whole-image result)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help=batch_help)


def add_blend_args(p: argparse.ArgumentParser, *, alpha_help: str = "") -> None:
    """--feather --alpha: the image commands' remaining ``TileSettings`` fields (``alpha_help``: appended)."""
    p.add_argument("--feather", type=int, default=0, metavar="N",
                   help="blend tiles over N input pixels instead of a hard crop (<= --tile-pad; default 0)")
    p.add_argument("--alpha", default="model", choices=ALPHA_MODES,
                   help="RGBA: upscale alpha with the model (gray pass, default) or bicubic resize" + alpha_help)


def tile_settings(args: argparse.Namespace) -> TileSettings:
    """The ``TileSettings`` the tile flags describe (one message for out-of-range values).

    A command whose ``--tile`` defaults to None (eval: fixed tiles, reproducible figures) gets
    ``DEFAULT_TILE``, or "auto" when ``--max-memory`` asks for a budget.
    """
    tile = args.tile
    if tile is None:
        tile = DEFAULT_TILE if args.max_memory is None else "auto"
    return TileSettings(tile=tile, tile_pad=args.tile_pad,
                        batch=args.batch,
                        feather=getattr(args, "feather", 0),
                        alpha=getattr(args, "alpha", "model"),
                        max_memory=args.max_memory)


def settings_from_args(args: argparse.Namespace, *, model: str | None = None, **options) -> RunSettings:
    """The ``RunSettings`` of a command's session and tile flags, built once.

    Args:
        args: the parsed flags (``add_session_args`` or the same names, and ``add_tile_args``).
        model: the model file when the command takes it positionally (eval); default ``--model``.
        options: backend option fields, e.g. ``inter_op_threads``.
    """
    tiling = tile_settings(args)
    return RunSettings(session_recipe(args, tiling=tiling, model=model, **options), tiling)


def model_path(args: argparse.Namespace) -> str:
    """``--model``, else the bundled default model."""
    if args.model:
        return args.model
    from ..open import default_model_path

    return str(default_model_path())


def session_recipe(args: argparse.Namespace, *, tiling: TileSettings | None = None, model: str | None = None,
                   **options):
    """The ``SessionRecipe`` the session flags describe (``options``: backend option fields).

    ``tiling``: what the session will serve; ONNX Runtime's TensorRT provider derives its shape
    profile from it (no engine rebuilds for these windows), as ``trt_tile_plan``. ``model``:
    instead of ``--model``.
    """
    from ..backends import backend_for
    from ..backends.options import make_options
    from ..open import SessionRecipe

    model = model or model_path(args)
    backend = backend_for(model, args.backend)
    if backend == "onnxruntime-tensorrt" and tiling is not None and "trt_tile_plan" not in options:
        options["trt_tile_plan"] = tiling
    return SessionRecipe(model, args.backend, args.device, args.precision, getattr(args, "threads", None),
                         make_options(backend, options))
