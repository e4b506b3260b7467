#!/usr/bin/env bash
# One command for a lent GPU: real CUDA figures and a better bundled model in N minutes.
#
#   bash scripts/gpu_session.sh [--budget-min N] [--device cuda|cpu] [--out DIR] [--model CKPT]
#
# Finishes within N minutes (default 10) and writes everything into DIR (default gpu_results/):
# summary.json (every phase: command, exit status, seconds, results), one log per phase in logs/,
# and the phases' own JSON files. Phases, in order, each with a hard time limit:
#   1. tests      pytest -m gpu (the GPU tests that need only torch CUDA; TensorRT ones skip)
#   2. train_its  scripts/bench_train.py: training it/s on the CPU, and on CUDA in fp32/bf16/fp16
#                 with and without channels_last
#   3. infer_fps  `srdeploy bench --backend torch`: fps in fp32/fp16 at 480x270 and 1920x1080 input
#   4. train      `srdeploy train srresnet --init MODEL --time-budget ...` for the time left: the
#                 paper's settings (MSE, 96x96 HR crops, Adam 1e-4), batch size chosen for the GPU
#   5. eval       `srdeploy eval` of the trained last.pt (and MODEL, for comparison) on Set5, Set14
#   6. export     `srdeploy export` + `srdeploy verify` of the trained model
# A phase that fails or hits its limit is recorded and the session goes on.
#
# --device cpu runs the same phases as a smoke test of this script (a test does this with
# --budget-min 1): the bundled model does not fit a 1-minute CPU budget (its Set5+Set14 eval alone
# takes minutes on a small CPU), so unless --model is given, a tiny SRResNet (2 blocks, 16
# channels) stands in for it, and summary.json says so. Only CLI commands are used (python -m
# srdeploy ...), not runtime internals. Environment: PYTHON (default python), SRDEPLOY_DATA (default
# ./shared/data when it exists, else srdeploy's default data root).
set -uo pipefail

BUDGET_MIN=10
DEVICE=cuda
OUT=gpu_results
MODEL=""
OVERWRITE=0
usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --budget-min) BUDGET_MIN="$2"; shift 2 ;;
        --device) DEVICE="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --model) MODEL="$2"; shift 2 ;;
        --overwrite) OVERWRITE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_session: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
if [[ "$DEVICE" != cuda && "$DEVICE" != cpu ]]; then
    echo "gpu_session: --device must be cuda or cpu, got $DEVICE" >&2; exit 2
fi
if ! [[ "$BUDGET_MIN" =~ ^[0-9]+([.][0-9]+)?$ ]] || [[ "$BUDGET_MIN" =~ ^0+([.]0*)?$ ]]; then
    echo "gpu_session: --budget-min must be a positive number of minutes, got $BUDGET_MIN" >&2; exit 2
fi
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if [[ -d "$OUT" && -n "$(ls -A "$OUT" 2>/dev/null)" && "$OVERWRITE" != 1 ]]; then
    echo "gpu_session: $OUT is not empty; move it away or pass --overwrite" >&2; exit 2
fi
rm -rf "$OUT"
mkdir -p "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
if [[ -z "${SRDEPLOY_DATA:-}" && -d shared/data/benchmark ]]; then
    export SRDEPLOY_DATA="$PWD/shared/data"
fi
DATA="$("$PY" -c 'from srdeploy.train.data import data_root; print(data_root())')" || {
    echo "gpu_session: cannot import srdeploy with $PY (pip install --no-deps -e .)" >&2; exit 2; }
for folder in benchmark/Set5 benchmark/Set14 train/T91; do
    [[ -d "$DATA/$folder" ]] || { echo "gpu_session: $DATA/$folder not found; set SRDEPLOY_DATA" >&2; exit 2; }
done

START=$(date +%s)
# The phases end FINAL_S before the deadline: the summary is written in that time.
FINAL_S=5
DEADLINE=$(( START + $(awk -v m="$BUDGET_MIN" 'BEGIN { printf "%d", m * 60 }') - FINAL_S ))
left() { echo $(( DEADLINE - $(date +%s) )); }
PHASES="$OUT/phases.tsv"
: > "$PHASES"

