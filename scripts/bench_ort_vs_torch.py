"""ONNX Runtime (BN folded) vs PyTorch eager (BN unfused), FP32 CPU, same run, side by side.

Builds the default SRResNet x4 (16 blocks, 64 channels) with random weights and BatchNorm
statistics (speed does not depend on the weight values) unless --checkpoint is given, exports
it BN-folded to ONNX, then for every thread setting and size runs ``srdeploy bench`` logic with
``--compare-torch`` (the two runtimes alternate block by block, so background load hits both),
writes one JSON per run and prints a table with the speed ratio.

    python scripts/bench_ort_vs_torch.py --sizes 128x128 256x256 --threads 0 1 --iters 8 --out runs/bench

``--threads 0`` = each library's default (all physical cores for both).
Optional: ``--video`` also measures end-to-end ``srdeploy video`` fps against model-only fps for each
size (synthetic clip of ``--video-frames`` frames).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def build_default_model(folder: Path, checkpoint: str | None) -> tuple[Path, Path]:
    """(ONNX, checkpoint) of the default model; random weights when no checkpoint is given."""
    import torch

    from srdeploy.export.pipeline import MarginSettings, export_checkpoint
    from srdeploy.train.archs import SRResNet
    from srdeploy.train.checkpoint import save_checkpoint

    if checkpoint:  # any model family (srdeploy import)
        ckpt = Path(checkpoint)
    else:
        torch.manual_seed(0)
        kwargs = {"scale": 4, "num_blocks": 16, "channels": 64}
        model = SRResNet(**kwargs).eval()
        for m in model.modules():  # non-identity BN so folding does real work
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        ckpt = folder / "srresnet_x4_random.pt"
        save_checkpoint(ckpt, model, arch="SRResNet", kwargs=kwargs)
    onnx_path = folder / "model.onnx"
    export_checkpoint(ckpt, onnx_path, log=lambda *a: None, margin=MarginSettings(measure=False))
    return onnx_path, ckpt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="srdeploy checkpoint (default: random-weight 16-block SRResNet x4)")
    p.add_argument("--sizes", nargs="+", default=["128x128", "256x256"], help="LR sizes WxH")
    p.add_argument("--threads", nargs="+", type=int, default=[0], help="thread counts; 0 = library default")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--video", action="store_true", help="also measure video end-to-end fps vs model-only")
    p.add_argument("--video-frames", type=int, default=12)
    p.add_argument("--out", default=None, help="folder for the JSON results (default: a temporary folder)")
    args = p.parse_args(argv)

    import torch

    from srdeploy.runtime.atomic import write_json
    from srdeploy.runtime.bench import BenchConfig, run_bench, torch_reference
    from srdeploy.runtime.open import SessionRecipe
    from srdeploy.runtime.parsing import parse_wh
    from srdeploy.runtime.settings import RunSettings, TileSettings

    torch_default_threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory(prefix="srdeploy-ortvt-") as tmp:
        onnx_path, ckpt = build_default_model(Path(tmp), args.checkpoint)
        out = Path(args.out) if args.out else Path(tmp)
        for threads in args.threads:
            t = threads or None
            torch.set_num_threads(t or torch_default_threads)
            runner = torch_reference(str(ckpt), t)
            for size in args.sizes:
                w, h = parse_wh(size)
                run = RunSettings(SessionRecipe(str(onnx_path), threads=t), TileSettings(tile=0))
                cfg = BenchConfig(run, width=w, height=h, warmup=args.warmup,
                                  iters=args.iters, full_path=True, compare_torch=str(ckpt),
                                  video="" if args.video else None, video_frames=args.video_frames)
                print(f"== {size}, threads {threads or 'default'}", file=sys.stderr)
                r = run_bench(cfg, torch_runner=runner)
                path = out / f"ort_vs_torch_{size}_t{threads}.json"
                write_json(path, r, indent=2)
                ct = r["results"]["compare_torch"]
                v = r["results"].get("video")
                rows.append((size, threads or "default", r["results"]["model_only"]["latency_ms"]["median"],
                             r["results"]["full_path"]["latency_ms"]["median"], ct["ours"]["latency_ms"]["median"],
                             ct["torch"]["latency_ms"]["median"], ct["speedup"],
                             v["ratio_to_model_only"] if v else None, path))
        print("\nsize      threads  ORT model-only ms  ORT full-path ms  | alternating: ORT ms  torch ms  ratio"
              "  | video e2e/model-only")
        for size, th, mo, fp, ours, ref, ratio, vr, _ in rows:
            print(f"{size:<9} {str(th):<8} {mo:17.1f} {fp:17.1f}  | {ours:19.1f} {ref:9.1f} {ratio:5.2f}x"
                  + (f"  | {100 * vr:5.1f}%" if vr is not None else ""))
        if args.out:
            print(f"JSON results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
