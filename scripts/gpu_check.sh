#!/usr/bin/env bash
# GPU check of the export path: on a CUDA machine with TensorRT (pip install '.[gpu]'), export a
# tiny model, build FP32 and FP16 TensorRT engines with the Python API, and `srdeploy verify`
# each against the PyTorch checkpoint. Exits non-zero at the first failure.
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
# RUNTIME ENGINEER: add the `srdeploy upscale` TensorRT vs ONNX Runtime comparison here, e.g.
# upscale the same images with "$WORK/model_fp16.engine" and "$WORK/model.onnx" and compare
# the outputs (PSNR / max abs) and the timings. Files available: $WORK/model.onnx,
# $WORK/model_fp16.onnx, $WORK/model_fp32.engine, $WORK/model_fp16.engine (+ .engine.json).
# ---------------------------------------------------------------------------------------------

echo "== GPU check passed ($WORK)"
