"""``srdeploy export``: checkpoint -> fused model -> checked ONNX with metadata (+ FP16 variant).

Small chained steps, all on temporary files beside the destination; the destination files are
replaced only once every step has passed, so a failed export never leaves a half-written or
unchecked model where a good one was.
"""

from __future__ import annotations

import dataclasses

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srdeploy.runtime.metadata import INPUT_NAME, ModelInfo

from .onnx_export import (OPSET, add_metadata, check_onnx, export_onnx, require_onnxslim, sha256_file,
                          simplify_onnx)

# Extra metadata keys this exporter writes beside the runtime contract (runtime/metadata.py).
KEY_WEIGHTS = "srdeploy.weights"              # "ema" | "state_dict": which weights were exported
KEY_OPSET = "srdeploy.opset"
KEY_FP16_ANALYSIS = "srdeploy.fp16_analysis"  # JSON: threshold, overall max, risky modules, fp32_nodes
FOLD_TOLERANCE = 1e-4   # export-time sanity check; the <= 1e-5 proof is in tests/test_fuse.py
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 2 / 255


def fp16_path_for(path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model_fp16.onnx`` (where ``--fp16`` writes the FP16 variant)."""
    path = Path(path)
    return path.with_name(f"{path.stem}_fp16{path.suffix or '.onnx'}")


@dataclass
class ExportResult:
    """What ``export_checkpoint`` wrote and measured."""

    onnx_path: Path
    info: ModelInfo
    seconds: float
    fold_max_abs: float
    ort_max_abs: float
    fp16_path: Path | None = None
    fp16_ort_max_abs: float | None = None
    fp16_report: object | None = None
    simplify: dict | None = None
    notes: list[str] = field(default_factory=list)


def load_generator(checkpoint: str | os.PathLike, *, use_ema: bool = True):
    """Rebuild an SR generator from an srdeploy checkpoint (eval mode); clear errors otherwise.

    Returns ``(model, ckpt_dict, weights_kind)``.

    Args:
        checkpoint: path to an srdeploy checkpoint (.pt).
        use_ema: use the EMA weights when the checkpoint has them.
    """
    from srdeploy.train.checkpoint import load_generator as load_checked  # one-line errors naming the file

    model, ckpt = load_checked(checkpoint, use_ema=use_ema)
    weights = "ema" if use_ema and ckpt.get("ema_state_dict") else "state_dict"
    return model, ckpt, weights


def model_info_for(model, ckpt: dict, checkpoint: str | os.PathLike, *, precision: str = "fp32",
                   version: str | None = None) -> ModelInfo:
    """The metadata contract of a generator built from ``checkpoint``: the one builder, for the
    exported ONNX file and for the PyTorch backend's session alike.

    Args:
        model: the generator (unfused or fused: BatchNorm folding keeps the receptive field).
        ckpt: the checkpoint dict (``arch``, ``kwargs``).
        checkpoint: its file (hashed into ``checkpoint_sha256``).
        precision: what the consumer computes.
        version: the srdeploy version to record; None = this one (an export made now).
    """
    from srdeploy import __version__
    from srdeploy.train.archs import receptive_radius

    # SRResNet's "clamp" and "tanh" heads both give [0, 1]; "none" is unbounded but the training
    # target is [0, 1], so that is the range to map from.
    return ModelInfo(scale=int(model.scale), receptive_radius=receptive_radius(model),
                     input_range=(0.0, 1.0), output_range=(0.0, 1.0), channel_order="RGB", layout="NCHW",
                     arch=ckpt["arch"], arch_kwargs=dict(ckpt["kwargs"]), checkpoint_sha256=sha256_file(checkpoint),
                     version=__version__ if version is None else version, precision=precision)


def _torch_run(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {INPUT_NAME: x})[0]


def check_fold(model, fused, *, sizes=((1, 3, 17, 23), (2, 3, 32, 24)), seed: int = 0) -> float:
    """Max |fused - unfused| over random inputs of ``sizes`` (both in eval mode)."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for shape in sizes:
        x = rng.random(shape, dtype=np.float32)
        worst = max(worst, float(np.abs(_torch_run(fused, x) - _torch_run(model, x)).max()))
    return worst


def export_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike, *, opset: int = OPSET,
                      simplify: bool = False, fp16: bool = False, calib: str | os.PathLike | None = None,
                      fp16_threshold: float | None = None, use_ema: bool = True, subpixel_tail: bool = True,
                      log=print) -> ExportResult:
    """Export a checkpoint to a checked ONNX model with metadata (and an FP16 variant).

    Steps: load -> fold BN (checked against the unfused model) -> ONNX with dynamic N/H/W ->
    checker (full) + strict shape inference -> optional onnxslim -> metadata -> ONNX Runtime
    self-check at an odd, non-square size. With ``fp16``: activation analysis on calibration
    images -> FP16 ONNX with risky nodes pinned to FP32 -> the same checks at FP16 tolerance.

    Args:
        checkpoint: srdeploy checkpoint (.pt).
        output: the FP32 ONNX path; the FP16 one is ``fp16_path_for(output)``.
        opset: ONNX opset.
        simplify: run onnxslim (error when it is not installed).
        fp16: also write the FP16 variant.
        calib: folder of calibration images for the FP16 analysis (default: Set5 LR).
        fp16_threshold: |activation| above which layers stay FP32 (default 2**14).
        use_ema: export the EMA weights when the checkpoint has them.
        subpixel_tail: run the output convolution before the last pixel shuffle (the same function,
            faster on CPUs; ``export/subpixel_tail.py``); False = the graph as traced.
        log: progress printer (``print`` by default; pass ``lambda *a: None`` for quiet).
    """
    t0 = time.perf_counter()
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise ValueError(f"{output}: the output must be an .onnx file")
    if simplify:
        require_onnxslim()  # before any work, not after the folding
    model, ckpt, weights = load_generator(checkpoint, use_ema=use_ema)
    fused, fold_err = _fold_checked(model, log)
    info = model_info_for(model, ckpt, checkpoint)
    extra = {KEY_WEIGHTS: weights, KEY_OPSET: str(opset)}
    output.parent.mkdir(parents=True, exist_ok=True)
    # A fixed odd, non-square probe for both self-checks.
    x = np.random.default_rng(1).random((1, 3, 17, 23), dtype=np.float32)
    ref = _torch_run(fused, x)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmpdir:
        tmp, raw, simp, ort_err, info = _write_fp32(fused, Path(tmpdir), output.name, info, extra, opset=opset,
                                                    simplify=simplify, probe=(x, ref), log=log,
                                                    subpixel_tail=subpixel_tail)
        result = ExportResult(onnx_path=output, info=info, seconds=0.0, fold_max_abs=fold_err, ort_max_abs=ort_err,
                              simplify=simp)
        if fp16:
            tmp16 = Path(tmpdir) / fp16_path_for(output).name
            result.fp16_report, result.fp16_ort_max_abs = _write_fp16(
                fused, raw, tmp16, dataclasses.replace(info, precision="fp16"), extra, calib=calib,
                threshold=fp16_threshold, simplify=simplify, probe=(x, ref), log=log)
            result.fp16_path = fp16_path_for(output)
            os.replace(tmp16, result.fp16_path)
        os.replace(tmp, output)
    result.seconds = time.perf_counter() - t0
    return result


