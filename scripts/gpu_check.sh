#!/usr/bin/env bash
# GPU check of the export and runtime paths, honest about what it could run.
#
#   bash scripts/gpu_check.sh [CHECKPOINT] [WORKDIR]
#
# Every check is recorded and the script ends with a table: check, GPU or not, passed / FAILED /
# skipped (and why) / n/a. It prints "GPU check passed" and exits 0 only when every GPU check ran
# and passed; exit 1 when a check failed; exit 2 when nothing failed but checks were skipped
# ("incomplete": this machine lacks TensorRT, onnxruntime-gpu, a second GPU, ...). Up front it says
# what the machine has and lacks. It needs no network (the C++ build is skipped with a note when
# ONNX Runtime's headers cannot be fetched) and no ../shared/data (synthetic images stand in, for
# the FP16 analysis, verify and upscale alike).
#
# Checks: export (FP32 + FP16 ONNX); the CUDA runtime through cuda-python (srdeploy's own calls);
# ONNX verified against the PyTorch reference on CUDA; upscale through the PyTorch adapter on CUDA;
# TensorRT engines (FP32, FP16 from the checkpoint's analysis and from model_fp16.onnx, reuse by
# cache key), `srdeploy verify` of each; ONNX Runtime's CUDA and TensorRT providers (a provider is
# skipped only when this onnxruntime lacks it; one that is listed but does not attach is a failure);
# `srdeploy upscale` on each GPU path compared with ONNX Runtime on the CPU; --device 1 on 2-GPU
# machines; a second optimisation profile; an unreadable timing cache refused; a version/hardware-
# compatible engine; the GPU pytest tests; the C++ benchmark and its TensorRT backend.
#
# Without CHECKPOINT a tiny SRResNet (2 blocks, 16 channels, x4, non-trivial BatchNorm statistics)
# is made. WORKDIR defaults to a fresh temporary folder; everything is written there (logs/).
set -uo pipefail
cd "$(dirname "$0")/.."

CKPT="${1:-}"
WORK="${2:-$(mktemp -d -t srdeploy-gpu-check.XXXXXX)}"
mkdir -p "$WORK/logs"
WORK="$(cd "$WORK" && pwd)"
RESULTS="$WORK/checks.tsv"
: > "$RESULTS"
PY="${PYTHON:-python}"
echo "== srdeploy GPU check in $WORK"

# ------------------------------------------------------------------------------------ the machine
"$PY" - "$WORK/machine.env" <<'PY'
import importlib.util, shlex, sys

facts = {}
def has(mod):
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False

facts["TORCH"] = int(has("torch"))
facts["TORCH_CUDA"] = 0
if facts["TORCH"]:
    import torch
    facts["TORCH_CUDA"] = int(torch.cuda.is_available())
facts["NGPU"], facts["GPU"], facts["CUDA_WHY"] = 0, "", ""
try:
    from srdeploy.runtime.backends._cuda import Cuda, import_cudart
    cuda = Cuda(import_cudart())
    facts["NGPU"] = cuda.device_count()
    name, cc, driver = cuda.identity(0)
    facts["GPU"] = f"{name} (sm {cc}), CUDA driver {driver}"
except Exception as exc:  # no cuda-python, no driver, no device
    facts["CUDA_WHY"] = str(exc).splitlines()[0].split("; ")[0][:160]
facts["TRT"], facts["TRT_MAJOR"] = "", 0
try:
    import tensorrt
    facts["TRT"], facts["TRT_MAJOR"] = tensorrt.__version__, int(tensorrt.__version__.split(".")[0])
except Exception as exc:
    facts["TRT_WHY"] = f"{type(exc).__name__}: {exc}"[:200]
from srdeploy.runtime.backends._ortgpu import ort_distributions
facts["ORT_DISTS"] = ", ".join(ort_distributions()) or "none"
facts["ORT_CUDA"] = facts["ORT_TRT"] = 0
try:
    import onnxruntime as ort
    listed = ort.get_available_providers()  # only "compiled in": attachment is what the checks test
    facts["ORT_CUDA"] = int("CUDAExecutionProvider" in listed)
    facts["ORT_TRT"] = int("TensorrtExecutionProvider" in listed)
