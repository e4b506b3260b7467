#!/usr/bin/env python3
"""FP32 efficiency of the bundled model against the FMA peak measured in the same run (issue 27, item 5).

For each LR size, in one process and in alternating blocks (same deterministic input, same threads):

* the model as traced (``srdeploy export`` with ``subpixel_tail=False``) and as exported now (the
  sub-pixel tail rewrite, ``export/subpixel_tail.py``), on ONNX Runtime and on OpenVINO: before/after;
* cheap settings on the exported model: ONNX Runtime with thread-pool spinning off, OpenVINO's
  THROUGHPUT hint and one stream (one request at a time either way), and bf16 for reference;
* ``srbench --peak`` (FP32 FMA peak, same threads) measured before and after the timing; the
  fraction of peak uses their mean and GFLOP/s from ``srdeploy.flops_per_pixel`` (the traced
  graph's arithmetic: the rewrite's zero taps are not counted).

With ``--windows`` it also times the exported model per LR pixel at several square window sizes
(tile + 2 x pad), to see whether a tile shape that fits the caches is faster per pixel.

    python scripts/bench_fp32_efficiency.py --threads 2 --sizes 128 256 --iters 8 [--windows 64 96 128 192 256]

Prints the load average and the CPU flags with the figures; ratios within a size are same-run
ratios, absolute figures move with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def export_both(tmp: Path, checkpoint: Path) -> tuple[Path, Path]:
    """(traced, exported) FP32 ONNX files of ``checkpoint``."""
    from srdeploy.export.pipeline import export_checkpoint

    quiet = lambda *a: None  # noqa: E731
    traced, exported = tmp / "traced.onnx", tmp / "exported.onnx"
    export_checkpoint(checkpoint, traced, subpixel_tail=False, log=quiet)
    export_checkpoint(checkpoint, exported, log=quiet)
    return traced, exported


def ort_no_spin(path: Path, threads: int):
    """A raw ONNX Runtime session with intra-op spinning off (not a product setting: a probe)."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.enable_mem_pattern = False
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    return lambda x: s.run(None, {"lr": x})[0]


def variants(traced: Path, exported: Path, threads: int) -> dict:
    """label -> callable(x) for every path timed."""
    from srdeploy.runtime.open import open_session

    def sess(path, **kw):
        s = open_session(path, threads=threads, **kw)
        return s.infer

    out = {
        "ORT FP32 traced (before)": sess(traced, backend="onnxruntime"),
        "ORT FP32 exported (after)": sess(exported, backend="onnxruntime"),
        "ORT FP32 exported, no spinning": ort_no_spin(exported, threads),
    }
    try:
        out["OV FP32 traced (before)"] = sess(traced, backend="openvino")
        out["OV FP32 exported (after)"] = sess(exported, backend="openvino")
        out["OV FP32 exported, THROUGHPUT hint"] = sess(exported, backend="openvino", performance_hint="THROUGHPUT")
        out["OV FP32 exported, 1 stream"] = sess(exported, backend="openvino", num_streams=1)
        out["OV BF16 exported (reference)"] = sess(exported, backend="openvino", precision="bf16")
    except (RuntimeError, ValueError) as exc:
        print(f"(some OpenVINO paths unavailable: {str(exc).splitlines()[0]})")
    return out


def time_size(fns: dict, size: int, threads: int, iters: int, fpp: float) -> None:
    from srdeploy.runtime.measure import deterministic_input, time_alternating
    from srdeploy.runtime.cpp_bench import measure_peak

    x = deterministic_input((1, 3, size, size))
    calls = {k: (lambda f=f: f(x)) for k, f in fns.items()}
    for f in calls.values():
        f()  # compilation for this shape
    load0 = os.getloadavg()[0]
    p0 = measure_peak(threads)
    times = time_alternating(calls, warmup=0, iters=iters, block=max(1, iters // 4))
    p1 = measure_peak(threads)
    peak = (p0["gflops"] + p1["gflops"]) / 2
    base = float(np.median(times["ORT FP32 traced (before)"]))
    print(f"\n{size}x{size} LR, {threads} threads, {iters} calls each; FMA peak {p0['gflops']:.0f} / "
          f"{p1['gflops']:.0f} GFLOP/s before/after ({p0['isa']}); load average {load0:.2f} -> "
          f"{os.getloadavg()[0]:.2f}")
    print(f"  {'path':<36} {'median ms':>10} {'vs before':>9} {'GFLOP/s':>8} {'of peak':>8}")
    for k, ts in times.items():
        m = float(np.median(ts))
        g = fpp * size * size / m / 1e9
        print(f"  {k:<36} {1e3 * m:>10.1f} {base / m:>8.2f}x {g:>8.1f} {100 * g / peak:>7.0f}%")


def time_windows(exported: Path, windows: list[int], threads: int, iters: int) -> None:
    """Per-LR-pixel time of the exported model on ONNX Runtime at several window sizes (alternating)."""
    from srdeploy.runtime.measure import deterministic_input, time_alternating
    from srdeploy.runtime.open import open_session

    s = open_session(exported, backend="onnxruntime", threads=threads)
    inputs = {w: deterministic_input((1, 3, w, w)) for w in windows}
    calls = {w: (lambda x=x: s.infer(x)) for w, x in inputs.items()}
    for f in calls.values():
        f()
    times = time_alternating(calls, warmup=0, iters=iters, block=max(1, iters // 4))
    ref = float(np.median(times[windows[-1]])) / windows[-1] ** 2
    print(f"\nwindow size (ORT FP32 exported, {threads} threads): time per LR pixel vs {windows[-1]}x{windows[-1]}")
    for w, ts in times.items():
        per = float(np.median(ts)) / (w * w)
        print(f"  {w:>4}x{w:<4} {1e6 * per:8.2f} us/px  {ref / per:5.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "srresnet_x4.pt"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--windows", type=int, nargs="*", default=[])
    args = ap.parse_args()
    from srdeploy.runtime.profile import cpu_identity

    print(f"CPU flags: {' '.join(sorted(cpu_identity()['flags']))}; load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="srdeploy-fp32-") as tmp:
        traced, exported = export_both(Path(tmp), Path(args.checkpoint))
        from srdeploy.runtime.profile import read_props

        fpp = float(read_props(exported)["srdeploy.flops_per_pixel"])
        fns = variants(traced, exported, args.threads)
        for size in args.sizes:
            time_size(fns, size, args.threads, args.iters, fpp)
        if args.windows:
            time_windows(exported, args.windows, args.threads, args.iters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
