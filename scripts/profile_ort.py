"""Where does ONNX Runtime's CPU time go for SRResNet, and which settings matter?

For one model and LR size this measures, with the deterministic benchmark input:

1. median latency per graph optimisation level (disable / basic / extended / all), and which
   kernels the optimised graph uses (``all`` on x86 rewrites Conv into the NCHWc blocked layout:
   ``com.microsoft.nchwc`` Conv nodes plus ReorderInput/ReorderOutput);
2. intra-op thread counts and thread-pool spinning on/off;
3. ORT's own profiler (``enable_profiling``): time per operator type, summed over one run;
4. PyTorch eager (BN unfused) in the same process and, for reference, PyTorch with BN folded and
   channels-last, to see how much of the gap is BN, layout or the conv kernels themselves.

    python scripts/profile_ort.py --size 128x128 --iters 5
    python scripts/profile_ort.py --model models/srresnet_x4.onnx --skip-torch   # a given ONNX file

Uses onnxruntime directly (a diagnostic, not the product path).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def median_ms(fn, warmup: int, iters: int) -> float:
    """Median milliseconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones."""
    from srdeploy.runtime.measure import time_calls

    return 1e3 * float(np.median(time_calls(fn, warmup=warmup, iters=iters)))


def open_ort(onnx_path: Path, tmp: str, level: str = "all", threads: int | None = None, spin: bool = True,
             profile: bool = False, save: str | None = None):
    """A CPU InferenceSession with one set of the settings this script compares.

    Args:
        onnx_path: the model.  tmp: folder for the profiler's files.
        level: graph optimisation level (a key of ``LEVELS``).  threads: intra-op threads (None: ORT's).
        spin: thread-pool spinning.  profile: ORT's profiler on.  save: write the optimised graph here.
    """
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    if threads:
        o.intra_op_num_threads = threads
    if not spin:
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        o.enable_profiling = True
        o.profile_file_prefix = str(Path(tmp) / "ortprof")
    if save:
        o.optimized_model_filepath = save
    return ort.InferenceSession(str(onnx_path), o, providers=["CPUExecutionProvider"])


LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


def levels_and_kernels(session, x, tmp: str, args) -> None:
    """1. Latency per graph optimisation level, and the node types of each optimised graph."""
    import onnx

    print("\n1. graph optimisation level (default threads)")
    for level in LEVELS:
        saved = str(Path(tmp) / f"opt_{level}.onnx")
        s = session(level, save=saved)
        ms = median_ms(lambda: s.run(None, {"lr": x}), args.warmup, args.iters)
        nodes = onnx.load(saved).graph.node
        ops = collections.Counter(f"{n.domain + ':' if n.domain else ''}{n.op_type}" for n in nodes)
        print(f"   {level:<9} {ms:9.1f} ms   nodes: {dict(ops)}")


def threads_and_spinning(session, x, args) -> None:
    """2. Latency per intra-op thread count, thread-pool spinning on and off."""
    print("\n2. threads and spinning (level all)")
    for threads in (1, 2, os.cpu_count()):
        for spin in (True, False):
            s = session(threads=threads, spin=spin)
            ms = median_ms(lambda: s.run(None, {"lr": x}), args.warmup, args.iters)
            print(f"   intra_op {threads}  spinning {'on ' if spin else 'off'} {ms:9.1f} ms")


def time_per_operator(session, x, args) -> None:
    """3. ORT's profiler: milliseconds per operator type, averaged over the runs."""
    print("\n3. ORT profiler (level all, default threads): time per operator type over one run")
    s = session(profile=True)
    for _ in range(args.warmup + 1):
        s.run(None, {"lr": x})
    events = json.loads(Path(s.end_profiling()).read_text())
    per_run = collections.defaultdict(float)
    nruns = args.warmup + 1
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_run[e["args"].get("op_name", "?")] += e["dur"] / 1e3 / nruns
    total = sum(per_run.values())
    for op, ms in sorted(per_run.items(), key=lambda kv: -kv[1]):
        print(f"   {op:<20} {ms:9.1f} ms  {100 * ms / total:5.1f}%")
    per_node = collections.defaultdict(float)  # which Conv or DepthToSpace: the tail's cost shows here
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"].removesuffix("_kernel_time")] += e["dur"] / 1e3 / nruns
    print("   slowest nodes:")
    for node, ms in sorted(per_node.items(), key=lambda kv: -kv[1])[:6]:
        print(f"     {node:<56} {ms:9.1f} ms  {100 * ms / total:5.1f}%")


def torch_variants(session, x, ckpt, args) -> None:
    """4. PyTorch eager (BN unfused, BN folded, channels-last), each followed by ORT in the same run."""
    import torch

    from srdeploy.export.fuse import fuse_bn
    from srdeploy.train.checkpoint import model_from_checkpoint

    print(f"\n4. PyTorch {torch.__version__} eager, {torch.get_num_threads()} threads")
    xt = torch.from_numpy(x)
    unfused = model_from_checkpoint(ckpt)
    fused = fuse_bn(model_from_checkpoint(ckpt))
    variants = {"unfused (the baseline)": (unfused, xt), "BN folded": (fused, xt),
                "BN folded, channels-last": (fused.to(memory_format=torch.channels_last),
                                             xt.contiguous(memory_format=torch.channels_last))}
    s = session()
    for name, (m, inp) in variants.items():
        with torch.inference_mode():
            ms = median_ms(lambda: m(inp), args.warmup, args.iters)
        ort_ms = median_ms(lambda: s.run(None, {"lr": x}), 0, args.iters)
        print(f"   {name:<26} {ms:9.1f} ms   (ORT all, measured right after: {ort_ms:9.1f} ms, "
              f"ratio {ms / ort_ms:4.2f}x)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="srdeploy checkpoint (default: random-weight 16-block SRResNet x4)")
    p.add_argument("--model", help="profile this ONNX file as it is (e.g. the bundled model, whose tail "
                                   "srdeploy export rewrites) instead of a fresh trace; with --skip-torch")
    p.add_argument("--size", default="128x128")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--skip-torch", action="store_true")
    args = p.parse_args(argv)

    import onnxruntime as ort

    from bench_ort_vs_torch import build_default_model
    from srdeploy.runtime.measure import deterministic_input
    from srdeploy.runtime.parsing import parse_wh

    w, h = parse_wh(args.size)
    x = deterministic_input((1, 3, h, w))
    print(f"onnxruntime {ort.__version__}, {os.cpu_count()} logical cores, input 1x3x{h}x{w}")
    with tempfile.TemporaryDirectory(prefix="srdeploy-prof-") as tmp:
        if args.model:
            if not args.skip_torch:
                p.error("--model profiles an ONNX file without its checkpoint: add --skip-torch")
            onnx_path, ckpt = Path(args.model), None
        else:
            onnx_path, ckpt = build_default_model(Path(tmp), args.checkpoint)
        session = functools.partial(open_ort, onnx_path, tmp)
        levels_and_kernels(session, x, tmp, args)
        threads_and_spinning(session, x, args)
        time_per_operator(session, x, args)
        if not args.skip_torch:
            torch_variants(session, x, ckpt, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
