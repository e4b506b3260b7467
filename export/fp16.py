"""FP16 safety: activation-range analysis, PyTorch-module -> ONNX-node mapping, FP16 ONNX conversion.

Why: FP16 overflows above 65504. A layer whose activations get near that on real inputs turns
into inf/NaN in an FP16 engine. Before building FP16 we run calibration images through the fused
FP32 PyTorch model with forward hooks, record every module's largest |input| and |output|, and
keep the ONNX nodes that produce or consume such tensors in FP32.

Threshold: ``DEFAULT_THRESHOLD = 2**14`` (16384), a quarter of FP16's largest finite value. The
calibration maxima are a sample; a factor of 4 (two binades) of headroom covers inputs more
extreme than the calibration set (saturated colours, noise) without pinning ordinary layers:
trained SRResNet activations stay in the tens to low hundreds.

The same pin list drives both FP16 artefacts: ``to_fp16_onnx`` writes a mixed-precision ONNX
(FP16 weights and compute, pinned nodes FP32, Cast nodes at the boundaries, float32 graph
input/output), which ONNX Runtime runs as is and TensorRT builds as a strongly typed network
(the form TensorRT 11 requires: its per-layer precision flags are gone; on 10.x it is equally
exact). Nothing here needs a GPU.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

DEFAULT_THRESHOLD = float(2 ** 14)
FP16_MAX = 65504.0
# Ops whose FP16 version computes the same function on FP16 data (element-wise / conv / data
# movement). Any other op stays FP32 and is reported: no op is silently converted.
FP16_OPS = frozenset({"Conv", "ConvTranspose", "PRelu", "Relu", "LeakyRelu", "Add", "Sub", "Mul", "Div",
                      "DepthToSpace", "SpaceToDepth", "Clip", "Identity", "Concat", "Sigmoid", "Tanh",
                      "Max", "Min", "Neg", "Abs"})
_CAST_PREFIX = "srdeploy_cast"


# ----------------------------------------------------------------------------- analysis

@dataclass
class ActivationReport:
    """Result of ``analyse_activations``.

    Attributes:
        threshold: |activation| above which a module is risky in FP16.
        max_out: module name -> largest |output| seen ("" is the whole model).
        max_in: module name -> largest |input| seen.
        nonfinite: modules that produced inf/NaN already in FP32.
        risky_out / risky_in: module names whose output / input exceeded ``threshold``.
        images: calibration inputs used (names), for the record.
        fp32_nodes: ONNX node names to keep in FP32 (filled by ``nodes_to_pin``).
    """

    threshold: float
    max_out: dict[str, float] = field(default_factory=dict)
    max_in: dict[str, float] = field(default_factory=dict)
    nonfinite: list[str] = field(default_factory=list)
    risky_out: list[str] = field(default_factory=list)
    risky_in: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    fp32_nodes: list[str] = field(default_factory=list)

    @property
    def overall_max(self) -> float:
        return max([*self.max_out.values(), *self.max_in.values(), 0.0])

    def summary(self) -> dict:
        """A compact JSON-able record (for ONNX metadata / the engine sidecar)."""
        return {"threshold": self.threshold, "overall_max_abs": self.overall_max,
                "risky_modules": sorted(set(self.risky_out) | set(self.risky_in)),
                "fp32_nodes": list(self.fp32_nodes), "calibration_inputs": list(self.images)}

    def check_finite(self) -> None:
        """RuntimeError when the FP32 model already produced inf/NaN (no precision choice fixes that)."""
        if self.nonfinite:
            raise RuntimeError(f"the FP32 model produces inf/NaN on the calibration inputs in {self.nonfinite[:5]}; "
                               "the checkpoint is broken (diverged training?); not building an FP16 model")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def _max_abs(obj) -> tuple[float, bool]:
    """Largest finite |value| over the tensors in ``obj`` and whether any value was non-finite."""
    import torch

    if isinstance(obj, torch.Tensor) and obj.is_floating_point():
        t = obj.detach()
        if t.numel() == 0:
            return 0.0, False
        m = float(torch.linalg.vector_norm(t.float(), ord=math.inf))  # max |x| in one pass
        if math.isfinite(m):
            return m, False
        vals = t[torch.isfinite(t)].abs()  # rare slow path: ignore inf/NaN, report them
        return (float(vals.max()) if vals.numel() else 0.0), True
    if isinstance(obj, (tuple, list)):
        best, bad = 0.0, False
        for o in obj:
            m, b = _max_abs(o)
            best, bad = max(best, m), bad or b
        return best, bad
    return 0.0, False


def analyse_activations(model, inputs, *, threshold: float = DEFAULT_THRESHOLD, names=None) -> ActivationReport:
    """Run ``inputs`` through ``model`` (FP32, eval) and record every module's largest activation.

    Forward hooks on every module (containers too, so a residual add's result is seen as the
    output of its block, and a functional add in a parent as the input of the next module).

    Args:
        model: the fused FP32 PyTorch model (``fuse_bn`` output).
        inputs: iterable of float32 NCHW tensors or arrays (LR images in the model's input range).
        threshold: |activation| above which a module is reported risky.
        names: optional names of the inputs, recorded in the report.
    """
    import torch

    report = ActivationReport(threshold=float(threshold))
    nonfinite: set[str] = set()

    def hook(name):
        def fn(_module, args, output):
            m_in, bad_in = _max_abs(args)
            m_out, bad_out = _max_abs(output)
            report.max_in[name] = max(report.max_in.get(name, 0.0), m_in)
            report.max_out[name] = max(report.max_out.get(name, 0.0), m_out)
            if bad_out and not bad_in:
                nonfinite.add(name)
        return fn

    model = model.eval()
    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()]
    count = 0
    try:
        with torch.no_grad():
            for x in inputs:
                x = torch.as_tensor(np.asarray(x, dtype=np.float32))
                if x.ndim == 3:
                    x = x[None]
                model(x)
                count += 1
    finally:
        for h in handles:
            h.remove()
    if count == 0:
        raise ValueError("analyse_activations: no calibration inputs")
    report.images = list(names) if names is not None else [f"input{i}" for i in range(count)]
    report.nonfinite = sorted(nonfinite)
    report.risky_out = sorted(n for n, v in report.max_out.items() if v > threshold or n in nonfinite)
    report.risky_in = sorted(n for n, v in report.max_in.items() if v > threshold)
    return report


# ----------------------------------------------------------------------------- module -> ONNX nodes

def _unqualified(qualified: str) -> str:
    # The TorchScript exporter names a module's scope after its last non-numeric name atom
    # onward ("body.0" stays "body.0", "body.0.conv1" becomes "conv1").
    atoms = qualified.split(".")
    for i in range(len(atoms) - 1, -1, -1):
        if not atoms[i].isnumeric():
            return ".".join(atoms[i:])
    return qualified


def module_scope(name: str) -> str:
    """The ONNX node-name prefix the TorchScript exporter gives ops inside module ``name``.

    ``"body.0.conv1"`` -> ``"/body/body.0/conv1/"``; the root module ``""`` -> ``"/"``.
    """
    if not name:
        return "/"
    atoms = name.split(".")
    # One path element per module in the chain (numeric Sequential indices stay attached).
    parts = [_unqualified(".".join(atoms[:i + 1])) for i in range(len(atoms))]
    return "/" + "/".join(parts) + "/"


def _nodes_by_module(onnx_model, module_names) -> dict[str, list]:
    scopes = {n: module_scope(n) for n in module_names}
    out: dict[str, list] = {n: [] for n in module_names}
    for node in onnx_model.graph.node:
        for n, s in scopes.items():
            if node.name.startswith(s):
                out[n].append(node)
    return out


def check_node_mapping(model, onnx_model) -> None:
    """Prove that ``module_scope`` finds each conv's ONNX node (exporter naming as assumed).

    Every ``nn.Conv2d`` of ``model`` must own exactly one ONNX ``Conv`` node (by scope name)
    and that node must read the initializer named ``<module>.weight``. Raises RuntimeError
    otherwise (e.g. a torch version that names nodes differently): pins would then be wrong.
    """
    from torch import nn

    inits = {i.name for i in onnx_model.graph.initializer}
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    owned = _nodes_by_module(onnx_model, convs)
    for name in convs:
        nodes = [nd for nd in owned[name] if nd.op_type == "Conv"]
        weight = f"{name}.weight"
        if len(nodes) != 1 or (weight in inits and weight not in nodes[0].input):
            raise RuntimeError(
                f"FP16 analysis: cannot map PyTorch module {name!r} to its ONNX Conv node (found "
                f"{[nd.name for nd in nodes]} under scope {module_scope(name)!r}); this torch version names "
                "ONNX nodes differently. FP16 pins would be unreliable; build FP32 or report this.")


def nodes_to_pin(report: ActivationReport, model, onnx_model) -> list[str]:
    """ONNX node names to keep in FP32 for the risky modules of ``report`` (also stored in it).

    A risky tensor is an output of a risky-output module's node group that leaves the group,
    or an activation entering a risky-input module's group from outside. Every node that
    produces or consumes a risky tensor is pinned: in FP16 a consumer would convert the large
    value to FP16 on its input and overflow there.

    Args:
        report: from ``analyse_activations`` on the same (fused) ``model``.
        model: the fused PyTorch model the ONNX file was exported from.
        onnx_model: the FP32 ``onnx.ModelProto``.
    """
    graph = onnx_model.graph
    if report.risky_out or report.risky_in:
        check_node_mapping(model, onnx_model)
    consts = {i.name for i in graph.initializer}
    consts |= {o for nd in graph.node if nd.op_type == "Constant" for o in nd.output}
    producer = {o: nd for nd in graph.node for o in nd.output}
    consumers: dict[str, list] = {}
    for nd in graph.node:
        for i in nd.input:
            consumers.setdefault(i, []).append(nd)
    graph_outputs = {o.name for o in graph.output}
    owned = _nodes_by_module(onnx_model, sorted(set(report.risky_out) | set(report.risky_in)))
    risky: set[str] = set()
    for name in report.risky_out:
        group = {nd.name for nd in owned[name]} if name else {nd.name for nd in graph.node}
        for nd in (owned[name] if name else graph.node):
            for o in nd.output:
                if o in graph_outputs or any(c.name not in group for c in consumers.get(o, [])):
                    risky.add(o)
    for name in report.risky_in:
        group = {nd.name for nd in owned[name]} if name else {nd.name for nd in graph.node}
        for nd in (owned[name] if name else graph.node):
            for i in nd.input:
                if i and i not in consts and (i not in producer or producer[i].name not in group):
                    risky.add(i)
    pinned = set()
    for t in risky:
        if t in producer and producer[t].op_type != "Constant":
            pinned.add(producer[t].name)
        pinned.update(c.name for c in consumers.get(t, []))
    order = [nd.name for nd in graph.node if nd.name in pinned]
    report.fp32_nodes = order
    return order


# ----------------------------------------------------------------------------- FP16 ONNX

def _float_initializer_fits(init) -> bool:
    from onnx import numpy_helper

    arr = numpy_helper.to_array(init)
    return bool(np.all(np.abs(arr[np.isfinite(arr)]) <= FP16_MAX)) if arr.size else True


def fp16_from_fp32(fused, onnx_model, *, calib=None, scale: int, threshold: float | None = None, channels: int = 3,
                   multiple: int = 1):
    """The FP16 step shared by ``export --fp16`` and ``build-engine --fp16``: analyse -> pin -> convert.

    Runs the fused PyTorch model on the calibration inputs, refuses a model that is already
    non-finite in FP32, keeps every node whose activations exceed ``threshold`` in FP32, and
    converts the rest to FP16.

    Args:
        fused: the BN-folded PyTorch generator ``onnx_model`` was exported from.
        onnx_model: its unsimplified FP32 ``onnx.ModelProto`` (node names map to modules).
        calib: calibration image folder (None = Set5 LR, see ``calib.calibration_inputs``).
        scale: the model's scale.
        threshold: |activation| above which nodes stay FP32 (default ``DEFAULT_THRESHOLD``).
        channels, multiple: the model's input channels and size multiple (calibration inputs fit them).

    Returns:
        (FP16 ``onnx.ModelProto``, ``ActivationReport`` with ``fp32_nodes`` filled in).
    """
    from .calib import calibration_inputs

    inputs, names = calibration_inputs(calib, scale=scale, channels=channels, multiple=multiple)
    report = analyse_activations(fused, inputs, threshold=DEFAULT_THRESHOLD if threshold is None else float(threshold),
                                 names=names)
    report.check_finite()
    pins = nodes_to_pin(report, fused, onnx_model)
    fp16_model, report.fp32_nodes = to_fp16_onnx(onnx_model, keep_fp32=pins)
    return fp16_model, report


def to_fp16_onnx(onnx_model, keep_fp32=()):
    """Mixed-precision copy of an FP32 ONNX model: FP16 weights/compute, float32 graph I/O.

    Nodes named in ``keep_fp32``, nodes whose op is not in ``FP16_OPS`` and nodes with a weight
    beyond FP16's range stay FP32; Cast nodes are inserted wherever an FP16 and an FP32 node
    meet and at the graph input/output. Returns ``(model, fp32_nodes)`` where ``fp32_nodes``
    lists every compute node left in FP32 (requested or forced), so nothing is silent.

    Args:
        onnx_model: an ``onnx.ModelProto`` with float32 tensors (not modified).
        keep_fp32: ONNX node names to keep in FP32 (from ``nodes_to_pin``).
    """
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(onnx_model)
    graph = model.graph
    keep = set(keep_fp32)
    _check_fp32_graph(graph, keep)
    types = _value_types(onnx_model)
    inits, nodes = _lift_constants(graph)
    domain = _choose_domains(nodes, inits, keep, types)
    new_nodes, fp16_inits = _retype_nodes(graph, nodes, inits, domain, types)
    _cast_outputs_to_fp32(graph, new_nodes, domain)
    # Keep only initializers still read; keep lifted constants as initializers.
    used = {i for nd in new_nodes for i in nd.input}
    all_inits = list(inits.values()) + list(fp16_inits.values())
    del graph.initializer[:]
    graph.initializer.extend(i for i in all_inits if i.name in used)
    del graph.node[:]
    graph.node.extend(_toposort(new_nodes, {i.name for i in graph.input} | used))
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    from onnx import TensorProto

    return model, [nd.name for nd in nodes if domain[nd.name] == TensorProto.FLOAT]


def _value_types(onnx_model) -> dict[str, int]:
    """Element type of every tensor (shape inference on the FP32 model): a pixel-unshuffle's shape
    arithmetic (Shape -> Gather -> Mul/Div, int64) must not be mistaken for float compute."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(onnx_model)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.output, *g.value_info)}
    types.update({i.name: i.data_type for i in g.initializer})
    for nd in g.node:
        if nd.op_type == "Constant" and nd.attribute and nd.attribute[0].name == "value":
            types[nd.output[0]] = nd.attribute[0].t.data_type
    return types


def _check_fp32_graph(graph, keep: set[str]) -> None:
    from onnx import TensorProto

    unknown = keep - {nd.name for nd in graph.node}
    if unknown:
        raise ValueError(f"to_fp16_onnx: nodes to keep in FP32 not in the graph: {sorted(unknown)}")
    for vi in (*graph.input, *graph.output):
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise ValueError(f"to_fp16_onnx: graph I/O {vi.name!r} is not float32; expected an FP32 model")


def _lift_constants(graph) -> tuple[dict, list]:
    """Float Constant nodes become initializers, so all constants are handled one way."""
    import onnx

    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for nd in graph.node:
        if nd.op_type == "Constant" and len(nd.attribute) == 1 and nd.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(nd.attribute[0].t)
            t.name = nd.output[0]
            inits[t.name] = t
            continue
        nodes.append(nd)
    return inits, nodes


def _choose_domains(nodes, inits: dict, keep: set[str], types: dict[str, int]) -> dict:
    """Node name -> the element type it computes in (FLOAT16 unless it must stay FLOAT); None for a
    node whose outputs are not float (integer shape arithmetic), which is left exactly as it is."""
    from onnx import TensorProto

    def fp16_ok(nd) -> bool:
        if nd.name in keep or nd.op_type not in FP16_OPS:
            return False
        return all(_float_initializer_fits(inits[i]) for i in nd.input
                   if i in inits and inits[i].data_type == TensorProto.FLOAT)

    def integer(nd) -> bool:
        return all(types.get(o, TensorProto.FLOAT) != TensorProto.FLOAT for o in nd.output if o)

    return {nd.name: None if integer(nd) else (TensorProto.FLOAT16 if fp16_ok(nd) else TensorProto.FLOAT)
            for nd in nodes}


def _retype_nodes(graph, nodes, inits: dict, domain: dict, types: dict[str, int]) -> tuple[list, dict]:
    """FP16 copies of the weights FP16 nodes read, and Casts where FP16 and FP32 tensors meet
    (float tensors only: an integer input, such as a Reshape's shape, is never cast)."""
    from onnx import TensorProto, helper, numpy_helper

    ttype = {vi.name: TensorProto.FLOAT for vi in graph.input}  # element type of each float activation
    for nd in nodes:
        for o in nd.output:
            if domain[nd.name] is not None and types.get(o, TensorProto.FLOAT) == TensorProto.FLOAT:
                ttype[o] = domain[nd.name]
    new_nodes, casts, fp16_inits = [], {}, {}

    def cast(tensor: str, to: int) -> str:
        key = (tensor, to)
        if key not in casts:
            suffix = "fp16" if to == TensorProto.FLOAT16 else "fp32"
            out = f"{tensor}__{suffix}"
            new_nodes.append(helper.make_node("Cast", [tensor], [out], to=to,
                                              name=f"{_CAST_PREFIX}/{tensor}/{suffix}"))
            casts[key] = out
        return casts[key]

    for nd in nodes:
        want = domain[nd.name]
        if want is None:  # integer shape arithmetic: untouched
            new_nodes.append(nd)
            continue
        for k, name in enumerate(nd.input):
            if not name:
                continue
            if name in inits:
                init = inits[name]
                if init.data_type == TensorProto.FLOAT and want == TensorProto.FLOAT16:
                    if name not in fp16_inits:
                        arr = numpy_helper.to_array(init).astype(np.float16)
                        fp16_inits[name] = numpy_helper.from_array(arr, f"{name}__fp16")
                    nd.input[k] = fp16_inits[name].name
            elif name in ttype and ttype[name] != want:
                nd.input[k] = cast(name, want)
        new_nodes.append(nd)
    return new_nodes, fp16_inits


def _cast_outputs_to_fp32(graph, new_nodes: list, domain: dict) -> None:
    """Graph outputs stay float32: rename an FP16 producer's output and cast it back."""
    from onnx import TensorProto, helper

    out_names = {o.name for o in graph.output}
    for nd in list(new_nodes):
        if nd.op_type == "Cast" and nd.name.startswith(_CAST_PREFIX):
            continue
        for k, o in enumerate(nd.output):
            if o in out_names and domain.get(nd.name) == TensorProto.FLOAT16:
                nd.output[k] = f"{o}__fp16"
                for other in new_nodes:  # other readers of the FP16 value follow the rename
                    for j, i in enumerate(other.input):
                        if i == o and other is not nd:
                            other.input[j] = nd.output[k]
                new_nodes.append(helper.make_node("Cast", [nd.output[k]], [o], to=TensorProto.FLOAT,
                                                  name=f"{_CAST_PREFIX}/{o}/fp32"))


def _toposort(nodes, available: set[str]):
    """Order nodes so each input is produced before use (Casts were appended out of place)."""
    ready = set(available)
    pending = list(nodes)
    out = []
    while pending:
        progressed = False
        rest = []
        for nd in pending:
            if all((not i) or i in ready for i in nd.input):
                out.append(nd)
                ready.update(nd.output)
                progressed = True
            else:
                rest.append(nd)
        if not progressed:
            missing = sorted({i for nd in rest for i in nd.input if i and i not in ready})
            raise RuntimeError(f"to_fp16_onnx: graph has unresolved inputs {missing[:5]}")
        pending = rest
    return out
