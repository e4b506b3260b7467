"""``srdeploy verify``: parity of an exported model (ONNX or TensorRT engine) with PyTorch.

The reference is the checkpoint's model as trained: unfused (BatchNorm in eval mode), FP32, on
the CPU by default (on CUDA, TF32 is switched off so the reference stays FP32). The exported
model runs through ``srdeploy.runtime.open.open_session``, i.e. exactly as deployment runs it.
Cases: random inputs of at least three sizes (odd and non-square included; kept inside a
TensorRT engine's profile) and real images (LR made by ``degrade`` of the ``mod_crop``'ed HR
image, as in evaluation). Per case: max abs error, mean abs error and PSNR of the output
against the reference, all in [0, 1] units.

Default tolerances by the precision the model computes (from its metadata / engine sidecar):
FP32 max abs <= 1e-4; FP16 max abs <= 2/255 and PSNR >= 45 dB; INT8 max abs <= 0.3 and PSNR >= 28 dB
(measured: random inputs 0.22 / 29.8 dB, real images 0.087 / 46.2 dB on the bundled model).
"""

from __future__ import annotations

import json
import math
import os
from typing import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_SIZES = ((1, 33, 47), (2, 40, 64), (1, 96, 71))  # (batch, H, W): odd, non-square, batch 2
FP32_ATOL = 1e-4
FP16_ATOL = 2 / 255
FP16_MIN_PSNR = 45.0
# INT8 (srdeploy quantize), chosen by measurement of the bundled INT8 model against its checkpoint
# (ONNX Runtime): uniform-noise inputs, far outside the calibrated ranges, reach max abs 0.222 and
# 29.8 dB; Set5 images 0.087 and 46.2 dB. One rule covers both with ~1.35x / 1.8 dB of headroom.
INT8_ATOL = 0.3
INT8_MIN_PSNR = 28.0


@dataclass(frozen=True)
class Tolerance:
    """Pass rule of a case: ``max_abs <= atol`` and, when set, ``psnr >= min_psnr``."""

    atol: float
    min_psnr: float | None = None

    @classmethod
    def for_precision(cls, precision: str, *, atol: float | None = None,
                      min_psnr: float | None = None) -> "Tolerance":
        """The default tolerance of ``precision`` ("fp32"/"fp16"/"int8"), with optional overrides."""
        if precision == "fp16":
            return cls(FP16_ATOL if atol is None else atol, FP16_MIN_PSNR if min_psnr is None else min_psnr)
        if precision == "int8":
            return cls(INT8_ATOL if atol is None else atol, INT8_MIN_PSNR if min_psnr is None else min_psnr)
        if precision != "fp32":
            raise ValueError(f"verify: unknown model precision {precision!r}")
        return cls(FP32_ATOL if atol is None else atol, min_psnr)


@dataclass
class Case:
    """One parity case and its errors (output vs reference, [0, 1] units)."""

    name: str
    kind: str  # "random" | "image"
    shape: tuple[int, int, int, int]
    max_abs: float
    mean_abs: float
    psnr: float
    passed: bool
    reason: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["psnr"] = None if math.isinf(self.psnr) else self.psnr  # JSON has no Infinity
        for k in ("max_abs", "mean_abs", "psnr"):
            if isinstance(d[k], float) and math.isnan(d[k]):
                d[k] = None
        return d