except ImportError:
    pass
from srdeploy.train.data import data_root
bench = data_root() / "benchmark"
facts["DATA"] = str(bench) if (bench / "Set5").is_dir() and (bench / "Set14" / "barbara.png").is_file() else ""
with open(sys.argv[1], "w") as f:
    for k, v in facts.items():
        f.write(f"{k}={shlex.quote(str(v))}\n")
PY
# shellcheck disable=SC1091
source "$WORK/machine.env" || { echo "gpu_check: cannot probe this machine (is srdeploy installed?)"; exit 1; }

NO_GPU="${CUDA_WHY:-no CUDA device found}"
[[ "$NGPU" -gt 0 ]] && NO_GPU=""
NO_TRT=""
if [[ -z "$TRT" ]]; then NO_TRT="TensorRT not installed (pip install 'srdeploy[gpu]')"; fi
[[ -z "$NO_TRT" && -n "$NO_GPU" ]] && NO_TRT="$NO_GPU"
NO_TORCH_CUDA=""
[[ "$TORCH_CUDA" != 1 ]] && NO_TORCH_CUDA="PyTorch without CUDA here"
NO_ORT_CUDA=""
[[ "$ORT_CUDA" != 1 ]] && NO_ORT_CUDA="this onnxruntime ($ORT_DISTS) has no CUDA provider (pip uninstall -y onnxruntime && pip install 'srdeploy[gpu]')"
[[ -z "$NO_ORT_CUDA" && -n "$NO_GPU" ]] && NO_ORT_CUDA="$NO_GPU"
NO_ORT_TRT=""
[[ "$ORT_TRT" != 1 ]] && NO_ORT_TRT="this onnxruntime ($ORT_DISTS) has no TensorRT provider"
[[ -z "$NO_ORT_TRT" && "$TRT_MAJOR" -ge 11 ]] && NO_ORT_TRT="TensorRT $TRT here; ORT's TensorRT provider needs TensorRT 10 (srdeploy[gpu-cu13])"
[[ -z "$NO_ORT_TRT" && -n "$NO_GPU" ]] && NO_ORT_TRT="$NO_GPU"
NO_TWO=""
[[ "$NGPU" -lt 2 ]] && NO_TWO="needs 2 CUDA devices, this machine has $NGPU"
[[ -z "$NO_TWO" && -n "$NO_TRT" ]] && NO_TWO="$NO_TRT"