def _fold_checked(model, log):
    """Fold BatchNorm and prove the folded model equal to the original (else refuse)."""
    from .fuse import fuse_bn

    fused = fuse_bn(model)
    fold_err = check_fold(model, fused)
    if fold_err > FOLD_TOLERANCE:
        raise RuntimeError(f"BatchNorm folding changed the output by {fold_err:.3g} (> {FOLD_TOLERANCE}); "
                           "not exporting. Report this with the checkpoint.")
    log(f"folded BatchNorm: max |fused - unfused| = {fold_err:.3g}")
    return fused, fold_err


def _write_fp32(fused, tmpdir: Path, name: str, info: ModelInfo, extra: dict, *, opset: int, simplify: bool,
                probe, log, subpixel_tail: bool = True):
    """ONNX -> checker -> (onnxslim) -> metadata -> ONNX Runtime vs PyTorch; returns
    (checked file, unsimplified copy, simplify stats, max abs error, info with the FLOP count)."""
    tmp = tmpdir / name
    log(f"exporting to ONNX (opset {opset}), then onnx.checker, shape inference and an ONNX Runtime check")
    export_onnx(fused, tmp, opset=opset)
    check_onnx(tmp)
    raw = tmpdir / "raw.onnx"
    shutil.copyfile(tmp, raw)  # unsimplified: its node names map to modules (FP16 analysis)
    simp = None
    if simplify:
        simp = simplify_onnx(tmp)
        check_onnx(tmp)
        log(f"simplified: {simp['nodes_before']} -> {simp['nodes_after']} nodes")
    check_onnx(tmp, save_shapes=True)
    import dataclasses

    import onnx

    from .flops import flops_per_pixel

    # Counted from the exported graph (bench turns fps into GFLOP/s with it), before the sub-pixel
    # tail rewrite, whose phase kernel holds zeros that are not useful work.
    info = dataclasses.replace(info, flops_per_pixel=flops_per_pixel(onnx.load(str(tmp))))
    add_metadata(tmp, info, {**extra, **(_subpixel_tail(tmp, log) if subpixel_tail else {})})
    x, ref = probe
    ort_err = float(np.abs(_ort_run(tmp, x) - ref).max())
    if not ort_err <= FP32_TOLERANCE:
        raise RuntimeError(f"ONNX Runtime output differs from PyTorch by {ort_err:.3g} (> {FP32_TOLERANCE}) "
                           "at 1x3x17x23; the export is wrong. Not written.")
    log(f"ONNX Runtime vs PyTorch at 1x3x17x23: max abs {ort_err:.3g}")
    return tmp, raw, simp, ort_err, info


