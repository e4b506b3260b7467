#!/usr/bin/env python
"""The activation factor of each CPU path: what the backend allocates for one tile, over the graph walk.

``srdeploy.runtime.budget`` predicts a tile's activation memory as ``factor x`` the most
activation bytes alive at once in the ONNX graph (``GraphProfile``): the factor covers what the
backend adds (blocked layouts, convolution workspaces, arena rounding) or saves (INT8 and bf16
tensors are smaller than the graph's float32 ones). This script measures it per path, so the
constants in ``runtime/budget.py`` (``ACTIVATION_FACTORS``) come from a command, not a guess.

Each (path, window) runs in a fresh child process: open the session, build the input, read VmRSS,
reset the peak (``/proc/self/clear_refs``: opening a session can peak higher than inference), run
two inferences of a ``window x window`` input, read VmHWM. The difference is what the
inference added (activations, output tensor); factor = difference / graph-walk bytes for that
window. Prints one row per window and, per path, the largest factor (the one to use: a tile must
fit) and the spread.

Usage:
  python scripts/bench_activation_factor.py [--model models/srresnet_x4.onnx] [--windows 88,152,216,280]
      [--paths onnxruntime:fp32,onnxruntime:int8,openvino:fp32,openvino:bf16,openvino:int8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys
import numpy as np
from srdeploy.runtime.open import open_session
from srdeploy.runtime.budget import session_profile

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

model, backend, precision, window, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
session = open_session(model, backend=backend, precision=precision, threads=threads)
profile = session_profile(session)
x = np.random.default_rng(0).random((1, session.input_spec.channels, window, window), dtype=np.float32)
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM: opening the session may have peaked higher
    f.write("5")
for _ in range(2):
    y = session.infer(x)
after = status("VmHWM")
print(json.dumps({"added": after - before, "walk": profile.peak_bytes_per_pixel * window * window,
                  "output": y.nbytes, "file": str(getattr(session, "path", model)),
                  "precision": session.precision, "backend": session.backend}))
"""


def measure(model: str, backend: str, precision: str, window: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, model, backend, precision, str(window), str(threads)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"bench_activation_factor: {backend} {precision} at {window}: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/srresnet_x4.onnx", help="FP32 ONNX model (INT8: its sibling)")
    ap.add_argument("--windows", default="88,152,216,280", help="square input windows (LR pixels)")
    ap.add_argument("--paths", default="onnxruntime:fp32,onnxruntime:int8,openvino:fp32,openvino:bf16,openvino:int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    from srdeploy.runtime.profile import cpu_identity

    flags = sorted(cpu_identity()["flags"])
    print(f"CPU flags: {' '.join(flags)}; load average {os.getloadavg()}")
    windows = [int(w) for w in args.windows.split(",")]
    rows = []
    print(f"{'path':<20} {'window':>6} {'graph walk MiB':>15} {'added MiB':>10} {'factor':>7}")
    for path in args.paths.split(","):
        backend, precision = path.split(":")
        factors = []
        for w in windows:
            r = measure(args.model, backend, precision, w, args.threads)
            factor = r["added"] / r["walk"]
            factors.append(factor)
            rows.append({"backend": backend, "precision": precision, "window": w, **r, "factor": factor})
            print(f"{path:<20} {w:>6} {r['walk'] / 2**20:>15.1f} {r['added'] / 2**20:>10.1f} {factor:>7.2f}",
                  flush=True)
        print(f"{path:<20} factor max {max(factors):.2f}, range {min(factors):.2f}..{max(factors):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
