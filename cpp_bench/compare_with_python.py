#!/usr/bin/env python3
"""C++ (srbench) vs Python (`srdeploy bench`) model-only fps on ONNX Runtime, same run.

Both tools run the same model on the same deterministic input with the same intra-op threads.
Rounds alternate (C++ first, then Python first, ...) so background load drifting over minutes
hits both alike; the report gives per-round figures, medians over rounds and the Python/C++
ratio (the C++ figure is the floor for Python overhead: the target is Python >= 0.95 x C++).
Each tool writes its srdeploy.bench/1 JSON into --out, so `srdeploy bench --plot` can draw
them side by side.

Usage (from the repository root; builds srbench when needed):
    python cpp_bench/compare_with_python.py --sizes 128x128 256x256 --threads 2 --rounds 3
Without --model it exports the default SRResNet (16 blocks, 64 channels) with RANDOM weights
(speed does not depend on the weights) into --out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path


def default_model(out_dir: Path) -> Path:
    """Export SRResNet() (16 blocks, 64 channels, x4) with random weights, BN folded, with metadata."""
    import torch

    from srdeploy.export.fuse import fuse_bn
    from srdeploy.export.onnx_export import add_metadata, export_onnx
    from srdeploy.runtime.metadata import ModelInfo
    from srdeploy.train.archs import SRResNet, receptive_radius

    path = out_dir / "srresnet_x4_random.onnx"
    if path.is_file():
        return path
    torch.manual_seed(0)
    model = SRResNet()
    out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(fuse_bn(model.eval()), path)
    add_metadata(path, ModelInfo(scale=4, receptive_radius=int(receptive_radius(model)), arch="SRResNet",
                                 arch_kwargs={"num_blocks": 16, "channels": 64}))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="srdeploy ONNX model (default: export a random-weight SRResNet)")
    ap.add_argument("--sizes", nargs="+", default=["128x128", "256x256"], metavar="WxH")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both tools (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per size (default 3)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", default="runs/cpp_vs_python", help="folder for the model and JSON results")
    args = ap.parse_args(argv)

    from srdeploy.runtime.atomic import write_json
    from srdeploy.runtime.bench import BenchConfig, run_bench
    from srdeploy.runtime.cpp_bench import build_cpp_bench, run_cpp_bench
    from srdeploy.runtime.open import SessionRecipe
    from srdeploy.runtime.parsing import parse_wh
    from srdeploy.runtime.settings import RunSettings, TileSettings

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else default_model(out)
    exe = build_cpp_bench()
    print(f"model {model}; threads {args.threads}; batch {args.batch}; {args.rounds} alternating rounds of "
          f"{args.warmup} warm-up + {args.iters} timed calls per tool", flush=True)

    rows = []
    for size in args.sizes:
        w, h = parse_wh(size)
        fps = {"C++": [], "Python": []}
        best_ms = {"C++": float("inf"), "Python": float("inf")}
        checks = {}
        for r in range(args.rounds):
            order = ("C++", "Python") if r % 2 == 0 else ("Python", "C++")
            for tool in order:
                if tool == "C++":
                    res = run_cpp_bench(model, (w, h), args.batch, args.warmup, args.iters,
                                        out / f"cpp_{w}x{h}_r{r}.json", args.threads, exe=exe)
                else:
                    run = RunSettings(SessionRecipe(str(model), "onnxruntime", threads=args.threads),
                                      TileSettings(tile=0, batch=args.batch))
                    cfg = BenchConfig(run, width=w, height=h, warmup=args.warmup, iters=args.iters, full_path=False)
                    res = run_bench(cfg, log=lambda s: None)
                    write_json(out / f"py_{w}x{h}_r{r}.json", res, indent=2)
                f = res["results"]["model_only"]["fps"]
                fps[tool].append(f)
                best_ms[tool] = min(best_ms[tool], res["results"]["model_only"]["latency_ms"]["min"])
                checks[tool] = res["output_checksum"]
                print(f"  {w}x{h} round {r} {tool:6s}: {f:8.4f} fps "
                      f"(median {res['results']['model_only']['latency_ms']['median']:.1f} ms)", flush=True)
        rel = abs(checks["C++"] - checks["Python"]) / max(1e-12, abs(checks["Python"]))
        cpp, py = statistics.median(fps["C++"]), statistics.median(fps["Python"])
        per_round = [p / c for p, c in zip(fps["Python"], fps["C++"])]
        # Under background load the fastest call is the least disturbed one: a second estimate.
        by_min = best_ms["C++"] / best_ms["Python"]
        rows.append((f"{w}x{h}", cpp, py, py / cpp, min(per_round), max(per_round), by_min, rel))

    print("\nfps = median over rounds of each run's median-latency fps; ratios are Python/C++")
    print("size      C++ fps   Python fps  ratio  (per-round range)  ratio of fastest calls  checksum rel. diff")
    for size, cpp, py, ratio, lo, hi, by_min, rel in rows:
        print(f"{size:9s} {cpp:8.4f}  {py:10.4f}  {ratio:5.3f}  ({lo:.3f}..{hi:.3f})     {by_min:5.3f}"
              f"                  {rel:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
