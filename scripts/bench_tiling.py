#!/usr/bin/env python
"""How tile margin and tile size trade accuracy against speed (chooses the tiling defaults).

For each margin (tile_pad, LR pixels) it measures, on real images (Set5 + Set14 LR made with the
evaluation protocol's bicubic downscale):
  * deviation of the tiled output from the whole-image output: max abs in [0, 1] units, and the
    max difference of the 8-bit outputs (what a user saves), plus the mean abs;
  * cost: the compute overhead (model input pixels / image pixels: exact, independent of machine
    load) and the measured time, on one larger image, for several tile sizes.
The whole-image pass is the baseline, measured in the same run.

Usage:
  python scripts/bench_tiling.py [--model CKPT.pt|MODEL.onnx | --run RUN_DIR] [--tile 32] [--margins 0,2,4,...]
      [--time-tiles 64,128,256] [--time-size 256] [--threads N] [--json FILE]

Default model: RUN_DIR/best.pt (--run, default runs/srresnet_x4 in the repository, where
`srdeploy train ... --out runs/srresnet_x4` writes), else last.pt there (read only; exported to a
temporary ONNX), else a randomly initialised SRResNet (said so in the output: random weights
depend on far context much more than trained ones, so the margins it needs are pessimistic).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / "runs" / "srresnet_x4"


def export_checkpoint(ckpt: Path, out: Path) -> str:
    """Checkpoint (any model family) -> fused ONNX with metadata; returns a description."""
    import torch

    from srdeploy.export.pipeline import MarginSettings, export_checkpoint as export
    from srdeploy.train.archs import SRResNet
    from srdeploy.train.checkpoint import load_checkpoint, save_checkpoint

    if ckpt is None:
        torch.manual_seed(0)
        ckpt = out.with_suffix(".pt")
        save_checkpoint(ckpt, SRResNet().eval(), arch="SRResNet", kwargs={})
        desc = "random-weight SRResNet (16 blocks, 64 ch, x4): NO trained checkpoint was available"
    else:
        data = load_checkpoint(ckpt)
        desc = f"{ckpt} (step {data.get('step', '?')}, {data['arch']} {data['kwargs']})"
    # This script measures the margin curve itself (for several tiles and timings).
    export(ckpt, out, log=lambda *a: None, margin=MarginSettings(measure=False))
    return desc


def lr_images(limit: int) -> list[tuple[str, np.ndarray]]:
    from srdeploy.train.data import EvalSet, data_root

    out = []
    for name in ("Set5", "Set14"):
        for stem, lr, _hr in EvalSet(data_root() / "benchmark" / name, scale=4):
            out.append((f"{name}/{stem}", lr))
    return out[:limit]


def to_chw(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255
    return np.ascontiguousarray(img.transpose(2, 0, 1), np.float32)


def q8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.int16)


def overhead(h: int, w: int, tile: int, pad: int) -> float:
    from srdeploy.runtime.tiling import plan_tiles

    p = plan_tiles(h, w, tile=tile, tile_pad=pad)
    return p.num_tiles * p.window[0] * p.window[1] / (h * w)


def timing(s, args, radius: int, results: dict) -> None:
    """Time tiled runs on one larger real image (an HR image of Set14 used as LR input)."""
    from srdeploy.runtime.tiling import tiled_infer
    from srdeploy.train.data import data_root, load_rgb

    big = load_rgb(data_root() / "benchmark" / "Set14" / "barbara.png")[: args.time_size, : args.time_size]
    x = to_chw(big)
    h, w = x.shape[1:]

    def timed(**kw) -> float:
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            tiled_infer(s, x, **kw)
            best = min(best, time.perf_counter() - t0)
        return best

    base = timed(tile=0)
    print(f"\ntiming on a {h}x{w} LR image (contended CPU; overhead = model input px / image px is exact):")
    print(f"whole image: {base:.2f} s ({h * w / base / 1e3:.1f} kpx/s)")
    print(f"{'tile':>5} {'margin':>6} {'overhead':>9} {'time s':>7} {'vs whole':>8}")
    for t in (int(v) for v in args.time_tiles.split(",")):
        for m in (int(v) for v in args.time_margins.split(",")):
            if m > radius:
                continue
            ov = overhead(h, w, t, m)
            sec = timed(tile=t, tile_pad=m)
            results["timing"].append({"tile": t, "margin": m, "overhead": ov, "seconds": sec,
                                      "ratio_vs_whole": sec / base})
            print(f"{t:5d} {m:6d} {ov:9.2f} {sec:7.2f} {sec / base:8.2f}", flush=True)
    results["whole_seconds"] = base
    results["time_image"] = [h, w]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="checkpoint or ONNX model (default: from --run)")
    ap.add_argument("--run", type=Path, default=RUN_DIR,
                    help="training run folder whose best.pt/last.pt is the default model (default: runs/srresnet_x4)")
    ap.add_argument("--tile", type=int, default=32, help="tile core for the deviation test (small: many seams)")
    ap.add_argument("--margins", default="0,1,2,3,4,6,8,10,12,16,20,24,32,40")
    ap.add_argument("--images", type=int, default=19, help="how many Set5+Set14 images")
    ap.add_argument("--time-tiles", default="64,128,256")
    ap.add_argument("--time-margins", default="0,4,8,12,16,24,40")
    ap.add_argument("--time-size", type=int, default=256, help="LR size of the timing image")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-timing", action="store_true", help="deviation table only")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.tiling import tiled_infer

    tmp = Path(tempfile.mkdtemp(prefix="bench_tiling_"))
    model = args.model
    if model is None:
        model = next((p for p in (args.run / "best.pt", args.run / "last.pt") if p.is_file()), None)
    if model is None or model.suffix == ".pt":
        onnx_path = tmp / "model.onnx"
        desc = export_checkpoint(model, onnx_path)
    else:
        onnx_path, desc = model, str(model)
    print(f"model: {desc}")
    results: dict = {"model": desc, "deviation": [], "timing": []}
    with open_session(onnx_path, threads=args.threads) as s:
        radius = s.info.receptive_radius
        margins = [m for m in (int(v) for v in args.margins.split(",")) if m <= radius]
        print(f"receptive radius {radius} LR px; deviation with tile {args.tile} (worst over images):")
        images = lr_images(args.images)
        wholes = [(name, x := to_chw(img), s.infer(x[None])[0]) for name, img in images]
        print(f"{'margin':>6} {'max|d| [0,1]':>13} {'x255':>7} {'8-bit max':>9} {'mean|d|':>9}")
        for m in margins:
            worst = worst8 = 0.0
            means = []
            for name, x, whole in wholes:
                y = tiled_infer(s, x, tile=args.tile, tile_pad=m)
                d = np.abs(y - whole)
                worst = max(worst, float(d.max()))
                worst8 = max(worst8, float(np.abs(q8(y) - q8(whole)).max()))
                means.append(float(d.mean()))
            row = {"margin": m, "max_abs": worst, "max_abs_255": worst * 255, "max_8bit": worst8,
                   "mean_abs": float(np.mean(means))}
            results["deviation"].append(row)
            print(f"{m:6d} {worst:13.3g} {worst * 255:7.3f} {worst8:9.0f} {row['mean_abs']:9.2g}", flush=True)

        results["overhead_4000x3000"] = {f"{t}/{m}": overhead(3000, 4000, t, m)
                                         for t in (128, 192, 256, 384, 512) for m in margins}
        if not args.no_timing:
            timing(s, args, radius, results)
    ok = [r for r in results["deviation"] if r["max_abs_255"] <= 1.0]
    if ok:
        print(f"\nsmallest margin with max deviation <= 1/255: {ok[0]['margin']} (radius {radius})")
    print("compute overhead on a 4000x3000 image (tile/margin: factor):")
    for t in (128, 192, 256, 384, 512):
        print("  tile %3d: " % t + ", ".join(f"m{m}={results['overhead_4000x3000'][f'{t}/{m}']:.2f}"
                                            for m in margins if m in (0, 8, 12, 16, 24, radius)))
    if args.json:
        from srdeploy.runtime.atomic import write_json

        write_json(args.json, results, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
