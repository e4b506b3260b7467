"""``srdeploy upscale``: super-resolve image files, folders and globs.

Parser only at import time (no numpy/OpenCV/onnxruntime); the handler imports them when it runs.
The work itself is library code: input discovery and output names in ``srdeploy.runtime.media.files``,
the per-file loop in ``srdeploy.runtime.upscale``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._args import add_blend_args, add_session_args, add_tile_args, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale", help="super-resolve images (files, folders, globs) with an ONNX/TensorRT/PyTorch model",
        description="Super-resolve images with tiled inference. The output format comes from the output "
                    "extension (--ext, else the input's). Outputs are written to a temporary name and renamed; "
                    "an existing output is kept unless --overwrite; an input is never overwritten. "
                    "Bad inputs are reported and skipped; the exit status is 1 when any file failed.")
    p.add_argument("-i", "--input", nargs="+", required=True, metavar="INPUT",
                   help="image files, folders (their images, not recursive) or glob patterns")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (created); or an output file when there is one input file and OUT "
                        "has an image extension")
    add_session_args(p, precision="auto")
    add_tile_args(p)
    add_blend_args(p)
    p.add_argument("--ext", default=None, metavar="EXT",
                   help="output format/extension, e.g. png, jpg, webp, tiff (default: the input's)")
    p.add_argument("--suffix", default="", metavar="S",
                   help="appended to output file names before the extension (default: none)")
    p.add_argument("--quality", type=int, default=None, metavar="Q", help="JPEG quality 0-100 / WebP quality 1-100 (default 95); out of range is an error")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_upscale)


def run_upscale(args: argparse.Namespace) -> int:
    from ..media.files import collect, output_paths
    from ..open import describe_session, open_session
    from ..upscale import Upscaler, upscale_files

    t0 = time.perf_counter()
    run = settings_from_args(args)
    pairs, failures = collect(args.input, kinds=("image",))
    files = [f for f, _ in pairs]
    single = len(args.input) == 1 and Path(args.input[0]).is_file()
    mapping = output_paths(pairs, args.output, ext=args.ext, suffix=args.suffix, single_item=single)
    from ..media.images import check_quality, pixel_limit

    pixel_limit()  # a bad $SRDEPLOY_MAX_IMAGE_PIXELS is one error up front, not one per file
    for dst in mapping.values():  # before any work: an out-of-range value is refused, not clamped
        check_quality(args.quality, dst)
    if not files:
        for msg in failures:
            print(f"srdeploy upscale: error: {msg}", file=sys.stderr)
        if not failures:  # each bad input already said why; this only when there was nothing to say
            print("srdeploy upscale: no input images", file=sys.stderr)
        return 1

    recipe = run.recipe
    with open_session(recipe) as session:
        up = Upscaler(session, run.tiling)
        announced = []

        def announce(upscaler) -> None:  # the first line, once the first image's tile is chosen
            print(describe_session(session, recipe.model, upscaler), file=sys.stderr)
            announced.append(True)

        report = upscale_files(up, mapping, overwrite=args.overwrite, quality=args.quality,
                               progress=not args.quiet, announce=announce)
        if not announced:
            print(describe_session(session, recipe.model, up), file=sys.stderr)
    failures += report.failures
    dt = time.perf_counter() - t0
    print(f"srdeploy upscale: {len(report.written)} of {len(files)} image(s) written to {args.output} in {dt:.1f} s",
          file=sys.stderr)
    if failures:
        print(f"srdeploy upscale: {len(failures)} failed:", file=sys.stderr)
        for msg in failures:
            print(f"  {msg}", file=sys.stderr)
        return 1
    return 0
