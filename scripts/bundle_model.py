#!/usr/bin/env python3
"""Turn a training run into the bundled default model under models/.

Steps (each one a public srdeploy command or function, so the bundle proves the pipeline):
  1. slim checkpoint: the run's best.pt without optimizer/scheduler state (weights, arch, kwargs,
     step, settings, metrics, versions) -> models/<name>.pt
  2. srdeploy eval of that checkpoint and of bicubic on Set5 and Set14 (Y, crop = scale)
  3. srdeploy export -> models/<name>.onnx (BN folded, dynamic shapes, metadata)
  4. srdeploy verify checkpoint vs ONNX on Set5 (FP32 tolerance)
  5. models/model_card.json (machine-readable figures the tests check) and models/MODEL_CARD.md
  6. deployment variants (``--deploy``; also run after 1-5): srdeploy export (FP32 with the FLOP count,
     and an FP16 variant kept in a temp folder), srdeploy quantize -> models/<name>_int8.onnx, srdeploy
     eval of FP32/FP16/INT8 through the runtime (ONNX Runtime; INT8 and FP32 also on OpenVINO, and
     BF16 = the FP32 file on OpenVINO with --precision bf16 where the CPU has it) and srdeploy bench
     --compare --peak at 128x128 and 256x256; the tables go into the card.
  7. the TensorRT INT8 variant (``--trt-int8``; also run by ``--deploy``): srdeploy quantize --target
     tensorrt -> models/<name>_int8_trt.onnx (symmetric int8, what TensorRT's parser takes), its loss on
     Set5/Set14 through ONNX Runtime on the CPU recorded in the card.

Usage:
  python scripts/bundle_model.py --run runs/srresnet_x4 --name srresnet_x4 \
      [--hardware "2-core CPU ..."] [--command "srdeploy train srresnet ..."]
  python scripts/bundle_model.py --card-only   # step 5 alone, from the existing model_card.json
  python scripts/bundle_model.py --deploy --threads 2   # step 6 alone, from the bundled checkpoint
  python scripts/bundle_model.py --trt-int8 --threads 2   # step 7 alone, from the bundled FP32 ONNX

The card records the run folder by its name (settings "out"), never a path of the training machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAPER = {"Set5": (32.05, 0.9019), "Set14": (28.49, 0.8184)}  # SRResNet (MSE), Ledig et al. 2017, Table 2


def srdeploy(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "srdeploy", *args]
    print("$ srdeploy " + " ".join(args), flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(res.stdout)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"bundle_model: `srdeploy {args[0]}` failed with exit code {res.returncode}")
    return res


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="training run folder (best.pt, metrics.csv, settings.json)")
    ap.add_argument("--card-only", action="store_true",
                    help="only step 5: rewrite model_card.json and MODEL_CARD.md from the existing model_card.json "
                         "(figures kept; notes kept from MODEL_CARD.md unless --notes); nothing is retrained, "
                         "re-evaluated or re-exported")
    ap.add_argument("--name", default="srresnet_x4")
    ap.add_argument("--out", default=str(ROOT / "models"))
    ap.add_argument("--hardware", default=f"{platform.processor() or platform.machine()} CPU")
    ap.add_argument("--command", default="", help="the training command line, for the card")
    ap.add_argument("--train-time", default="", help="wall-clock training time, for the card")
    ap.add_argument("--notes", default="", help="extra text for the card (Markdown)")
    ap.add_argument("--deploy", action="store_true",
                    help="step 6 alone: FP32/FP16/INT8 variants, their eval and benchmark, from the bundled checkpoint")
    ap.add_argument("--trt-int8", action="store_true",
                    help="step 7 alone: the TensorRT INT8 variant (quantize --target tensorrt) of the bundled FP32 ONNX")
    ap.add_argument("--no-deploy", action="store_true", help="after steps 1-5, skip step 6")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for step 6's quantize checks and benchmarks")
    ap.add_argument("--bench-iters", type=int, default=8, help="timed calls per model in step 6's benchmarks")
    return ap


def main() -> int:
    ap = parser()
    args = ap.parse_args()
    if args.card_only:
        return rewrite_card(Path(args.out), args.notes)
    if args.deploy:
        return deploy(Path(args.out), args.name, threads=args.threads, iters=args.bench_iters)
    if args.trt_int8:
        out = Path(args.out)
        card = trt_int8(out, args.name, json.loads((out / "model_card.json").read_text()), threads=args.threads)
        write_card(out, card, card_notes(out))
        return 0
    if not args.run:
        ap.error("--run is required (or --card-only)")

    from srdeploy.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from srdeploy.train.data import data_root

    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = data_root() / "benchmark"
    sets = [str(bench / "Set5"), str(bench / "Set14")]

    # 1. slim checkpoint (the deployable weights; training state stays with the run)
    ckpt = load_checkpoint(run / "best.pt")
    model = model_from_checkpoint(ckpt, use_ema=False)
    slim = out / f"{args.name}.pt"
    keep = {k: ckpt[k] for k in ("step", "metrics", "settings", "kind", "precision") if k in ckpt}
    save_checkpoint(slim, model, arch=ckpt["arch"], kwargs=ckpt["kwargs"], **keep)
    print(f"wrote {slim} ({slim.stat().st_size / 1e6:.1f} MB), step {ckpt.get('step')}")

    # 2. evaluation, model and bicubic, same run
    with tempfile.TemporaryDirectory() as tmp:
        srdeploy("eval", str(slim), *sets, "--device", "cpu", "--json", f"{tmp}/model.json")
        srdeploy("eval", "--bicubic", *sets, "--json", f"{tmp}/bicubic.json")
        ev_model = {s["name"]: s for s in json.loads(Path(f"{tmp}/model.json").read_text())["sets"]}
        ev_bic = {s["name"]: s for s in json.loads(Path(f"{tmp}/bicubic.json").read_text())["sets"]}

    # 3. export and 4. verify
    onnx_path = out / f"{args.name}.onnx"
    srdeploy("export", str(slim), "-o", str(onnx_path))
    srdeploy("verify", str(slim), str(onnx_path), "--images", sets[0])

    rows = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").is_file() else []
    settings = json.loads((run / "settings.json").read_text()) if (run / "settings.json").is_file() else ckpt.get("settings", {})
    figures = {
        name: {
            "model_psnr": round(ev_model[name]["psnr"], 3), "model_ssim": round(ev_model[name]["ssim"], 4),
            "bicubic_psnr": round(ev_bic[name]["psnr"], 3), "bicubic_ssim": round(ev_bic[name]["ssim"], 4),
            "gain_db": round(ev_model[name]["psnr"] - ev_bic[name]["psnr"], 3),
            "paper_srresnet_psnr": PAPER[name][0], "paper_srresnet_ssim": PAPER[name][1],
            "images": ev_model[name]["images"],
        }
        for name in ("Set5", "Set14")
    }
    card = {
        "name": args.name,
        "arch": ckpt["arch"], "kwargs": ckpt["kwargs"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "checkpoint": slim.name, "onnx": onnx_path.name,
        "step": ckpt.get("step"), "iters_planned": settings.get("iters"),
        "settings": card_settings(settings), "command": args.command, "train_time": args.train_time,
        "hardware": args.hardware, "eval_protocol": "PSNR/SSIM on Y (BT.601), border crop = scale, "
        "LR = MATLAB-style bicubic (antialiased, a=-0.5, uint8)",
        "figures": figures,
        "validation_curve": [{k: r[k] for k in r if k in ("step", "Set5_psnr", "Set5_ssim") and r[k]}
                             for r in rows if r.get("Set5_psnr")],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_card(out, card, args.notes)
    if not args.no_deploy:
        return deploy(out, args.name, threads=args.threads, iters=args.bench_iters)
    return 0


def deploy(out: Path, name: str, *, threads: int, iters: int) -> int:
    """Step 6: the deployable variants of the bundled checkpoint, measured through the runtime."""
    from srdeploy.train.data import data_root

    bench = data_root() / "benchmark"
    sets = [str(bench / "Set5"), str(bench / "Set14")]
    slim, fp32, int8 = out / f"{name}.pt", out / f"{name}.onnx", out / f"{name}_int8.onnx"
    card = json.loads((out / "model_card.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # FP32 re-exported (deterministic; adds srdeploy.flops_per_pixel), FP16 beside it in tmp.
        srdeploy("export", str(slim), "-o", str(fp32), "--overwrite")
        srdeploy("export", str(slim), "-o", str(tmp / f"{name}.onnx"), "--fp16")
        fp16 = tmp / f"{name}_fp16.onnx"
        srdeploy("quantize", str(fp32), "-o", str(int8), "--threads", str(threads), "--overwrite",
                 "--json", str(tmp / "quantize.json"))
        quant = json.loads((tmp / "quantize.json").read_text())
        evals = {}
        bf16 = bf16_unavailable(fp32)  # "" where OpenVINO runs bf16 on this CPU, else why not
        variants = [("FP32", fp32, "onnxruntime", None), ("FP16", fp16, "onnxruntime", None),
                    ("INT8", int8, "onnxruntime", None), ("FP32", fp32, "openvino", None),
                    ("INT8", int8, "openvino", None)] + ([] if bf16 else [("BF16", fp32, "openvino", "bf16")])
        for label, model, backend, precision in variants:
            j = tmp / f"eval_{label}_{backend}.json"
            srdeploy("eval", str(model), *sets, "--backend", backend, "--threads", str(threads), "-q",
                     *(["--precision", precision] if precision else []), "--json", str(j))
            evals[f"{label} {backend}"] = {s["name"]: {"psnr": round(s["psnr"], 4), "ssim": round(s["ssim"], 4)}
                                           for s in json.loads(j.read_text())["sets"]}
        speed = {}
        for size in ("128x128", "256x256"):
            j = tmp / f"bench_{size}.json"
            load_before = os.getloadavg()[0]
            srdeploy("bench", "--model", str(fp32), "--backend", "onnxruntime", "--threads", str(threads),
                     "--size", size, "--iters", str(iters), "--warmup", "2", "--no-full-path", "-q", "--peak",
                     "--compare", f"{fp32}@openvino", "--compare", f"{int8}@onnxruntime",
                     "--compare", f"{int8}@openvino", *([] if bf16 else ["--compare", f"{fp32}@openvino:bf16"]),
                     "--json", str(j))
            r = json.loads(j.read_text())
            speed[size] = {"peak_gflops": r["gflops"]["peak"]["gflops"], "peak_isa": r["gflops"]["peak"]["isa"],
                           "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                           "rows": [{k: e.get(k) for k in ("backend", "precision", "fps", "speedup", "gflops",
                                                           "fraction_of_peak")} | {"model": Path(e["model"]).name}
                                    for e in r["compare"]]}
    card["onnx_int8"] = int8.name
    card["deployment"] = {
        "threads": threads, "cpu": cpu_description(), "evals": evals, "speed": speed,
        "int8": {k: quant[k] for k in ("float_nodes", "loss_db", "fp32_psnr", "int8_psnr", "calibration")},
        "checkpoint_vs_onnx_ort_db": {s: round(evals["FP32 onnxruntime"][s]["psnr"] - card["figures"][s]["model_psnr"], 4)
                                      for s in ("Set5", "Set14")},
        # bf16: the FP32 file on OpenVINO with a bf16 inference hint; its loss is what `srdeploy tune` compares
        "bf16": ({"loss_db": {s: round(evals["FP32 onnxruntime"][s]["psnr"] - evals["BF16 openvino"][s]["psnr"], 4)
                              for s in ("Set5", "Set14")}} if not bf16 else {"unavailable": bf16}),
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    card = trt_int8(out, name, card, threads=threads)
    write_card(out, card, card_notes(out))
    return 0


def bf16_unavailable(model: Path) -> str:
    """"" when OpenVINO runs ``model`` in bf16 on this CPU (AVX-512 BF16 or AMX), else the reason."""
    from srdeploy.runtime.open import open_session

    try:
        open_session(model, backend="openvino", precision="bf16").close()
    except (RuntimeError, ValueError) as exc:
        return str(exc).splitlines()[0]
    return ""


def trt_int8(out: Path, name: str, card: dict, *, threads: int) -> dict:
    """Step 7: ``srdeploy quantize --target tensorrt`` of the bundled FP32 ONNX; returns the card with
    ``onnx_int8_trt`` and ``trt_int8`` (loss through ONNX Runtime on the CPU, calibration, float layers)."""
    fp32, trt = out / f"{name}.onnx", out / f"{name}_int8_trt.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "quantize_trt.json"
        srdeploy("quantize", str(fp32), "-o", str(trt), "--target", "tensorrt", "--threads", str(threads),
                 "--overwrite", "--json", str(report))
        quant = json.loads(report.read_text())
    card["onnx_int8_trt"] = trt.name
    card["trt_int8"] = {**{k: quant[k] for k in ("float_nodes", "loss_db", "fp32_psnr", "int8_psnr", "max_loss",
                                                 "calibration", "seconds")},
                        "command": f"srdeploy quantize models/{fp32.name} -o models/{trt.name} --target tensorrt "
                                   f"--threads {threads}",
                        "cpu": cpu_description(),
                        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return card


def card_notes(out: Path) -> str:
    """The hand-written notes of the existing MODEL_CARD.md (kept when the card is rewritten)."""
    md = (out / "MODEL_CARD.md").read_text() if (out / "MODEL_CARD.md").is_file() else ""
    if "\n## Notes\n\n" not in md:
        return ""
    return md.split("\n## Notes\n\n", 1)[1].split("\n\n## Deployment", 1)[0].split("\n\nReproduce the figures:", 1)[0]


def cpu_description() -> str:
    """CPU model and the SIMD flags that matter for these figures (from /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    have = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags]
    import os

    return f"{model}, {os.cpu_count()} logical cores, flags {' '.join(have) or 'none of AVX2/AVX-512/VNNI'}"