@dataclass
class VerifyReport:
    """Everything ``verify`` measured; ``ok`` is True when every case passed."""

    model: str
    checkpoint: str
    backend: str
    device: str
    precision: str
    tolerance: Tolerance
    reference: str
    cases: list[Case] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def failed(self) -> list[Case]:
        return [c for c in self.cases if not c.passed]

    def as_dict(self) -> dict:
        return {"model": self.model, "checkpoint": self.checkpoint, "backend": self.backend, "device": self.device,
                "precision": self.precision, "reference": self.reference,
                "tolerance": {"max_abs": self.tolerance.atol, "min_psnr": self.tolerance.min_psnr},
                "ok": self.ok, "failed": [c.name for c in self.failed],
                "cases": [c.as_dict() for c in self.cases], "notes": list(self.notes)}

    def format_header(self) -> str:
        """The title and column header lines of the table."""
        tol = f"max abs <= {self.tolerance.atol:.3g}"
        if self.tolerance.min_psnr is not None:
            tol += f", PSNR >= {self.tolerance.min_psnr:g} dB"
        return "\n".join([f"verify {self.model} ({self.backend}, {self.device}, {self.precision}) against "
                          f"{self.checkpoint} ({self.reference}); tolerance: {tol}",
                          f"{'case':<28} {'shape':<16} {'max abs':>10} {'mean abs':>10} {'PSNR dB':>8}  result"])

    @staticmethod
    def format_row(c: Case) -> str:
        """One case's table row."""
        shape = "x".join(str(v) for v in c.shape)
        psnr = "inf" if math.isinf(c.psnr) else f"{c.psnr:.2f}"
        res = "ok" if c.passed else f"FAIL ({c.reason})"
        return f"{c.name:<28} {shape:<16} {c.max_abs:>10.3g} {c.mean_abs:>10.3g} {psnr:>8}  {res}"

    def format_footer(self) -> str:
        """Notes and the verdict."""
        return "\n".join(self.format_table().splitlines()[2 + len(self.cases):])

    def format_table(self) -> str:
        lines = self.format_header().splitlines()
        lines += [self.format_row(c) for c in self.cases]
        for n in self.notes:
            lines.append(f"note: {n}")
        lines.append("PASS: all cases within tolerance" if self.ok else
                     f"FAIL: {len(self.failed)} of {len(self.cases)} cases out of tolerance: "
                     + ", ".join(c.name for c in self.failed))
        return "\n".join(lines)


