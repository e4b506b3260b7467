"""``srdeploy bench``: argparse parser only.

Nothing heavy at import time: OpenCV, onnxruntime (and torch, for ``--compare-torch`` only) load
when a command runs.
"""

from __future__ import annotations

import argparse
import sys

from ._args import add_session_args, add_tile_args, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "bench", help="FPS benchmark: model-only vs full path, optional PyTorch and video comparison",
        description="Time model-only inference (session.infer on a prepared batch) and the full path "
                    "(uint8 -> pre-processing -> (tiled) inference -> post-processing -> uint8) separately; "
                    "report median/p90 latency, fps and output megapixels/s, and record machine, backend, "
                    "precision, threads and library versions (JSON schema srdeploy.bench/1, shared with the "
                    "C++ benchmark). With --plot OUT.png FILE.json..., plot earlier results instead.")
    b.add_argument("jsons", nargs="*", metavar="FILE.json", help="with --plot: result files to plot")
    add_session_args(b)
    b.add_argument("--size", default="128x128", metavar="WxH", help="LR input size (default 128x128)")
    b.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed calls first (default 3)")
    b.add_argument("--iters", type=int, default=20, metavar="N", help="timed calls (default 20)")
    add_tile_args(b, tile_help="tile size in LR pixels for the full path (and model-only when the input exceeds "
                               "it); auto (default) = the largest tile whose predicted peak memory fits --max-memory "
                               "(the whole image when it fits); 0 = whole image",
                  batch_help="images per inference call (default 1)")
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
    b.add_argument("--compare", action="append", default=[], metavar="MODEL[@BACKEND[:PRECISION]]",
                   help="also time this model (e.g. models/srresnet_x4_int8.onnx@openvino, "
                        "models/srresnet_x4.onnx@openvino:bf16) against the main one, alternating blocks, same input "
                        "and threads; prints fps and speedup (repeatable)")
    b.add_argument("--peak", action="store_true",
                   help="measure the FP32 FMA peak with srbench --peak (C++ probe, same threads) and report the "
                        "fraction of it each model reaches (needs cmake and a C++ compiler)")
    b.add_argument("--video", nargs="?", const="", default=None, metavar="FILE",
                   help="also measure end-to-end `srdeploy video` fps against model-only fps, on FILE or "
                        "(no FILE) on a synthetic video of --size")
    b.add_argument("--video-frames", type=int, default=30, metavar="N",
                   help="frames of the synthetic --video (default 30)")
    b.add_argument("--plot", metavar="OUT.png",
                   help="plot fps by size, backend and tool from the FILE.json arguments into OUT.png "
                        "(needs matplotlib: pip install 'srdeploy[plot]')")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bars (result lines are still printed)")
    b.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    if args.plot:
        from ..plot import plot_results

        if not args.jsons:
            raise ValueError("bench --plot OUT.png needs at least one result FILE.json")
        plot_results(args.jsons, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
        return 0
    if args.jsons:
        raise ValueError(f"bench: unexpected arguments {args.jsons} (result files are only read with --plot)")

    from ..atomic import write_json
    from ..bench import BenchConfig, run_bench, torch_reference
    from ..parsing import parse_wh

    w, h = parse_wh(args.size)
    options = {}
    if args.inter_op_threads is not None:
        options["inter_op_threads"] = args.inter_op_threads
    if args.graph_opt is not None:
        options["graph_optimization"] = args.graph_opt
    cfg = BenchConfig(settings_from_args(args, **options), width=w, height=h, warmup=args.warmup, iters=args.iters,
                      full_path=not args.no_full_path,
                      video=args.video, video_frames=args.video_frames, compare_torch=args.compare_torch,
                      compare=tuple(args.compare), peak=args.peak)
    cfg.validate()
    torch_runner = torch_reference(args.compare_torch, args.threads) if args.compare_torch else None
    if not args.quiet:
        print(f"bench: opening {cfg.model} and running the first call", file=sys.stderr, flush=True)
    result = run_bench(cfg, torch_runner=torch_runner, progress=not args.quiet)
    if args.json:
        write_json(args.json, result, indent=2)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.cpp:
        _run_cpp(args, cfg, result)
    return 0


def _run_cpp(args: argparse.Namespace, cfg, result: dict) -> None:
    """Run srbench on the same model and settings; print the Python/C++ ratio and compare checksums."""
    from pathlib import Path

    from ..cpp_bench import run_cpp_bench

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
