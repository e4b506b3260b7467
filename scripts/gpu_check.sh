#!/usr/bin/env bash
# GPU check of the export path: on a CUDA machine with TensorRT (pip install '.[gpu]'), export a
# tiny model, build FP32 and FP16 TensorRT engines with the Python API, and `srdeploy verify`
# each against the PyTorch checkpoint; then ONNX Runtime's TensorRT provider, --device 1 (2-GPU
# machines), a second optimisation profile, a mismatching timing cache, a version/hardware-
# compatible engine and the C++ TensorRT backend. Exits non-zero at the first failure.
#
#   bash scripts/gpu_check.sh [CHECKPOINT] [WORKDIR]
#
# Without CHECKPOINT a tiny SRResNet (2 blocks, 16 channels, x4, non-trivial BatchNorm
# statistics) is made. WORKDIR defaults to a fresh temporary folder; everything is written there.
set -euo pipefail

CKPT="${1:-}"
WORK="${2:-$(mktemp -d -t srdeploy-gpu-check.XXXXXX)}"
mkdir -p "$WORK"
echo "== srdeploy GPU check in $WORK"

python - <<'PY'
import sys
try:
    import tensorrt
except ImportError:
    sys.exit("gpu_check: TensorRT is not installed (pip install '.[gpu]')")
from srdeploy.export.engine import gpu_identity
name, cc, driver = gpu_identity(0)
print(f"TensorRT {tensorrt.__version__}; GPU {name} (sm {cc}); CUDA driver {driver}")
PY

if [[ -z "$CKPT" ]]; then
    CKPT="$WORK/tiny.pt"
    python - "$CKPT" <<'PY'
import sys, torch
from srdeploy.export.fuse import randomize_bn
from srdeploy.train.archs import SRResNet
from srdeploy.train.checkpoint import save_checkpoint
kw = {"scale": 4, "num_blocks": 2, "channels": 16}
torch.manual_seed(0)
save_checkpoint(sys.argv[1], randomize_bn(SRResNet(**kw)), arch="SRResNet", kwargs=kw)
PY
fi

