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

from .margin import TILE as MARGIN_TILE
from .onnx_export import (OPSET, add_metadata, check_onnx, export_onnx, require_onnxslim, sha256_file,
                          simplify_onnx)

# Extra metadata keys this exporter writes beside the runtime contract (runtime/metadata.py).
KEY_WEIGHTS = "srdeploy.weights"              # "ema" | "state_dict": which weights were exported
KEY_OPSET = "srdeploy.opset"
KEY_FP16_ANALYSIS = "srdeploy.fp16_analysis"  # JSON: threshold, overall max, risky modules, fp32_nodes
KEY_CONVENTIONS = "srdeploy.conventions"      # JSON: family, origin, input normalisation, output transform
KEY_FACTS = "srdeploy.facts"                  # JSON: the family's declared facts (FP16 ok, fixed window, ...)
KEY_RADIUS_METHOD = "srdeploy.receptive_radius_method"  # "probe at NxN" | "bound" | "limit at NxN"
KEY_WINDOW = "srdeploy.window"                # fixed-window exports: the LR window side the graph takes
DEFAULT_WINDOW = 128  # LR window of a fixed-window export (SwinIR-style graphs), unless --window
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
    window: int | None = None  # the fixed LR window of a fixed-window export
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


def checkpoint_facts(ckpt: dict):
    """The ``Facts`` (scale, channels, size requirements, fixed window, FP16) of a generator checkpoint."""
    from srdeploy.train.families import family

    return family(ckpt["arch"]).facts(ckpt["kwargs"])


def model_info_for(model, ckpt: dict, checkpoint: str | os.PathLike, *, precision: str = "fp32",
                   version: str | None = None, radius=None) -> ModelInfo:
    """The metadata contract of a generator built from ``checkpoint``: the one builder, for the
    exported ONNX file and for the PyTorch backend's session alike.

    Args:
        model: the checkpoint's deployable model (``load_generator``; unfused or fused: BatchNorm
            folding keeps the receptive field).
        ckpt: the checkpoint dict (``arch``, ``kwargs``).
        checkpoint: its file (hashed into ``checkpoint_sha256``).
        precision: what the consumer computes.
        version: the srdeploy version to record; None = this one (an export made now).
        radius: a ``RadiusResult`` already measured (default: measured now).
    """
    from srdeploy import __version__
    from srdeploy.train.radius import measure_radius

    facts = checkpoint_facts(ckpt)
    if radius is None:
        radius = measure_radius(model, scale=facts.scale, channels=facts.in_channels, multiple=facts.size_multiple)
    return ModelInfo(scale=int(model.scale), receptive_radius=radius.radius,
                     input_range=(0.0, 1.0), output_range=(0.0, 1.0),
                     channel_order="GRAY" if facts.in_channels == 1 else "RGB", layout="NCHW",
                     arch=ckpt["arch"], arch_kwargs=dict(ckpt["kwargs"]),
                     checkpoint_sha256=sha256_file(checkpoint), precision=precision,
                     version=__version__ if version is None else version,
                     size_multiple=facts.size_multiple, min_size=facts.min_size)


def model_props(ckpt: dict, radius, window: int | None) -> dict[str, str]:
    """Metadata beside the runtime contract: the family's conventions and declared facts, how the
    radius was measured, and the fixed window (these describe the model; the runtime needs none)."""
    from dataclasses import asdict

    from srdeploy.train.families import family

    fam = family(ckpt["arch"])
    facts = fam.facts(ckpt["kwargs"])
    props = {KEY_CONVENTIONS: json.dumps({"family": fam.name, "origin": fam.origin, **fam.conventions.as_dict(),
                                          "source": (ckpt.get("import") or {}).get("source_sha256", "")},
                                         sort_keys=True),
             KEY_FACTS: json.dumps(asdict(facts), sort_keys=True),
             KEY_RADIUS_METHOD: f"{radius.method}" + (f" at {radius.size}x{radius.size}" if radius.size else "")}
    if window:
        props[KEY_WINDOW] = str(window)
    return props


def _torch_run(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {INPUT_NAME: x})[0]