def card_settings(settings: dict) -> dict:
    """The run's settings for the card: the run folder by name only (``runs/x`` or
    ``/home/me/runs/x`` -> ``x``), so no path of the training machine lands in the repository."""
    settings = dict(settings)
    if settings.get("out"):
        settings["out"] = Path(str(settings["out"])).name
    return settings


def write_card(out: Path, card: dict, notes: str) -> None:
    """Step 5: models/model_card.json and models/MODEL_CARD.md."""
    from srdeploy.runtime.atomic import write_json

    write_json(out / "model_card.json", card, indent=2)
    write_markdown(out / "MODEL_CARD.md", card, notes)
    print(f"wrote {out / 'model_card.json'} and {out / 'MODEL_CARD.md'}")


def rewrite_card(out: Path, notes: str = "") -> int:
    """Re-run step 5 on an existing bundle (card format changes): same figures, same notes."""
    card = json.loads((out / "model_card.json").read_text())
    card["settings"] = card_settings(card.get("settings", {}))
    write_card(out, card, notes or card_notes(out))
    return 0


def write_markdown(path: Path, card: dict, notes: str) -> None:
    f = card["figures"]
    s = card["settings"]
    curve = ", ".join(f"{int(float(r['step']))}: {float(r['Set5_psnr']):.2f}" for r in card["validation_curve"])
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"SRResNet {card['kwargs'].get('scale')}x, the paper's architecture ({card['kwargs'].get('num_blocks')} "
        f"residual blocks, {card['kwargs'].get('channels')} channels, BatchNorm, PReLU, 2 sub-pixel stages; "
        f"{card['parameters'] / 1e6:.2f} M parameters), trained by srdeploy's own pipeline "
        "(`srdeploy train srresnet`). Input and output: RGB in [0, 1].",
        "",
        "| file | what |",
        "|---|---|",
        f"| `{card['checkpoint']}` | srdeploy checkpoint (arch + kwargs + weights; `torch.load(weights_only=True)`) |",
        f"| `{card['onnx']}` | FP32 ONNX, BatchNorm folded, dynamic batch/height/width, srdeploy metadata |",
        *([f"| `{card['onnx_int8']}` | INT8 QDQ (`srdeploy quantize`): conv inputs int8, per-channel weights; "
           "ONNX Runtime, OpenVINO |"] if card.get("onnx_int8") else []),
        *([f"| `{card['onnx_int8_trt']}` | INT8 QDQ for TensorRT (`srdeploy quantize --target tensorrt`): symmetric "
           "int8 (zero points 0), float biases, exact input; `srdeploy build-engine` |"]
          if card.get("onnx_int8_trt") else []),
        "| `model_card.json` | the figures below, machine-readable (tests check the Set5 gain) |",
        "",
        "## Results (Y channel, border crop 4, LR by MATLAB-style bicubic)",
        "",
        "| set | bicubic PSNR / SSIM | this model PSNR / SSIM | gain | paper SRResNet |",
        "|---|---|---|---|---|",
    ]
    for name in ("Set5", "Set14"):
        r = f[name]
        lines.append(f"| {name} | {r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f} | "
                     f"{r['model_psnr']:.2f} / {r['model_ssim']:.4f} | {r['gain_db']:+.2f} dB | "
                     f"{r['paper_srresnet_psnr']:.2f} / {r['paper_srresnet_ssim']:.4f} |")
    lines += [
        "",
        "## Training",
        "",
        f"- Data: `train/T91` + `train/BSDS200` from `../shared/data` (291 images, see its SOURCES.md); "
        "validation on Set5 every "
        f"{s.get('val_every')} steps; `best.pt` = best Set5 PSNR.",
        f"- Steps: {card['step']} of {card['iters_planned']} planned; batch {s.get('batch_size')}, "
        f"HR crop {s.get('crop')} (LR {int(s.get('crop', 0)) // int(card['kwargs'].get('scale', 4))}x"
        f"{int(s.get('crop', 0)) // int(card['kwargs'].get('scale', 4))}), loss {s.get('loss')}, Adam lr "
        f"{s.get('lr')} with {s.get('schedule')} schedule, seed {s.get('seed')}.",
        f"- Hardware: {card['hardware']}. Time: {card['train_time'] or 'see notes'}.",
    ]
    if card["command"]:
        lines += ["", "```bash", card["command"], "```"]
    if curve:
        lines += ["", f"Set5 PSNR during training (step: dB): {curve}."]
    if notes:
        lines += ["", "## Notes", "", notes]
    if card.get("deployment"):
        lines += deployment_markdown(card)
    if card.get("trt_int8"):
        lines += trt_int8_markdown(card)
    lines += ["", "Reproduce the figures:", "", "```bash",
              f"srdeploy eval models/{card['checkpoint']} ../shared/data/benchmark/Set5 ../shared/data/benchmark/Set14",
              "srdeploy eval --bicubic ../shared/data/benchmark/Set5 ../shared/data/benchmark/Set14",
              f"srdeploy verify models/{card['checkpoint']} models/{card['onnx']}",
              *(["python scripts/bundle_model.py --deploy --threads 2   # the deployment tables"]
                if card.get("deployment") else []),
              *(["python scripts/bundle_model.py --trt-int8 --threads 2   # the TensorRT INT8 file and its loss"]
                if card.get("trt_int8") else []),
              "```", ""]
    path.write_text("\n".join(lines))


