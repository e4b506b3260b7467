#!/usr/bin/env python
"""Peak memory and speed of one ONNX Runtime CPU session per memory setting and window size.

Each (setting, window) runs in a fresh child process, which reports its VmHWM (peak RSS) before
and after inference, so the figure is what the session itself adds for one tile of that size:
weights, ORT's arena / memory-pattern buffers, input and output tensors. The median of
``--repeat`` inferences after one warm-up gives the time.

Settings compared (ORT's own knobs for CPU memory):
  default       enable_cpu_mem_arena=True,  enable_mem_pattern=True (ORT's defaults)
  no-pattern    enable_mem_pattern=False
  no-arena      enable_cpu_mem_arena=False
  neither       both off
  same-as-req   arena on, extend strategy kSameAsRequested (shared env allocator)

``--speed N``: instead, one process opens a session per setting and alternates them N rounds on
the first window (so machine load hits every setting alike) and prints median times and ratios.

Usage:
  python scripts/bench_ort_memory.py --model models/srresnet_x4.onnx --windows 88,152,216,280
      [--settings default,no-arena] [--threads 2] [--repeat 3] [--json out.json] [--speed N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

SETTINGS = ("default", "no-pattern", "no-arena", "neither", "same-as-req")

CHILD = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
model, setting, window, threads, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
if setting in ("no-pattern", "neither"):
    opts.enable_mem_pattern = False
if setting in ("no-arena", "neither"):
    opts.enable_cpu_mem_arena = False
if setting == "same-as-req":
    cfg = ort.OrtArenaCfg({"arena_extend_strategy": 1})
    ort.create_and_register_allocator(ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                                        ort.OrtMemType.DEFAULT), cfg)
    opts.add_session_config_entry("session.use_env_allocators", "1")
x = np.random.default_rng(0).random((1, 3, window, window), dtype=np.float32)
base = hwm()
s = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
loaded = hwm()
times = []
for _ in range(repeat + 1):
    t0 = time.perf_counter()
    y = s.run(None, {s.get_inputs()[0].name: x})[0]
    times.append(time.perf_counter() - t0)
    del y
print(json.dumps({"base_mb": base, "loaded_mb": loaded, "peak_mb": hwm(), "times": times[1:]}))
"""


def speed(args) -> int:
    import time

    import numpy as np
    import onnxruntime as ort

    window = int(args.windows.split(",")[0])
    x = np.random.default_rng(0).random((1, 3, window, window), dtype=np.float32)
    sessions = {}
    for setting in args.settings.split(","):
        if setting not in ("default", "no-pattern", "no-arena", "neither"):
            continue
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.enable_mem_pattern = setting not in ("no-pattern", "neither")
        opts.enable_cpu_mem_arena = setting not in ("no-arena", "neither")
        sessions[setting] = ort.InferenceSession(args.model, sess_options=opts, providers=["CPUExecutionProvider"])
    times = {k: [] for k in sessions}
    for k, s in sessions.items():  # warm-up
        s.run(None, {s.get_inputs()[0].name: x})
    for _ in range(args.speed):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: x})
            times[k].append(time.perf_counter() - t0)
    ref = statistics.median(times["default"]) if "default" in times else None
    for k, t in times.items():
        med = statistics.median(t)
        print(f"{k:12s} window {window}: median {med:.3f} s over {len(t)} alternating runs"
              + (f", {med / ref:.2f}x default" if ref else ""))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/srresnet_x4.onnx")
    ap.add_argument("--windows", default="88,152,216,280", help="square input windows (LR pixels)")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--speed", type=int, default=0, help="alternate the settings this many rounds, time only")
    args = ap.parse_args()
    if args.speed:
        return speed(args)
    rows = []
    print(f"{'setting':12s} {'window':>6s} {'session MB':>10s} {'infer +MB':>9s} {'peak MB':>8s} {'s/tile':>7s}")
    for window in (int(w) for w in args.windows.split(",")):
        for setting in args.settings.split(","):
            proc = subprocess.run([sys.executable, "-c", CHILD, args.model, setting, str(window),
                                   str(args.threads), str(args.repeat)], capture_output=True, text=True)
            if proc.returncode:
                print(f"{setting} {window}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r.update(setting=setting, window=window, time=statistics.median(r["times"]))
            rows.append(r)
            print(f"{setting:12s} {window:6d} {r['loaded_mb'] - r['base_mb']:10.0f} {r['peak_mb'] - r['loaded_mb']:9.0f} "
                  f"{r['peak_mb']:8.0f} {r['time']:7.2f}", flush=True)
    if args.json:
        from srdeploy.runtime.atomic import write_json

        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
