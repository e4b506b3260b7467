"""FLOPs per LR input pixel, counted from an ONNX graph (stored in metadata at export).

Benchmarks turn fps into achieved GFLOP/s with this number, so it is counted once, from the
graph that is deployed, not from a formula about the architecture. Convention (the usual one):

* Conv / ConvTranspose: 2 FLOPs per multiply-accumulate (``2 * Cin/groups * kH * kW`` per
  output element) plus 1 per output element for the bias;
* MatMul / Gemm (attention, MLPs of transformer families): 2 per multiply-accumulate;
* element-wise arithmetic (Add, Sub, Mul, Div, PRelu, Relu, LeakyRelu, Clip, Max, Min, Sigmoid,
  Tanh, Softmax, LayerNormalization, Erf, Gelu): 1 per output element;
* data movement (DepthToSpace, Reshape, Transpose, Cast, Q/DQ, ...): 0.

Shapes come from ONNX shape inference on a fixed ``probe`` x ``probe`` input; every op of an SR
network scales with the input area, so the count divided by ``probe**2`` is per LR pixel (the
check at two probe sizes raises if a graph does not scale that way). A fixed-window graph
(static input size) is counted at its own size. QDQ nodes are skipped, so an INT8 model counts
the same arithmetic as its FP32 source (int8 ops per second, comparable).
"""

from __future__ import annotations

from srdeploy.runtime.metadata import KEY_FLOPS  # noqa: F401  (the key lives with the contract)
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "PRelu", "Relu", "LeakyRelu", "Clip", "Max", "Min", "Sigmoid", "Tanh",
                "Softmax", "LayerNormalization", "Erf", "Gelu"}
_FOLLOWS_INPUT = _ELEMENTWISE | {"Slice", "Identity", "Cast"}


def _count(onnx_model, probe: int) -> float:
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.ModelProto()
    model.CopyFrom(onnx_model)
    inp = model.graph.input[0].type.tensor_type.shape
    for dim, value in zip(inp.dim, (1, None, probe, probe)):
        if value is not None:
            dim.ClearField("dim_param")
            dim.dim_value = value
    del model.graph.value_info[:]
    # data_prop: shapes computed in the graph (a pixel-unshuffle's reshape, a crop) resolve too
    model = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    shapes, floats = {}, set()
    for vi in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        if vi.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                             onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE):
            floats.add(vi.name)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    inits = {i.name: i for i in model.graph.initializer}

    # QDQ graphs: a Conv's weight comes through DequantizeLinear; find the initializer behind it.
    producer = {o: n for n in model.graph.node for o in n.output}

    def numel(name: str) -> int:
        dims = shapes.get(name)
        if not dims or any(d is None for d in dims):
            # A crop whose bounds the graph computes (a pixel-unshuffle model's Slice) and what
            # follows it: at most the size of the data it came from.
            src = producer.get(name)
            if src is not None and src.op_type in _FOLLOWS_INPUT and src.input and src.input[0] != name:
                return numel(src.input[0])
            raise ValueError(f"flops: no static shape for tensor {name!r} after shape inference")
        n = 1
        for d in dims:
            n *= d
        return n

    def weight_dims(name: str):
        while name not in inits and name in producer and producer[name].op_type == "DequantizeLinear":
            name = producer[name].input[0]
        if name in inits:
            return list(numpy_helper.to_array(inits[name]).shape)
        return shapes.get(name)

    total = 0.0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = weight_dims(node.input[1])
            if not w:
                raise ValueError(f"flops: no weight shape for {node.name}")
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            out = numel(node.output[0])
            cin_per_group = w[1] if node.op_type == "Conv" else w[0] // groups
            k = 1
            for d in w[2:]:
                k *= d
            total += 2.0 * cin_per_group * k * out
            if len(node.input) > 2 and node.input[2]:
                total += out
        elif node.op_type in ("MatMul", "Gemm") and node.output[0] in floats:
            a = shapes.get(node.input[0]) or []
            k = a[-1] if a and a[-1] else None
            if k is None:
                raise ValueError(f"flops: no static inner dimension for {node.op_type} {node.name}")
            total += 2.0 * k * numel(node.output[0])
        elif node.op_type in _ELEMENTWISE and node.output[0] in floats:  # integer ops compute shapes, not pixels
            total += numel(node.output[0])
    return total


def _static_side(onnx_model) -> int | None:
    """The input side of a fixed-window graph (static H and W), else None."""
    dims = onnx_model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[2].HasField("dim_value") and dims[3].HasField("dim_value"):
        return dims[2].dim_value
    return None


def flops_per_pixel(onnx_model, *, probe: int = 32) -> float:
    """FLOPs per LR input pixel of an SR ``onnx.ModelProto`` (see the module doc for the convention)."""
    from onnx.shape_inference import InferenceError

    side = _static_side(onnx_model)
    try:
        if side is not None:  # one window only: count it there
            return _count(onnx_model, side) / side ** 2
        a = _count(onnx_model, probe) / probe ** 2
        b = _count(onnx_model, 2 * probe) / (2 * probe) ** 2
    except InferenceError as exc:
        raise ValueError(f"flops: ONNX shape inference fails at {probe}x{probe} ({str(exc).splitlines()[0][:200]}); "
                         "a graph that only works at one size must be exported at a fixed window (--window N)") from None
    if abs(a - b) > 1e-6 * max(a, b):
        raise ValueError(f"flops: the graph's cost does not scale with the input area ({a:.6g} vs {b:.6g} "
                         "FLOPs per pixel at two sizes); not an SR network of the expected kind")
    return a