def trt_int8_markdown(card: dict) -> list[str]:
    """The card's TensorRT INT8 section: its loss through ONNX Runtime on the CPU."""
    q = card["trt_int8"]
    cal = q["calibration"]
    loss = ", ".join(f"{s} {q['fp32_psnr'][s]:.3f} -> {q['int8_psnr'][s]:.3f} dB ({-q['loss_db'][s]:+.3f})"
                     for s in q["loss_db"])
    return ["", "## TensorRT INT8", "",
            f"`{card['onnx_int8_trt']}`: `{q['command']}` ({q['measured'][:10]}; {q['cpu']}). Calibrated on "
            f"{cal['images']} LR crops {cal['crop']}x{cal['crop']} of the training images ({cal['method']}); layers "
            f"kept float: {', '.join(q['float_nodes']) or 'none'}; limit {q['max_loss']} dB. Y-PSNR through ONNX "
            f"Runtime on the CPU (the eval protocol): {loss}. Not yet built or run by TensorRT in this project."]


def _loads(speed: dict) -> str:
    """The 1-minute load average before and after each size's run, as recorded (older cards lack it)."""
    parts = [f"{size} {sp['load_average'][0]:.2f} -> {sp['load_average'][1]:.2f}" for size, sp in speed.items()
             if sp.get("load_average")]
    return "load average (1 min) before -> after: " + ", ".join(parts) if parts else "load average not recorded"


