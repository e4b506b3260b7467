"""Static INT8 quantization (QDQ) of an srdeploy FP32 ONNX model, accuracy-aware.

Recipe (chosen by measurement on the bundled SRResNet x4, 2 threads, AVX-512 VNNI CPU; figures
in docs/benchmarks.md "INT8 recipe"; the recipe's reasons in docs/edge.md "Why this recipe"):

* ONNX Runtime's ``quantize_static`` in QDQ format, so one file runs on ONNX Runtime, OpenVINO
  (int8 brgconv) and TensorRT's explicit quantization.
* Only convolution *inputs* are quantized (weights int8 symmetric per output channel,
  activations uint8 asymmetric per tensor); convolution outputs, the residual stream, PReLU and
  the output image stay float. Quantizing every tensor (all ops, int8 symmetric) ran 4.4x FP32 on
  OpenVINO but lost 0.15 dB on Set5 even with every convolution kept float afterwards (the
  rounded residual stream and the output image carry the loss); inputs only: 2.7x, 0.047 dB.
* The model input is quantized exactly: it comes from 8-bit pixels, so uint8 with scale
  (hi - lo) / 255 and zero point 0 represents every input value (calibration would clip the
  brightest pixels and halve the steps with a symmetric range).
* Calibration on LR crops of training images (HR crop -> MATLAB-style bicubic LR, as training
  makes them), default 64 crops of 64x64 LR pixels from the training folders under the data
  root. Method ``percentile`` (99.999th) by default: ``minmax`` lost 0.24 dB against 0.15 dB for
  percentile (all tensors quantized); ``entropy`` gave minmax's ranges here at twice the time.
* Accuracy-aware: the Y-PSNR loss against the FP32 model is measured on validation folders
  (default Set5 + Set14, the ``srdeploy eval`` protocol through the runtime). While the loss of
  any folder exceeds ``max_loss`` (0.05 dB), the most sensitive convolutions are kept in float.
  Sensitivity of a conv = how much closer the INT8 output gets to the FP32 output on probe
  crops (training images, not validation) when that conv alone is left in float.

``target="tensorrt"`` (``srdeploy quantize --target tensorrt``) writes what TensorRT's explicit
quantization parses (``export/int8_trt.py``): int8 symmetric activations and weights (every zero
point 0), float biases (no int32 bias DequantizeLinear), and the model input centred so all 256
pixel levels stay exact in int8. Same calibration, same accuracy-aware loop, loss measured on the
CPU through ONNX Runtime; default ``max_loss`` 0.1 dB (symmetric ranges spend half their codes on
the small negative side of PReLU outputs, so the CPU recipe's 0.05 dB would keep more layers float).

Ranges are computed once (ONNX Runtime's calibration cache) and reused for every candidate, so
each trial only re-writes the graph.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from .calib import calibration_crops

METHODS = ("minmax", "entropy", "percentile")
#: ``--target``: the runtime the QDQ file is written for, and its default ``--max-loss`` (dB).
TARGETS = {"cpu": 0.05, "tensorrt": 0.1}
_SCHEMES = {
    "cpu": "QDQ on convolution inputs: int8 symmetric per-channel weights, uint8 asymmetric per-tensor "
           "activations, model input exact (scale 1/255)",
    "tensorrt": "QDQ on convolution inputs for TensorRT: int8 symmetric per-channel weights, int8 symmetric "
                "per-tensor activations (zero points 0), float biases, model input centred by 128/255 and "
                "exact in int8 (scale 1/255)",
}
DEFAULT_PERCENTILE = 99.999
# Ops that make a model already quantized: re-quantizing would stack a second set of scales.
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger",
              "QLinearMatMul", "DynamicQuantizeLinear"}
KEY_INT8 = "srdeploy.int8"  # JSON: calibration set, method, float nodes, measured loss


class QuantizeError(ValueError):
    """Bad input to the quantizer (one line naming the file and what to do)."""


@dataclass(frozen=True)
class QuantizeConfig:
    """What ``quantize_model`` does.

    Attributes:
        calib: folders of HR training-style images; LR crops are made from them. Empty = the
            training folders under the data root (``data_root()/train/*``).
        calib_images: number of LR calibration crops.
        crop: LR crop side in pixels (all crops one size: the histogram methods need it).
        method: "minmax", "entropy" or "percentile".
        percentile: the percentile of |x| kept by ``percentile`` calibration.
        exclude: ONNX node names kept in float from the start (``--exclude``).
        max_loss: largest Y-PSNR loss (dB) allowed on any validation folder (None = the target's
            default, ``TARGETS``).
        target: "cpu" (ONNX Runtime / OpenVINO: uint8 activations) or "tensorrt" (symmetric int8).
        val: validation folders of HR images; empty = Set5 and Set14 under the data root.
        probe_images: calibration crops also used to rank layer sensitivity.
        threads: CPU threads for calibration and measurement (None = ONNX Runtime's default).
        seed: crop sampling seed.
        speed_size: side of the input for the closing speed check (0 = skip it).
    """

    calib: tuple[str, ...] = ()
    calib_images: int = 64
    crop: int = 64
    method: str = "percentile"
    percentile: float = DEFAULT_PERCENTILE
    exclude: tuple[str, ...] = ()
    max_loss: float | None = None
    val: tuple[str, ...] = ()
    probe_images: int = 8
    threads: int | None = None
    seed: int = 0
    speed_size: int = 128
    target: str = "cpu"

    @property
    def loss_limit(self) -> float:
        """``max_loss``, or the target's default."""
        return TARGETS.get(self.target, 0.05) if self.max_loss is None else self.max_loss


@dataclass
class QuantizeReport:
    """What ``quantize_model`` did and measured (also stored, compactly, in the model metadata)."""

    source: str
    output: str
    method: str
    calibration: dict
    float_nodes: list[str]
    fp32_psnr: dict[str, float]
    int8_psnr: dict[str, float]
    loss_db: dict[str, float]
    max_loss: float
    target: str = "cpu"
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    trials: list[dict] = field(default_factory=list)
    speed: dict = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- inputs

def check_source(path: str | os.PathLike):
    """Load an srdeploy FP32 ONNX model; QuantizeError for a non-srdeploy or already-quantized file.

    Returns ``(onnx.ModelProto, ModelInfo)``.
    """
    import onnx

    from srdeploy.runtime.metadata import MetadataError, ModelInfo

    path = Path(path)
    if not path.is_file():
        raise QuantizeError(f"{path}: model file does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise QuantizeError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    try:
        info = ModelInfo.from_props({p.key: p.value for p in model.metadata_props}, source=str(path))
    except MetadataError as exc:
        raise QuantizeError(str(exc)) from exc
    quant_ops = sorted({n.op_type for n in model.graph.node} & _QUANT_OPS)
    if info.precision == "int8" or quant_ops:
        raise QuantizeError(f"{path}: already quantized (precision {info.precision}, ops {quant_ops or 'none'}); "
                            "quantize the FP32 model it came from")
    if info.precision != "fp32":
        raise QuantizeError(f"{path}: precision {info.precision}; quantize the FP32 ONNX model "
                            "(srdeploy export without --fp16)")
    return model, info


def default_calib_folders() -> list[Path]:
    """The training folders under the data root (``data_root()/train/*`` holding images)."""
    from srdeploy.train.data import data_root

    root = data_root() / "train"
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not folders:
        raise QuantizeError(f"{root}: no training folders for INT8 calibration; pass --calib DIR "
                            "(HR images like the training set) or set SRDEPLOY_DATA")
    return folders


def default_val_folders() -> list[Path]:
    """Set5 and Set14 under the data root (the eval protocol's benchmark sets)."""
    from srdeploy.train.data import data_root

    folders = [data_root() / "benchmark" / s for s in ("Set5", "Set14")]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise QuantizeError(f"{', '.join(missing)}: validation folders not found; pass --val DIR or set SRDEPLOY_DATA")
    return folders


# ----------------------------------------------------------------------------- quantize one graph

class _Reader:
    """ONNX Runtime CalibrationDataReader over a list of inputs (a fresh one per use); ``bar`` (a
    progress bar) counts the inputs handed out, which is calibration's progress."""

    def __init__(self, inputs: list[np.ndarray], name: str, bar=None):
        self._it = iter(inputs)
        self._name = name
        self._bar = bar

    def get_next(self):
        x = next(self._it, None)
        if x is not None and self._bar is not None:
            self._bar.update(1)
        return None if x is None else {self._name: x}

    def __len__(self) -> int:  # pragma: no cover - used by strided calibration only
        return 0


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def quantize_qdq(src: str | os.PathLike, dst: str | os.PathLike, *, calib: list[np.ndarray] | None,
                 cache: str | os.PathLike, method: str = "percentile", percentile: float = DEFAULT_PERCENTILE,
                 exclude=(), input_range: tuple[float, float] = (0.0, 1.0), target: str = "cpu",
                 progress: bool = False) -> None:
    """Write the QDQ INT8 model of ``src`` to ``dst`` (ranges from ``cache``, computed if missing).

    Args:
        src: the FP32 ONNX file (for ``target="tensorrt"``: after ``int8_trt.center_input``).
        dst: where to write (not atomic: ``quantize_model`` writes into a temp folder).
        calib: calibration inputs (needed when ``cache`` does not exist yet).
        cache: ONNX Runtime calibration cache (JSON); reused so trials skip calibration.
        method: calibration method.
        percentile: for ``percentile``.
        exclude: node names left in float.
        input_range: the model input's range (metadata); quantized exactly as 8-bit pixels.
        target: "cpu" or "tensorrt" (``TARGETS``).
        progress: a bar over the calibration inputs (on stderr).
    """
    import contextlib
    import io
    import logging

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from srdeploy.runtime.metadata import INPUT_NAME
    from srdeploy.runtime.progress import progress_bar

    lo, hi = input_range
    if lo != 0:
        raise QuantizeError(f"{src}: input range {input_range}: the exact 8-bit input quantization assumes a range "
                            "starting at 0")
    activations, extra = _recipe(target, (hi - lo) / 255)
    if method == "percentile":
        extra["CalibPercentile"] = float(percentile)
    # quantize_static logs a "consider pre-processing" warning on every call: our graphs come
    # from srdeploy export (shape-inferred, constant-folded), so the advice does not apply.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    bar = progress_bar(total=len(calib or ()), unit="crop", desc="quantize: calibrating", leave=False,
                       enabled=progress and calib is not None)
    reader = _Reader(calib, INPUT_NAME, bar) if calib is not None else None
    try:
        # ONNX Runtime's calibrators print() their steps ("Collecting tensor data and making
        # histogram ...") to stdout, where the command's result lines go, even with -q.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            op_types_to_quantize=["Conv"], activation_type=activations, weight_type=QuantType.QInt8,
                            calibrate_method=_method(method), nodes_to_exclude=list(exclude), extra_options=extra,
                            calibration_cache_path=str(cache))
    finally:
        bar.close()
        root.setLevel(level)


def _recipe(target: str, step: float):
    """(activation QuantType, quantize_static extra options) of a target; ``step`` = input step."""
    from onnxruntime.quantization import QuantType

    from srdeploy.runtime.metadata import INPUT_NAME

    from .int8_trt import CENTERED

    # conv inputs only: outputs, residual adds, PReLU and the image stay float
    extra = {"WeightSymmetric": True, "OpTypesToExcludeOutputQuantization": ["Conv"]}
    if target == "tensorrt":  # symmetric int8 everywhere, biases float: what TensorRT parses
        exact = {"quant_type": QuantType.QInt8, "scale": np.array(step, dtype=np.float32),
                 "zero_point": np.array(0, dtype=np.int8)}
        return QuantType.QInt8, {**extra, "ActivationSymmetric": True, "QuantizeBias": False,
                                 "TensorQuantOverrides": {CENTERED: [exact]}}
    exact = {"quant_type": QuantType.QUInt8, "scale": np.array(step, dtype=np.float32),
             "zero_point": np.array(0, dtype=np.uint8)}
    return QuantType.QUInt8, {**extra, "ActivationSymmetric": False, "TensorQuantOverrides": {INPUT_NAME: [exact]}}


def _ort_session(path, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ORT warns about the two unused Clip constants in every QDQ file
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _outputs(path, inputs, threads) -> list[np.ndarray]:
    from srdeploy.runtime.metadata import INPUT_NAME, OUTPUT_NAME

    sess = _ort_session(path, threads)
    return [sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0] for x in inputs]


def _mse(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([np.mean((np.clip(x, 0, 1) - np.clip(y, 0, 1)) ** 2) for x, y in zip(a, b)]))


def conv_sensitivity(src, quantize, *, probe: list[np.ndarray], candidates, exclude=(), threads=None,
                     workdir, progress: bool = False) -> list[tuple[str, float]]:
    """Rank convolutions by what keeping each one in float recovers.

    For each candidate, the model is quantized (``quantize(dst, exclude=...)``, ranges from the
    calibration cache) with that node (plus ``exclude``) left in float and its output compared
    with the FP32 output on ``probe``. The score is the PSNR gain (dB, on [0, 1] outputs) over
    the model with only ``exclude`` in float. Returns ``(node, gain)``, largest gain first.
    ``progress``: a bar over the candidates (on stderr).
    """
    from srdeploy.runtime.progress import progress_bar

    ref = _outputs(src, probe, threads)
    p = Path(workdir) / "sensitivity.onnx"
    quantize(p, exclude=list(exclude))
    base = _mse(_outputs(p, probe, threads), ref)
    scores = []
    for node in progress_bar(candidates, unit="conv", desc="quantize: ranking", leave=False, enabled=progress):
        quantize(p, exclude=[*exclude, node])
        err = _mse(_outputs(p, probe, threads), ref)
        scores.append((node, 10 * math.log10(max(base, 1e-20) / max(err, 1e-20))))
    scores.sort(key=lambda s: -s[1])
    return scores


def measure_speed(fp32: str | os.PathLike, int8: str | os.PathLike, *, threads: int | None, size: int = 128,
                  iters: int = 4, channels: int = 3) -> dict:
    """INT8 vs ONNX Runtime FP32, same run: ORT FP32, ORT INT8 and (when installed) OpenVINO INT8,
    timed in alternating blocks on one size x size input. A first impression; ``srdeploy bench
    --compare`` is the measurement."""
    from srdeploy.runtime.measure import deterministic_input, time_alternating
    from srdeploy.runtime.open import open_session

    x = deterministic_input((1, channels, size, size))
    sessions = {"onnxruntime fp32": open_session(fp32, backend="onnxruntime", threads=threads),
                "onnxruntime int8": open_session(int8, backend="onnxruntime", threads=threads)}
    try:
        import openvino  # noqa: F401

        sessions["openvino int8"] = open_session(int8, backend="openvino", threads=threads)
    except ImportError:
        pass
    try:
        times = time_alternating({k: (lambda s=s: s.infer(x)) for k, s in sessions.items()}, warmup=1, iters=iters)
    finally:
        for s in sessions.values():
            s.close()
    med = {k: float(np.median(v)) for k, v in times.items()}
    base = med["onnxruntime fp32"]
    return {"input": f"1x{channels}x{size}x{size}", "threads": threads, "median_s": med,
            "speedup_vs_ort_fp32": {k: base / v for k, v in med.items() if k != "onnxruntime fp32"}}


# ----------------------------------------------------------------------------- the whole recipe

def _input_sides(model, info, cfg) -> tuple[int, int]:
    """(calibration crop, speed input) sides the model takes: its fixed window when the graph has
    one (a fixed-window export), else ``cfg``'s, rounded up to the model's size multiple."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[2].HasField("dim_value") and dims[3].HasField("dim_value"):
        return dims[2].dim_value, dims[2].dim_value

    from srdeploy.runtime.tiling import fit_size

    return (fit_size(cfg.crop, info.size_multiple, info.min_size),
            fit_size(cfg.speed_size, info.size_multiple, info.min_size))


def _psnr_by_set(path, folders, threads, progress: bool = False) -> dict[str, float]:
    from srdeploy.runtime.open import SessionRecipe
    from srdeploy.runtime.settings import DEFAULT_TILE, RunSettings, TileSettings

    from .runtime_eval import evaluate_model_file

    run = RunSettings(SessionRecipe(str(path), "onnxruntime", threads=threads), TileSettings(tile=DEFAULT_TILE))
    results, _ = evaluate_model_file(run, folders, progress=progress)
    return {r.name: r.psnr for r in results}


def _portable(folder: Path) -> str:
    """A folder for the record: relative to the data root as ``$SRDEPLOY_DATA/...`` when under it, so
    no path of the machine that quantized lands in a shipped model's metadata."""
    from srdeploy.train.data import DATA_ENV, data_root

    try:
        return f"${DATA_ENV}/{Path(folder).resolve().relative_to(data_root().resolve()).as_posix()}"
    except ValueError:
        return str(folder)


def _steps(n: int):
    """Numbers of float layers to try: 0, 1, 2, 3, 4, 6, 8, 12, ... up to n."""
    k, out = 0, []
    while k < n:
        out.append(k)
        k = k + 1 if k < 4 else int(k * 1.5)
    out.append(n)
    return out


def _check_request(src: Path, dst: Path, cfg: QuantizeConfig, overwrite: bool):
    """Validate the request before any work; returns ``check_source(src)``."""
    from srdeploy.runtime.atomic import occupied

    if cfg.method not in METHODS:
        raise QuantizeError(f"--method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.target not in TARGETS:
        raise QuantizeError(f"--target must be one of {', '.join(TARGETS)}, got {cfg.target!r}")
    if not cfg.loss_limit >= 0:
        raise QuantizeError(f"--max-loss must be >= 0 dB, got {cfg.max_loss}")
    model, info = check_source(src)
    if occupied(dst) and not overwrite:  # a dangling symlink counts as an existing output
        raise QuantizeError(f"{dst}: exists; pass --overwrite to replace it")
    if dst.resolve() == src.resolve():
        raise QuantizeError(f"{dst}: is the source model; write the INT8 model to another file")
    unknown = sorted(set(cfg.exclude) - {n.name for n in model.graph.node})
    if unknown:
        raise QuantizeError(f"{src}: --exclude names nodes not in the graph: {unknown}")
    return model, info


def _quantize_source(src: Path, model, info, target: str, tmp: Path) -> Path:
    """The graph the quantizer reads: ``src`` itself, or for TensorRT its centred-input copy."""
    if target != "tensorrt":
        return src
    import onnx

    from srdeploy.runtime.metadata import INPUT_NAME

    from .int8_trt import center_input

    centred = onnx.ModelProto()
    centred.CopyFrom(model)
    try:
        center_input(centred, input_name=INPUT_NAME, step=(info.input_range[1] - info.input_range[0]) / 255)
    except ValueError as exc:
        raise QuantizeError(f"{src}: {exc}") from exc
    path = tmp / "centred.onnx"
    onnx.save(centred, str(path))
    return path


@dataclass
class _Search:
    """The accuracy-aware search: FP32 reference, every trial, the chosen one and the ranking."""

    fp32: dict[str, float]
    best: dict
    trials: list[dict]
    ranking: list[tuple[str, float]]


def _search(src: Path, quantize, trial: Path, *, val: list[Path], probe: list[np.ndarray], convs: list[str],
            cfg: QuantizeConfig, workdir: Path, log, progress: bool = False) -> _Search:
    """Quantize with ``cfg.exclude`` in float; while a validation folder loses more than the limit,
    rank the convolutions by sensitivity and keep 1, 2, 3, 4, 6, ... of the most sensitive float."""
    fp32 = _psnr_by_set(src, val, cfg.threads, progress)
    trials: list[dict] = []

    def measure(float_nodes: list[str]) -> dict:
        quantize(trial, exclude=float_nodes)
        int8 = _psnr_by_set(trial, val, cfg.threads, progress)
        loss = {k: fp32[k] - int8[k] for k in fp32}
        trials.append({"float_nodes": list(float_nodes), "int8_psnr": int8, "loss_db": loss})
        log(f"quantize: {len(float_nodes)} node(s) in float: loss " +  # dB lost: positive = worse
            ", ".join(f"{k} {v:.3f} dB" for k, v in loss.items()))
        return trials[-1]

    limit, exclude = cfg.loss_limit, list(cfg.exclude)
    best = measure(exclude)
    ranking: list[tuple[str, float]] = []
    if max(best["loss_db"].values()) > limit:
        log(f"quantize: loss above {limit} dB; ranking {len(convs)} convolutions by sensitivity")
        ranking = conv_sensitivity(src, quantize, probe=probe, candidates=convs, exclude=exclude,
                                   threads=cfg.threads, workdir=workdir, progress=progress)
        log("quantize: most sensitive: " + ", ".join(f"{n} {g:+.2f} dB" for n, g in ranking[:6]))
        order = [n for n, _ in ranking]
        for k in _steps(len(order))[1:]:
            best = measure(exclude + order[:k])
            if max(best["loss_db"].values()) <= limit:
                break
    if max(best["loss_db"].values()) > limit:
        raise QuantizeError(f"{src}: INT8 loss {max(best['loss_db'].values()):.3f} dB stays above --max-loss "
                            f"{limit} even with {len(best['float_nodes'])} node(s) in float; raise "
                            "--max-loss or ship the FP32/FP16 model")
    return _Search(fp32, best, trials, ranking)


def _with_metadata(quantized: Path, model, out: Path, record: dict) -> None:
    """Write ``quantized`` to ``out`` with the FP32 model's metadata, precision int8 and ``record``."""
    import onnx

    from srdeploy.runtime.metadata import KEY_PRECISION

    q = onnx.load(str(quantized))
    props = {p.key: p.value for p in model.metadata_props}
    props[KEY_PRECISION] = "int8"
    props[KEY_INT8] = json.dumps(record, sort_keys=True)
    del q.metadata_props[:]
    for k, v in props.items():
        q.metadata_props.add(key=k, value=v)
    onnx.save(q, str(out))


def quantize_model(src: str | os.PathLike, dst: str | os.PathLike, cfg: QuantizeConfig = QuantizeConfig(), *,
                   overwrite: bool = False, log=print, progress: bool = False) -> QuantizeReport:
    """Quantize ``src`` (srdeploy FP32 ONNX) to an INT8 QDQ model at ``dst``, accuracy-aware.

    ``log`` gets one line per step; ``progress`` shows bars (stderr) for the long ones:
    calibration, each validation run, the sensitivity ranking.

    Raises QuantizeError (nothing written) for bad input, an existing ``dst`` without
    ``overwrite``, or a loss above ``cfg.loss_limit`` even with every convolution in float.
    """
    import onnx

    from srdeploy.runtime.atomic import atomic_target
    from srdeploy.runtime.metadata import sha256_file

    from .int8_trt import tensorrt_int8_problems

    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    model, info = _check_request(src, dst, cfg, overwrite)
    calib_folders = [Path(f) for f in cfg.calib] or default_calib_folders()
    val_folders = [Path(f) for f in cfg.val] or default_val_folders()
    crop, speed_size = _input_sides(model, info, cfg)
    try:
        crops, _ = calibration_crops(calib_folders, scale=info.scale, count=cfg.calib_images, crop=crop,
                                     seed=cfg.seed, channels=info.channels)
    except ValueError as exc:
        raise QuantizeError(str(exc)) from exc
    convs = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name not in cfg.exclude]

    with tempfile.TemporaryDirectory(prefix="srdeploy-int8-") as tmp:
        tmp = Path(tmp)
        quantize = partial(quantize_qdq, _quantize_source(src, model, info, cfg.target, tmp), calib=None,
                           cache=tmp / "calibration.json", method=cfg.method, percentile=cfg.percentile,
                           input_range=info.input_range, target=cfg.target, progress=progress)
        log(f"quantize: calibrating on {len(crops)} LR crops {crop}x{crop} from "
            f"{', '.join(str(f) for f in calib_folders)} ({cfg.method}, target {cfg.target})")
        quantize(tmp / "int8.onnx", calib=crops, exclude=list(cfg.exclude))  # fills the cache
        found = _search(src, quantize, tmp / "int8.onnx", val=val_folders, probe=crops[:cfg.probe_images],
                        convs=convs, cfg=cfg, workdir=tmp, log=log, progress=progress)
        best = found.best
        # Re-write the chosen model (the last trial may be a different one) with its metadata.
        quantize(tmp / "int8.onnx", exclude=best["float_nodes"])
        problems = tensorrt_int8_problems(onnx.load(str(tmp / "int8.onnx"))) if cfg.target == "tensorrt" else []
        if problems:  # e.g. an onnxruntime whose quantizer ignores QuantizeBias: never ship what TensorRT rejects
            raise QuantizeError(f"{src}: this onnxruntime's quantizer wrote a model TensorRT cannot parse: "
                                f"{'; '.join(problems)}")
        calibration = {"folders": [_portable(f) for f in calib_folders], "images": len(crops), "crop": crop,
                       "scale": info.scale, "seed": cfg.seed, "method": cfg.method,
                       **({"percentile": cfg.percentile} if cfg.method == "percentile" else {})}
        fp32 = found.fp32
        validation = {k: {"fp32_psnr": round(fp32[k], 4), "int8_psnr": round(best["int8_psnr"][k], 4),
                          "loss_db": round(best["loss_db"][k], 4)} for k in fp32}
        final = tmp / "final.onnx"
        _with_metadata(tmp / "int8.onnx", model, final, {
            "scheme": _SCHEMES[cfg.target], "target": cfg.target, "calibration": calibration,
            "float_nodes": best["float_nodes"], "validation": validation, "fp32_sha256": sha256_file(src)})
        report = QuantizeReport(
            source=str(src), output=str(dst), method=cfg.method, calibration=calibration,
            float_nodes=best["float_nodes"], fp32_psnr=fp32, int8_psnr=best["int8_psnr"], loss_db=best["loss_db"],
            max_loss=cfg.loss_limit, target=cfg.target, sensitivity=found.ranking, trials=found.trials)
        # On the final file, before it is published. The ONNX Runtime / OpenVINO CPU speed says
        # nothing about a TensorRT-target file: `srdeploy build-engine` + `bench` measure that.
        if cfg.speed_size and cfg.target == "cpu":
            report.speed = measure_speed(src, final, threads=cfg.threads, size=speed_size, channels=info.channels)
        report.seconds = time.perf_counter() - t0
        with atomic_target(dst, overwrite=overwrite) as tmp_dst:  # never replaces a file made meanwhile
            shutil.copyfile(final, tmp_dst)
    return report