# skip NAME REASON: record a phase that does not run.
skip() {
    printf '%s\t%s\t%s\t%s\n' "$1" "skipped" 0 "$2" >> "$PHASES"
    echo "== $1: skipped ($2)"
}

# phase NAME LIMIT_S CMD...: run CMD with a hard limit (never past the deadline), log, record.
phase() {
    local name="$1" limit="$2"; shift 2
    local remaining; remaining=$(left)
    (( limit > remaining )) && limit=$remaining
    if (( limit < 3 )); then
        skip "$name" "no time left"; return 0
    fi
    echo "== $name (limit ${limit} s): $*"
    local t0 rc; t0=$(date +%s.%N)
    # SIGTERM first (the CLI cleans up and exits 143), SIGKILL 5 s later.
    timeout --kill-after=5 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
    rc=$?
    local secs; secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    LAST_PHASE_S=${secs%.*}
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$*" >> "$PHASES"
    tr '\r' '\n' < "$OUT/logs/$name.log" | grep -v '^\s*$' | tail -n 3 | sed 's/^/   /'
    echo "   -> exit $rc after $secs s"
}

# --- What runs where ---------------------------------------------------------------------------------
if [[ "$DEVICE" == cuda ]]; then
    if ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
        echo "gpu_session: this torch sees no CUDA GPU; use --device cpu for a smoke run" >&2; exit 2
    fi
    MODEL="${MODEL:-models/srresnet_x4.pt}"
    # Large GPUs: a larger batch keeps the GPU busy at 24x24 LR crops (the paper used 16).
    BATCH=$("$PY" -c 'import torch; print(64 if torch.cuda.get_device_properties(0).total_memory >= 40 * 2**30 else 16)')
    TRAIN_DATA=("$DATA/train/T91" "$DATA/train/BSDS200")
    [[ -d "$DATA/train/BSDS200" ]] || TRAIN_DATA=("$DATA/train/T91")
    BENCH_CPU=(--device cpu --steps 3 --warmup 1)
    BENCH_CUDA=(--device cuda --steps 50 --warmup 15 --precisions fp32,bf16,fp16 --channels-last-modes on,off)
    INFER=(fp32:480x270 fp16:480x270 fp32:1920x1080 fp16:1920x1080)
    INFER_ITERS=(--warmup 3 --iters 10)
    LIMIT_TESTS=120; LIMIT_TRAIN_ITS=150; LIMIT_INFER=40
    RESERVE_AFTER_TRAIN=150  # eval + export + verify after training
    MODEL_NOTE="bundled model"
else
    if [[ -z "$MODEL" ]]; then
        MODEL="$OUT/tiny_srresnet.pt"
        "$PY" - "$MODEL" <<'PY'
import sys, torch
from srdeploy.train.archs import SRResNet
from srdeploy.train.checkpoint import save_checkpoint
kw = {"scale": 4, "num_blocks": 2, "channels": 16}
torch.manual_seed(0)
save_checkpoint(sys.argv[1], SRResNet(**kw), arch="SRResNet", kwargs=kw, kind="srresnet")
PY
        MODEL_NOTE="tiny SRResNet 2x16 stand-in (CPU smoke run; pass --model models/srresnet_x4.pt for the real one)"
    else
        MODEL_NOTE="$MODEL"
    fi
    BATCH=4
    # One thread: on a small shared CPU, several OpenMP threads per process spin against each
    # other and make small steps many times slower.
    export OMP_NUM_THREADS=1
    # Smoke run: five images load in no time (T91 takes seconds to decode on a busy CPU).
    TRAIN_DATA=("$DATA/benchmark/Set5")
    BENCH_CPU=(--device cpu --steps 2 --warmup 1 --batch-size 4 --num-blocks 2 --channels 16 --threads 1)
    BENCH_CUDA=()
    INFER=(fp32:480x270)  # 1920x1080 takes minutes on a small CPU; fp16 is CUDA only
    INFER_ITERS=(--warmup 0 --iters 1 --threads 1)
    LIMIT_TESTS=0; LIMIT_TRAIN_ITS=20; LIMIT_INFER=15
    RESERVE_AFTER_TRAIN=18
