"""ONNX export of a (BN-folded) generator with dynamic batch/height/width and srdeploy metadata.

Small chained steps, each usable alone: ``export_onnx`` (torch -> file) -> ``add_metadata``
(contract into metadata_props) -> ``check_onnx`` (checker + shape inference, symbolic dims).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from srdeploy.runtime.metadata import INPUT_NAME, OUTPUT_NAME, ModelInfo

OPSET = 17  # PixelShuffle exports as DepthToSpace(CRD), supported by ORT and TensorRT 8.6+.
DYNAMIC_AXES = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"}}


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_save_onnx(model_proto, path: Path) -> None:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(model_proto, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def export_onnx(model, path: str | os.PathLike, *, opset: int = OPSET, sample_size: tuple[int, int] = (32, 32)) -> Path:
    """Export a generator (eval mode, ideally BN-folded) to ONNX with dynamic N, H, W.

    Input ``lr``: float32 (batch, 3, height, width); output ``sr``: float32
    (batch, 3, out_height, out_width). Uses the TorchScript-based exporter (``dynamo=False``):
    it gives a single self-contained file with plain Conv/PRelu/DepthToSpace nodes.
    """
    import torch

    path = Path(path)
    model = model.eval()
    sample = torch.rand(1, 3, *sample_size)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if path.parent.exists() else None)
    os.close(fd)
    try:
        with torch.no_grad():
            torch.onnx.export(model, (sample,), tmp, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=DYNAMIC_AXES, opset_version=opset, do_constant_folding=True,
                              dynamo=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def add_metadata(path: str | os.PathLike, info: ModelInfo) -> None:
    """Write ``info`` into the ONNX file's metadata_props (replacing srdeploy keys), atomically."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    props = info.to_props()
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    _atomic_save_onnx(model, path)


def read_metadata(path: str | os.PathLike) -> ModelInfo:
    """Parse the srdeploy metadata of an ONNX file (MetadataError when missing)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return ModelInfo.from_props({p.key: p.value for p in model.metadata_props}, source=str(path))


def check_onnx(path: str | os.PathLike) -> None:
    """onnx.checker full check + shape inference; the input must keep symbolic N, H, W."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    symbolic = [d.dim_param for d in dims]
    if not (symbolic[0] and symbolic[2] and symbolic[3]):
        raise ValueError(f"{path}: input dims {symbolic} are not symbolic batch/height/width")
