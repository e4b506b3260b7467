"""``srdeploy batch``: images and videos on a Ray cluster (local or ``--address``), resumable.

Parser only at import time (no ray, numpy or onnxruntime); the handler imports
``srdeploy.runtime.batch`` (and it imports ray) when it runs.
"""

from __future__ import annotations

import argparse
import sys

from ._args import add_blend_args, add_session_args, add_tile_args, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="upscale many images and videos on a Ray cluster (resumable, retries dead workers)",
        description="Upscale images and videos with several workers (Ray actors, one session each), locally or "
                    "on a Ray cluster (--address). Each image is a task; each video is cut into segments that "
                    "run as tasks, then joined and muxed once. The job folder OUTDIR/.srdeploy-batch records the "
                    "plan and every task's state, so --resume continues a stopped job without redoing finished "
                    "work. Outputs mirror the input tree and are written atomically; an image output is "
                    "identical to `srdeploy upscale` with the same settings. Bad inputs are reported by name and "
                    "the job goes on. Exit status: 0 all done, 1 some input failed, 130/143 interrupted.")
    p.add_argument("-i", "--input", nargs="+", required=True, metavar="INPUT",
                   help="image/video files, folders, glob patterns, or manifest files (.txt/.lst: one input per "
                        "line, relative to the manifest)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                   help="output folder (created); the output tree mirrors the input tree")
    add_session_args(p, threads=False, precision="auto")
    add_tile_args(p, batch_help="tiles per inference call (default 1); for videos, frames per call when a frame "
                                "fits in one tile")
    add_blend_args(p)
    g = p.add_argument_group("cluster")
    g.add_argument("--workers", type=int, default=1, metavar="N",
                   help="workers (Ray actors, one model each; default 1); more than the slots (this machine's cores, "
                        "or the cluster's CPUs/GPUs, over --threads-per-worker/--gpus-per-worker) is refused")
    g.add_argument("--threads-per-worker", type=int, default=1, metavar="N",
                   help="CPUs each worker reserves and ONNX Runtime threads it uses (default 1)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="F",
                   help="GPUs each worker reserves; Ray pins each worker to its GPU(s), so use --device cuda "
                        "(default 0: CPU workers; 0.5 puts two workers on one GPU)")
    g.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="attach to a running Ray cluster (`ray start --head` / `ray start --address`); default: "
                        "start a local one for this job, sized to this machine. Every node must see the inputs and "
                        "OUTDIR at the same paths")
    g.add_argument("--retries", type=int, default=2, metavar="N",
                   help="run a task again up to N times when its worker dies or it fails unexpectedly (default 2); "
                        "a bad input is not retried")
    p.add_argument("--recursive", action="store_true", help="also take images/videos in sub-folders (and ** in globs)")
    p.add_argument("--resume", action="store_true",
                   help="continue the job recorded in OUTDIR: finished tasks whose outputs are unchanged are kept")
    p.add_argument("--ext", default=None, metavar="EXT",
                   help="image output format/extension, e.g. png, jpg, webp (default: the input's)")
    p.add_argument("--suffix", default="", metavar="S", help="appended to output file names before the extension")
    p.add_argument("--quality", type=int, default=None, metavar="Q", help="JPEG/WebP quality (default 95)")
    p.add_argument("--codec", default=None, metavar="NAME", help="video encoder (default: by output extension)")
    p.add_argument("--crf", type=int, default=None, metavar="N", help="video encoder quality (CRF)")
    p.add_argument("--segment-frames", type=int, default=None, metavar="N",
                   help="frames per video segment task (default about 10 s of video)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that existed before the job")
    p.add_argument("--json", default=None, metavar="FILE", help="write the summary as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_batch_cli)


def run_batch_cli(args: argparse.Namespace) -> int:
    from ..batch.driver import BatchConfig, report_lines, run_batch
    from ..batch.job import Settings
    from ..interrupt import Terminated, sigterm_as_interrupt

    if args.segment_frames is not None and args.segment_frames < 1:
        raise ValueError(f"--segment-frames must be >= 1, got {args.segment_frames}")
    args.threads = args.threads_per_worker
    run = settings_from_args(args).pinned()  # auto chosen once, here: every worker runs it, plan.json records it
    resolved = run.recipe.resolved()
    _check_devices(resolved.device, args.gpus_per_worker)
    tiling = run.tiling
    settings = Settings(model=str(run.recipe.model), backend=resolved.backend, device=resolved.device,
                        precision=run.recipe.precision, tile=tiling.tile, tile_pad=tiling.tile_pad, batch=tiling.batch,
                        feather=tiling.feather, alpha=tiling.alpha, ext=args.ext, suffix=args.suffix,
                        quality=args.quality, codec=args.codec, crf=args.crf, segment_frames=args.segment_frames,
                        max_memory=tiling.max_memory, model_sha256=_content(run.recipe.model))
    cfg = BatchConfig(inputs=args.input, outdir=args.output, run=run, settings=settings,
                      workers=args.workers, threads_per_worker=args.threads_per_worker,
                      gpus_per_worker=args.gpus_per_worker, address=args.address, recursive=args.recursive,
                      resume=args.resume, retries=args.retries, overwrite=args.overwrite, json=args.json,
                      progress=not args.quiet, quality=args.quality)
    # SIGTERM arrives as KeyboardInterrupt (runtime.interrupt, installed by the srdeploy entry point
    # and here for library callers), so the driver's finally blocks (Ray shutdown) run either way.
    try:
        with sigterm_as_interrupt():
            summary = run_batch(cfg)
    except KeyboardInterrupt as exc:
        term = isinstance(exc, Terminated)
        print(f"srdeploy batch: {'terminated' if term else 'interrupted'}; finished tasks are recorded, rerun with "
              "--resume to continue", file=sys.stderr)
        return 143 if term else 130
    for line in report_lines(summary):
        print(line, file=sys.stderr)
    return 0 if summary.ok else 1


def _content(model: str) -> str | None:
    """The model's sha256 for the plan (None when it is not a readable file: opening it says why)."""
    from ..jobs import model_sha256

    try:
        return model_sha256(model)
    except OSError:
        return None


def _check_devices(device: str, gpus_per_worker: float) -> None:
    """GPU workers need Ray to pin them; a CPU device with GPUs reserved is a mistake (never a quiet fallback)."""
    if device.startswith("cuda"):
        if not gpus_per_worker:
            raise ValueError(f"--device {device}: GPU workers need --gpus-per-worker (e.g. 1) so Ray pins each "
                             "worker to its own GPU")
        if device not in ("cuda", "cuda:0"):
            raise ValueError(f"--device {device}: with --gpus-per-worker Ray gives each worker its GPU(s) as cuda:0; "
                             "pass --device cuda")
    elif gpus_per_worker:
        raise ValueError(f"--gpus-per-worker {gpus_per_worker:g} with --device {device}: pass --device cuda, or drop "
                         "--gpus-per-worker for CPU workers")