# The reference runs on CUDA when this torch has it (TF32 is switched off by verify), else on CPU.
REF=$(python -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
PROFILE=(--min 1x3x16x16 --opt 1x3x64x64 --max 2x3x256x256)

echo "== export (FP32 + FP16 ONNX)"
srdeploy export "$CKPT" -o "$WORK/model.onnx" --fp16

echo "== build FP32 engine"
srdeploy build-engine "$WORK/model.onnx" -o "$WORK/model_fp32.engine" "${PROFILE[@]}" \
    --timing-cache "$WORK/timing.cache"
echo "== build FP16 engine from the FP32 ONNX (FP16 analysis on the checkpoint)"
srdeploy build-engine "$WORK/model.onnx" -o "$WORK/model_fp16.engine" --fp16 --checkpoint "$CKPT" \
    "${PROFILE[@]}" --timing-cache "$WORK/timing.cache"
echo "== build FP16 engine from model_fp16.onnx (analysis recorded at export)"
srdeploy build-engine "$WORK/model_fp16.onnx" -o "$WORK/model_fp16b.engine" --fp16 "${PROFILE[@]}" \
    --timing-cache "$WORK/timing.cache"
echo "== rebuild with the same inputs must be reused (cache key)"
srdeploy build-engine "$WORK/model.onnx" -o "$WORK/model_fp32.engine" "${PROFILE[@]}" | tee "$WORK/rebuild.txt"
grep -q "^reused" "$WORK/rebuild.txt"

for engine in model_fp32 model_fp16 model_fp16b; do
    echo "== verify $engine.engine"
    srdeploy verify "$CKPT" "$WORK/$engine.engine" --ref-device "$REF" --json "$WORK/verify_$engine.json"
done
echo "== verify FP16 ONNX on ONNX Runtime CUDA (skipped when onnxruntime-gpu lacks CUDA)"
if python -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    srdeploy verify "$CKPT" "$WORK/model_fp16.onnx" --device cuda --ref-device "$REF" \
        --json "$WORK/verify_onnx_fp16_cuda.json"
else
    echo "   (no CUDAExecutionProvider in this onnxruntime; skipped)"
fi

echo "== GPU tests (pytest -m gpu)"
python -m pytest tests/test_engine.py -m gpu -q -rs

# ---------------------------------------------------------------------------------------------
# RUNTIME (issue 5): `srdeploy upscale` on TensorRT vs ONNX Runtime.
# Upscales the same images (Set5 + barbara from Set14, plus gray and RGBA variants; synthetic
# images when the data folder is absent) with ONNX Runtime on the CPU, whole image (--tile 0:
# the reference), and with the FP32 and FP16 engines, tiled to fit their 256x256 profile with
# batches of 2 tiles. Compares the 8-bit outputs per file: FP32 engine max |diff| <= 1 level;
# FP16 engine PSNR >= 45 dB and max |diff| <= 3 levels (verify's 2/255 plus rounding).
# Prints the wall time of each run (includes session start-up).
# ---------------------------------------------------------------------------------------------
echo "== upscale: TensorRT engines vs ONNX Runtime"
UP="$WORK/upscale"
mkdir -p "$UP/in"
python - "$UP/in" <<'PY'
import sys
import cv2
import numpy as np
from srdeploy.train.data import data_root

out = sys.argv[1]
bench = data_root() / "benchmark"
if (bench / "Set5").is_dir() and (bench / "Set14" / "barbara.png").is_file():
    images = {p.name: cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted((bench / "Set5").glob("*.png"))}
    images["barbara.png"] = cv2.imread(str(bench / "Set14" / "barbara.png"), cv2.IMREAD_COLOR)
    print(f"   images from {bench}")
else:
    rng = np.random.default_rng(0)
    images = {f"synthetic{i}.png": cv2.resize((rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8), (w, h),
                                              interpolation=cv2.INTER_CUBIC) for i, (h, w) in enumerate([(97, 131), (576, 720)])}
    print("   data folder not found: synthetic images")
for name, img in images.items():
    cv2.imwrite(f"{out}/{name}", img)
big = max(images.values(), key=lambda a: a.size)
gray = cv2.cvtColor(big, cv2.COLOR_BGR2GRAY)
cv2.imwrite(f"{out}/zz_gray.png", gray)
rgba = cv2.cvtColor(big, cv2.COLOR_BGR2BGRA)
rgba[..., 3] = 255 - gray
cv2.imwrite(f"{out}/zz_rgba.png", rgba)
PY
run_upscale() {  # name, extra args...
    local name="$1"; shift
    local t0 t1
    t0=$(date +%s.%N)
    srdeploy upscale -q -i "$UP/in" -o "$UP/$name" --overwrite "$@"
    t1=$(date +%s.%N)
    python -c "print(f'   $name: {float($t1) - float($t0):.1f} s')"
}
run_upscale ort_cpu --model "$WORK/model.onnx" --tile 0
run_upscale trt_fp32 --model "$WORK/model_fp32.engine" --batch 2
run_upscale trt_fp16 --model "$WORK/model_fp16.engine" --batch 2
if python -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    run_upscale ort_cuda --model "$WORK/model.onnx" --device cuda
fi
# ONNX Runtime's TensorRT provider (issue 17): profile from the tile flags, FP16 only as model_fp16.onnx.
if python -c "import onnxruntime as o, sys; sys.exit('TensorrtExecutionProvider' not in o.get_available_providers())"; then
    run_upscale ort_trt --model "$WORK/model.onnx" --backend ort-trt --tile 96 --batch 2
    run_upscale ort_trt_fp16 --model "$WORK/model_fp16.onnx" --backend ort-trt --tile 96 --batch 2
    echo "   --precision fp16 on the FP32 ONNX through the provider must be refused:"
    if srdeploy upscale -q -i "$UP/in" -o "$UP/refused" --model "$WORK/model.onnx" --backend ort-trt \
            --precision fp16 2> "$UP/refused.txt"; then
        echo "   FAIL: accepted"; exit 1
    fi
    grep -q "export CHECKPOINT --fp16" "$UP/refused.txt" || { echo "   FAIL: unexpected message"; cat "$UP/refused.txt"; exit 1; }
    echo "   refused: $(head -c 160 "$UP/refused.txt")"
else
    echo "   (no TensorrtExecutionProvider in this onnxruntime: ORT TensorRT provider skipped; see README GPU packages)"
fi
# --device above 0 (issue 17, items 1-2): build on GPU 1, run there, and alternate sessions on GPUs 0 and 1
# in one process (every session entry point must select its own device).
NGPU=$(python -c "from cuda.bindings import runtime as r; print(r.cudaGetDeviceCount()[1])" 2>/dev/null || echo 0)
if [[ "$NGPU" -ge 2 ]]; then
    srdeploy build-engine "$WORK/model.onnx" -o "$WORK/model_dev1.engine" "${PROFILE[@]}" --device 1
    python -c "import json,sys; s=json.load(open('$WORK/model_dev1.engine.json')); print('   built on', s['gpu_name'])"
    run_upscale trt_dev1 --model "$WORK/model_dev1.engine" --device cuda:1 --batch 2
    python - "$WORK" <<'PY'
import sys
import numpy as np
from srdeploy.runtime.open import open_session
w = sys.argv[1]
x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
with open_session(f"{w}/model_fp32.engine", device="cuda:0") as a, \
        open_session(f"{w}/model_dev1.engine", device="cuda:1") as b:
    outs = [s.infer(x) for s in (a, b, a, b)]
diff = max(float(np.abs(o - outs[0]).max()) for o in outs)
print(f"   sessions on cuda:0 and cuda:1 alternated: max |diff| {diff:.2e}")
sys.exit(0 if diff <= 1e-3 else "sessions on two GPUs disagree")
PY
else
    echo "   (--device above 0 skipped: this machine has $NGPU CUDA device(s); needs 2)"
fi
python - "$UP" <<'PY'
import sys
from pathlib import Path
import numpy as np
from srdeploy.runtime.media.images import read_image

up = Path(sys.argv[1])
limits = {"trt_fp32": (1, None), "trt_fp16": (3, 45.0), "ort_cuda": (1, None), "ort_trt": (1, None),
          "ort_trt_fp16": (3, 45.0), "trt_dev1": (1, None)}
failed = []
for run, (max_levels, min_psnr) in limits.items():
    if not (up / run).is_dir():
        continue
    for ref_path in sorted((up / "ort_cpu").iterdir()):
        ref = read_image(ref_path)[0].astype(np.float64)
        got = read_image(up / run / ref_path.name)[0].astype(np.float64)
        assert got.shape == ref.shape, (run, ref_path.name, got.shape, ref.shape)
        diff = np.abs(got - ref)
        mse = float((diff ** 2).mean())
        psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
        ok = diff.max() <= max_levels and (min_psnr is None or psnr >= min_psnr)
        print(f"   {run:9s} {ref_path.name:16s} {str(got.shape):16s} max |diff| {diff.max():3.0f} levels, "
              f"PSNR {psnr:6.2f} dB {'ok' if ok else 'FAIL'}")
        if not ok:
            failed.append(f"{run}/{ref_path.name}")
if failed:
    sys.exit(f"upscale comparison failed: {', '.join(failed)}")
PY
echo "== runtime GPU tests (pytest -m gpu)"
python -m pytest tests/test_runtime_trt.py -m gpu -q -rs

# ---------------------------------------------------------------------------------------------
# Issue 17: a second optimisation profile, the timing-cache mismatch path, compatible engines,
# and the C++ TensorRT backend.
# ---------------------------------------------------------------------------------------------
echo "== two optimisation profiles: run with profile 1"
srdeploy build-engine "$WORK/model.onnx" -o "$WORK/model_2prof.engine" \
    --min 1x3x16x16 --opt 1x3x64x64 --max 1x3x64x64 --min 1x3x64x64 --opt 2x3x128x128 --max 2x3x160x160
python - "$WORK" <<'PY'
import sys
import numpy as np
from srdeploy.runtime.open import open_session
from srdeploy.runtime.tiling import tiled_infer
w = sys.argv[1]
x = np.random.default_rng(1).random((3, 150, 230), dtype=np.float32)
with open_session(f"{w}/model.onnx") as ref_s, open_session(f"{w}/model_2prof.engine", profile=1) as s:
    assert s.details["profile"] == 1 and s.input_spec.height == (64, 160), s.input_spec
    ref = tiled_infer(ref_s, x, tile=0)
    got = tiled_infer(s, x, tile=120, batch=2)
d = float(np.abs(got - ref).max())
print(f"   profile 1 (64..160 px, batch 2) vs ORT CPU: max |diff| {d:.2e}")
sys.exit(0 if d <= 1e-3 else "profile 1 output differs")
PY
echo "== timing cache that does not match must be refused"
head -c 4096 /dev/urandom > "$WORK/bad_timing.cache"
if srdeploy build-engine "$WORK/model.onnx" -o "$WORK/model_badcache.engine" "${PROFILE[@]}" \
        --timing-cache "$WORK/bad_timing.cache" 2> "$WORK/badcache.txt"; then
    echo "   FAIL: a corrupt timing cache was accepted"; exit 1
fi
grep -qi "timing cache" "$WORK/badcache.txt" || { echo "   FAIL: unexpected message"; cat "$WORK/badcache.txt"; exit 1; }
echo "   refused: $(grep -i 'timing cache' "$WORK/badcache.txt" | head -1)"
echo "== version- and hardware-compatible engine"
srdeploy build-engine "$WORK/model.onnx" -o "$WORK/model_compat.engine" "${PROFILE[@]}" \
    --version-compatible --hardware-compatible
python -c "import json; s=json.load(open('$WORK/model_compat.engine.json')); assert s['version_compatible'] and s['hardware_compatibility'] == 'ampere_plus', s"
srdeploy verify "$CKPT" "$WORK/model_compat.engine" --ref-device "$REF" --json "$WORK/verify_compat.json"

echo "== C++ TensorRT backend (cpp_bench, tests/test_cpp_bench.py::test_tensorrt_engine)"
if [[ ! -x cpp_bench/build/srbench ]]; then
    bash cpp_bench/build.sh
fi
if cpp_bench/build/srbench --version | grep -q "tensorrt: enabled"; then
    SRDEPLOY_TEST_ENGINE="$WORK/model_fp32.engine" python -m pytest -q -rs \
        "tests/test_cpp_bench.py::test_tensorrt_engine"
else
    echo "   (srbench was built without TensorRT: headers/libraries not found; see cpp_bench/build.sh output)"
fi

echo "== GPU check passed ($WORK)"
