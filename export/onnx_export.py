"""ONNX export of a (BN-folded) generator with dynamic batch/height/width and srdeploy metadata.

Small chained steps, each usable alone: ``export_onnx`` (torch -> file) -> ``add_metadata``
(contract into metadata_props) -> ``check_onnx`` (checker + shape inference, symbolic dims).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from srdeploy.runtime.atomic import atomic_target
from srdeploy.runtime.metadata import INPUT_NAME, OUTPUT_NAME, ModelInfo, sha256_file  # noqa: F401 (re-exported)

OPSET = 17  # PixelShuffle exports as DepthToSpace(CRD), supported by ORT and TensorRT 8.6+.
DYNAMIC_AXES = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"}}




def _atomic_save_onnx(model_proto, path: Path) -> None:
    """Save an ONNX model to a temporary file beside ``path``, then rename it over ``path``."""
    import onnx

    with atomic_target(path) as tmp:
        onnx.save(model_proto, str(tmp))


def export_onnx(model, path: str | os.PathLike, *, opset: int = OPSET, sample_size: tuple[int, int] = (32, 32),
                channels: int = 3, fixed: bool = False) -> Path:
    """Export a generator (eval mode, ideally BN-folded) to ONNX with dynamic N, H, W.

    Input ``lr``: float32 (batch, channels, height, width); output ``sr``: float32
    (batch, channels, out_height, out_width). Uses the TorchScript-based exporter (``dynamo=False``):
    it gives a single self-contained file with plain Conv/PRelu/DepthToSpace nodes, and names
    each node after the module it comes from ("/body/body.0/conv1/Conv"), which the FP16
    analysis relies on (``fp16.check_node_mapping`` proves it per export).

    Args:
        model: the generator; it is put in eval mode.
        path: destination; written atomically (temporary file, then rename).
        opset: ONNX opset (default ``OPSET``).
        sample_size: (H, W) of the tracing input; any size works since N, H, W are dynamic.
        channels: image channels (3 RGB, 1 gray).
        fixed: export at exactly 1 x channels x ``sample_size`` (no dynamic axes): for graphs that
            build shapes from Python ints (window attention), which are only right at the traced size.
    """
    import torch

    path = Path(path)
    model = model.eval()
    sample = torch.rand(1, channels, *sample_size)
    with atomic_target(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose (see above); hide its deprecation notice
        # and the tracer's notes about Python values (a fixed-window export expects them).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(model, (sample,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=None if fixed else DYNAMIC_AXES, opset_version=opset, do_constant_folding=True,
                          dynamo=False)
    return path


def add_metadata(path: str | os.PathLike, info: ModelInfo, extra: dict[str, str] | None = None) -> None:
    """Write ``info`` into the ONNX file's metadata_props (replacing srdeploy keys), atomically.

    Args:
        path: the ONNX file (rewritten in place, atomically).
        info: the model contract (see ``srdeploy.runtime.metadata``).
        extra: further string key/values (e.g. ``srdeploy.weights``, ``srdeploy.fp16_analysis``).
    """
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    props = {**info.to_props(), **(extra or {})}
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    _atomic_save_onnx(model, path)


def read_props(path: str | os.PathLike) -> dict[str, str]:
    """All metadata_props of an ONNX file as a dict (FileNotFoundError / ValueError when unreadable)."""
    import onnx

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: ONNX file does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError etc.
        raise ValueError(f"{path}: not a readable ONNX file ({exc})") from exc
    return {p.key: p.value for p in model.metadata_props}


def read_metadata(path: str | os.PathLike) -> ModelInfo:
    """Parse the srdeploy metadata of an ONNX file (MetadataError when missing)."""
    return ModelInfo.from_props(read_props(path), source=str(path))


def check_onnx(path: str | os.PathLike, *, save_shapes: bool = False, fixed: bool = False) -> None:
    """onnx.checker full check + strict shape inference; input and output keep symbolic N, H, W.

    Args:
        path: the ONNX file.
        save_shapes: also store the inferred intermediate shapes (value_info) in the file.
        fixed: the model was exported at one fixed size (``export_onnx(fixed=True)``): its input
            and output dims are all static instead.
    """
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ValueError(f"{path}: ONNX check failed: {exc}") from exc
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ValueError(f"{path}: graph inputs/outputs are {names}, expected [{INPUT_NAME!r}] / [{OUTPUT_NAME!r}]")
    for vi in (model.graph.input[0], model.graph.output[0]):
        dims = vi.type.tensor_type.shape.dim
        symbolic = [d.dim_param for d in dims]
        if fixed:
            if len(dims) != 4 or not all(d.dim_value > 0 for d in dims):
                raise ValueError(f"{path}: {vi.name} dims {[d.dim_param or d.dim_value for d in dims]} are not "
                                 "static, as a fixed-window export must be")
            continue
        if len(dims) != 4 or not (symbolic[0] and symbolic[2] and symbolic[3]):
            raise ValueError(f"{path}: {vi.name} dims {[d.dim_param or d.dim_value for d in dims]} are not "
                             "symbolic batch/height/width")
    if save_shapes:
        _atomic_save_onnx(model, Path(path))


def require_onnxslim():
    """The onnxslim module, or a clear error saying how to install it."""
    try:
        import onnxslim
    except ImportError as exc:
        raise RuntimeError("--simplify needs onnxslim, which is not installed: pip install 'srdeploy[simplify]' "
                           "(or drop --simplify)") from exc
    return onnxslim


def simplify_onnx(path: str | os.PathLike) -> dict:
    """Simplify the graph in place with onnxslim (constant folding, dead-node removal).

    The user asked for it, so a missing onnxslim is an error, never a silent skip. Returns
    node counts before and after.
    """
    import onnx

    onnxslim = require_onnxslim()
    path = Path(path)
    before = onnx.load(str(path))
    slim = onnxslim.slim(before)
    if slim is None:
        raise RuntimeError(f"{path}: onnxslim failed to simplify the model")
    # onnxslim may drop metadata_props and the dynamic names; keep them as they were.
    del slim.metadata_props[:]
    slim.metadata_props.extend(before.metadata_props)
    _atomic_save_onnx(slim, path)
    return {"nodes_before": len(before.graph.node), "nodes_after": len(slim.graph.node)}
