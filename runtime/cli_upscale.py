"""``srdeploy upscale``: super-resolve image files, folders and globs.

Parser only at import time (no numpy/OpenCV/onnxruntime); the handler imports them when it runs.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

_BACKENDS = ("auto", "onnxruntime", "onnxruntime-tensorrt", "tensorrt", "torch")
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


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
    p.add_argument("--model", metavar="FILE",
                   help="model: .onnx, .engine/.plan (TensorRT) or .pt (PyTorch checkpoint, needs "
                        "srdeploy[train]); default: the bundled models/*.onnx (or $SRDEPLOY_MODEL)")
    p.add_argument("--backend", default="auto", choices=_BACKENDS,
                   help="inference backend (default: from the model file); an unavailable backend is an error")
    p.add_argument("--device", default=None, metavar="DEV",
                   help="cpu, cuda or cuda:N (default: cpu; cuda:0 for TensorRT)")
    p.add_argument("--precision", default=None, choices=("fp32", "fp16"),
                   help="compute precision (default: what the model file was built/exported for)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    p.add_argument("--tile", type=int, default=None, metavar="N",
                   help="tile size in input pixels (default 256, chosen by measurement); 0 = whole image in one pass")
    p.add_argument("--tile-pad", type=int, default=None, metavar="N",
                   help="overlap margin in input pixels (default: 0.3 x the model's receptive radius, at least 12, "
                        "chosen by measurement: deviation < 0.2/255 on the x4 SRResNet; the radius itself "
                        "gives exactly the whole-image result)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="tiles per inference call (default 1)")
    p.add_argument("--feather", type=int, default=0, metavar="N",
                   help="blend tiles over N input pixels instead of a hard crop (<= --tile-pad; default 0)")
    p.add_argument("--alpha", default="model", choices=("model", "resize"),
                   help="RGBA: upscale alpha with the model (gray pass, default) or bicubic resize")
    p.add_argument("--ext", default=None, metavar="EXT",
                   help="output format/extension, e.g. png, jpg, webp, tiff (default: the input's)")
    p.add_argument("--suffix", default="", metavar="S",
                   help="appended to output file names before the extension (default: none)")
    p.add_argument("--quality", type=int, default=None, metavar="Q", help="JPEG/WebP quality (default 95)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_upscale)


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def collect_inputs(items: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders and globs into a sorted, de-duplicated file list.

    Returns:
        (files, problems) where problems are (item, message) for items that matched nothing.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in _IMAGE_EXTS
                           and not f.name.startswith("."))
            if not found:
                problems.append((item, f"{item}: folder contains no images ({', '.join(_IMAGE_EXTS)})"))
            files += found
        elif p.exists():
            files.append(p)
        elif _has_magic(item):
            found = sorted(Path(f) for f in glob.glob(item) if Path(f).is_file())
            if not found:
                problems.append((item, f"{item}: no files match this pattern"))
            files += found
        else:
            problems.append((item, f"{item}: no such file or folder"))
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


def output_paths(files: list[Path], output: str, *, ext: str | None, suffix: str,
                 single_item: bool) -> dict[Path, Path]:
    """Map each input to its output path (see the ``-o`` help)."""
    out = Path(output)
    if ext is not None:
        ext = "." + ext.lower().lstrip(".")
        if ext not in _IMAGE_EXTS:
            raise ValueError(f"--ext {ext[1:]}: unsupported output format; use one of "
                             + ", ".join(e[1:] for e in _IMAGE_EXTS))
    if single_item and len(files) == 1 and out.suffix.lower() in _IMAGE_EXTS and not out.is_dir():
        if ext is not None and ext != out.suffix.lower():
            raise ValueError(f"-o {out} has extension {out.suffix} but --ext says {ext}; drop one of them")
        return {files[0]: out}
    if out.suffix.lower() in _IMAGE_EXTS and not out.is_dir():
        raise ValueError(f"-o {out}: an output file name needs exactly one input file ({len(files)} given, or a "
                         "folder/glob); give an output folder instead")
    if out.exists() and not out.is_dir():
        raise ValueError(f"-o {out}: exists and is not a folder (a single output file needs exactly one "
                         "input file and an image extension)")
    return {f: out / f"{f.stem}{suffix}{ext or f.suffix}" for f in files}


def run_upscale(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .images import check_writable, read_image, write_image
    from .open import default_model_path, open_session
    from .upscale import DEFAULT_TILE, Upscaler

    t0 = time.perf_counter()
    if args.batch < 1 or (args.tile is not None and args.tile < 0) or \
            (args.tile_pad is not None and args.tile_pad < 0) or args.feather < 0:
        raise ValueError("--tile, --tile-pad and --feather must be >= 0 and --batch >= 1")
    files, problems = collect_inputs(args.input)
    failures: list[str] = [msg for _, msg in problems]
    single = len(args.input) == 1 and Path(args.input[0]).is_file()
    mapping = output_paths(files, args.output, ext=args.ext, suffix=args.suffix, single_item=single)
    if not files:
        for msg in failures:
            print(f"srdeploy upscale: error: {msg}", file=sys.stderr)
        print("srdeploy upscale: no input images", file=sys.stderr)
        return 1

    model = Path(args.model) if args.model else default_model_path()
    options = {}
    session = open_session(model, backend=args.backend, device=args.device, precision=args.precision,
                           threads=args.threads, **options)
    with session:
        up = Upscaler(session, tile=DEFAULT_TILE if args.tile is None else args.tile, tile_pad=args.tile_pad,
                      batch=args.batch, feather=args.feather, alpha=args.alpha)
        info = session.info
        used = session.details.get("providers") or session.details.get("gpu") or ""
        print(f"model {model} (x{info.scale}, receptive radius {info.receptive_radius}) on {session.backend} "
              f"{used} {session.device} {session.precision}; tile {up.tile or 'whole image'}, tile-pad "
              f"{up.tile_pad}, batch {up.batch}" + (f", feather {up.feather}" if up.feather else ""),
              file=sys.stderr)
        planned: set[Path] = set()
        ok = 0
        bar = tqdm(files, unit="img", disable=args.quiet or len(files) < 2, file=sys.stderr)
        for src in bar:
            dst = mapping[src]
            bar.set_postfix_str(src.name)
            try:
                key = dst.resolve()
                if key == src.resolve():
                    raise ValueError(f"{src}: output {dst} would overwrite the input; choose another -o folder, "
                                     "--suffix or --ext")
                if key in planned:
                    raise ValueError(f"{src}: output {dst} is also the output of an earlier input; use --suffix "
                                     "or separate runs")
                planned.add(key)
                if dst.exists() and not args.overwrite:
                    raise FileExistsError(f"{dst}: already exists; pass --overwrite to replace it")
                img, meta = read_image(src, order="BGR")
                check_writable(dst, dtype=img.dtype, channels=meta.channels)
                plan = up.plan(img.shape[0], img.shape[1])
                tiles = tqdm(total=plan.num_tiles, unit="tile", leave=False, file=sys.stderr,
                             disable=args.quiet or plan.num_tiles < 4)
                try:
                    def prog(done: int, total: int) -> None:
                        tiles.total = total
                        tiles.update(done - tiles.n)

                    result = up.upscale(img, order="BGR", progress=prog)
                finally:
                    tiles.close()
                del img
                write_image(dst, result, order="BGR", overwrite=args.overwrite, quality=args.quality)
                del result
                ok += 1
                for note in plan.notes:
                    tqdm.write(f"srdeploy upscale: note: {src}: {note}", file=sys.stderr)
            except (ValueError, OSError, MemoryError) as exc:
                msg = str(exc) if str(src) in str(exc) or str(dst) in str(exc) else f"{src}: {exc}"
                failures.append(msg)
                tqdm.write(f"srdeploy upscale: error: {msg}", file=sys.stderr)
        bar.close()
    dt = time.perf_counter() - t0
    print(f"srdeploy upscale: {ok} of {len(files)} image(s) written to {args.output} in {dt:.1f} s", file=sys.stderr)
    if failures:
        print(f"srdeploy upscale: {len(failures)} failed:", file=sys.stderr)
        for msg in failures:
            print(f"  {msg}", file=sys.stderr)
        return 1
    return 0
