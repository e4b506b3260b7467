"""Memory budget: predict the peak memory of an upscale and choose the tile size that fits.

The peak resident memory of ``srdeploy upscale`` is a sum of parts that can each be computed
before running anything:

* **Fixed**: the interpreter with numpy, OpenCV and ONNX Runtime loaded, plus the model's
  weights (the model file size). Measured, not modelled (``BASE_BYTES``).
* **Activations**: what the backend allocates for one tile. Every activation tensor of an SR
  network is ``channels x (f * h) x (f * w)`` for an ``h x w`` input window, ``f`` being the
  tensor's scale (1 before the upsampler, 2 after the first pixel shuffle, ...). Walking the
  graph in execution order and freeing each tensor after its last use gives the most floats
  alive at once *per input pixel* (``GraphProfile.peak_elems_per_pixel``); times the window
  area and the element size, that is the activation peak. ONNX Runtime adds its own overhead
  (blocked NCHWc layouts, convolution workspaces, arena rounding): measured as
  ``ORT_ACTIVATION_FACTOR`` with the memory pattern planner off (see ``runtime/budget.py``'s
  constants and docs/runtime.md "Memory"; the measurements are in docs/benchmarks.md "Memory").
* **Image buffers**: the decoded input, the float32 band of output rows the tiler assembles
  (``tile_h * scale`` rows by the full output width), the rows being converted and written, and
  for formats that cannot be written band by band (JPEG, WebP, BMP, PNM through OpenCV) the
  whole output image.

``choose_tile`` then picks the tiling (core height and width chosen separately, so the budget is
filled closely at any image size) with the least compute overhead whose predicted peak fits 90%
of the budget (the rest absorbs the prediction's error): the largest tiles are also the cheapest
in compute (less overlap), so nothing is traded away.

The graph is read straight from the ONNX file's protobuf wire format (a few fields of
ModelProto/GraphProto/NodeProto/TensorProto), so neither the ``onnx`` package nor torch is
needed at run time.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .tiling import axis_cores, axis_window

# Peak RSS of the process before the first tile: Python, numpy, OpenCV, ONNX Runtime and the
# srdeploy CLI imported, session created, excluding the weights. Measured: VmHWM of
# `srdeploy upscale` on a 64x48 image with a 150 kB model is 94 MiB (scripts/bench_memory.py).
BASE_BYTES = 100 << 20
# ONNX Runtime CPU (memory pattern off, arena on) allocates this many times the live activation
# tensors of the graph walk: NCHWc reorders, conv workspaces and arena bins. Fitted on the
# bundled 16-block SRResNet x4 at windows 88..280 (1.30..1.44, scripts/bench_ort_memory.py).
ORT_ACTIVATION_FACTOR = 1.45
# OpenVINO stays below the graph walk (it fuses each convolution with its activation and keeps bf16
# and INT8 tensors in their own precision), so ORT's factor would over-predict by 2-4x and choose
# needlessly small tiles. The largest factor over windows 88..280 on the bundled model, rounded up
# (scripts/bench_activation_factor.py, 2026-12-04: fp32 0.74..0.88, bf16 0.41..0.47, int8 0.34..0.38;
# ONNX Runtime 1.26..1.54 in the same run). Paths not listed (TensorRT, torch) keep ORT's factor.
ACTIVATION_FACTORS = {("openvino", "fp32"): 0.90, ("openvino", "bf16"): 0.50, ("openvino", "int8"): 0.40}
# Rows are converted to the output dtype in chunks of this many elements (Upscaler); a few
# float32 temporaries of that size live at once.
CONVERT_CHUNK_BYTES = 4 * (1 << 20) * 4
# The largest tile worth considering (LR pixels): past it the compute overhead of the margins is
# already below 1.1x with the default margin, and bigger windows only cost memory.
MAX_TILE = 1024
MIN_TILE = 16
# The chooser fills this share of the budget: the rest absorbs the prediction's error
# (measured / predicted peak was 0.99..1.06 in scripts/bench_memory.py runs).
HEADROOM = 0.9

def format_size(n: float) -> str:
    """"612 MiB", "1.25 GiB", "1 KiB", "512 B": for the CLI's first line and messages (a budget
    under a MiB is shown in its own unit, not as "0 MiB")."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.0f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.0f} KiB"
    return f"{n:.0f} B"


