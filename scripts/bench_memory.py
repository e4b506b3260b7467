#!/usr/bin/env python
"""Peak memory of `srdeploy upscale` on a large image (goal: 4000x3000 at 4x within ~2 GB RSS).

Runs the real command (read PNG -> tiled ONNX Runtime inference on CPU -> PNG write) in a child
process and reports its peak resident set size (``wait4`` rusage, the kernel's own high-water
mark) and wall time, next to the fixed costs: the uint8 input and output images. The output of a
4x upscale of 4000x3000 RGB is 16000x12000x3 uint8 = 576 MB by itself.

Baseline (``--baseline``, same run): the naive path that stitches a full float32 output with
``tiled_infer`` and converts it at the end (what Upscaler avoids by converting band by band).

The input is a real photo (Set14) resized to the requested size, so PNG coding costs are
realistic. Model: ``--model`` (ONNX or checkpoint), default a small random-weight SRResNet
(2 blocks, 16 channels, x4) so the run finishes in minutes on a CPU: say so when reporting. Peak
memory depends on the model through ONNX Runtime's activation buffers, which scale with the
tile window, not the image; ``--strip H`` runs a full-width H-row strip to measure a slow
(real, 16-block) model's peak at those sizes in reasonable time.

Usage:
  python scripts/bench_memory.py [--size 4000x3000] [--tile 256] [--tile-pad N] [--model M]
      [--strip H] [--threads N] [--baseline] [--ext png]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_model(path: Path, ckpt: Path | None) -> str:
    import torch

    from srdeploy.export.fuse import fuse_bn
    from srdeploy.export.onnx_export import add_metadata, export_onnx
    from srdeploy.runtime.metadata import ModelInfo
    from srdeploy.train.archs import SRResNet, receptive_radius
    from srdeploy.train.checkpoint import model_from_checkpoint

    if ckpt is None:
        torch.manual_seed(0)
        model = SRResNet(num_blocks=2, channels=16, scale=4).eval()
        desc = "small random-weight SRResNet (2 blocks, 16 channels, x4) -- NOT the 16-block model"
    else:
        model = model_from_checkpoint(ckpt)
        desc = f"{ckpt}"
    export_onnx(fuse_bn(model), path)
    add_metadata(path, ModelInfo(scale=model.scale, receptive_radius=receptive_radius(model), arch="SRResNet"))
    return desc


def make_image(path: Path, width: int, height: int) -> None:
    import cv2

    from srdeploy.train.data import data_root

    src = cv2.imread(str(data_root() / "benchmark" / "Set14" / "baboon.png"), cv2.IMREAD_COLOR)
    img = cv2.resize(src, (width, height), interpolation=cv2.INTER_CUBIC)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


# The child reports its own VmHWM (peak RSS of its address space, which starts fresh at exec).
# wait4's ru_maxrss is not used: Linux carries the high-water mark of the forking parent (this
# script, with torch loaded for the export) across fork/exec into the child's figure.
HWM = r"""
def _hwm():
    import sys
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print("VMHWM_KB", line.split()[1], file=sys.stderr)
"""

UPSCALE = HWM + r"""
import sys
from srdeploy.cli import main
rc = main(sys.argv[1:])
_hwm()
raise SystemExit(rc)
"""


def run(code: str, argv: list[str]) -> tuple[int, float, float, str]:
    """(return code, peak RSS MB, wall seconds, stderr) of ``python -c code argv...``."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = float("nan")
    lines = []
    for line in proc.stderr.splitlines():
        if line.startswith("VMHWM_KB"):
            peak = int(line.split()[1]) / 1024
        else:
            lines.append(line)
    return proc.returncode, peak, wall, "\n".join(lines)


BASELINE = HWM + r"""
import sys, numpy as np, cv2
from srdeploy.runtime.open import open_session
from srdeploy.runtime.tiling import tiled_infer
img = cv2.imread(sys.argv[1], cv2.IMREAD_UNCHANGED)
with open_session(sys.argv[2], threads=None if sys.argv[5] == "None" else int(sys.argv[5])) as s:
    x = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1), np.float32) / 255
    y = tiled_infer(s, x, tile=int(sys.argv[4]))
out = np.clip(np.rint(y * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)[:, :, ::-1]
cv2.imwrite(sys.argv[3], out)
_hwm()
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the input")
    ap.add_argument("--strip", type=int, default=None, help="only this many rows (full width)")
    ap.add_argument("--model", type=Path, default=None, help="ONNX model or checkpoint (default: small random)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--tile-pad", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ext", default="png")
    ap.add_argument("--baseline", action="store_true", help="also run the float32-stitching baseline")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.strip:
        height = args.strip

    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    if args.model is None or args.model.suffix == ".pt":
        model = tmp / "model.onnx"
        desc = make_model(model, args.model)
    else:
        model, desc = args.model, str(args.model)
    src = tmp / "input.png"
    make_image(src, width, height)
    out = tmp / f"output.{args.ext}"
    cmd = ["upscale", "-q", "-i", str(src), "-o", str(out), "--model", str(model),
           "--tile", str(args.tile), "--batch", str(args.batch)]
    if args.tile_pad is not None:
        cmd += ["--tile-pad", str(args.tile_pad)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    print(f"model: {desc}")
    print(f"input {width}x{height} RGB uint8 ({width * height * 3 / 1e6:.0f} MB in memory, "
          f"{src.stat().st_size / 1e6:.1f} MB PNG); output {4 * width}x{4 * height} "
          f"({16 * width * height * 3 / 1e6:.0f} MB in memory)", flush=True)
    rc, peak, wall, err = run(UPSCALE, cmd)
    if rc != 0:
        print(err, file=sys.stderr)
        return rc
    print(f"srdeploy upscale --tile {args.tile}: peak RSS {peak:.0f} MB, {wall:.0f} s, output file "
          f"{out.stat().st_size / 1e6:.0f} MB")
    print(err.strip().splitlines()[0] if err.strip() else "")
    out.unlink()
    if args.baseline:
        rc, bpeak, bwall, berr = run(BASELINE, [str(src), str(model), str(out),
                                      str(args.tile), str(args.threads)])
        if rc != 0:
            print(f"baseline failed (rc {rc}): {berr}", file=sys.stderr)
        else:
            print(f"baseline (float32 output stitched, converted at the end): peak RSS {bpeak:.0f} MB, "
                  f"{bwall:.0f} s; ours / baseline = {peak / bpeak:.2f}")
        if out.exists():
            out.unlink()
    src.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