fi
echo "== gpu_session: device $DEVICE, budget $BUDGET_MIN min, model $MODEL ($MODEL_NOTE), data $DATA, out $OUT"
"$PY" - "$OUT/machine.json" "$DEVICE" <<'PY'
import json, os, platform, sys
from importlib.metadata import version
flags = set()
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split()); break
except OSError:
    pass
info = {"torch": version("torch"), "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile"})}
if sys.argv[2] == "cuda":  # importing torch costs seconds: only where the GPU's name is needed
    import torch
    info.update(cuda=torch.version.cuda, gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
json.dump(info, open(sys.argv[1], "w"), indent=2)
print("   ", info)
PY

# --- 1. GPU tests that need only torch CUDA (TensorRT ones skip with their reason) -------------------
if [[ "$DEVICE" == cuda ]]; then
    phase tests "$LIMIT_TESTS" "$PY" -m pytest -m gpu -rs -q -p no:cacheprovider tests \
        --ignore=tests/test_cpp_bench.py --junitxml="$OUT/tests.xml"
else
    skip tests "--device cpu: the GPU tests need CUDA"
fi

# --- 2. Training it/s ----------------------------------------------------------------------------------
phase train_its_cpu "$LIMIT_TRAIN_ITS" "$PY" scripts/bench_train.py --data "${TRAIN_DATA[0]}" \
    "${BENCH_CPU[@]}" --json "$OUT/train_its_cpu.json"
if [[ ${#BENCH_CUDA[@]} -gt 0 ]]; then
    phase train_its_cuda "$LIMIT_TRAIN_ITS" "$PY" scripts/bench_train.py --data "$DATA/train/T91" \
        --batch-size 16 "${BENCH_CUDA[@]}" --json "$OUT/train_its_cuda.json"
    phase train_its_cuda_b$BATCH "$LIMIT_TRAIN_ITS" "$PY" scripts/bench_train.py --data "$DATA/train/T91" \
        --batch-size "$BATCH" --device cuda --steps 50 --warmup 15 --precisions auto --channels-last-modes on \
        --json "$OUT/train_its_cuda_b$BATCH.json"
fi

# --- 3. Inference fps of the torch backend (through the CLI) ------------------------------------------
for case in "${INFER[@]}"; do
    prec="${case%%:*}"; size="${case##*:}"
    phase "infer_${prec}_${size}" "$LIMIT_INFER" "$PY" -m srdeploy bench --model "$MODEL" --backend torch \
        --device "$DEVICE" --precision "$prec" --size "$size" "${INFER_ITERS[@]}" --no-full-path \
        --json "$OUT/infer_${prec}_${size}.json"
done

# --- 4. Continue training the model for the time left -------------------------------------------------
if [[ "$DEVICE" == cpu && -n "${LAST_PHASE_S:-}" ]]; then
    # Eval, export and verify are three CLI calls; one just took LAST_PHASE_S on this (busy?) CPU.
    (( 3 * LAST_PHASE_S + 6 > RESERVE_AFTER_TRAIN )) && RESERVE_AFTER_TRAIN=$(( 3 * LAST_PHASE_S + 6 ))
fi
TRAIN_S=$(( $(left) - RESERVE_AFTER_TRAIN ))
if (( TRAIN_S >= 6 )); then
    phase train $(( TRAIN_S + 30 )) "$PY" -m srdeploy train srresnet --init "$MODEL" \
        --data "${TRAIN_DATA[@]}" --val "$DATA/benchmark/Set5" --out "$OUT/run" \
        --loss mse --crop 96 --lr 1e-4 --batch-size "$BATCH" --device "$DEVICE" \
        --time-budget "${TRAIN_S}s" --val-every 2000 --save-every 1000 --log-every 100 --no-tensorboard
else
    skip train "only ${TRAIN_S} s left for training"
fi
TRAINED="$OUT/run/last.pt"

# --- 5. Evaluate (trained model and the starting model) ----------------------------------------------
SETS=("$DATA/benchmark/Set5" "$DATA/benchmark/Set14")
if [[ -f "$TRAINED" ]]; then
    phase eval_trained 60 "$PY" -m srdeploy eval "$TRAINED" "${SETS[@]}" --device "$DEVICE" --json "$OUT/eval_trained.json"
else
    skip eval_trained "no trained model"
fi
if [[ "$DEVICE" == cuda ]]; then  # the starting point, for comparison (the CPU smoke run has no time for it)
    phase eval_start 60 "$PY" -m srdeploy eval "$MODEL" "${SETS[@]}" --device "$DEVICE" --json "$OUT/eval_start.json"
fi

# --- 6. Export and verify the trained model ----------------------------------------------------------
if [[ -f "$TRAINED" ]]; then
    phase export 60 "$PY" -m srdeploy export "$TRAINED" -o "$OUT/trained.onnx"
else
    skip export "no trained model"
fi
if [[ -f "$OUT/trained.onnx" ]]; then
    phase verify 90 "$PY" -m srdeploy verify "$TRAINED" "$OUT/trained.onnx" --max-images 2 --json "$OUT/verify.json"
else
    skip verify "no exported model"
fi

# --- Summary -------------------------------------------------------------------------------------------
"$PY" - "$OUT" "$DEVICE" "$BUDGET_MIN" "$MODEL" "$MODEL_NOTE" "$BATCH" "$START" <<'PY'
import json, sys, time
from pathlib import Path

out, device, budget_min, model, note, batch, start = sys.argv[1:8]
out = Path(out)
def load(name):
    p = out / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
phases = []
for line in (out / "phases.tsv").read_text().splitlines():
    name, rc, secs, cmd = (line.split("\t") + ["", "", "", ""])[:4]
    phases.append({"phase": name, "exit": rc, "seconds": float(secs or 0), "command": cmd,
                   "status": "ok" if rc == "0" else "skipped" if rc == "skipped" else
                   "time limit" if rc in ("124", "137", "143") else "failed"})
summary = {
    "device": device, "budget_min": float(budget_min), "elapsed_s": round(time.time() - int(start), 1),
    "model": model, "model_note": note, "train_batch_size": int(batch), "machine": load("machine.json"),
    "phases": phases,
    "train_its": {k: load(f"{k}.json") for k in ("train_its_cpu", "train_its_cuda", f"train_its_cuda_b{batch}")
                  if load(f"{k}.json")},
    "infer_fps": {p.stem: {"fps": ((r or {}).get("results") or {}).get("model_only", {}).get("fps"), "result": r}
                  for p in sorted(out.glob("infer_*.json")) for r in [load(p.name)]},
    "eval_start": load("eval_start.json"), "eval_trained": load("eval_trained.json"),
    "verify": load("verify.json"),
}
settings = load("run/settings.json")
if settings:
    summary["train"] = {"settings": settings, "time_budget": settings.get("resolved", {}).get("time_budget")}
cpu = (summary["train_its"].get("train_its_cpu") or {}).get("results") or []
cuda = (summary["train_its"].get("train_its_cuda") or {}).get("results") or []
if cpu and cuda:
    summary["cuda_vs_cpu_train_its"] = {f"{r['precision']}{'+cl' if r['channels_last'] else ''}": round(r["its"] / cpu[0]["its"], 1)
                                        for r in cuda}
(out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
print(f"== summary: {out / 'summary.json'} ({summary['elapsed_s']} s of {float(budget_min) * 60:.0f})")
for p in phases:
    print(f"   {p['phase']:28s} {p['status']:10s} {p['seconds']:7.1f} s")
for key in ("eval_start", "eval_trained"):
    if summary[key]:
        print(f"   {key}: " + ", ".join(f"{s['name']} {s['psnr']:.2f} dB / {s['ssim']:.4f}" for s in summary[key]["sets"]))
PY