def deployment_markdown(card: dict) -> list[str]:
    """The card's deployment section: quality per precision/backend, speed per backend."""
    d = card["deployment"]
    q = d["int8"]
    lines = ["", "## Deployment: quality and speed per precision and backend", "",
             "Through the runtime (`srdeploy eval MODEL --backend B`, tile 256, same protocol as above). FP16 is "
             "`srdeploy export --fp16` on ONNX Runtime's CPU provider; BF16 is the FP32 file on OpenVINO with "
             "`--precision bf16` (CPUs with AVX-512 BF16 or AMX"
             + (f"; not measured here: {d['bf16']['unavailable']}" if "unavailable" in d.get("bf16", {}) else "")
             + "); INT8 is the bundled "
             f"`{card.get('onnx_int8')}` (calibrated on {q['calibration']['images']} LR crops "
             f"{q['calibration']['crop']}x{q['calibration']['crop']} of the training images, {q['calibration']['method']}; "
             f"layers kept float: {', '.join(q['float_nodes']) or 'none'}).", "",
             "| model | backend | Set5 PSNR / SSIM | Set14 PSNR / SSIM | Set5 / Set14 change vs FP32 (dB) |",
             "|---|---|---|---|---|"]
    ref = d["evals"]["FP32 onnxruntime"]
    for key, r in d["evals"].items():
        label, backend = key.split(" ", 1)
        lines.append(f"| {label} | {backend} | {r['Set5']['psnr']:.3f} / {r['Set5']['ssim']:.4f} | "
                     f"{r['Set14']['psnr']:.3f} / {r['Set14']['ssim']:.4f} | "
                     f"{r['Set5']['psnr'] - ref['Set5']['psnr']:+.3f} / {r['Set14']['psnr'] - ref['Set14']['psnr']:+.3f} |")
    c = d["checkpoint_vs_onnx_ort_db"]
    lines += ["", f"FP32 ONNX through ONNX Runtime vs the checkpoint's figures: Set5 {c['Set5']:+.4f} dB, "
                  f"Set14 {c['Set14']:+.4f} dB.", "",
              f"Speed: `srdeploy bench --threads {d['threads']} --compare ... --peak`, model only, one run per size, "
              f"models timed in alternating blocks (same input, same threads). CPU: {d['cpu']}. Measured "
              f"{d.get('measured', '(date not recorded)')}; {_loads(d['speed'])}. Compare ratios within a row group, "
              "not absolute figures across runs.", "",
              "| input | model | backend | fps | vs ORT FP32 | GFLOP/s | of FP32 FMA peak |", "|---|---|---|---|---|---|---|"]
    for size, sp in d["speed"].items():
        for r in sp["rows"]:
            frac = f"{100 * r['fraction_of_peak']:.0f}%" if r.get("fraction_of_peak") is not None else "-"
            gf = f"{r['gflops']:.1f}" if r.get("gflops") is not None else "-"
            lines.append(f"| {size} | {r['precision'].upper()} | {r['backend']} | {r['fps']:.3f} | {r['speedup']:.2f}x | "
                         f"{gf} | {frac} |")
        lines.append(f"| {size} | FP32 FMA peak (srbench --peak, {sp['peak_isa']}) | | | | {sp['peak_gflops']:.1f} | 100% |")
    lines += ["", "GFLOP/s count the model's arithmetic (`srdeploy.flops_per_pixel`, taken before the sub-pixel tail "
                  "rewrite, whose phase kernel adds zeros) at every precision, so INT8 and BF16, which do that "
                  "arithmetic in narrower types, can exceed the FP32 FMA peak."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
