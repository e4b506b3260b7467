#!/usr/bin/env python
"""`srdeploy batch` figures, all from one run: scaling over workers, overhead against `upscale`,
per-task costs (the inputs to docs/batch.md, "Why: sizing for N GPUs").

Measured, on the same N small images (crops of real Set14/Set5 photos) and one model:

1. ``upscale``: the library loop ``srdeploy upscale`` runs (session with 1 thread, Upscaler,
   ``upscale_files``), in this process: session open + files.
2. ``batch`` with 1 worker x 1 thread and 2 workers x 1 thread on a Ray instance already running
   (as on a cluster: ``--address``). Reported twice: the whole ``run_batch`` call (plan, actor
   start and model load, tasks, states) and the task phase alone (after every actor is ready).
   Configurations alternate over ``--repeat`` rounds and the best round of each is kept, so a
   burst of load from other processes hurts both sides alike.
3. Per-task costs: the Ray round trip of an empty actor call, the driver-observed task time minus
   the worker's own time (scheduling + result + state write), bytes read and written per task,
   and the pickled task/result sizes (what crosses the object store with a shared filesystem).
4. ``--video``: the fixed cost of one video segment (ffmpeg decoder start and seek, encoder start,
   packet count, task round trip): a 48-frame clip as 1 segment and as 24, on 1 worker.
5. ``--cli``: end to end, ``srdeploy batch --workers 1`` (starting its own Ray) against
   ``srdeploy upscale --threads 1``, as child processes: the fixed cost of starting Ray.

Usage:
  python scripts/bench_batch.py [--images 16] [--size 64x64] [--model M] [--repeat 2] [--cli] [--video]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags) or "none"


def make_inputs(folder: Path, n: int, size: tuple[int, int], data: Path) -> list[Path]:
    import cv2

    photos = sorted((data / "benchmark" / "Set14").glob("*.png")) + sorted((data / "benchmark" / "Set5").glob("*.png"))
    if not photos:
        raise SystemExit(f"no Set14/Set5 images under {data}; pass --data")
    w, h = size
    files = []
    for i in range(n):
        img = cv2.imread(str(photos[i % len(photos)]))
        y, x = (7 * i) % max(1, img.shape[0] - h), (11 * i) % max(1, img.shape[1] - w)
        f = folder / f"img{i:03d}.png"
        cv2.imwrite(str(f), img[y:y + h, x:x + w])
        files.append(f)
    return files


def run_upscale(model: str, files: list[Path], out: Path) -> dict:
    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.settings import DEFAULT_TILE
    from srdeploy.runtime.upscale import Upscaler, upscale_files

    t0 = time.perf_counter()
    with open_session(model, threads=1) as session:
        up = Upscaler(session, tile=DEFAULT_TILE)
        t1 = time.perf_counter()
        report = upscale_files(up, {f: out / f.name for f in files}, overwrite=True, progress=False)
    t2 = time.perf_counter()
    assert len(report.written) == len(files), report.failures
    return {"total_s": t2 - t0, "tasks_s": t2 - t1}


def run_batch_once(model: str, inputs: Path, out: Path, workers: int) -> dict:
    from srdeploy.runtime.batch.driver import BatchConfig, run_batch
    from srdeploy.runtime.batch.job import Settings
    from srdeploy.runtime.open import SessionRecipe
    from srdeploy.runtime.settings import DEFAULT_TILE, RunSettings, TileSettings

    settings = Settings(model=model, backend="onnxruntime", device="cpu", precision=None, tile=DEFAULT_TILE,
                        tile_pad=None, batch=1, feather=0, alpha="model", ext=None, suffix="", quality=None)
    run = RunSettings(SessionRecipe(model, threads=1), TileSettings(tile=DEFAULT_TILE))
    cfg = BatchConfig(inputs=[str(inputs)], outdir=str(out), run=run, settings=settings,
                      workers=workers, threads_per_worker=1, progress=False)
    t0 = time.perf_counter()
    s = run_batch(cfg, log=lambda m: None)
    total = time.perf_counter() - t0
    assert s.ok and s.done == len(list(inputs.glob("*.png"))), s.failures
    states = [json.loads(p.read_text()) for p in (out / ".srdeploy-batch" / "tasks").glob("*.json")]
    worker_s = sum(st["seconds"] for st in states)
    busy_s = sum(w["busy_s"] for w in s.workers)
    return {"total_s": total, "tasks_s": s.seconds - s.startup_s, "startup_s": s.startup_s,
            "per_task_overhead_ms": 1000 * (busy_s - worker_s) / len(states),
            "per_task_worker_ms": 1000 * worker_s / len(states)}


def segment_cost(model: str, work: Path, frames: int = 48, short: int = 2) -> dict:
    """Fixed cost of one video segment: the same clip in 1 segment and in frames/short segments, 1 worker."""
    from srdeploy.runtime.batch.driver import BatchConfig, run_batch
    from srdeploy.runtime.batch.job import Settings
    from srdeploy.runtime.media import ffmpeg as ff
    from srdeploy.runtime.open import SessionRecipe
    from srdeploy.runtime.settings import DEFAULT_TILE, RunSettings, TileSettings

    src = work / "vid"
    src.mkdir()
    clip = src / "clip.mp4"
    subprocess.run([ff.ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=32x32:rate=24", "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt",
                    "yuv420p", str(clip)], check=True)
    res = {}
    for n in (frames, short):
        settings = Settings(model=model, backend="onnxruntime", device="cpu", precision=None, tile=DEFAULT_TILE,
                            tile_pad=None, batch=1, feather=0, alpha="model", ext=None, suffix="", quality=None,
                            segment_frames=n)
        run = RunSettings(SessionRecipe(model, threads=1), TileSettings(tile=DEFAULT_TILE))
        cfg = BatchConfig(inputs=[str(clip)], outdir=str(work / f"vout{n}"), run=run, settings=settings, workers=1,
                          progress=False)
        s = run_batch(cfg, log=lambda m: None)
        assert s.ok, s.failures
        res[n] = s.seconds - s.startup_s
    segs = frames // short
    return {"frames": frames, "segments": segs, "one_segment_s": res[frames], "many_segments_s": res[short],
            "per_segment_ms": 1000 * (res[short] - res[frames]) / (segs - 1),
            "per_frame_ms": 1000 * res[frames] / frames}


def actor_round_trip_ms(ray, calls: int = 200) -> float:
    @ray.remote(num_cpus=1)
    class Echo:
        def ping(self, x):
            return x

    a = Echo.remote()
    ray.get(a.ping.remote(0))
    t0 = time.perf_counter()
    for i in range(calls):
        ray.get(a.ping.remote({"id": "000001", "kind": "image", "src": "/x/y.png", "dst": "/o/y.png", "units": 1}))
    dt = (time.perf_counter() - t0) / calls
    ray.kill(a)
    return 1000 * dt


def cli_end_to_end(model: str, inputs: Path, work: Path) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmds = {"upscale": ["upscale", "-q", "-i", str(inputs), "-o", str(work / "cli_up"), "--threads", "1"],
            "batch_1w": ["batch", "-q", "-i", str(inputs), "-o", str(work / "cli_batch"), "--workers", "1"]}
    res = {}
    for name, args in cmds.items():
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "srdeploy", *args, "--model", model], capture_output=True,
                           text=True, env=env)
        res[name + "_s"] = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{name} failed: {r.stderr[-2000:]}")
    return res


def print_figures(fig: dict) -> None:
    """The figures of one run (``fig``, as written by --json), with the same-run ratios."""
    print(f"CPU flags: {fig['cpu_flags']}; {fig['cores']} cores (shared with other processes: figures are noisy, "
          "compare only within this run)")
    print(f"{fig['images']} images {fig['size']} -> x4, model {Path(fig['model']).name}, "
          f"best of {fig['repeat']} rounds")
    print(f"Ray local start: {fig['ray_start_s']:.1f} s; "
          f"empty actor call round trip: {fig['actor_round_trip_ms']:.2f} ms")
    for k, v in fig["best"].items():
        print(f"  {k:9s} total {v['total_s']:6.2f} s   tasks {v['tasks_s']:6.2f} s"
              + (f"   (actors ready in {v['startup_s']:.2f} s; per task: worker {v['per_task_worker_ms']:.0f} ms,"
                 f" overhead {v['per_task_overhead_ms']:.1f} ms)" if "startup_s" in v else ""))
    print(f"2 workers vs 1 worker: {fig['speedup_2w_vs_1w_tasks']:.2f}x (task phase), "
          f"{fig['speedup_2w_vs_1w_total']:.2f}x (whole call)")
    print(f"batch 1 worker vs upscale: {100 * fig['overhead_1w_vs_upscale_tasks']:+.1f}% (task phase), "
          f"{100 * fig['overhead_1w_vs_upscale_total']:+.1f}% (whole call, actor start included)")
    print(f"bytes per task: task {fig['task_pickle_bytes']} B + result {fig['result_pickle_bytes']} B through Ray; "
          f"image {fig['input_bytes_per_task'] / 1024:.1f} KiB read, "
          f"{fig['output_bytes_per_task'] / 1024:.1f} KiB written (shared filesystem)")
    if "segment" in fig:
        g = fig["segment"]
        print(f"video 32x32 x4, {g['frames']} frames, 1 worker: 1 segment {g['one_segment_s']:.2f} s, "
              f"{g['segments']} segments {g['many_segments_s']:.2f} s"
              f" -> {g['per_segment_ms']:.0f} ms per extra segment, {g['per_frame_ms']:.0f} ms per frame")
    if "cli" in fig:
        c = fig["cli"]
        print(f"end to end: srdeploy upscale {c['upscale_s']:.1f} s, srdeploy batch --workers 1 {c['batch_1w_s']:.1f} s "
              "(Ray start included)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", default="64x64", help="input crop WxH (default 64x64)")
    ap.add_argument("--model", default=str(ROOT / "models" / "srresnet_x4.onnx"))
    ap.add_argument("--data", default=os.environ.get("SRDEPLOY_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cli", action="store_true", help="also time the two commands end to end (Ray start included)")
    ap.add_argument("--video", action="store_true", help="also measure the fixed cost of a video segment")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import logging

    import ray

    from srdeploy.runtime.parsing import parse_wh

    size = parse_wh(args.size)
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    inputs = work / "in"
    inputs.mkdir()
    files = make_inputs(inputs, args.images, size, Path(args.data))
    bytes_in = statistics.mean(f.stat().st_size for f in files)

    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, num_cpus=2, log_to_driver=False,
             logging_level=logging.WARNING, _node_ip_address="127.0.0.1")
    ray_start = time.perf_counter() - t0
    rt_ms = actor_round_trip_ms(ray)

    runs: dict[str, list[dict]] = {"upscale": [], "batch_1w": [], "batch_2w": []}
    for r in range(args.repeat):
        runs["upscale"].append(run_upscale(args.model, files, work / f"up{r}"))
        runs["batch_1w"].append(run_batch_once(args.model, inputs, work / f"b1_{r}", 1))
        runs["batch_2w"].append(run_batch_once(args.model, inputs, work / f"b2_{r}", 2))
    if args.video:
        seg = segment_cost(args.model, work)
    ray.shutdown()
    best = {k: {m: min(x[m] for x in v) for m in v[0]} for k, v in runs.items()}
    out_files = list((work / "b1_0").glob("*.png"))
    bytes_out = statistics.mean(f.stat().st_size for f in out_files)
    task = {"id": "000001", "kind": "image", "src": str(files[0]), "dst": str(work / "o" / files[0].name), "units": 1,
            "preexisting": False, "attempt": 1}
    result = {"id": "000001", "ok": True, "seconds": 0.5, "units": 1, "notes": [], "pid": 1234}

    fig = {
        "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "images": args.images, "size": args.size,
        "model": args.model, "repeat": args.repeat, "ray_start_s": ray_start, "best": best,
        "speedup_2w_vs_1w_tasks": best["batch_1w"]["tasks_s"] / best["batch_2w"]["tasks_s"],
        "speedup_2w_vs_1w_total": best["batch_1w"]["total_s"] / best["batch_2w"]["total_s"],
        "overhead_1w_vs_upscale_tasks": best["batch_1w"]["tasks_s"] / best["upscale"]["tasks_s"] - 1,
        "overhead_1w_vs_upscale_total": best["batch_1w"]["total_s"] / best["upscale"]["total_s"] - 1,
        "actor_round_trip_ms": rt_ms,
        "task_pickle_bytes": len(pickle.dumps(task)), "result_pickle_bytes": len(pickle.dumps(result)),
        "input_bytes_per_task": bytes_in, "output_bytes_per_task": bytes_out,
    }
    if args.video:
        fig["segment"] = seg
    if args.cli:
        fig["cli"] = cli_end_to_end(args.model, inputs, work)
    print_figures(fig)
    if args.json:
        from srdeploy.runtime.atomic import write_json

        write_json(args.json, fig)
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
