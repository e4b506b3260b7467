"""OpenVINO adapter: srdeploy ONNX models (FP32, INT8 QDQ) and OpenVINO IR (``.xml``) on CPU/GPU/NPU.

The model's contract comes through OpenVINO itself: its ONNX frontend keeps ``metadata_props``
in the model's ``rt_info["framework"]``, and ``ov.save_model`` writes them into the IR, so an IR
made by ``to_openvino_ir`` carries the same keys (neither path needs the ``onnx`` package).

Precision is what is computed, never a silent choice of OpenVINO's:

=============  ==============  ===================================================================
file           precision       OpenVINO setting
=============  ==============  ===================================================================
FP32           None / "fp32"   ``INFERENCE_PRECISION_HINT=f32``: on CPUs with AVX-512 BF16 or AMX
                               OpenVINO's own default is bf16, a downgrade we do not take silently
FP32           "bf16"          ``INFERENCE_PRECISION_HINT=bf16``; an error where the device does
                               not list BF16 in ``OPTIMIZATION_CAPABILITIES``
INT8 (QDQ)     None / "int8"   quantized layers run int8, the float ones f32 (checked after
                               compilation: no int8 layer at all is an error)
FP16           None / "fp16"   ``f16`` hint; an error where the device lacks FP16 compute
=============  ==============  ===================================================================
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..metadata import INPUT_NAME, OUTPUT_NAME, MetadataError, ModelInfo
from ..session import InputSpec, Session
from .options import OpenVinoOptions

SUFFIXES = (".onnx", ".xml")
_RT_KEY = "framework"  # where OpenVINO's ONNX frontend puts metadata_props
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_CAPS = {"bf16": "BF16", "fp16": "FP16", "fp32": "FP32"}
_SOURCE_LINE = re.compile(r"^(Exception from \S+:\d+:?|Check '.*' failed at \S+:\d+:?)$")


def _import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise RuntimeError("the openvino backend needs the openvino package, which is not installed; "
                           "pip install 'srdeploy[openvino]', or use --backend onnxruntime") from exc
    return openvino


def device_name(device: str, available: list[str]) -> str:
    """srdeploy device ("cpu", "gpu", "gpu.1", "npu", or OpenVINO's own name) -> OpenVINO's name.

    Raises RuntimeError when OpenVINO does not report the device (listing the ones it has).
    """
    name = device.strip().upper().replace(":", ".")
    if not name or not name.replace(".", "").replace("_", "").isalnum():
        raise ValueError(f"openvino device must look like cpu, gpu, gpu.1 or npu, got {device!r}")
    base = name.split(".")[0]
    if name not in available and not (name == base and any(a.split(".")[0] == base for a in available)):
        raise RuntimeError(f"openvino: device {device!r} not available; OpenVINO reports "
                           f"{', '.join(a.lower() for a in available) or 'no devices'}")
    return name


def _reason(exc: BaseException) -> str:
    """OpenVINO's message without its source-location lines, on one line.

    OpenVINO exceptions open with "Exception from src/...cpp:84:" and "Check 'false' failed at
    src/...cpp:47:" lines and put the reason after them; the first line alone says nothing.
    """
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [line for line in lines if line and not _SOURCE_LINE.match(line)]
    return f"{type(exc).__name__}: {'; '.join(kept) or '(no message)'}"


def check_weights_inside(path: Path) -> None:
    """Refuse an IR whose ``.bin`` resolves outside the model's folder (a symlink to anywhere).

    The rule ONNX Runtime applies to ONNX external data, and OpenVINO's own ONNX frontend too:
    a model file must not make the runtime read an arbitrary file. OpenVINO reads ``NAME.bin``
    beside ``NAME.xml`` and follows symlinks, so this is checked before it reads anything.

    Args:
        path: the ``.xml`` (other suffixes carry no separate weights file and pass).
    """
    if path.suffix.lower() != ".xml":
        return
    weights = path.with_suffix(".bin")
    if not os.path.lexists(weights):
        return  # OpenVINO says the weights are missing
    folder, target = path.parent.resolve(), weights.resolve()
    if not target.is_relative_to(folder):
        raise ValueError(f"{path}: its weights file {weights.name} resolves to {target}, outside the model's folder "
                         f"{folder}; put the real .bin beside the .xml (model files may not point elsewhere, as "
                         "ONNX Runtime requires of ONNX external data)")


def read_metadata(model, source: str) -> ModelInfo:
    """The srdeploy contract from an ``openvino.Model``'s rt_info (MetadataError when absent)."""
    props: dict[str, str] = {}
    if model.has_rt_info(_RT_KEY):
        props = {k: v.astype(str) for k, v in model.get_rt_info(_RT_KEY).astype(dict).items()}
    return ModelInfo.from_props(props, source=source)


def _check_hint_taken(path: Path, device: str, computed: str, used_hint: str) -> None:
    """The compiled model must run the precision asked for: a plugin that quietly keeps another one
    (bf16 asked, f32 kept) would make a benchmark or ``srdeploy tune`` report the wrong label."""
    expected = _HINTS.get(computed, "f32")  # int8 graphs run their float layers in f32
    if used_hint != expected:
        raise RuntimeError(f"{path}: asked OpenVINO on {device} for {expected} inference but the compiled model "
                           f"reports {used_hint}; choose precision fp32")


class OpenVinoSession(Session):
    """An srdeploy model on OpenVINO.

    Args:
        path: ``.onnx`` (srdeploy export or quantize) or OpenVINO IR ``.xml`` (``.bin`` beside it).
        device: "cpu" (default), or a device OpenVINO reports ("gpu", "gpu.1", "npu").
        precision: None = what the file computes; "fp32", "bf16" (FP32 file, devices with BF16),
            "fp16" (FP16 file) or "int8" (INT8 QDQ file). See the module table.
        threads: CPU inference threads (``INFERENCE_NUM_THREADS``); CPU only.
        backend: "openvino" (``open_session`` passes the table's name).
        options: ``OpenVinoOptions`` (``srdeploy.runtime.backends.options``).
    """

    backend = "openvino"

    def __init__(self, path: str | os.PathLike, *, backend: str = "openvino", device: str = "cpu",
                 precision: str | None = None, threads: int | None = None,
                 options: OpenVinoOptions | None = None) -> None:
        super().__init__()
        ov = _import_openvino()
        path = Path(path)
        options = options or OpenVinoOptions()
        if backend != "openvino":
            raise ValueError(f"OpenVinoSession opens the openvino backend, not {backend!r}")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model file does not exist")
        if path.suffix.lower() not in SUFFIXES:
            raise ValueError(f"{path}: the openvino backend opens .onnx or OpenVINO IR .xml files")
        core = ov.Core()
        name = device_name(device, core.available_devices)
        is_cpu = name.split(".")[0] == "CPU"
        if threads is not None and (threads < 1 or not is_cpu):
            raise ValueError(f"threads must be >= 1 and applies to the CPU only (device {device!r}, threads {threads})")
        check_weights_inside(path)
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
            raise ValueError(f"{path}: OpenVINO cannot read this model ({_reason(exc)}); re-export it with "
                             "`srdeploy export`") from exc
        self.info = read_metadata(model, str(path))
        self._check_io(model, path)

        caps = list(core.get_property(name, "OPTIMIZATION_CAPABILITIES"))
        file_precision = self.info.precision
        computed = self._choose_precision(path, file_precision, precision, caps, name)
        config: dict = {"PERFORMANCE_HINT": options.performance_hint}
        if computed in _HINTS:
            config["INFERENCE_PRECISION_HINT"] = _HINTS[computed]
        else:  # int8: quantized layers are int8 by the graph; the float ones must stay f32
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        if options.num_streams is not None:
            config["NUM_STREAMS"] = options.num_streams
        if options.cache_dir:
            config["CACHE_DIR"] = str(options.cache_dir)
        try:
            self._compiled = core.compile_model(model, name, config)
        except Exception as exc:
            raise RuntimeError(f"{path}: OpenVINO cannot compile this model for {name} ({_reason(exc)})") from exc
        used_hint = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        _check_hint_taken(path, name, computed, used_hint)
        int8_layers = self._int8_layers()
        if computed == "int8" and int8_layers == 0:
            raise RuntimeError(f"{path}: OpenVINO on {name} runs no layer in int8; the INT8 model would run "
                               "as float here. Use --backend onnxruntime or the FP32 model")
        if computed != "int8" and int8_layers:
            raise ValueError(f"{path}: metadata says {file_precision} but OpenVINO runs {int8_layers} convolution(s) "
                             "in int8 (a quantized graph); quantize with `srdeploy quantize`, which records int8")
        self._request = self._compiled.create_infer_request()
        self.precision = computed
        self.device = name.lower()
        self.path = path

        dims = model.inputs[0].get_partial_shape()

        def rng(d) -> tuple[int, int | None]:
            return (d.get_length(), d.get_length()) if d.is_static else (1, None)

        channels = dims[1].get_length() if dims.rank.get_length() == 4 and dims[1].is_static else 3
        self.input_spec = InputSpec(channels=channels, batch=rng(dims[0]), height=rng(dims[2]), width=rng(dims[3]))
        self.details = {
            "openvino_version": ov.get_version(),
            "device_name": str(core.get_property(name, "FULL_DEVICE_NAME")),
            "optimization_capabilities": caps,
            "inference_precision": used_hint,
            "int8_layers": int8_layers,
            "threads": threads,
            "options": asdict(options),
            "model": str(path),
        }

    @staticmethod
    def _check_io(model, path: Path) -> None:
        ins = [i.get_any_name() for i in model.inputs]
        outs = [o.get_any_name() for o in model.outputs]
        if ins != [INPUT_NAME] or outs != [OUTPUT_NAME]:
            raise ValueError(f"{path}: expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}, got "
                             f"{ins} -> {outs}; re-export it with `srdeploy export`")
        if model.inputs[0].get_element_type().get_type_name() != "f32":
            raise ValueError(f"{path}: model input must be float32, got {model.inputs[0].get_element_type()}")

    @staticmethod
    def _choose_precision(path: Path, file_precision: str, requested: str | None, caps: list[str],
                          name: str) -> str:
        if requested not in (None, "fp32", "fp16", "bf16", "int8"):
            raise ValueError(f"precision must be fp32, fp16, bf16 or int8, got {requested!r}")
        wanted = requested or file_precision
        if file_precision == "int8":
            if wanted != "int8":
                raise ValueError(f"{path}: an INT8 model; precision {requested!r} would need the FP32 model it was "
                                 "quantized from")
            return "int8"
        if wanted == "int8":
            raise ValueError(f"{path}: a {file_precision} model; make an INT8 one with "
                             "`srdeploy quantize MODEL.onnx -o MODEL_int8.onnx`")
        if file_precision == "fp16" and wanted != "fp16":
            raise ValueError(f"{path}: an FP16 model; use the FP32 model for precision {wanted!r}")
        if file_precision == "fp32" and wanted == "fp16":
            raise ValueError(f"{path}: an FP32 model; export the FP16 variant (srdeploy export --fp16) for fp16")
        if _CAPS[wanted] not in caps:
            hint = " (a CPU needs AVX-512 BF16 or AMX)" if wanted == "bf16" else ""
            raise RuntimeError(f"{path}: precision {wanted} is not supported by OpenVINO on {name}{hint}: it "
                               f"reports {', '.join(caps)}; choose precision fp32")
        return wanted

    def _int8_layers(self) -> int:
        """Convolutions that OpenVINO actually runs in int8 (from the compiled runtime graph)."""
        count = 0
        for op in self._compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()  # layerType / runtimePrecision: what the plugin executes
            if rt["layerType"].astype(str) == "Convolution" and rt["runtimePrecision"].astype(str) in ("i8", "u8"):
                count += 1
        return count

    def _infer(self, x: np.ndarray) -> np.ndarray:
        result = self._request.infer({0: x})
        return np.asarray(result[0], dtype=np.float32)

    def close(self) -> None:
        self._request = None
        self._compiled = None
        super().close()


def to_openvino_ir(onnx_path: str | os.PathLike, xml_path: str | os.PathLike) -> Path:
    """Convert an srdeploy ONNX model to OpenVINO IR (``.xml`` + ``.bin``), metadata kept.

    Weights keep their precision: ``ov.save_model`` would otherwise compress FP32 weights to
    FP16 (its default), which would change an FP32 model's numbers behind the precision label.
    The two files are written beside each other under temporary names and renamed, ``.bin``
    first, so a reader never sees an ``.xml`` without its weights.
    """
    ov = _import_openvino()
    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    if xml_path.suffix.lower() != ".xml":
        raise ValueError(f"{xml_path}: an OpenVINO IR file name must end in .xml")
    model = ov.Core().read_model(str(onnx_path))
    read_metadata(model, str(onnx_path))  # refuse a model without the srdeploy contract
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    # a name of this call's own: two conversions to one IR must not write into each other's files
    tmp_xml = xml_path.with_name(f".{xml_path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp.xml")
    try:
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        os.replace(tmp_xml.with_suffix(".bin"), xml_path.with_suffix(".bin"))
        os.replace(tmp_xml, xml_path)
    finally:
        tmp_xml.unlink(missing_ok=True)
        tmp_xml.with_suffix(".bin").unlink(missing_ok=True)
    return xml_path


__all__ = ["OpenVinoOptions", "OpenVinoSession", "MetadataError", "device_name", "read_metadata", "to_openvino_ir"]
