#!/usr/bin/env python
"""Peak memory of `srdeploy upscale` against its own prediction, at several input sizes.

Runs the real command (read PNG -> tiled inference on CPU -> PNG write) in a child
process and reports its peak resident set size (``wait4`` rusage, the kernel's own high-water
mark) and wall time, next to the fixed costs: the uint8 input and output images. The output of a
4x upscale of 4000x3000 RGB is 16000x12000x3 uint8 = 576 MB by itself.

Baseline (``--baseline``, same run): the naive path that stitches a full float32 output with
``tiled_infer`` and converts it at the end (what Upscaler avoids by converting band by band).

The input is a real photo (Set14) resized to the requested size, so PNG coding costs are
realistic. Model: ``--model`` (ONNX or checkpoint), ``--random rrdbnet|rrdbnet6b|compact`` (a
random-weight Real-ESRGAN-sized model through srdeploy import + export), default a small
random-weight SRResNet (2 blocks, 16 channels, x4) so the run finishes in minutes on a CPU: say so
when reporting. Peak
memory depends on the model through ONNX Runtime's activation buffers, which scale with the
tile window, not the image; ``--strip H`` runs a full-width H-row strip to measure a slow
(real, 16-block) model's peak at those sizes in reasonable time.

With ``--tile auto`` (the default, as in the CLI) the command's first line gives the chosen tile
and the predicted peak (runtime.budget); each size's measured peak is printed next to it, with
the ratio, and the run fails (exit 1) when one is off by more than ``--tolerance`` (20%). The
compute overhead of the chosen tiling (window area / image area, exact) is printed too.

Usage:
  python scripts/bench_memory.py [--sizes 2000x1500,4000x3000] [--tile auto|N] [--max-memory 1G]
      [--tile-pad N] [--model M | --random NAME] [--strip H] [--threads N] [--baseline] [--ext png]
      [--backend NAME] [--precision P]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# Random-weight models of other families (--random), at the sizes people deploy: imported and
# exported the way users do (srdeploy import, srdeploy export), so the predictor sees the real graph.
RANDOM = {
    "rrdbnet": ("ESRGAN", dict(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4),
                "Real-ESRGAN x4plus-sized RRDBNet (23 blocks, 64 filters, x4)"),
    "rrdbnet6b": ("ESRGAN", dict(in_nc=3, out_nc=3, num_filters=64, num_blocks=6, scale=4),
                  "Real-ESRGAN x4plus_anime_6B-sized RRDBNet (6 blocks, 64 filters, x4)"),
    "compact": ("Compact", dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4),
                "realesr-general-x4v3-sized Compact (32 convs, 64 features, x4)"),
}


def make_model(path: Path, ckpt: Path | None, random: str | None = None) -> str:
    """Export the model under test to ``path``; returns its description (random weights are said so)."""
    import torch

    from srdeploy.export.pipeline import MarginSettings, export_checkpoint

    if random is not None:
        import importlib

        from srdeploy.train.importer import import_weights

        name, kwargs, desc = RANDOM[random]
        torch.manual_seed(0)
        net = getattr(importlib.import_module(f"spandrel.architectures.{name}"), name)(**kwargs)
        torch.save(net.state_dict(), path.with_suffix(".pth"))
        ckpt = path.with_suffix(".pt")
        import_weights(path.with_suffix(".pth"), ckpt, overwrite=True)
        desc = f"random-weight {desc}, srdeploy import + export"
    elif ckpt is None:
        from srdeploy.train.archs import SRResNet
        from srdeploy.train.checkpoint import save_checkpoint

        torch.manual_seed(0)
        kwargs = {"num_blocks": 2, "channels": 16, "scale": 4}
        ckpt = path.with_suffix(".pt")
        save_checkpoint(ckpt, SRResNet(**kwargs).eval(), arch="SRResNet", kwargs=kwargs)
        desc = "small random-weight SRResNet (2 blocks, 16 channels, x4) -- NOT the 16-block model"
    else:
        desc = f"{ckpt}"
    # No margin measurement: memory depends on the tile window, which --tile-pad sets when given.
    export_checkpoint(ckpt, path, log=lambda *a: None, margin=MarginSettings(measure=False))
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


def measure(args, model: Path, tmp: Path, width: int, height: int) -> dict | None:
    src = tmp / "input.png"
    make_image(src, width, height)
    out = tmp / f"output.{args.ext}"
    cmd = ["upscale", "-q", "-i", str(src), "-o", str(out), "--model", str(model),
           "--tile", str(args.tile), "--batch", str(args.batch)]
    for flag, value in (("--tile-pad", args.tile_pad), ("--threads", args.threads), ("--max-memory", args.max_memory),
                        ("--backend", args.backend), ("--precision", args.precision)):
        if value is not None:
            cmd += [flag, str(value)]
    rc, peak, wall, err = run(UPSCALE, cmd)
    if rc != 0:
        print(err, file=sys.stderr)
        return None
    first = err.strip().splitlines()[0] if err.strip() else ""
    m = re.search(r"tile auto -> (whole image|\d+x\d+|\d+) \(predicted peak ([0-9.]+) (MiB|GiB)", first)
    row = {"size": f"{width}x{height}", "peak": peak, "wall": wall, "first_line": first,
           "out_mb": out.stat().st_size / 1e6}
    if m:
        t = m.group(1)
        row["tile"] = 0 if t == "whole image" else tuple(int(v) for v in t.split("x"))[::-1] if "x" in t else int(t)
        row["predicted"] = float(m.group(2)) * (1024 if m.group(3) == "GiB" else 1)
    out.unlink()
    src.unlink()
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000x1500,4000x3000", help="WIDTHxHEIGHT of the inputs, comma-separated")
    ap.add_argument("--strip", type=int, default=None, help="only this many rows (full width)")
    ap.add_argument("--model", type=Path, default=None, help="ONNX model or checkpoint (default: small random)")
    ap.add_argument("--random", choices=sorted(RANDOM), default=None,
                    help="a random-weight model of another family at its deployed size (needs spandrel)")
    ap.add_argument("--tile", default="auto")
    ap.add_argument("--max-memory", default=None)
    ap.add_argument("--tile-pad", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ext", default="png")
    ap.add_argument("--backend", default=None, help="upscale's --backend (default: its default)")
    ap.add_argument("--precision", default=None,
                    help="upscale's --precision (default: its default, auto: what this machine's tune profile says)")
    ap.add_argument("--tolerance", type=float, default=0.2, help="allowed |measured / predicted - 1|")
    ap.add_argument("--baseline", action="store_true", help="also run the float32-stitching baseline")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    if args.model is None or args.model.suffix == ".pt":
        model = tmp / "model.onnx"
        desc = make_model(model, args.model, args.random)
    else:
        model, desc = args.model, str(args.model)
    print(f"model: {desc}")
    failed = False
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        if args.strip:
            height = args.strip
        row = measure(args, model, tmp, width, height)
        if row is None:
            return 1
        rows.append(row)
        line = (f"{width}x{height} -> {4 * width}x{4 * height} {args.ext}: peak RSS {row['peak']:.0f} MiB, "
                f"{row['wall']:.0f} s, output {row['out_mb']:.0f} MB")
        if "predicted" in row:
            ratio = row["peak"] / row["predicted"]
            ok = abs(ratio - 1) <= args.tolerance
            failed |= not ok
            from srdeploy.runtime.budget import tile_overhead
            from srdeploy.runtime.open import open_session
            from srdeploy.runtime.settings import TileSettings

            with open_session(str(model)) as s:
                pad = TileSettings(tile_pad=args.tile_pad).pad_for(s.info.receptive_radius, s.info.tile_margin)
            shown = "whole" if not row["tile"] else "x".join(map(str, row["tile"][::-1])) if isinstance(
                row["tile"], tuple) else row["tile"]
            line += (f"; tile {shown} (WxH), predicted {row['predicted']:.0f} MiB, measured/predicted "
                     f"{ratio:.2f} ({'ok' if ok else 'OFF BY MORE THAN ' + format(args.tolerance, '.0%')}); "
                     f"compute overhead {tile_overhead(height, width, row['tile'], pad):.2f}x")
        print(line, flush=True)
        print(f"  {row['first_line']}")
        if args.baseline:
            src, out = tmp / "input.png", tmp / f"output.{args.ext}"
            make_image(src, width, height)
            rc, bpeak, bwall, berr = run(BASELINE, [str(src), str(model), str(out), "256", str(args.threads)])
            if rc != 0:
                print(f"baseline failed (rc {rc}): {berr}", file=sys.stderr)
            else:
                print(f"  baseline (tile 256, float32 output stitched, cv2.imwrite): peak RSS {bpeak:.0f} MiB, "
                      f"{bwall:.0f} s; ours / baseline = {row['peak'] / bpeak:.2f}")
            out.unlink(missing_ok=True)
            src.unlink(missing_ok=True)
    if len(rows) > 1:
        print("peak / peak at the first size: " + ", ".join(f"{r['size']} {r['peak'] / rows[0]['peak']:.2f}"
                                                             for r in rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