echo "   GPU:          ${GPU:-none} ($NGPU CUDA device(s) through cuda-python${CUDA_WHY:+; $CUDA_WHY})"
echo "   PyTorch:      $([[ "$TORCH" == 1 ]] && echo "yes, CUDA $([[ "$TORCH_CUDA" == 1 ]] && echo yes || echo no)" || echo missing)"
echo "   TensorRT:     ${TRT:-missing}"
echo "   onnxruntime:  $ORT_DISTS; providers compiled in: CUDA $([[ "$ORT_CUDA" == 1 ]] && echo yes || echo no), TensorRT $([[ "$ORT_TRT" == 1 ]] && echo yes || echo no)"
echo "   images:       ${DATA:-synthetic (no benchmark data under the data root)}"
LACKS=()
[[ -n "$NO_GPU" ]] && LACKS+=("a CUDA GPU")
[[ -z "$TRT" ]] && LACKS+=("TensorRT")
[[ "$ORT_CUDA" != 1 ]] && LACKS+=("onnxruntime-gpu")
[[ "$NGPU" -lt 2 ]] && LACKS+=("a second GPU")
if [[ ${#LACKS[@]} -gt 0 ]]; then
    echo "   this machine lacks: $(IFS=,; echo "${LACKS[*]}" | sed 's/,/, /g'); the checks that need them are skipped, so the result will be"
    echo "   'incomplete', not 'passed' (the project's lent GPU machine has PyTorch CUDA but no TensorRT,"
    echo "   no onnxruntime-gpu and no package registry)"
fi

# ------------------------------------------------------------------------------------ bookkeeping
# check NAME GPU(yes/no) SKIP_REASON -- COMMAND...: run COMMAND (log in logs/NAME.log) unless
# SKIP_REASON is set; record passed / FAILED / skipped. COMMAND may print "SKIP: reason" on its
# last line and exit 3 to record a skip it found itself (e.g. the C++ build lacking headers).
check() {
    local name="$1" gpu="$2" skip="$3"; shift 4
    if [[ -n "$skip" ]]; then
        printf '%s\t%s\t%s\t%s\n' "$name" "$gpu" skipped "$skip" >> "$RESULTS"
        echo "== $name: skipped ($skip)"
        return 0
    fi
    echo "== $name"
    local log="$WORK/logs/$name.log" rc=0
    "$@" > "$log" 2>&1 || rc=$?
    if [[ $rc == 0 ]]; then
        printf '%s\t%s\tpassed\t%s\n' "$name" "$gpu" "$(tail -n 1 "$log" | cut -c1-160)" >> "$RESULTS"
        tail -n 3 "$log" | sed 's/^/   /'
    elif [[ $rc == 3 ]] && tail -n 1 "$log" | grep -q '^SKIP: '; then
        printf '%s\t%s\tskipped\t%s\n' "$name" "$gpu" "$(tail -n 1 "$log" | sed 's/^SKIP: //' | cut -c1-160)" >> "$RESULTS"
        echo "   skipped: $(tail -n 1 "$log" | sed 's/^SKIP: //')"
    else
        printf '%s\t%s\tFAILED\texit %s: %s\n' "$name" "$gpu" "$rc" "$(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-160)" >> "$RESULTS"
        tail -n 15 "$log" | sed 's/^/   /'
    fi
}
# not_applicable NAME GPU WHY: a check that does not apply to this machine's package set by design.
not_applicable() { printf '%s\t%s\tn/a\t%s\n' "$1" "$2" "$3" >> "$RESULTS"; echo "== $1: n/a ($3)"; }
# needs FILE...: a skip reason when an earlier step did not produce FILE.
needs() { local f; for f in "$@"; do [[ -e "$f" ]] || { echo "needs $(basename "$f"), which an earlier check did not produce"; return; }; done; }

# ------------------------------------------------------------------------------------ inputs
IMG="$WORK/images"
"$PY" - "$IMG" "$DATA" <<'PY'
import sys
from pathlib import Path
import cv2
import numpy as np

out, data = Path(sys.argv[1]), sys.argv[2]
for sub in ("hr", "lr", "up"):
    (out / sub).mkdir(parents=True, exist_ok=True)
if data:
    bench = Path(data)
    images = {p.name: cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted((bench / "Set5").glob("*.png"))}
    images["barbara.png"] = cv2.imread(str(bench / "Set14" / "barbara.png"), cv2.IMREAD_COLOR)
else:  # smooth random images: natural-image-like statistics, deterministic
    rng = np.random.default_rng(0)
    images = {f"synthetic{i}.png": cv2.resize((rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8), (w, h),
                                              interpolation=cv2.INTER_CUBIC) for i, (h, w) in enumerate([(97, 131), (240, 330)])}
for name, img in images.items():
    cv2.imwrite(str(out / "up" / name), img)  # upscale inputs (LR as they come)
    h, w = img.shape[:2]
    crop = img[: min(h, 128) // 4 * 4, : min(w, 128) // 4 * 4]
    cv2.imwrite(str(out / "hr" / name), crop)  # verify/calibration HR images (verify makes their LR)
    cv2.imwrite(str(out / "lr" / name), cv2.resize(crop, (crop.shape[1] // 4, crop.shape[0] // 4),
                                                   interpolation=cv2.INTER_AREA))  # FP16 analysis inputs
big = max(images.values(), key=lambda a: a.size)
gray = cv2.cvtColor(big, cv2.COLOR_BGR2GRAY)
cv2.imwrite(str(out / "up" / "zz_gray.png"), gray)
rgba = cv2.cvtColor(big, cv2.COLOR_BGR2BGRA)
rgba[..., 3] = 255 - gray
cv2.imwrite(str(out / "up" / "zz_rgba.png"), rgba)
print(f"{len(images)} images ({'benchmark data' if data else 'synthetic'})")
PY
if [[ -z "$CKPT" ]]; then
    CKPT="$WORK/tiny.pt"
    if [[ "$TORCH" == 1 ]]; then
        "$PY" - "$CKPT" <<'PY'
import sys, torch
from srdeploy.export.fuse import randomize_bn
from srdeploy.train.archs import SRResNet
from srdeploy.train.checkpoint import save_checkpoint
kw = {"scale": 4, "num_blocks": 2, "channels": 16}
torch.manual_seed(0)
save_checkpoint(sys.argv[1], randomize_bn(SRResNet(**kw)), arch="SRResNet", kwargs=kw)
PY
    fi
fi
NO_TORCH=""
[[ "$TORCH" != 1 ]] && NO_TORCH="PyTorch not installed (pip install 'srdeploy[export]')"
PROFILE=(--min 1x3x16x16 --opt 1x3x64x64 --max 2x3x256x256)
VERIFY=(--images "$IMG/hr" --max-images 3)
M="$WORK/model.onnx"; M16="$WORK/model_fp16.onnx"

# compare_up RUN MAX_LEVELS MIN_PSNR: the 8-bit outputs of upscale run RUN against the ORT CPU reference.
compare_up() {
    "$PY" - "$WORK/up" "$@" <<'PY'
import sys
from pathlib import Path
import numpy as np
from srdeploy.runtime.media.images import read_image

up, run, max_levels, min_psnr = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
failed = []
for ref_path in sorted((up / "ort_cpu").iterdir()):
    ref = read_image(ref_path)[0].astype(np.float64)
    got = read_image(up / run / ref_path.name)[0].astype(np.float64)
    assert got.shape == ref.shape, (ref_path.name, got.shape, ref.shape)
    diff = np.abs(got - ref)
    mse = float((diff ** 2).mean())
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    ok = diff.max() <= max_levels and psnr >= min_psnr
    print(f"{ref_path.name:16s} {str(got.shape):16s} max |diff| {diff.max():3.0f} levels, PSNR {psnr:6.2f} dB "
          f"{'ok' if ok else 'FAIL'}")
    failed += [] if ok else [ref_path.name]
print(f"{run}: {'all within' if not failed else 'outside'} {max_levels:g} levels / {min_psnr:g} dB of ONNX Runtime CPU")
sys.exit(1 if failed else 0)
PY
}
# upscale_vs_cpu RUN MAX_LEVELS MIN_PSNR UPSCALE_ARGS...: upscale the inputs, time it, compare.
upscale_vs_cpu() {
    local run="$1" levels="$2" psnr="$3"; shift 3
    local t0; t0=$(date +%s.%N)
    srdeploy upscale -q -i "$IMG/up" -o "$WORK/up/$run" --overwrite "$@" || return 1
    echo "wall time $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s (session start-up included)"
    compare_up "$run" "$levels" "$psnr"
}

# ------------------------------------------------------------------------------------ export, CUDA runtime, PyTorch CUDA
check export no "$NO_TORCH" -- srdeploy export "$CKPT" -o "$M" --fp16 --calib "$IMG/lr" --overwrite
check cuda_runtime yes "$NO_GPU" -- "$PY" -c "
from srdeploy.runtime.backends._cuda import Cuda, import_cudart
cuda = Cuda(import_cudart())
n = cuda.device_count()
for d in range(n):
    cuda.select(d)
    name, cc, driver = cuda.identity(d)
    print(f'cuda:{d}: {name} (sm {cc}), driver {driver}, {cuda.free_memory(d) / 2**30:.1f} GiB free')
try:
    cuda.select(n)
    raise SystemExit('selecting a device that does not exist was accepted')
except RuntimeError as exc:
    print('out-of-range device refused:', exc)
"
check verify_onnx_vs_torch_cuda yes "${NO_TORCH_CUDA:-$(needs "$M")}" -- \
    srdeploy verify "$CKPT" "$M" --ref-device cuda "${VERIFY[@]}" --json "$WORK/verify_onnx_torch_cuda.json"
check upscale_ort_cpu no "$(needs "$M")" -- upscale_vs_cpu ort_cpu 0 99 --model "$M" --tile 0
check upscale_torch_cuda yes "${NO_TORCH_CUDA:-$(needs "$WORK/up/ort_cpu" "$CKPT")}" -- \
    upscale_vs_cpu torch_cuda 3 45 --model "$CKPT" --backend torch --device cuda

# ------------------------------------------------------------------------------------ TensorRT engines
check build_fp32 yes "${NO_TRT:-$(needs "$M")}" -- srdeploy build-engine "$M" -o "$WORK/model_fp32.engine" \
    "${PROFILE[@]}" --timing-cache "$WORK/timing.cache"
check build_fp16_from_checkpoint yes "${NO_TRT:-$(needs "$M")}" -- srdeploy build-engine "$M" \
    -o "$WORK/model_fp16.engine" --fp16 --checkpoint "$CKPT" --calib "$IMG/lr" "${PROFILE[@]}" \
    --timing-cache "$WORK/timing.cache"
check build_fp16_from_onnx yes "${NO_TRT:-$(needs "$M16")}" -- srdeploy build-engine "$M16" \
    -o "$WORK/model_fp16b.engine" --fp16 "${PROFILE[@]}" --timing-cache "$WORK/timing.cache"
reused() { srdeploy build-engine "$M" -o "$WORK/model_fp32.engine" "${PROFILE[@]}" | tee /dev/stderr | grep -q "^reused"; }
check build_reused yes "${NO_TRT:-$(needs "$WORK/model_fp32.engine")}" -- reused
for e in fp32 fp16 fp16b; do
    check "verify_trt_$e" yes "${NO_TRT:-$(needs "$WORK/model_$e.engine")}" -- srdeploy verify "$CKPT" \
        "$WORK/model_$e.engine" --ref-device "$([[ "$TORCH_CUDA" == 1 ]] && echo cuda || echo cpu)" "${VERIFY[@]}" \
        --json "$WORK/verify_trt_$e.json"
done
check upscale_trt_fp32 yes "${NO_TRT:-$(needs "$WORK/model_fp32.engine" "$WORK/up/ort_cpu")}" -- \
    upscale_vs_cpu trt_fp32 1 99 --model "$WORK/model_fp32.engine" --batch 2
check upscale_trt_fp16 yes "${NO_TRT:-$(needs "$WORK/model_fp16.engine" "$WORK/up/ort_cpu")}" -- \
    upscale_vs_cpu trt_fp16 3 45 --model "$WORK/model_fp16.engine" --batch 2

# ------------------------------------------------------------------------------------ ONNX Runtime GPU providers
# Skipped only when this onnxruntime lacks the provider; a listed provider that does not attach fails
# the check with ORT's own error (srdeploy refuses a session that fell back to the CPU).
check verify_ort_cuda_fp16 yes "${NO_ORT_CUDA:-$(needs "$M16")}" -- srdeploy verify "$CKPT" "$M16" --device cuda \
    --ref-device "$([[ "$TORCH_CUDA" == 1 ]] && echo cuda || echo cpu)" "${VERIFY[@]}" --json "$WORK/verify_ort_cuda.json"
check upscale_ort_cuda yes "${NO_ORT_CUDA:-$(needs "$M" "$WORK/up/ort_cpu")}" -- \
    upscale_vs_cpu ort_cuda 1 99 --model "$M" --device cuda
check upscale_ort_trt yes "${NO_ORT_TRT:-$(needs "$M" "$WORK/up/ort_cpu")}" -- \
    upscale_vs_cpu ort_trt 1 99 --model "$M" --backend ort-trt --tile 96 --batch 2
check upscale_ort_trt_fp16 yes "${NO_ORT_TRT:-$(needs "$M16" "$WORK/up/ort_cpu")}" -- \
    upscale_vs_cpu ort_trt_fp16 3 45 --model "$M16" --backend ort-trt --tile 96 --batch 2
refused() {  # expected_text upscale-args...: the command must fail with a message containing the text
    local want="$1"; shift
    if srdeploy upscale -q -i "$IMG/up" -o "$WORK/up/refused" --overwrite "$@"; then echo "accepted"; return 1; fi
    echo "(refused as expected)"
}
refused_with() { refused "$@" 2> "$WORK/logs/refused.txt"; cat "$WORK/logs/refused.txt"; grep -q -- "$1" "$WORK/logs/refused.txt"; }
check ort_trt_refuses_unchecked_fp16 yes "${NO_ORT_TRT:-$(needs "$M")}" -- refused_with "export CHECKPOINT --fp16" \
    --model "$M" --backend ort-trt --precision fp16
if [[ "$TRT_MAJOR" -ge 11 && "$ORT_TRT" == 1 ]]; then
    check ort_trt_on_tensorrt_11_is_an_error yes "${NO_GPU:-$(needs "$M")}" -- refused_with "libnvinfer.so.10" \
        --model "$M" --backend ort-trt --tile 96
else
    not_applicable ort_trt_on_tensorrt_11_is_an_error yes "only with TensorRT 11 and an onnxruntime that has the TensorRT provider"
fi

# ------------------------------------------------------------------------------------ devices, profiles, caches, compatibility
two_gpus() {
    srdeploy build-engine "$M" -o "$WORK/model_dev1.engine" "${PROFILE[@]}" --device 1 || return 1
    "$PY" -c "import json; s = json.load(open('$WORK/model_dev1.engine.json')); print('built on', s['gpu_name'])"
    upscale_vs_cpu trt_dev1 1 99 --model "$WORK/model_dev1.engine" --device cuda:1 --batch 2 || return 1
    "$PY" - "$WORK" <<'PY'
import sys
import numpy as np
from srdeploy.runtime.open import open_session
w = sys.argv[1]
x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
with open_session(f"{w}/model_fp32.engine", device="cuda:0") as a, open_session(f"{w}/model_dev1.engine", device="cuda:1") as b:
    outs = [s.infer(x) for s in (a, b, a, b)]  # every entry point must select its own device
diff = max(float(np.abs(o - outs[0]).max()) for o in outs)
print(f"sessions on cuda:0 and cuda:1 alternated: max |diff| {diff:.2e}")
sys.exit(0 if diff <= 1e-3 else "sessions on two GPUs disagree")
PY
}
check device_1 yes "${NO_TWO:-$(needs "$WORK/model_fp32.engine" "$WORK/up/ort_cpu")}" -- two_gpus
two_profiles() {
    srdeploy build-engine "$M" -o "$WORK/model_2prof.engine" --min 1x3x16x16 --opt 1x3x64x64 --max 1x3x64x64 \
        --min 1x3x64x64 --opt 2x3x128x128 --max 2x3x160x160 || return 1
    "$PY" - "$WORK" <<'PY'
import sys
import numpy as np
from srdeploy.runtime.open import open_session
from srdeploy.runtime.tiling import tiled_infer
w = sys.argv[1]
x = np.random.default_rng(1).random((3, 150, 230), dtype=np.float32)
with open_session(f"{w}/model.onnx") as ref_s, open_session(f"{w}/model_2prof.engine", profile=1) as s:
    assert s.details["profile"] == 1 and s.input_spec.height == (64, 160), s.input_spec
    ref, got = tiled_infer(ref_s, x, tile=0), tiled_infer(s, x, tile=120, batch=2)
d = float(np.abs(got - ref).max())
print(f"profile 1 (64..160 px, batch 2) vs ONNX Runtime CPU: max |diff| {d:.2e}")
sys.exit(0 if d <= 1e-3 else "profile 1 output differs")
PY
}
check two_profiles yes "${NO_TRT:-$(needs "$M")}" -- two_profiles
bad_cache() {  # TensorRT returns None or an empty cache for bytes it cannot read: both must be refused
    head -c 4096 /dev/urandom > "$WORK/bad_timing.cache"
    cp "$WORK/bad_timing.cache" "$WORK/bad_timing.cache.orig"
    if srdeploy build-engine "$M" -o "$WORK/model_badcache.engine" "${PROFILE[@]}" --timing-cache "$WORK/bad_timing.cache"; then
        echo "an unreadable timing cache was accepted"; return 1
    fi
    cmp -s "$WORK/bad_timing.cache" "$WORK/bad_timing.cache.orig" || { echo "the cache file was overwritten"; return 1; }
    [[ ! -e "$WORK/model_badcache.engine" ]] || { echo "an engine was written"; return 1; }
    echo "refused, cache file untouched"
}
bad_cache_logged() { bad_cache 2> "$WORK/logs/badcache.txt"; local rc=$?; cat "$WORK/logs/badcache.txt"; [[ $rc == 0 ]] && grep -q "timing cache refused" "$WORK/logs/badcache.txt"; }
check timing_cache_unreadable yes "${NO_TRT:-$(needs "$M")}" -- bad_cache_logged
compatible() {
    srdeploy build-engine "$M" -o "$WORK/model_compat.engine" "${PROFILE[@]}" --version-compatible --hardware-compatible || return 1
    "$PY" -c "import json; s = json.load(open('$WORK/model_compat.engine.json')); assert s['version_compatible'] and s['hardware_compatibility'] == 'ampere_plus', s" || return 1
    srdeploy verify "$CKPT" "$WORK/model_compat.engine" "${VERIFY[@]}" --json "$WORK/verify_compat.json"
}
check compatible_engine yes "${NO_TRT:-$(needs "$M")}" -- compatible

# ------------------------------------------------------------------------------------ GPU tests, C++ benchmark
gpu_pytest() {  # a test that skips is a check that did not run
    "$PY" -m pytest tests/test_engine.py tests/test_runtime_trt.py -m gpu -q -rs -p no:cacheprovider \
        | tee "$WORK/logs/pytest_gpu.out"
    local rc=${PIPESTATUS[0]}
    "$PY" -m pytest tests/test_cuda_bindings.py -q -rs -p no:cacheprovider | tee -a "$WORK/logs/pytest_gpu.out"
    [[ $rc == 0 && ${PIPESTATUS[0]} == 0 ]] || return 1
    if grep -q "skipped" "$WORK/logs/pytest_gpu.out"; then
        echo "SKIP: $(grep -c '^SKIPPED' "$WORK/logs/pytest_gpu.out") GPU test(s) skipped (see logs/pytest_gpu.log)"; return 3
    fi
}
check pytest_gpu yes "$NO_GPU" -- gpu_pytest
cpp_build() {
    if [[ -x cpp_bench/build/srbench ]]; then cpp_bench/build/srbench --version; return; fi
    bash cpp_bench/build.sh; local rc=$?
    if [[ $rc == 3 ]]; then  # a prerequisite is missing (offline: no ONNX Runtime headers; no cmake)
        echo "SKIP: C++ build prerequisites missing (offline, ONNX Runtime headers not fetched, or no cmake): see log"; return 3
    fi
    return "$rc"
}
check cpp_build no "" -- cpp_build
cpp_trt() {
    if ! cpp_bench/build/srbench --version | grep -q "tensorrt: enabled"; then
        echo "SKIP: srbench was built without TensorRT (headers/libraries not found; rebuild with cpp_bench/build.sh -DTENSORRT_ROOT=...)"; return 3
    fi
    SRDEPLOY_TEST_ENGINE="$WORK/model_fp32.engine" "$PY" -m pytest -q -rs -p no:cacheprovider \
        "tests/test_cpp_bench.py::test_tensorrt_engine"
}
check cpp_tensorrt yes "${NO_TRT:-$(needs cpp_bench/build/srbench "$WORK/model_fp32.engine")}" -- cpp_trt

# ------------------------------------------------------------------------------------ the table
echo
echo "== checks ($WORK/checks.tsv, logs in $WORK/logs)"
awk -F'\t' '{ printf "   %-36s %-4s %-8s %s\n", $1, $2, $3, $4 }' "$RESULTS"
failed=$(awk -F'\t' '$3 == "FAILED"' "$RESULTS" | wc -l)
skipped=$(awk -F'\t' '$3 == "skipped"' "$RESULTS" | wc -l)
gpu_ran=$(awk -F'\t' '$2 == "yes" && $3 == "passed"' "$RESULTS" | wc -l)
total=$(wc -l < "$RESULTS")
if [[ $failed -gt 0 ]]; then
    echo "== GPU check FAILED: $failed of $total checks failed ($skipped skipped)"
    exit 1
elif [[ $skipped -gt 0 ]]; then
    echo "== GPU check incomplete: $skipped of $total checks skipped, $gpu_ran GPU checks ran and passed; not 'passed'"
    exit 2
fi
echo "== GPU check passed: all $total checks ran ($gpu_ran on the GPU) ($WORK)"