def check_fold(model, fused, *, sizes=((1, 17, 23), (2, 32, 24)), seed: int = 0) -> float:
    """Max |fused - unfused| over random (batch, H, W) inputs of ``sizes`` (both in eval mode), with
    the model's own channels (``model.in_channels``, 3 by default)."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    channels = getattr(model, "in_channels", 3)
    for b, h, w in sizes:
        x = rng.random((b, channels, h, w), dtype=np.float32)
        worst = max(worst, float(np.abs(_torch_run(fused, x) - _torch_run(model, x)).max()))
    return worst


@dataclass(frozen=True)
class ExportShape:
    """The shapes an export uses: traced, self-checked, and (fixed-window graphs) the only one.

    Attributes:
        channels: image channels (3 RGB, 1 gray).
        window: the fixed LR window side, or None for dynamic N/H/W.
        sample: (H, W) the graph is traced at.
        probe: (H, W) of the ONNX Runtime self-check: another size than ``sample``, so a graph
            that baked the traced size into its shapes fails there.
    """

    channels: int
    window: int | None
    sample: tuple[int, int]
    probe: tuple[int, int]

    @classmethod
    def for_model(cls, facts, window: int | None = None) -> "ExportShape":
        """From the model's ``Facts``; ``window`` forces (or sizes) a fixed-window export."""
        from srdeploy.runtime.tiling import fit_size

        def fit(v: int) -> int:
            return fit_size(v, facts.size_multiple, facts.min_size)

        if window is not None and window < 1:
            raise ValueError(f"export: --window must be >= 1, got {window}")
        if facts.fixed_window or window is not None:
            w = fit(window or DEFAULT_WINDOW)
            return cls(facts.in_channels, w, (w, w), (w, w))
        return cls(facts.in_channels, None, (fit(32), fit(32)), (fit(17), fit(23)))


@dataclass(frozen=True)
class MarginSettings:
    """How ``export`` measures the model's tile margin (``srdeploy.export.margin``).

    Attributes:
        measure: False skips it (the runtime then uses the radius rule).
        images: folder of LR images (default: the ``--calib`` folder when given, else Set5 LR; when
            neither exists the margin is not measured, said in the log, and the runtime uses the
            radius rule: an export must not need the benchmark data).
        tile: tile core of the measurement.
    """

    measure: bool = True
    images: str | os.PathLike | None = None
    tile: int = MARGIN_TILE