def available_ram() -> int | None:
    """MemAvailable from /proc/meminfo (bytes); None where there is no /proc (macOS, Windows)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def gpu_free_memory(device: str) -> int | None:
    """Free memory of a "cuda[:N]" device in bytes; None for the CPU.

    Raises RuntimeError where cuda-python is missing or the call fails: a CUDA session whose
    budget cannot be read needs an explicit --max-memory, not a silent CPU-sized guess.
    """
    if not device.startswith("cuda"):
        return None
    from .backends._cuda import Cuda, import_cudart

    index = int(device.partition(":")[2] or 0)
    try:
        return Cuda(import_cudart("--tile auto on CUDA")).free_memory(index)
    except (ModuleNotFoundError, RuntimeError) as exc:
        raise RuntimeError(f"--tile auto: cannot read the free memory of {device} ({exc}); "
                           "pass --max-memory SIZE or --tile N") from exc


def default_budget(*, gpu_free: int | None = None, avail: int | None = None) -> int:
    """The default ``--max-memory``: 1 GiB or half the available RAM, whichever is smaller.

    On CUDA backends pass the GPU's free memory as ``gpu_free``: activations live there, so
    that is the budget they must fit. ``avail``: the available RAM when the caller has read it
    already (one reading for the budget and a check against it); None reads it here.
    """
    if gpu_free is not None:
        return gpu_free
    avail = available_ram() if avail is None else avail
    return min(1 << 30, avail // 2) if avail else 1 << 30


# --- ONNX graph profile -----------------------------------------------------------------------

class ProfileError(ValueError):
    """The graph has an operator whose output size this module cannot derive."""


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of a protobuf message; value is int or bytes."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            v, i = buf[i:i + ln], i + ln
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ProfileError(f"unsupported protobuf wire type {wt}")
        yield field, wt, v


def _ints(wt: int, v) -> list[int]:
    """A repeated int64 field: packed (bytes) or one varint."""
    if wt == 0:
        return [v if v < 1 << 63 else v - (1 << 64)]
    out, i = [], 0
    while i < len(v):
        x, i = _varint(v, i)
        out.append(x if x < 1 << 63 else x - (1 << 64))
    return out


@dataclass(frozen=True)
class _Node:
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict


def _tensor(buf: bytes) -> tuple[tuple[int, ...], str, tuple[float, ...] | None]:
    """(dims, name, values) of a serialized TensorProto; values only for small float/int64 tensors
    (Resize scales), None otherwise. Fields: dims=1, data_type=2, float_data=4, int64_data=7,
    name=8, raw_data=9."""
    import struct

    dims, name, dtype, floats, ints, raw = [], "", 1, [], [], None
    for tf, twt, tv in _fields(buf):
        if tf == 1:
            dims += _ints(twt, tv)
        elif tf == 2:
            dtype = tv
        elif tf == 4:
            floats += list(struct.unpack(f"<{len(tv) // 4}f", tv)) if twt == 2 else [struct.unpack("<f", tv)[0]]
        elif tf == 7:
            ints += _ints(twt, tv)
        elif tf == 8:
            name = tv.decode()
        elif tf == 9:
            raw = tv
    n = math.prod(dims) if dims else 1
    values = None
    if n <= 16:
        if raw is not None and dtype == 1:
            values = struct.unpack(f"<{len(raw) // 4}f", raw)
        elif raw is not None and dtype == 7:
            values = struct.unpack(f"<{len(raw) // 8}q", raw)
        elif floats or ints:
            values = tuple(floats or ints)
    return tuple(dims), name, (tuple(float(v) for v in values) if values is not None else None)


def _read_graph(data: bytes):
    """(nodes, initializer dims, small constant values, graph input names, graph output names) of a
    serialized ModelProto."""
    graph = next((v for f, wt, v in _fields(data) if f == 7 and wt == 2), None)  # ModelProto.graph
    if graph is None:
        raise ProfileError("no graph in the file")
    nodes, inits, values, ins, outs = [], {}, {}, [], []
    for f, wt, v in _fields(graph):
        if f == 1:  # NodeProto
            inputs, outputs, op, attrs = [], [], "", {}
            for nf, nwt, nv in _fields(v):
                if nf == 1:
                    inputs.append(nv.decode())
                elif nf == 2:
                    outputs.append(nv.decode())
                elif nf == 4:
                    op = nv.decode()
                elif nf == 5:  # AttributeProto: name=1, i=3, t=5, ints=8
                    name, ival, ints, tensor = "", None, [], None
                    for af, awt, av in _fields(nv):
                        if af == 1:
                            name = av.decode()
                        elif af == 3:
                            ival = _ints(awt, av)[0]
                        elif af == 5:
                            tensor = _tensor(av)[2]
                        elif af == 8:
                            ints += _ints(awt, av)
                    attrs[name] = ival if ival is not None else tensor if tensor is not None else tuple(ints)
            nodes.append(_Node(op, tuple(inputs), tuple(outputs), attrs))
            if op == "Constant" and isinstance(attrs.get("value"), tuple) and outputs:
                values[outputs[0]] = attrs["value"]
        elif f == 5:  # TensorProto initializer
            dims, name, vals = _tensor(v)
            inits[name] = dims
            if vals is not None:
                values[name] = vals
        elif f in (11, 12):  # ValueInfoProto: name=1
            name = next((nv.decode() for nf, _, nv in _fields(v) if nf == 1), "")
            (ins if f == 11 else outs).append(name)
    return nodes, inits, values, ins, outs


# Nodes a weight passes through between its initializer and the Conv that uses it: a QDQ (INT8)
# model stores int8 weights and dequantizes them in the graph.
_WEIGHT_PATH = {"DequantizeLinear", "QuantizeLinear", "Identity", "Cast"}


def weight_dims(name: str, inits: dict[str, tuple[int, ...]], producers: dict) -> tuple[int, ...] | None:
    """Dims of a weight tensor: an initializer, or one reached back through DequantizeLinear/Cast/Identity.

    Args:
        name: the tensor (a Conv's second input).
        inits: initializer dims by name (``_read_graph``).
        producers: the node producing each tensor, by output name.
    """
    for _ in range(8):  # a weight is at most a few nodes from its initializer
        if name in inits:
            return inits[name]
        node = producers.get(name)
        if node is None or node.op not in _WEIGHT_PATH or not node.inputs:
            return None
        name = node.inputs[0]
    return None


# Operators whose output has the shape of their first activation input.
_SAME_SHAPE = {"Add", "Sub", "Mul", "Div", "Relu", "PRelu", "LeakyRelu", "Clip", "Sigmoid", "Tanh",
               "Identity", "Elu", "Selu", "HardSigmoid", "HardSwish", "Gelu", "Mish", "Softplus",
               "BatchNormalization", "InstanceNormalization", "Dropout", "Pow", "Sqrt", "Max", "Min",
               "QuantizeLinear", "DequantizeLinear", "Round", "Abs", "Neg", "Exp", "Where"}
_ELEM_SIZE = {1: 4, 10: 2, 11: 8, 16: 2, 2: 1, 3: 1, 6: 4, 7: 8}  # TensorProto.DataType -> bytes


@dataclass(frozen=True)
class GraphProfile:
    """What an SR graph's activations cost per input pixel.

    Attributes:
        peak_bytes_per_pixel: the most activation bytes alive at once (graph walk, each tensor
            freed after its last use), per LR pixel of the input window.
        peak_op: the node where that peak occurs (for messages).
        source: the model file.
    """

    peak_bytes_per_pixel: float
    peak_op: str
    source: str = ""

    def activation_bytes(self, window_h: int, window_w: int, *, factor: float = ORT_ACTIVATION_FACTOR) -> int:
        """Predicted backend activation memory for one ``window_h x window_w`` input tile."""
        return int(factor * self.peak_bytes_per_pixel * window_h * window_w)


# Operators that move or view values without changing how many there are per pixel (pixel
# (un)shuffle written as reshapes, crops): the element count is kept, the channel/resolution split
# is learnt again from the next convolution's weights.
_RESHAPE = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Pad", "Expand"}
# Operators on shapes, not on pixels.
_SHAPE_OPS = {"Shape", "Size"}


def _step(node: _Node, act: list[str], shape: dict, inits: dict, values: dict, producers: dict, source: str):
    """(elements per LR pixel, channels, resolution factor, element bytes) of ``node``'s output.

    Channels and factor are None after a reshape (only the element count is known then)."""
    n, c, f, e = shape[act[0]]
    a = node.attrs

    def conv_input_factor(w: tuple[int, ...]) -> float:
        return f if f is not None else math.sqrt(n / (w[1] * a.get("group", 1)))  # after a reshape

    if node.op == "Conv":
        w = weight_dims(node.inputs[1], inits, producers)
        if w is None:
            raise ProfileError(f"{source}: Conv {node.outputs[0]} has a computed weight; cannot size it")
        fo = conv_input_factor(w) / (a.get("strides") or (1,))[0]
        return w[0] * fo * fo, w[0], fo, e
    if node.op == "ConvTranspose":
        w = weight_dims(node.inputs[1], inits, producers)
        if w is None:
            raise ProfileError(f"{source}: ConvTranspose {node.outputs[0]} has a computed weight")
        co, fo = w[1] * a.get("group", 1), f * (a.get("strides") or (1,))[0]
        return co * fo * fo, co, fo, e
    if node.op in ("DepthToSpace", "SpaceToDepth") and c is not None:
        b = a["blocksize"] if node.op == "DepthToSpace" else 1 / a["blocksize"]
        return n, c / (b * b), f * b, e
    if node.op in ("Resize", "Upsample"):
        scales = values.get(node.inputs[2] if node.op == "Resize" and len(node.inputs) > 2 else node.inputs[-1])
        if f is None or not scales or len(scales) != 4 or scales[2] != scales[3]:
            raise ProfileError(f"{source}: {node.op} {node.outputs[0]} without constant equal H/W scales; pass --tile N")
        return n * scales[3] ** 2, c, f * scales[3], e
    if node.op == "Concat":
        return sum(shape[t][0] for t in act), (sum(shape[t][1] for t in act) if c is not None else None), f, e
    if node.op == "Cast":
        return n, c, f, _ELEM_SIZE.get(a.get("to"), 4)
    if node.op in _RESHAPE:
        return n, None, None, e
    if node.op in _SAME_SHAPE:
        return n, c, f, e
    raise ProfileError(f"{source}: operator {node.op} ({node.outputs[0]}): its output size is not "
                       "known to srdeploy.runtime.budget; pass --tile N (and --max-memory does not apply)")


def profile_graph(data: bytes, *, source: str = "model") -> GraphProfile:
    """Profile a serialized ONNX model (see GraphProfile); ProfileError for unknown operators."""
    try:
        nodes, inits, values, ins, outs = _read_graph(data)
    except (IndexError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{source}: not a readable ONNX file ({exc})") from None
    # tensor -> (elements per LR pixel, channels, spatial factor, element bytes); weights and
    # constants are not activations
    shape: dict[str, tuple] = {n: (3.0, 3, 1.0, 4) for n in ins if n not in inits}
    if not shape:
        raise ProfileError(f"{source}: the graph has no input")
    last_use: dict[str, int] = {}
    for k, node in enumerate(nodes):
        for t in node.inputs:
            last_use[t] = k
    for t in outs:
        last_use[t] = len(nodes)
    producers = {o: node for node in nodes for o in node.outputs}
    live: dict[str, float] = {t: v[0] * v[3] for t, v in shape.items()}
    peak, peak_op = sum(live.values()), "input"
    for k, node in enumerate(nodes):
        acts = [t for t in node.inputs if t in shape]
        if node.op == "Constant" or node.op in _SHAPE_OPS or not acts:
            continue
        out = _step(node, acts, shape, inits, values, producers, source)
        for t in node.outputs[:1]:
            shape[t] = out
            live[t] = out[0] * out[3]
        total = sum(live.values())
        if total > peak:
            peak, peak_op = total, f"{node.op} {node.outputs[0]}"
        for t in node.inputs:
            if last_use.get(t) == k and t in live:
                del live[t]
    return GraphProfile(peak_bytes_per_pixel=peak, peak_op=peak_op, source=source)


def profile_onnx(path: str | os.PathLike) -> GraphProfile:
    """``profile_graph`` of an ONNX file (cached per file version: a server plans every request with it)."""
    st = Path(path).stat()
    return _profile_file(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _profile_file(path: str, mtime_ns: int, size: int) -> GraphProfile:
    return profile_graph(Path(path).read_bytes(), source=path)


def session_profile(session) -> GraphProfile | ProfileError:
    """The GraphProfile of an open session's ONNX file, or the ProfileError saying why there is none
    (a TensorRT engine or a PyTorch checkpoint carries no ONNX graph to read)."""
    path = getattr(session, "path", None)
    if path is None or Path(path).suffix.lower() != ".onnx":
        return ProfileError(f"{path or session.backend}: not an ONNX file, so no graph to size the tiles from")
    try:
        return profile_onnx(path)
    except (ProfileError, OSError) as exc:
        return ProfileError(str(exc))


def activation_factor(session) -> float:
    """The activation factor of the session's path (``ACTIVATION_FACTORS``, else ONNX Runtime's)."""
    return ACTIVATION_FACTORS.get((session.backend, session.precision), ORT_ACTIVATION_FACTOR)


def weights_bytes(session) -> int:
    """Bytes of the session's model file (its weights, loaded once); 0 when unknown."""
    path = getattr(session, "path", None)
    try:
        return Path(path).stat().st_size if path else 0
    except OSError:
        return 0