def compare(out: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(max abs, mean abs, PSNR in dB with peak 1) of ``out`` against ``ref``; NaN when non-finite."""
    if out.shape != ref.shape:
        raise ValueError(f"verify: output shape {out.shape} differs from the reference {ref.shape}")
    if not np.all(np.isfinite(out)):
        return math.nan, math.nan, math.nan
    diff = out.astype(np.float64) - ref.astype(np.float64)
    mse = float(np.mean(diff * diff))
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    return float(np.abs(diff).max()), float(np.abs(diff).mean()), psnr


def judge(max_abs: float, psnr: float, tol: Tolerance) -> tuple[bool, str]:
    """Whether a case passes ``tol``, and why not."""
    if math.isnan(max_abs):
        return False, "non-finite output"
    reasons = []
    if max_abs > tol.atol:
        reasons.append(f"max abs {max_abs:.3g} > {tol.atol:.3g}")
    if tol.min_psnr is not None and psnr < tol.min_psnr:
        reasons.append(f"PSNR {psnr:.2f} < {tol.min_psnr:g} dB")
    return not reasons, "; ".join(reasons)


def fit_sizes(sizes, spec, *, multiple: int = 1, minimum: int = 1) -> tuple[list[tuple[int, int, int]], list[str]]:
    """Sizes kept inside a session's ``InputSpec`` (a TensorRT profile, a fixed window) and the
    model's size requirements (sides a multiple of ``multiple``, at least ``minimum``); notes for
    each change.

    A bounded spec (TensorRT) also gets its minimum shape as a case: profile edges are where
    engines go wrong.
    """
    from srdeploy.runtime.tiling import fit_size

    out, notes = [], []

    def clamp(v, lo_hi, side: bool = True):
        lo, hi = lo_hi
        if side:
            v = fit_size(v, multiple, minimum)
        return max(lo, v if hi is None else min(v, hi))

    for b, h, w in sizes:
        fitted = (clamp(b, spec.batch, False), clamp(h, spec.height), clamp(w, spec.width))
        if fitted != (b, h, w):
            notes.append(f"size {b}x{h}x{w} is outside the model's input range; tested {'x'.join(map(str, fitted))}")
        if fitted not in out:
            out.append(fitted)
    if spec.height[1] is not None or spec.width[1] is not None or spec.batch[1] is not None:
        corner = (spec.batch[0], spec.height[0], spec.width[0])
        if corner not in out:
            out.append(corner)
    return out, notes


def _reference_model(checkpoint, use_ema: bool, device: str):
    from .pipeline import load_generator

    model, ckpt, weights = load_generator(checkpoint, use_ema=use_ema)
    import torch

    if device.startswith("cuda"):
        # The reference must be FP32: keep cuDNN/cuBLAS from using TF32 (10-bit mantissa).
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return model.to(device).eval(), ckpt, weights


def _model_props(path: Path) -> dict:
    """srdeploy metadata of an ONNX file, or of an engine's sidecar (its ``metadata``)."""
    if path.suffix.lower() == ".onnx":
        from .onnx_export import read_props

        return read_props(path)
    try:
        from srdeploy.runtime.backends.trt import find_sidecar

        side = find_sidecar(path)
        return dict(json.loads(side.read_text()).get("metadata") or {})
    except (OSError, ValueError):
        return {}


def fit_image(name: str, lr: np.ndarray, spec) -> tuple[np.ndarray | None, str | None]:
    """A 1xCxHxW LR image kept inside a session's ``InputSpec``: (image, note about the change).

    An image below the minimum input gives (None, note): it is skipped. One above the maximum is
    cut to its centre (an engine's profile), with a note saying so.
    """
    h, w = lr.shape[2:]
    hmax = spec.height[1] or h
    wmax = spec.width[1] or w
    if h < spec.height[0] or w < spec.width[0]:
        return None, f"{name}: LR {h}x{w} is below the model's minimum input; skipped"
    if h > hmax or w > wmax:
        top, left = (h - min(h, hmax)) // 2, (w - min(w, wmax)) // 2
        lr = np.ascontiguousarray(lr[:, :, top:top + min(h, hmax), left:left + min(w, wmax)])
        return lr, (f"{name}: LR {h}x{w} exceeds the model's maximum input; tested the centre "
                    f"{lr.shape[2]}x{lr.shape[3]}")
    return lr, None


def _image_folder(images: str | os.PathLike | None, use_images: bool) -> Path | None:
    """The HR folder of the real-image cases (default Set5 under the data root); None without them."""
    if not use_images:
        return None
    from srdeploy.train.data import data_root

    folder = Path(images) if images is not None else data_root() / "benchmark" / "Set5"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder for the real-image cases not found; pass --images DIR "
                                "(HR images) or --no-images")
    return folder


def real_image_cases(folder: Path, scale: int, limit: int | None = None, *, channels: int = 3, multiple: int = 1):
    """(name, 1xCxHxW float32 LR) for each image: ``degrade(mod_crop(hr))`` in [0, 1], as the model
    takes it (gray: BT.601 luma; sides cropped to the model's size multiple)."""
    from srdeploy.train.data import degrade, list_images, load_rgb, mod_crop, to_chw_float

    from .calib import as_model_input

    files = list_images(folder)
    for path in files[:limit] if limit else files:
        lr = as_model_input(to_chw_float(degrade(mod_crop(load_rgb(path), scale), scale)), channels)
        h, w = lr.shape[1] // multiple * multiple, lr.shape[2] // multiple * multiple
        yield path.name, np.ascontiguousarray(lr[None, :, :h, :w])