def export_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike, *, opset: int = OPSET,
                      simplify: bool = False, fp16: bool = False, calib: str | os.PathLike | None = None,
                      fp16_threshold: float | None = None, use_ema: bool = True, log=print,
                      window: int | None = None, margin: MarginSettings = MarginSettings(),
                      subpixel_tail: bool = True) -> ExportResult:
    """Export a checkpoint to a checked ONNX model with metadata (and an FP16 variant).

    Steps: load (any model family, its conventions applied) -> fold BN (checked against the
    unfused model) -> ONNX with dynamic N/H/W (or one fixed window) -> checker (full) + strict
    shape inference -> optional onnxslim -> metadata -> ONNX Runtime self-check at another size
    than the traced one -> tile margin measured on the calibration images. With ``fp16``:
    activation analysis on calibration images -> FP16 ONNX with risky nodes pinned to FP32 ->
    the same checks at FP16 tolerance.

    Args:
        checkpoint: srdeploy checkpoint (.pt), trained or written by ``srdeploy import``.
        output: the FP32 ONNX path; the FP16 one is ``fp16_path_for(output)``.
        opset: ONNX opset.
        simplify: run onnxslim (error when it is not installed).
        fp16: also write the FP16 variant (refused for families that declare FP16 unsupported).
        calib: folder of calibration images for the FP16 analysis (default: Set5 LR).
        fp16_threshold: |activation| above which layers stay FP32 (default 2**14).
        use_ema: export the EMA weights when the checkpoint has them.
        log: progress printer (``print`` by default; pass ``lambda *a: None`` for quiet).
        window: export at this fixed LR window (default ``DEFAULT_WINDOW`` for fixed-window families).
        margin: how the tile margin is measured.
        subpixel_tail: run the output convolution before the last pixel shuffle (the same function,
            faster on CPUs; ``export/subpixel_tail.py``); False = the graph as traced.
    """
    from srdeploy.train.radius import measure_radius

    t0 = time.perf_counter()
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise ValueError(f"{output}: the output must be an .onnx file")
    if simplify:
        require_onnxslim()  # before any work, not after the folding
    model, ckpt, weights = load_generator(checkpoint, use_ema=use_ema)
    facts = checkpoint_facts(ckpt)
    if fp16 and not facts.fp16:
        raise ValueError(f"{checkpoint}: {ckpt['arch']} {ckpt['kwargs'].get('architecture', '')} models are declared "
                         "not to run in FP16 (NaNs or overflow); export FP32 (and INT8 with srdeploy quantize)")
    shape = ExportShape.for_model(facts, window)
    fused, fold_err = _fold_checked(model, log)
    radius = measure_radius(model, scale=facts.scale, channels=facts.in_channels, multiple=facts.size_multiple)
    log(f"receptive radius {radius.radius} LR px ({radius.method})")
    info = model_info_for(model, ckpt, checkpoint, radius=radius)
    extra = {KEY_WEIGHTS: weights, KEY_OPSET: str(opset), **model_props(ckpt, radius, shape.window)}
    output.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(1).random((1, shape.channels, *shape.probe), dtype=np.float32)
    ref = _torch_run(fused, x)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmpdir:
        tmp, raw, simp, ort_err, info = _write_fp32(fused, Path(tmpdir), output.name, info, extra, opset=opset,
                                                    simplify=simplify, probe=(x, ref), shape=shape, log=log,
                                                    subpixel_tail=subpixel_tail)
        if margin.measure:
            info = _add_margin(tmp, fused, info, extra, shape, margin.images or calib, margin.tile, log)
        result = ExportResult(onnx_path=output, info=info, seconds=0.0, fold_max_abs=fold_err, ort_max_abs=ort_err,
                              simplify=simp, window=shape.window)
        if fp16:
            tmp16 = Path(tmpdir) / fp16_path_for(output).name
            result.fp16_report, result.fp16_ort_max_abs = _write_fp16(
                fused, raw, tmp16, dataclasses.replace(info, precision="fp16"), extra, calib=calib,
                threshold=fp16_threshold, simplify=simplify, probe=(x, ref), shape=shape, log=log)
            result.fp16_path = fp16_path_for(output)
            os.replace(tmp16, result.fp16_path)
        os.replace(tmp, output)
    result.seconds = time.perf_counter() - t0
    return result