# --- peak prediction and tile choice ----------------------------------------------------------

Tile = "int | tuple[int, int]"  # a square core size, or (core height, core width); 0 = whole image


@dataclass(frozen=True)
class Prediction:
    """Predicted peak memory of one image, by part (bytes); ``tile`` as ``plan_tiles`` takes it."""

    tile: int | tuple[int, int]
    base: int
    activations: int
    image_in: int
    band: int
    image_out: int

    @property
    def total(self) -> int:
        return self.base + self.activations + self.image_in + self.band + self.image_out


def _hw(tile: int | tuple[int, int]) -> tuple[int, int]:
    return (tile, tile) if isinstance(tile, int) else tile


def predict_peak(profile: GraphProfile, *, height: int, width: int, channels: int, itemsize: int, scale: int,
                 tile: int | tuple[int, int], tile_pad: int, weights_bytes: int = 0, streamed: bool = True,
                 passes: int = 1, batch: int = 1, gpu: bool = False, base_bytes: int | None = None,
                 factor: float = ORT_ACTIVATION_FACTOR, multiple: int = 1, minimum: int = 1) -> Prediction:
    """Predicted peak RSS of upscaling one ``height x width`` image with ``tile`` (0 = whole image).

    Args:
        profile: the model's GraphProfile.
        channels, itemsize: of the image (1/3/4; 1, 2 or 4 bytes).
        tile: core size (int, or (height, width)) as ``plan_tiles`` takes it.
        streamed: the output format is written band by band (PNG, TIFF); otherwise the whole
            output image is held.
        passes: model passes run side by side (2 for RGBA with the alpha through the model).
        batch: tiles per inference call (activations scale with it).
        weights_bytes: the model file size (weights are loaded once).
        gpu: predict device memory (weights and activations only; the image buffers live in host
            memory). The factor is the CPU one: not yet measured on a GPU.
        factor: the path's activation factor (``activation_factor``).
        multiple, minimum: the model's size rules (``ModelInfo.size_multiple``/``min_size``): the
            tiler rounds windows up to the multiple and pads them to the minimum, and so does this.
    """
    th, tw = _hw(tile)
    wh, _ = axis_window(height, th, tile_pad, multiple, minimum)
    ww, _ = axis_window(width, tw, tile_pad, multiple, minimum)
    core_h = max(b - a for a, b in axis_cores(height, th))  # the tallest band of output rows
    out_w = width * scale
    acts = batch * profile.activation_bytes(wh, ww, factor=factor)
    base_bytes = BASE_BYTES if base_bytes is None else base_bytes
    if gpu:
        return Prediction(tile=tile, base=weights_bytes, activations=acts, image_in=0, band=0, image_out=0)
    # float32 band of 3 model channels per pass, plus the rows being converted
    band = passes * 3 * core_h * scale * out_w * 4 + CONVERT_CHUNK_BYTES
    out_bytes = height * scale * out_w * channels * itemsize
    if streamed:
        band += core_h * scale * out_w * channels * itemsize  # the converted band on its way to the file
        out_bytes = 0
    return Prediction(tile=tile, base=base_bytes + weights_bytes, activations=acts,
                      image_in=height * width * channels * itemsize, band=band, image_out=out_bytes)