def verify(checkpoint: str | os.PathLike, model_path: str | os.PathLike, *, images: str | os.PathLike | None = None,
           use_images: bool = True, sizes=None, atol: float | None = None, min_psnr: float | None = None,
           backend: str = "auto", device: str | None = None, ref_device: str = "cpu", seed: int = 0,
           use_ema: bool | None = None, image_limit: int | None = None,
           on_case: Callable[[VerifyReport, Case], None] | None = None) -> VerifyReport:
    """Compare an exported model with the checkpoint's PyTorch model; see the module docstring.

    Args:
        checkpoint: the srdeploy checkpoint the model was exported from.
        model_path: ``.onnx`` or ``.engine``/``.plan`` (opened with ``open_session``).
        images: folder of HR images (default Set5 under ``data_root()``).
        use_images: False skips the real-image cases.
        sizes: (batch, H, W) random-input sizes (default ``DEFAULT_SIZES``).
        atol: max-abs tolerance override; min_psnr: PSNR floor override (dB).
        backend: ``open_session`` backend ("auto" picks from the file).
        device: ``open_session`` device (None = its default for the backend).
        ref_device: torch device of the reference ("cpu" or "cuda").
        seed: random-input seed.
        on_case: called with (report, case) as each case finishes (the CLI prints rows as they come).
        use_ema: reference weights; None = what the model's metadata says it was exported from.
        image_limit: at most this many images.
    """
    import torch

    from srdeploy.runtime.open import open_session

    from .onnx_export import sha256_file

    model_path, checkpoint = Path(model_path), Path(checkpoint)
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: model file does not exist")
    props = _model_props(model_path)
    if use_ema is None:
        use_ema = props.get("srdeploy.weights", "ema") != "state_dict"
    ref_model, ckpt, weights = _reference_model(checkpoint, use_ema, ref_device)
    notes = []
    want_sha = props.get("srdeploy.checkpoint_sha256")
    if want_sha and want_sha != sha256_file(checkpoint):
        notes.append(f"{model_path.name} was exported from a different checkpoint file (sha256 "
                     f"{want_sha[:12]}...); differences below may come from different weights")
    folder = _image_folder(images, use_images)

    with open_session(model_path, backend=backend, device=device) as sess:
        precision = sess.precision
        tol = Tolerance.for_precision(precision, atol=atol, min_psnr=min_psnr)
        if sess.info.scale != int(ref_model.scale):
            raise ValueError(f"{model_path}: scale {sess.info.scale} differs from the checkpoint's "
                             f"{ref_model.scale}; wrong model for this checkpoint")
        report = VerifyReport(model=str(model_path), checkpoint=str(checkpoint), backend=sess.backend,
                              device=sess.device, precision=precision, tolerance=tol,
                              reference=f"PyTorch {ckpt['arch']} unfused FP32 ({weights} weights) on {ref_device}",
                              notes=notes)
        fitted, size_notes = fit_sizes(sizes or DEFAULT_SIZES, sess.input_spec, multiple=sess.info.size_multiple,
                                       minimum=sess.info.min_size)
        report.notes.extend(size_notes)
        channels = sess.info.channels

        def run(name, kind, x):
            with torch.no_grad():
                ref = ref_model(torch.from_numpy(x).to(ref_device)).float().cpu().numpy()
            out = sess.infer(x)
            mx, mean, psnr = compare(out, ref)
            passed, reason = judge(mx, psnr, tol)
            report.cases.append(Case(name, kind, tuple(x.shape), mx, mean, psnr, passed, reason))
            if on_case is not None:
                on_case(report, report.cases[-1])

        rng = np.random.default_rng(seed)
        for b, h, w in fitted:
            run(f"random {b}x{h}x{w}", "random", rng.random((b, channels, h, w), dtype=np.float32))
        cases = real_image_cases(folder, sess.info.scale, image_limit, channels=channels,
                                 multiple=sess.info.size_multiple) if folder is not None else ()
        for name, lr in cases:
            lr, note = fit_image(name, lr, sess.input_spec)
            if note:
                report.notes.append(note)
            if lr is not None:
                run(f"image {name}", "image", lr)
    return report