def _add_margin(tmp: Path, fused, info: ModelInfo, extra: dict, shape: ExportShape, images, tile: int, log):
    """Measure the tile margin on the checked ONNX file (as deployed) and record it; returns the new info
    (unchanged, with a log line, when there are no calibration images)."""
    from srdeploy.runtime.open import open_session

    from .calib import calibration_inputs
    from .margin import KEY_MARGIN_CURVE, measure_margin

    try:
        inputs, names = calibration_inputs(images, scale=info.scale, channels=shape.channels,
                                           multiple=info.size_multiple)
    except FileNotFoundError as exc:
        if images is not None:
            raise
        log(f"tile margin not measured ({exc}); the runtime will use its radius rule for --tile-pad")
        return info
    radius = info.receptive_radius
    whole = None
    if shape.window is not None:
        # The graph takes one window only: margins must leave a core, and the whole-image
        # reference comes from the PyTorch model (which takes any size).
        radius = min(radius, (shape.window - 1) // 2)

        def whole(x: np.ndarray) -> np.ndarray:
            return _torch_run(fused, x[None])[0]
    with open_session(tmp, backend="onnxruntime") as sess:
        result = measure_margin(sess, inputs, names, radius=radius, whole=whole, tile=tile)
    for line in result.lines():
        log(line)
    info = dataclasses.replace(info, tile_margin=result.margin)
    extra[KEY_MARGIN_CURVE] = result.to_json()
    add_metadata(tmp, info, extra)
    return info


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
                probe, shape: ExportShape, log, subpixel_tail: bool = True):
    """ONNX -> checker -> (onnxslim) -> metadata -> ONNX Runtime vs PyTorch; returns
    (checked file, unsimplified copy, simplify stats, max abs error, info with the FLOP count)."""
    tmp = tmpdir / name
    fixed = shape.window is not None
    log(f"exporting to ONNX (opset {opset}" + (f", fixed window {shape.window}x{shape.window}" if fixed else "")
        + "), then onnx.checker, shape inference and an ONNX Runtime check")
    export_onnx(fused, tmp, opset=opset, sample_size=shape.sample, channels=shape.channels, fixed=fixed)
    check_onnx(tmp, fixed=fixed)
    raw = tmpdir / "raw.onnx"
    shutil.copyfile(tmp, raw)  # unsimplified: its node names map to modules (FP16 analysis)
    simp = None
    if simplify:
        simp = simplify_onnx(tmp)
        check_onnx(tmp, fixed=fixed)
        log(f"simplified: {simp['nodes_before']} -> {simp['nodes_after']} nodes")
    check_onnx(tmp, save_shapes=True, fixed=fixed)
    import onnx

    from .flops import flops_per_pixel

    # Counted from the exported graph (bench turns fps into GFLOP/s with it), before the sub-pixel
    # tail rewrite, whose phase kernel holds zeros that are not useful work.
    info = dataclasses.replace(info, flops_per_pixel=flops_per_pixel(onnx.load(str(tmp))))
    add_metadata(tmp, info, {**extra, **(_subpixel_tail(tmp, log) if subpixel_tail else {})})
    x, ref = probe
    at = "x".join(map(str, x.shape))
    ort_err = float(np.abs(_ort_run(tmp, x) - ref).max())
    if not ort_err <= FP32_TOLERANCE:
        hint = "" if fixed else (" (traced at another size: a graph that builds shapes from Python ints is only right "
                                 "at the traced size; export it at one fixed window with --window N)")
        raise RuntimeError(f"ONNX Runtime output differs from PyTorch by {ort_err:.3g} (> {FP32_TOLERANCE}) "
                           f"at {at}; the export is wrong{hint}. Not written.")
    log(f"ONNX Runtime vs PyTorch at {at}: max abs {ort_err:.3g}")
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
                probe, shape: ExportShape, log):
    """The FP16 variant (shared analyse -> pin -> convert step), checked at FP16 tolerance;
    returns (ActivationReport, max abs error)."""
    import onnx

    from .fp16 import DEFAULT_THRESHOLD, fp16_from_fp32

    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    fp16_model, report = fp16_from_fp32(fused, onnx.load(str(raw)), calib=calib, scale=info16.scale,
                                        threshold=threshold, channels=shape.channels, multiple=info16.size_multiple)
    onnx.save(fp16_model, str(tmp16))
    if simplify:
        simplify_onnx(tmp16)
    check_onnx(tmp16, save_shapes=True, fixed=shape.window is not None)
    add_metadata(tmp16, info16, {**extra, KEY_FP16_ANALYSIS: json.dumps(report.summary(), sort_keys=True)})
    x, ref = probe
    err16 = float(np.abs(_ort_run(tmp16, x) - ref).max())
    if not err16 <= FP16_TOLERANCE:
        raise RuntimeError(f"FP16 ONNX differs from PyTorch by {err16:.3g} (> 2/255) at {'x'.join(map(str, x.shape))}; "
                           f"largest activation {report.overall_max:.3g}. Not written.")
    log(f"FP16 analysis on {len(report.images)} calibration inputs: largest |activation| "
        f"{report.overall_max:.4g} (threshold {threshold:g}); kept in FP32: "
        f"{', '.join(report.fp32_nodes) if report.fp32_nodes else 'none'}")
    log(f"FP16 ONNX Runtime vs PyTorch at {'x'.join(map(str, x.shape))}: max abs {err16:.3g}")
    return report, err16
