"""``srdeploy video`` and ``srdeploy bench``: argparse parsers only.

Nothing heavy at import time: OpenCV, onnxruntime (and torch, for ``--compare-torch`` only) load
when a command runs.
"""

from __future__ import annotations

import argparse
import sys

_BACKEND_HELP = ("auto (from the file), onnxruntime, onnxruntime-tensorrt, tensorrt or torch "
                 "(aliases ort, ort-trt, trt, pytorch); default auto")


def _add_session_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="FILE",
                   help="model: .onnx (ONNX Runtime), .engine (TensorRT) or .pt checkpoint (PyTorch); "
                        "default: the bundled model ($SRDEPLOY_MODEL or models/*.onnx)")
    p.add_argument("--backend", default="auto", help=_BACKEND_HELP)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu; cuda:0 for TensorRT)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default=None,
                   help="fp32 or fp16 (default: what the model file computes); unavailable = error")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads (ONNX Runtime intra-op / torch); default: the backend's (all cores)")
    p.add_argument("--tile-pad", type=int, default=None, metavar="N",
                   help="tile margin in LR pixels (default: 0.3 x the model's receptive radius, at least 12, "
                        "as srdeploy upscale; the radius itself is exact)")


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser(
        "video", help="upscale a video (OpenCV decode | inference | encode, pipelined)",
        description="Upscale every frame of a video at the source frame rate. Decoding, inference and "
                    "encoding run concurrently. Audio is copied with ffmpeg where an ffmpeg executable "
                    "exists, else dropped (with a warning). Output goes to a temporary file renamed at "
                    "the end, so an interrupted run leaves nothing under the output name. Colour: OpenCV "
                    "decodes to 8-bit BGR with BT.601 assumptions and writes no colour tags (see "
                    "srdeploy.runtime.video).")
    v.add_argument("-i", "--input", required=True, metavar="IN", help="input video")
    v.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output video; the container follows the extension (.mp4, .mkv, .avi, .mov)")
    _add_session_args(v)
    v.add_argument("--tile", type=int, default=None, metavar="N",
                   help="tile size in LR pixels; 0 = whole frame in one pass (default: the runtime's, 256)")
    v.add_argument("--batch", type=int, default=1, metavar="N",
                   help="frames per inference call when a frame fits in one tile, else tiles per call (default 1)")
    v.add_argument("--codec", default=None, metavar="FOURCC",
                   help="output FourCC (default by extension: .mp4/.mov mp4v, .mkv FFV1 lossless, .avi MJPG)")
    v.add_argument("--overwrite", action="store_true", help="replace an existing output")
    v.add_argument("--no-audio", action="store_true", help="do not try to copy the audio")
    v.add_argument("--ffmpeg", default=None, metavar="PATH",
                   help="ffmpeg executable for the audio (default: ffmpeg on PATH or $SRDEPLOY_FFMPEG)")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=_run_video)

    b = sub.add_parser(
        "bench", help="FPS benchmark: model-only vs full path, optional PyTorch and video comparison",
        description="Time model-only inference (session.infer on a prepared batch) and the full path "
                    "(uint8 -> pre-processing -> (tiled) inference -> post-processing -> uint8) separately; "
                    "report median/p90 latency, fps and output megapixels/s, and record machine, backend, "
                    "precision, threads and library versions (JSON schema srdeploy.bench/1, shared with the "
                    "C++ benchmark). With --plot OUT.png FILE.json..., plot earlier results instead.")
    b.add_argument("jsons", nargs="*", metavar="FILE.json", help="with --plot: result files to plot")
    _add_session_args(b)
    b.add_argument("--size", default="128x128", metavar="WxH", help="LR input size (default 128x128)")
    b.add_argument("--batch", type=int, default=1, metavar="N", help="images per inference call (default 1)")
    b.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed calls first (default 3)")
    b.add_argument("--iters", type=int, default=20, metavar="N", help="timed calls (default 20)")
    b.add_argument("--tile", type=int, default=0, metavar="N",
                   help="tile size in LR pixels for the full path (and model-only when the input exceeds "
                        "it); default 0 = whole image")
    b.add_argument("--inter-op-threads", type=int, default=None, metavar="N", help="ONNX Runtime inter-op threads")
    b.add_argument("--graph-opt", choices=("disable", "basic", "extended", "all"), default=None,
                   help="ONNX Runtime graph optimisation level (default all)")
    b.add_argument("--no-full-path", action="store_true", help="time model-only inference only")
    b.add_argument("--json", metavar="FILE", help="write the result (schema srdeploy.bench/1) to FILE")
    b.add_argument("--cpp", action="store_true",
                   help="also run the C++ benchmark cpp_bench/build/srbench (built first if needed) with the same "
                        "model, size, batch, warm-up, iterations, threads and device; print Python vs C++ fps")
    b.add_argument("--cpp-json", metavar="FILE", help="with --cpp: srbench's JSON (default: --json's name with .cpp.json)")
    b.add_argument("--compare-torch", metavar="CHECKPOINT",
                   help="also time this checkpoint in PyTorch eager (FP32, BatchNorm not folded, same threads) "
                        "on the same input, alternating with the model, and print the speed ratio")
    b.add_argument("--video", nargs="?", const="", default=None, metavar="FILE",
                   help="also measure end-to-end `srdeploy video` fps against model-only fps, on FILE or "
                        "(no FILE) on a synthetic video of --size")
    b.add_argument("--video-frames", type=int, default=30, metavar="N",
                   help="frames of the synthetic --video (default 30)")
    b.add_argument("--plot", metavar="OUT.png",
                   help="plot fps by size, backend and tool from the FILE.json arguments into OUT.png "
                        "(needs matplotlib: pip install 'srdeploy[plot]')")
    b.set_defaults(func=_run_bench)