def _subpixel_tail(path: Path, log) -> dict[str, str]:
    """Run the output convolution before the last pixel shuffle (``export/subpixel_tail.py``: the
    same function, 1.6x faster on ONNX Runtime's CPU provider for the bundled model); checked
    again, and by the ONNX Runtime vs PyTorch check that follows. Returns its metadata entry."""
    import onnx

    from .subpixel_tail import fold_subpixel_tail, rewrite_record

    model = onnx.load(str(path))
    record = fold_subpixel_tail(model)
    if record is None:
        return {}
    onnx.save(model, str(path))
    check_onnx(path, save_shapes=True)
    log(f"sub-pixel tail: {record['conv']} runs before the last pixel shuffle ({record['kernel'][0]}x"
        f"{record['kernel'][0]} -> {record['kernel'][1]}x{record['kernel'][1]} phase kernel, "
        f"{record['arithmetic_overhead']:.2f}x arithmetic, fewer layout changes)")
    return rewrite_record([record])


def _write_fp16(fused, raw: Path, tmp16: Path, info16: ModelInfo, extra: dict, *, calib, threshold, simplify: bool,
                probe, log):
    """The FP16 variant (shared analyse -> pin -> convert step), checked at FP16 tolerance;
    returns (ActivationReport, max abs error)."""
    import onnx

    from .fp16 import DEFAULT_THRESHOLD, fp16_from_fp32

    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    fp16_model, report = fp16_from_fp32(fused, onnx.load(str(raw)), calib=calib, scale=info16.scale,
                                        threshold=threshold)
    onnx.save(fp16_model, str(tmp16))
    if simplify:
        simplify_onnx(tmp16)
    check_onnx(tmp16, save_shapes=True)
    add_metadata(tmp16, info16, {**extra, KEY_FP16_ANALYSIS: json.dumps(report.summary(), sort_keys=True)})
    x, ref = probe
    err16 = float(np.abs(_ort_run(tmp16, x) - ref).max())
    if not err16 <= FP16_TOLERANCE:
        raise RuntimeError(f"FP16 ONNX differs from PyTorch by {err16:.3g} (> 2/255) at 1x3x17x23; "
                           f"largest activation {report.overall_max:.3g}. Not written.")
    log(f"FP16 analysis on {len(report.images)} calibration inputs: largest |activation| "
        f"{report.overall_max:.4g} (threshold {threshold:g}); kept in FP32: "
        f"{', '.join(report.fp32_nodes) if report.fp32_nodes else 'none'}")
    log(f"FP16 ONNX Runtime vs PyTorch at 1x3x17x23: max abs {err16:.3g}")
    return report, err16