def tile_overhead(height: int, width: int, tile: int | tuple[int, int], tile_pad: int, *, multiple: int = 1,
                  minimum: int = 1) -> float:
    """Compute cost of tiling relative to one whole-image pass (window area / image area)."""
    th, tw = _hw(tile)
    wh, kh = axis_window(height, th, tile_pad, multiple, minimum)
    ww, kw = axis_window(width, tw, tile_pad, multiple, minimum)
    return kh * kw * wh * ww / (height * width)


def _cores(n: int) -> list[int]:
    """Distinct core sizes along an axis of ``n`` pixels (largest first, MAX_TILE .. MIN_TILE)."""
    sizes: list[int] = []
    k = max(1, math.ceil(n / MAX_TILE))
    while True:
        core = math.ceil(n / k)
        if not sizes or core != sizes[-1]:
            sizes.append(core)
        if core <= MIN_TILE:
            return sizes
        k += 1


def choose_tile(profile: GraphProfile, budget: int, *, height: int, width: int, tile_pad: int,
                **kwargs) -> Prediction:
    """The tiling with the least compute overhead whose predicted peak fits ``HEADROOM * budget``.

    Candidates are the whole image (when its sides are <= MAX_TILE) and every pair of core
    height and width the tiler can produce (``ceil(n / k)`` per axis), so the budget is filled
    closely whatever the image size; among those that fit, the least overhead (window area /
    image area) wins, which also means the largest tiles. Returns the Prediction of the choice
    (``tile`` 0 = whole image, else (core height, core width)). When nothing fits, the smallest
    tiles' prediction is returned and the caller decides (its ``total`` exceeds ``budget``).
    ``kwargs`` go to ``predict_peak``.
    """
    def predict(tile):
        return predict_peak(profile, height=height, width=width, tile=tile, tile_pad=tile_pad, **kwargs)

    budget = int(budget * HEADROOM)

    if max(height, width) <= MAX_TILE:
        whole = predict(0)
        if whole.total <= budget:
            return whole
    rows, cols = _cores(height), _cores(width)
    best, best_cost = None, math.inf
    for th in rows:
        # peak falls as the core width falls: bisect for the widest core that fits with this height
        lo, hi, fit = 0, len(cols) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            p = predict((th, cols[mid]))
            if p.total <= budget:
                fit, hi = p, mid - 1
            else:
                lo = mid + 1
        if fit is not None:
            cost = tile_overhead(height, width, fit.tile, tile_pad, multiple=kwargs.get("multiple", 1),
                                 minimum=kwargs.get("minimum", 1))
            if cost < best_cost - 1e-9:
                best, best_cost = fit, cost
    return best if best is not None else predict((rows[-1], cols[-1]))