def _model_path(args: argparse.Namespace) -> str:
    if args.model:
        return args.model
    from .open import default_model_path

    return str(default_model_path())


def _run_video(args: argparse.Namespace) -> int:
    from .open import open_session
    from .upscale import Upscaler
    from .video import upscale_video

    kwargs = {} if args.tile is None else {"tile": args.tile}
    with open_session(_model_path(args), backend=args.backend, device=args.device, precision=args.precision,
                      threads=args.threads) as session:
        upscaler = Upscaler(session, tile_pad=args.tile_pad, batch=args.batch, **kwargs)
        stats = upscale_video(upscaler, args.input, args.output, codec=args.codec, batch=args.batch,
                              overwrite=args.overwrite, progress=not args.quiet, audio=not args.no_audio,
                              ffmpeg=args.ffmpeg)
    audio = {"copied": "audio copied", "re-encoded": "audio re-encoded", "none": "no audio in source",
             "dropped": "audio dropped", "disabled": "audio not copied (--no-audio)"}[stats.audio]
    print(f"{args.output}: {stats.frames} frames {stats.width}x{stats.height} at {stats.source_fps:g} fps "
          f"({stats.codec}, {audio}); {stats.fps:.2f} fps end to end in {stats.seconds:.1f} s", file=sys.stderr)
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    if args.plot:
        from .plot import plot_results

        if not args.jsons:
            raise ValueError("bench --plot OUT.png needs at least one result FILE.json")
        plot_results(args.jsons, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
        return 0
    if args.jsons:
        raise ValueError(f"bench: unexpected arguments {args.jsons} (result files are only read with --plot)")

    from .bench import BenchConfig, parse_size, run_bench, write_json

    w, h = parse_size(args.size)
    options = {}
    if args.inter_op_threads is not None:
        options["inter_op_threads"] = args.inter_op_threads
    if args.graph_opt is not None:
        options["graph_optimization"] = args.graph_opt
    cfg = BenchConfig(model=_model_path(args), width=w, height=h, batch=args.batch, backend=args.backend,
                      device=args.device, precision=args.precision, threads=args.threads, warmup=args.warmup,
                      iters=args.iters, tile=args.tile, tile_pad=args.tile_pad, full_path=not args.no_full_path,
                      video=args.video, video_frames=args.video_frames, compare_torch=args.compare_torch,
                      options=options)
    cfg.validate()
    torch_runner = torch_reference(args.compare_torch, args.threads) if args.compare_torch else None
    result = run_bench(cfg, torch_runner=torch_runner)
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.cpp:
        _run_cpp(args, cfg, result)
    return 0


def _run_cpp(args: argparse.Namespace, cfg, result: dict) -> None:
    """Run srbench on the same model and settings; print the Python/C++ ratio and compare checksums."""
    from pathlib import Path

    from .cpp_bench import run_cpp_bench

    backend = {"onnxruntime": "ort", "tensorrt": "trt"}.get(result["backend"])
    if backend is None:
        raise ValueError(f"bench --cpp times ONNX models (ONNX Runtime) and TensorRT engines, not backend "
                         f"{result['backend']!r}")
    cpp_json = args.cpp_json or (str(Path(args.json).with_suffix(".cpp.json")) if args.json else None)
    cpp = run_cpp_bench(cfg.model, (cfg.width, cfg.height), cfg.batch, cfg.warmup, cfg.iters, cpp_json, cfg.threads,
                        backend=backend, device=result["device"], precision=cfg.precision if backend == "trt" else None)
    py_fps, c_fps = result["results"]["model_only"]["fps"], cpp["results"]["model_only"]["fps"]
    print(f"model only: Python {py_fps:.3f} fps, C++ {c_fps:.3f} fps, Python/C++ {py_fps / c_fps:.3f}", file=sys.stderr)
    # Same deterministic input on both sides: the sums must agree to float32 accumulation noise.
    n_out = cfg.batch * 3 * cfg.height * cfg.width * result["model"]["scale"] ** 2
    if abs(result["output_checksum"] - cpp["output_checksum"]) > 1e-7 * n_out:
        raise RuntimeError(f"bench --cpp: output checksums differ (Python {result['output_checksum']!r}, "
                           f"C++ {cpp['output_checksum']!r}): the two tools did not run the same computation")


def torch_reference(checkpoint: str, threads: int | None):
    """The PyTorch baseline for ``bench --compare-torch``: eager, FP32, BatchNorm NOT folded, CPU.

    Opened through the torch backend entry point with ``fold_bn=False`` (the training model as it
    is), so the runtime imports neither torch nor srdeploy.train itself.

    Args:
        checkpoint: srdeploy training checkpoint (.pt), loaded with weights_only=True.
        threads: torch intra-op threads (None = torch's default, like ONNX Runtime's: all cores).

    Returns:
        (callable float32 NCHW numpy -> float32 NCHW numpy, info dict for the JSON).
    """
    from .open import open_session

    session = open_session(checkpoint, backend="torch", device="cpu", precision="fp32", threads=threads,
                           fold_bn=False, use_ema=True)
    info = {"torch_version": str(session.details.get("torch_version")), "torch_threads": session.details.get("threads"),
            "mode": "eager", "precision": "fp32", "batchnorm_layers_unfolded": session.details["batchnorm_layers"]}
    return session.infer, info
