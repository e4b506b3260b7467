"""``srdeploy export``, ``verify``, ``build-engine``, ``quantize``, ``eval``: argparse parsers only (no torch/onnx at import)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from srdeploy.runtime.backends import help_text as backend_help
from srdeploy.runtime.cli import PRECISIONS, add_tile_args, backend_arg


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``import``, ``eval``, ``export``, ``verify``, ``build-engine`` and ``quantize`` to the subcommands."""
    _register_import(sub)
    _register_eval(sub)
    _register_export(sub)
    _register_verify(sub)
    _register_build_engine(sub)
    _register_quantize(sub)


def _register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="fold BatchNorm and export a checkpoint to ONNX (dynamic batch/height/width, metadata)",
        description="Fold BatchNorm into the convolutions, export to ONNX with dynamic batch/height/width "
                    "(input 'lr' float32 Nx3xHxW RGB [0,1], output 'sr' Nx3x(sH)x(sW)), run onnx.checker "
                    "(full) and shape inference, write the srdeploy metadata (scale, ranges, RGB/NCHW, "
                    "receptive radius, arch, checkpoint sha256, version, precision) and self-check with "
                    "ONNX Runtime. Files are replaced only when every check passed.")
    p.add_argument("checkpoint", help="srdeploy checkpoint (.pt)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="output ONNX file")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--simplify", action="store_true", help="simplify the graph with onnxslim (pip install "
                                                            "'srdeploy[simplify]'; an error if missing)")
    p.add_argument("--fp16", action="store_true",
                   help="also write MODEL_fp16.onnx: FP16 weights/compute, float32 input/output, layers whose "
                        "calibration activations exceed the FP16 safe range kept FP32")
    p.add_argument("--calib", metavar="DIR", help="calibration images for --fp16 (fed as model inputs; default: "
                                                   "Set5 LR under the data root)")
    p.add_argument("--fp16-threshold", type=float, default=None, metavar="ABS",
                   help="keep a layer FP32 when its largest |activation| exceeds this (default 16384 = 2**14)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights even when EMA weights exist")
    p.add_argument("--window", type=int, default=None, metavar="N",
                   help="export at one fixed N x N LR input (no dynamic H/W; the runtime tiles at exactly that size). "
                        "Default for window-attention families (SwinIR, ...): 128")
    p.add_argument("--margin-images", metavar="DIR",
                   help="LR images for the tile-margin measurement (default: the --calib folder, else Set5 LR; "
                        "without either the margin is not measured and the runtime uses its radius rule)")
    p.add_argument("--no-margin", action="store_true",
                   help="skip the tile-margin measurement (the runtime then uses its radius rule for --tile-pad)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="no step-by-step progress lines")
    p.set_defaults(func=_run_export)


def _register_verify(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser(
        "verify", help="check an exported ONNX model or TensorRT engine against the PyTorch checkpoint",
        description="Run the checkpoint's PyTorch model (unfused, FP32: the reference) and the exported model "
                    "on random inputs of several sizes (odd and non-square included) and on real images "
                    "(LR by bicubic degradation of --images), and report max abs error, mean abs error and "
                    "PSNR per case. Default tolerances: FP32 max abs <= 1e-4; FP16 max abs <= 2/255 and "
                    "PSNR >= 45 dB. Exit status 1 when any case fails.")
    v.add_argument("checkpoint", help="the srdeploy checkpoint (.pt) the model was exported from")
    v.add_argument("model", metavar="MODEL.onnx|ENGINE", help="ONNX model or TensorRT engine (.engine/.plan)")
    v.add_argument("--images", metavar="DIR", help="HR images for the real-image cases (default: Set5)")
    v.add_argument("--no-images", action="store_true", help="random inputs only")
    v.add_argument("--max-images", type=int, default=None, metavar="N", help="use at most N images")
    v.add_argument("--sizes", metavar="BxHxW,...",
                   help="random-input sizes (default 1x33x47,2x40x64,1x96x71; kept inside an engine's profile)")
    v.add_argument("--atol", type=float, default=None, help="max abs tolerance (default by precision)")
    v.add_argument("--min-psnr", type=float, default=None, help="PSNR floor in dB (default 45 for FP16)")
    v.add_argument("--backend", default="auto", type=backend_arg, metavar="BACKEND", help=backend_help())
    v.add_argument("--device", default=None, help="runtime device (default: cpu for ONNX, cuda:0 for engines)")
    v.add_argument("--ref-device", default="cpu", help="torch device of the reference model (cpu, cuda)")
    v.add_argument("--seed", type=int, default=0, help="random-input seed")
    v.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-' for stdout)")
    v.add_argument("-q", "--quiet", action="store_true", help="print the table at the end, not row by row")
    v.set_defaults(func=_run_verify)


def _register_build_engine(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "build-engine", help="build a TensorRT engine (FP16/FP32, shape profiles) from an srdeploy ONNX model",
        description="Build a TensorRT engine with the TensorRT Python API: optimisation profile(s) over "
                    "batch/height/width, strongly typed FP16 with FP16-safety pins (or FP32 with TF32 off), "
                    "timing-cache reuse. Writes a plain plan file plus ENGINE.json (TensorRT version, GPU, "
                    "precision, profiles, workspace, ONNX sha256, build time). Repeat --min/--opt/--max for "
                    "several profiles.")
    b.add_argument("onnx", metavar="MODEL.onnx", help="srdeploy ONNX model (FP32, or MODEL_fp16.onnx)")
    b.add_argument("-o", "--output", required=True, metavar="ENGINE", help="engine file (e.g. model.engine)")
    b.add_argument("--fp16", action="store_true", help="FP16 engine (layers unsafe in FP16 stay FP32)")
    b.add_argument("--min", action="append", metavar="NxCxHxW", help="profile minimum shape, e.g. 1x3x32x32")
    b.add_argument("--opt", action="append", metavar="NxCxHxW", help="profile optimum shape, e.g. 1x3x256x256")
    b.add_argument("--max", action="append", metavar="NxCxHxW", help="profile maximum shape, e.g. 4x3x512x512")
    b.add_argument("--workspace", type=float, default=None, metavar="GB", help="workspace limit in GiB (default 4)")
    b.add_argument("--timing-cache", metavar="FILE", help="read and update this TensorRT timing cache")
    b.add_argument("--calib", metavar="DIR", help="calibration images for the FP16 analysis (default Set5 LR)")
    b.add_argument("--checkpoint", metavar="CKPT", help="checkpoint of an FP32 ONNX, for the FP16 analysis")
    b.add_argument("--fp16-threshold", type=float, default=None, metavar="ABS",
                   help="keep a layer FP32 above this |activation| (default 16384)")
    b.add_argument("--opt-level", type=int, default=3, help="builder optimisation level 0-5 (default 3)")
    b.add_argument("--device", type=int, default=0, help="CUDA device index")
    b.add_argument("--force", action="store_true", help="rebuild even when the engine is up to date")
    b.add_argument("--version-compatible", action="store_true",
                   help="engine that also loads on later TensorRT releases of the same major version (embeds its "
                        "lean runtime; may be slower)")
    b.add_argument("--hardware-compatible", nargs="?", const="ampere_plus", default="none",
                   choices=("none", "ampere_plus", "same_compute_capability"), metavar="LEVEL",
                   help="engine that runs on other GPUs: ampere_plus (the default LEVEL: any GPU of compute "
                        "capability >= 8.0) or same_compute_capability; may be slower")
    b.set_defaults(func=_run_build_engine)


def _register_quantize(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser(
        "quantize", help="static INT8 (QDQ) quantization of an FP32 ONNX model, accuracy-aware",
        description="Quantize an srdeploy FP32 ONNX model to INT8 QDQ with ONNX Runtime's quantization tools: "
                    "int8 per-channel weights and uint8 activations on convolution inputs (the model input "
                    "exactly, as 8-bit pixels), calibrated on LR crops of training images. The Y-PSNR loss "
                    "against the FP32 model is measured on validation folders (eval's protocol, through the "
                    "runtime); while it exceeds --max-loss, the most sensitive convolutions stay float. "
                    "--target cpu (default) writes uint8 activations for ONNX Runtime and OpenVINO; --target "
                    "tensorrt writes what TensorRT's explicit quantization parses: symmetric int8 activations "
                    "and weights (zero points 0), float biases, the model input centred so every 8-bit level "
                    "stays exact.")
    q.add_argument("model", metavar="MODEL.onnx", help="srdeploy FP32 ONNX model (srdeploy export)")
    q.add_argument("-o", "--output", default=None, metavar="MODEL_int8.onnx",
                   help="output INT8 ONNX file (default: MODEL_int8.onnx beside MODEL, the sibling --precision int8 "
                        "and tune find; MODEL_int8_trt.onnx with --target tensorrt)")
    q.add_argument("--calib", nargs="+", metavar="DIR", default=None,
                   help="folders of HR training-style images; LR crops are made as training makes them "
                        "(default: the training folders under the data root)")
    q.add_argument("--calib-images", type=int, default=64, metavar="N", help="calibration crops (default 64)")
    q.add_argument("--crop", type=int, default=64, metavar="PX", help="LR crop side (default 64)")
    q.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="percentile",
                   help="calibration method (default percentile, 99.999th: measured best of the three)")
    q.add_argument("--exclude", nargs="+", metavar="NODE", default=(), help="ONNX node names to keep float")
    q.add_argument("--target", choices=("cpu", "tensorrt"), default="cpu",
                   help="runtime the INT8 file is for: cpu (ONNX Runtime, OpenVINO; default) or tensorrt "
                        "(build-engine)")
    q.add_argument("--max-loss", type=float, default=None, metavar="DB",
                   help="largest Y-PSNR loss vs FP32 on any validation folder (default 0.05 dB; 0.1 dB for "
                        "--target tensorrt)")
    q.add_argument("--val", nargs="+", metavar="DIR", default=None,
                   help="validation folders of HR images (default Set5 and Set14 under the data root)")
    q.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for calibration and checks")
    q.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    q.add_argument("--json", metavar="FILE", help="also write the report (losses, float layers, ranking) as JSON")
    q.add_argument("-q", "--quiet", action="store_true", help="only the result lines")
    q.set_defaults(func=_run_quantize)


def _register_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="convert another codebase's generator weights into an srdeploy checkpoint",
        description="Read weights without running code (weights_only torch.load, or safetensors), unwrap the usual "
                    "containers (params_ema, params, state_dict, model, generator, netG, module. prefixes), detect "
                    "the model family from its keys and shapes (scale, channels and block counts included), and write "
                    "a self-describing srdeploy checkpoint (arch, kwargs, weights, source sha256, the family's "
                    "conventions) that export, verify, eval, build-engine --checkpoint and upscale --backend torch "
                    "take. A pickled whole model is refused; an unknown layout names the closest families.")
    p.add_argument("source", nargs="?", metavar="SRC", help="weights file (.pth, .pt, .ckpt, .pth.tar, .safetensors)")
    p.add_argument("-o", "--output", metavar="OUT.pt", help="srdeploy checkpoint to write")
    p.add_argument("--arch", metavar="NAME", help="force this family instead of detecting it (see --list)")
    p.add_argument("--scale", type=int, default=None, metavar="N", help="the scale you expect (checked, not applied)")
    p.add_argument("--list", action="store_true", help="print the supported families and what identifies each")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from srdeploy.train.importer import family_table, import_weights

    if args.list:
        print("\n".join(family_table()))
        return 0
    if not args.source or not args.output:
        raise ValueError("import: give SRC and -o OUT.pt (or --list)")
    r = import_weights(args.source, args.output, arch=args.arch, scale=args.scale, overwrite=args.overwrite)
    f = r.facts
    source = f"{args.source}" + (f" [{r.wrapper}]" if r.wrapper else "") + (f" (prefix {r.prefix} removed)"
                                                                           if r.prefix else "")
    # a spandrel architecture's kwargs are its whole config: the architecture's name says enough
    kwargs = {"architecture": r.kwargs["architecture"]} if "architecture" in r.kwargs else r.kwargs
    print(f"wrote {r.output}: {r.family} x{f.scale}, {f.in_channels} channel(s), {r.tensors} tensors from {source}; "
          f"kwargs {kwargs}; "
          f"{r.conventions.describe()}")
    return 0


def _register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="PSNR/SSIM (Y, crop=scale) of a model file, a checkpoint or bicubic on image folders",
        description="Evaluate on folders of HR images (LR made by MATLAB-style bicubic downscaling; PSNR/SSIM on "
                    "Y with border crop = scale). A checkpoint (.pt) runs the training code's model on whole "
                    "images (the reference figures); any model file the runtime opens (.onnx on any backend, "
                    ".engine, OpenVINO .xml; --backend torch for a checkpoint) runs through the runtime with "
                    "upscale's tiling, so FP32, FP16 and INT8 deployments are measured on the same protocol. "
                    "The JSON records the model file, backend, device and precision.")
    p.add_argument("paths", nargs="+", metavar="MODEL|FOLDER",
                   help="a model file or checkpoint followed by folders of HR images (e.g. benchmark/Set5, or just "
                        "Set5: looked up under $SRDEPLOY_DATA and $SRDEPLOY_DATA/benchmark); with --bicubic, "
                        "folders only")
    p.add_argument("--bicubic", action="store_true", help="evaluate bicubic upscaling instead of a model")
    p.add_argument("--scale", type=int, default=None, help="scale (default: the model's; 4 for --bicubic)")
    p.add_argument("--backend", default="auto", type=backend_arg, metavar="NAME",
                   help=backend_help() + ". A checkpoint with auto: the training code (reference figures)")
    p.add_argument("--device", default=None,
                   help="runtime device (cpu, cuda:N, OpenVINO gpu/npu); checkpoint: torch device (auto, cpu, cuda)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="runtime compute precision (default: what the file computes); unavailable = error")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="runtime CPU threads")
    add_tile_args(p, tile_default=None,
                  tile_help="tile size in LR pixels (default 256, as fixed tiles keep figures comparable; auto when "
                            "--max-memory is given); auto = per image, the largest tile whose predicted peak memory "
                            "fits --max-memory; 0 = whole image")
    p.add_argument("--no-ema", action="store_true", help="checkpoint: the raw weights even when EMA weights exist")
    p.add_argument("--json", metavar="FILE", help="also write the results per set as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    first = Path(args.paths[0])
    checkpoint = first.suffix.lower() in (".pt", ".pth") and args.backend == "auto"
    if args.bicubic or checkpoint:
        if args.precision not in (None, "fp32") or args.threads is not None or args.tile is not None \
                or args.max_memory is not None:
            raise ValueError("eval: --precision, --threads, --tile and --max-memory apply to model files run through "
                             "the runtime; a checkpoint is evaluated by the training code (or pass --backend torch)")
        from srdeploy.train.cli import run_checkpoint_eval

        from .runtime_eval import read_rgb8

        # --bicubic needs neither torch nor Pillow: it reads with the runtime's reader (edge installs).
        title, results, record = run_checkpoint_eval(args, read=read_rgb8 if args.bicubic else None)
    else:
        title, results, record = _eval_model_file(args, first)
    from srdeploy.runtime.atomic import write_json
    from srdeploy.train.evaluate import format_table

    print(format_table(results, title))
    if args.json:
        write_json(args.json, {"title": title, **record, "sets": [r.as_dict() for r in results]}, indent=2)
    return 0


def _eval_model_file(args: argparse.Namespace, first: Path) -> tuple[str, list, dict]:
    """``srdeploy eval MODEL FOLDER...`` through the runtime: (title, results per folder, record)."""
    if len(args.paths) < 2 or first.is_dir():
        raise ValueError("eval: give a checkpoint or model file then at least one folder (srdeploy eval MODEL FOLDER...), "
                         "or --bicubic FOLDER...")
    from srdeploy.runtime.cli import settings_from_args
    from srdeploy.train.data import resolve_folder

    from .runtime_eval import evaluate_model_file

    run = settings_from_args(args, model=str(first))
    folders = [resolve_folder(f) for f in args.paths[1:]]  # before opening the model: a typo fails at once
    results, record = evaluate_model_file(run, folders, progress=not args.quiet, scale=args.scale)
    title = f"{first} ({record['backend']} {record['device']} {record['precision']}, x{record['scale']})"
    return title, results, record


def _run_quantize(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .quantize import QuantizeConfig, quantize_model

    cfg = QuantizeConfig(calib=tuple(args.calib or ()), calib_images=args.calib_images, crop=args.crop,
                         method=args.method, exclude=tuple(args.exclude), max_loss=args.max_loss,
                         val=tuple(args.val or ()), threads=args.threads, target=args.target)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    if args.output is None:
        from srdeploy.runtime.profile import int8_sibling_name

        sibling = int8_sibling_name(args.model)
        args.output = str(sibling if args.target == "cpu" else sibling.with_name(sibling.stem + "_trt.onnx"))
    rep = quantize_model(args.model, args.output, cfg, overwrite=args.overwrite, log=log, progress=not args.quiet)
    print(f"wrote {rep.output} (INT8 QDQ for {rep.target}, {rep.calibration['images']} calibration crops, "
          f"{rep.method})")
    print("kept float: " + (", ".join(rep.float_nodes) if rep.float_nodes else "none"))
    # the progress lines' convention: loss = FP32 - INT8 Y-PSNR, positive = worse
    print("Y-PSNR loss vs FP32: " + ", ".join(f"{k} {rep.loss_db[k]:.3f} dB ({rep.fp32_psnr[k]:.3f} -> "
                                              f"{rep.int8_psnr[k]:.3f} dB)" for k in rep.loss_db))
    if rep.speed:
        print("speed (same run, " + rep.speed["input"] + f", {rep.speed['threads'] or 'default'} threads): " +
              ", ".join(f"{k} {v:.2f}x" for k, v in rep.speed["speedup_vs_ort_fp32"].items()))
    if args.json:
        from srdeploy.runtime.atomic import write_json

        write_json(args.json, asdict(rep), indent=2)
    return 0


def _run_export(args: argparse.Namespace) -> int:
    # Checked before the (seconds-long) torch/onnx imports and the work: refuse, as upscale does.
    out = Path(args.output)
    outputs = [out] + ([out.with_name(out.stem + "_fp16" + out.suffix)] if args.fp16 else [])
    from srdeploy.runtime.atomic import occupied

    for path in outputs:
        if occupied(path) and not args.overwrite:  # a dangling symlink counts as an existing output
            raise FileExistsError(f"{path}: already exists; pass --overwrite to replace it")
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"{args.checkpoint}: checkpoint file does not exist")
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(f"export: loading {args.checkpoint} (PyTorch, ONNX)")

    from .onnx_export import OPSET
    from .pipeline import MarginSettings, export_checkpoint

    r = export_checkpoint(args.checkpoint, args.output, opset=args.opset or OPSET, simplify=args.simplify,
                          fp16=args.fp16, calib=args.calib, fp16_threshold=args.fp16_threshold,
                          use_ema=not args.no_ema, log=log, window=args.window,
                          margin=MarginSettings(measure=not args.no_margin, images=args.margin_images))
    i = r.info
    dims = f"[1,{i.channels},{r.window},{r.window}]" if r.window else f"[batch,{i.channels},height,width]"
    margin = f", tile margin {i.tile_margin}" if i.tile_margin is not None else ""
    print(f"wrote {r.onnx_path} ({i.arch} x{i.scale}, receptive radius {i.receptive_radius} LR px{margin}, "
          f"opset {args.opset or OPSET}, input 'lr' {dims} -> output 'sr')")
    if r.fp16_path:
        print(f"wrote {r.fp16_path} (FP16 compute, float32 I/O)")
    print(f"export took {r.seconds:.1f} s")
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from srdeploy.runtime.atomic import write_json
    from srdeploy.runtime.parsing import parse_batch_hw

    from .verify import verify

    sizes = [parse_batch_hw(s, what="--sizes") for s in args.sizes.split(",")] if args.sizes else None
    live = args.json != "-" and not args.quiet  # rows as each case finishes, not all at the end

    def on_case(report, case) -> None:
        if live:
            if len(report.cases) == 1:
                print(report.format_header())
            print(report.format_row(case), flush=True)

    if live:
        print(f"verify: loading {args.checkpoint} (PyTorch reference) and {args.model}", file=sys.stderr, flush=True)
    report = verify(args.checkpoint, args.model, images=args.images, use_images=not args.no_images, sizes=sizes,
                    atol=args.atol, min_psnr=args.min_psnr, backend=args.backend, device=args.device,
                    ref_device=args.ref_device, seed=args.seed, image_limit=args.max_images, on_case=on_case)
    if args.json == "-":
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.format_footer() if live and report.cases else report.format_table())
        if args.json:
            write_json(args.json, report.as_dict(), indent=2)
    if not report.ok:
        print(f"srdeploy verify: FAILED cases: {', '.join(c.name for c in report.failed)}", file=sys.stderr)
        return 1
    return 0


def _run_build_engine(args: argparse.Namespace) -> int:
    from .engine import DEFAULT_WORKSPACE_GB, build_engine, profiles_from_args

    profiles = profiles_from_args(args.min, args.opt, args.max)
    r = build_engine(args.onnx, args.output, profiles=profiles, fp16=args.fp16,
                     workspace_gb=args.workspace or DEFAULT_WORKSPACE_GB, timing_cache=args.timing_cache,
                     calib=args.calib, checkpoint=args.checkpoint, fp16_threshold=args.fp16_threshold,
                     opt_level=args.opt_level, device=args.device, force=args.force,
                     version_compatible=args.version_compatible, hardware_compatibility=args.hardware_compatible)
    side = r.sidecar
    pinned = side.get("fp32_layers") or []
    print(f"{'reused' if r.reused else 'built'} {r.engine}: {side['precision']}, TensorRT {side['tensorrt_version']}, "
          f"{side['gpu_name']} (sm {side['compute_capability']}); layers kept FP32: "
          f"{', '.join(pinned) if pinned else 'none'}")
    return 0
