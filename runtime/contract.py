"""A model's metadata checked against the model itself, when it opens.

``ModelInfo.from_props`` refuses values outside their sane ranges (scale 1..16, radius
0..1024, finite value ranges). What remains is whether the graph agrees with the claims, and a
wrong claim costs dearly later: a scale the graph does not have fails only after a whole image's
inference, a receptive radius far beyond the graph's becomes a huge tile margin (13x slower at
5x the memory for 10**9, before the range check). ``check_contract(session)`` runs right after
a backend opens the file (``open_session``) and raises ``MetadataError`` naming the file:

* **ONNX graphs** are walked node by node (``receptive_bound``, no inference): the spatial factor
  of the output must equal ``scale``, and the claimed radius must not exceed the graph's own
  receptive field.
* **Otherwise** (a graph with an operator whose reach is not known here, such as Resize, global
  pooling or attention; OpenVINO IR; checkpoints): one probe inference on the smallest input the
  session accepts (16 x 16 where it may choose; skipped for fixed inputs larger than 64 x 64)
  must return ``scale`` times the input's height and width, and the same channel count. The
  radius then has only its range check.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .metadata import KEY_RADIUS, KEY_SCALE, MetadataError

PROBE = 16          # probe side where the session lets us choose
MAX_FIXED_PROBE = 64  # fixed-size inputs up to this side are probed too

# Operators that neither move pixels nor change the spatial scale (activation inputs only).
_POINTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "PRelu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Identity",
              "Elu", "Selu", "HardSigmoid", "HardSwish", "Gelu", "Mish", "Softplus", "BatchNormalization",
              "Dropout", "Pow", "Sqrt", "Max", "Min", "QuantizeLinear", "DequantizeLinear", "Round", "Abs", "Neg",
              "Exp", "Where", "Concat", "Cast", "Erf", "Sum", "Mean"}
_WINDOWED = {"Conv", "MaxPool", "AveragePool", "LpPool"}


def _reach(node, inits: dict, producers: dict) -> tuple[float, int] | None:
    """(pixels reached on either side at the node's input resolution, stride) of a windowed node."""
    from .budget import weight_dims

    a = node.attrs
    kernel = tuple(a.get("kernel_shape") or ())
    if not kernel and node.op == "Conv":
        dims = weight_dims(node.inputs[1], inits, producers)
        kernel = tuple(dims[2:]) if dims else ()
    if not kernel:
        return None
    dil = tuple(a.get("dilations") or ()) or (1,) * len(kernel)
    pads = tuple(a.get("pads") or ())
    reach = 0.0
    for i, (k, d) in enumerate(zip(kernel, dil)):
        span = (k - 1) * d
        # explicit pads put the window at [-begin, span - begin] around the output pixel's origin;
        # without them (auto_pad) the whole span is the bound
        reach = max(reach, max(pads[i], span - pads[i]) if len(pads) == 2 * len(kernel) else span)
    return reach, max(tuple(a.get("strides") or ()) or (1,))


def receptive_bound(data: bytes) -> tuple[float, float] | None:
    """(receptive radius bound in input pixels, spatial factor of the output) of a serialized ONNX
    model, or None when the graph has an operator whose reach is not known here.

    Each activation tensor carries how far (in input pixels) its values can depend on, and its
    spatial factor (1 before the upsampler, 2 after a 2x pixel shuffle, ...). A window of reach
    ``r`` pixels at factor ``f`` adds ``r / f`` input pixels; a pixel shuffle adds at most one
    coarse pixel (its rounding). The result is an upper bound: exact for plain SRResNet-style
    graphs up to those roundings.

    Args:
        data: the ``.onnx`` file's bytes.
    """
    from .budget import ProfileError, _read_graph

    try:
        nodes, inits, _values, ins, outs = _read_graph(data)
    except (ProfileError, IndexError, UnicodeDecodeError):
        return None
    state = {n: (0.0, 1.0) for n in ins if n not in inits}
    producers = {o: node for node in nodes for o in node.outputs}
    for node in nodes:
        acts = [t for t in node.inputs if t in state]
        if not acts:
            continue  # constants, weights and their quantization
        r, f = max(state[t][0] for t in acts), state[acts[0]][1]
        if node.op in _WINDOWED:
            reach = _reach(node, inits, producers)
            if reach is None:
                return None
            r, f = r + (reach[0] + reach[1] - 1) / f, f / reach[1]
        elif node.op == "ConvTranspose":
            reach = _reach(node, inits, producers)
            if reach is None:
                return None
            r, f = r + (reach[0] / reach[1] + 1) / f, f * reach[1]
        elif node.op in ("DepthToSpace", "SpaceToDepth"):
            b = node.attrs.get("blocksize") or 1
            r, f = r + (1 if node.op == "DepthToSpace" else b) / f, f * b if node.op == "DepthToSpace" else f / b
        elif node.op not in _POINTWISE:
            return None
        for t in node.outputs:
            state[t] = (r, f)
    reached = [state[t] for t in outs if t in state]
    if not reached:
        return None
    return max(r for r, _ in reached), reached[0][1]


def _probe_shape(spec) -> tuple[int, int, int, int] | None:
    """The smallest input the session accepts, near PROBE x PROBE; None when only large fixed sizes fit."""
    def side(lo: int, hi: int | None) -> int | None:
        v = max(lo, PROBE) if hi is None else min(max(lo, PROBE), hi)
        return v if v <= MAX_FIXED_PROBE or hi is None else None

    h, w = side(*spec.height), side(*spec.width)
    if h is None or w is None:
        return None
    return spec.batch[0], spec.channels, h, w


def _probe(session, info, source: str) -> None:
    """One inference on the smallest input the session takes; its output must be ``scale`` times larger."""
    shape = _probe_shape(session.input_spec)
    if shape is None:
        return
    lo, hi = info.input_range
    y = session._infer(np.full(shape, (lo + hi) / 2, np.float32))
    n, c, h, w = shape
    if y.ndim != 4 or y.shape[:2] != (n, c) or y.shape[2:] != (h * info.scale, w * info.scale):
        got = "x".join(map(str, y.shape))
        ratio = f" (x{y.shape[2] / h:g})" if y.ndim == 4 else ""
        raise MetadataError(f"{source}: metadata {KEY_SCALE}={info.scale} but the model turns a {n}x{c}x{h}x{w} "
                            f"input into {got}{ratio}; the metadata does not describe this graph: re-export the "
                            "model")


def check_contract(session) -> None:
    """Check an open session's ``info`` against its model (see module doc); MetadataError naming the file.

    ONNX files are checked on their graph (scale and radius) where ``receptive_bound`` can read
    it, else by a probe inference. Other files (OpenVINO IR, checkpoints) get the probe, except
    TensorRT engines: their sidecar was checked against the ONNX file when the engine was built,
    and a probe would size the engine's device buffers before the first real call; a wrong scale
    there is caught by ``Session.infer`` on the first call.

    Args:
        session: an open ``Session`` (its ``path``, where it has one, names the file).
    """
    info = session.info
    path = getattr(session, "path", None)
    source = str(path or session.backend)
    found = None
    if path is not None and Path(path).suffix.lower() == ".onnx":
        found = receptive_bound(Path(path).read_bytes())
    if found is None:
        if session.backend != "tensorrt":
            _probe(session, info, source)
        return
    bound, factor = math.ceil(found[0]), found[1]
    if factor != info.scale:
        raise MetadataError(f"{source}: metadata {KEY_SCALE}={info.scale} but the graph scales by x{factor:g}; the "
                            "metadata does not describe this graph: re-export the model")
    if info.receptive_radius > bound:
        raise MetadataError(f"{source}: metadata {KEY_RADIUS}={info.receptive_radius} exceeds the graph's own "
                            f"receptive field (at most {bound} LR pixels); the metadata does not describe this "
                            "graph: re-export the model")
