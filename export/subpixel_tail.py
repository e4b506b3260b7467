"""Sub-pixel tail: run the last high-resolution convolution in the pixel-shuffle's phase space.

SRResNet ends with ``Conv(64 -> 4*64) -> DepthToSpace(2) -> PReLU -> Conv 9x9 (64 -> 3)`` at the
output resolution. That last convolution has 3 output channels, which a 16-lane AVX-512 kernel
fills to 3/16, and the DepthToSpace before it moves the largest tensor of the network between
ONNX Runtime's blocked layout and NCHW twice. Profiled on the bundled model (ORT 1.32, 128x128 LR,
2 threads, ``scripts/profile_ort.py``): the tail conv took 34% of the time for 11% of the FLOPs,
the DepthToSpace and its reorders another 15%.

The same function computed before the shuffle: output pixel ``(2i+a, 2j+b)`` of a KxK conv over
``DepthToSpace_r(y)`` reads input pixel ``p = 2i + a + dy - K//2``, i.e. channel phase ``p mod r``
of ``y`` at row ``i + floor((a + dy - K//2) / r)``. So one conv over ``y`` (r*r*C_in channels)
with kernel Kp = the span of those floors, producing the r*r phases of every output channel
(C_out*r*r channels, CRD order), followed by ``DepthToSpace_r`` of that small tensor, gives the
same sums of the same products (only the summation order differs: float32 rounding, ~1e-6). The
PReLU moves before the shuffle with each slope repeated r*r times (CRD: channel c -> c*r*r + phase).
Zero padding matches too: a phase row outside ``[0, H)`` is exactly an output row outside
``[0, r*H)``. The phase kernel holds zeros where ``dy`` falls outside the original kernel, so
it does ``(Kp*r/K)^2`` the arithmetic: 1.23x for K=9, r=2 (done only up to ``MAX_OVERHEAD``; a
3x3 tail would need 4x and is left alone). The bundle's FLOP count (``srdeploy.flops_per_pixel``)
is taken before this rewrite: the zeros are not useful work.
"""

from __future__ import annotations

import json

import numpy as np

KEY_REWRITES = "srdeploy.graph_rewrites"  # JSON list: what was rewritten after export, and why it is exact
MAX_OVERHEAD = 1.3
# Element-wise ops between the last conv and the graph output (clamp, tanh output range (x+1)/2).
_OUTPUT_OPS = ("Clip", "Sigmoid", "Tanh", "Identity", "Add", "Sub", "Mul", "Div")


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _find_tail(graph):
    """(shuffle, activation or None, conv) of the output chain, or None when the graph has another shape."""
    producer = {o: n for n in graph.node for o in n.output}
    users: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    node = producer.get(graph.output[0].name)
    while node is not None and node.op_type in _OUTPUT_OPS:  # the conv's output tensor stays, so any user is fine
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Conv":
        return None
    conv, act = node, producer.get(node.input[0])
    if act is not None and act.op_type == "PRelu":
        shuffle = producer.get(act.input[0])
    else:
        act, shuffle = None, act
    if shuffle is None or shuffle.op_type != "DepthToSpace" or _attr(shuffle, "mode", b"DCR") != b"CRD":
        return None
    chain = [shuffle] + ([act] if act else [])
    if any(len(users.get(n.output[0], [])) != 1 for n in chain):
        return None  # an intermediate tensor used elsewhere (a skip connection) must stay
    return shuffle, act, conv


def fold_subpixel_tail(model, *, max_overhead: float = MAX_OVERHEAD):
    """Rewrite ``model`` (an ``onnx.ModelProto``, in place) as described in the module docstring.

    Args:
        model: the exported FP32 model (initializer weights, opset >= 13).
        max_overhead: largest ratio of phase-kernel to original arithmetic accepted.

    Returns:
        A JSON-able record of the rewrite (conv name, kernels, overhead), or None when the graph
        has no such tail or the rewrite would cost more than ``max_overhead``.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    found = _find_tail(g)
    if found is None:
        return None
    shuffle, act, conv = found
    init = {i.name: i for i in g.initializer}
    if conv.input[1] not in init or (len(conv.input) > 2 and conv.input[2] not in init) \
            or (act is not None and act.input[1] not in init):
        return None
    w = numpy_helper.to_array(init[conv.input[1]]).astype(np.float32)
    k, r = w.shape[2], int(_attr(shuffle, "blocksize"))
    if (w.shape[2] != w.shape[3] or k % 2 == 0 or _attr(conv, "group", 1) != 1
            or list(_attr(conv, "strides", [1, 1])) != [1, 1] or list(_attr(conv, "dilations", [1, 1])) != [1, 1]
            or list(_attr(conv, "pads", [0, 0, 0, 0])) != [k // 2] * 4):
        return None
    lo, hi = -(k // 2) // r, (r - 1 + k // 2) // r  # floor((a + dy - K//2) / r) over a < r, dy < K
    kp = hi - lo + 1
    overhead = (kp * r / k) ** 2
    if overhead > max_overhead:
        return None
    w2 = phase_weights(w, r, lo, kp)
    b = (numpy_helper.to_array(init[conv.input[2]]).astype(np.float32) if len(conv.input) > 2
         else np.zeros(w.shape[0], np.float32))
    new_inits = {f"{conv.input[1]}.subpixel": w2, f"{conv.input[1]}.subpixel_bias": np.repeat(b, r * r)}
    y = shuffle.input[0]
    nodes = []
    if act is not None:
        slope = numpy_helper.to_array(init[act.input[1]]).astype(np.float32).reshape(-1)
        slope = slope if slope.size == 1 else np.repeat(slope, r * r).reshape(-1, 1, 1)
        new_inits[f"{act.input[1]}.subpixel"] = slope
        nodes.append(helper.make_node("PRelu", [y, f"{act.input[1]}.subpixel"], [f"{y}.act"], name=act.name))
        y = f"{y}.act"
    nodes.append(helper.make_node("Conv", [y, *list(new_inits)[:2]], [f"{conv.output[0]}.phases"], name=conv.name,
                                  kernel_shape=[kp, kp], pads=[-lo, -lo, hi, hi]))
    nodes.append(helper.make_node("DepthToSpace", [f"{conv.output[0]}.phases"], [conv.output[0]],
                                  name=f"{conv.name}/DepthToSpace", blocksize=r, mode="CRD"))
    _replace_nodes(g, [shuffle, *([act] if act else []), conv], nodes)
    old = {conv.input[1], *conv.input[2:3], *([act.input[1]] if act else [])}
    kept = [i for i in g.initializer if i.name not in old]
    del g.initializer[:]
    g.initializer.extend(kept + [numpy_helper.from_array(v, n) for n, v in new_inits.items()])
    gone = {shuffle.output[0], *([act.output[0]] if act else [])}
    kept_vi = [v for v in g.value_info if v.name not in gone]
    del g.value_info[:]
    g.value_info.extend(kept_vi)
    return {"rewrite": "subpixel_tail", "conv": conv.name, "kernel": [k, kp], "blocksize": r,
            "arithmetic_overhead": round(overhead, 4)}


def phase_weights(w: np.ndarray, r: int, lo: int, kp: int) -> np.ndarray:
    """The (C_out*r*r, C_in*r*r, Kp, Kp) kernel over the un-shuffled tensor for a KxK kernel ``w``.

    Output channel ``k*r*r + a*r + b`` is output colour k at phase (a, b); input channel
    ``c*r*r + a'*r + b'`` is channel c at phase (a', b') (DepthToSpace CRD order on both sides).
    """
    co, ci, k, _ = w.shape
    w2 = np.zeros((co * r * r, ci * r * r, kp, kp), np.float32)
    half = k // 2
    for a in range(r):
        for b in range(r):
            for dy in range(k):
                ay, py = divmod(a + dy - half, r)
                for dx in range(k):
                    ax, px = divmod(b + dx - half, r)
                    w2[np.arange(co) * r * r + a * r + b, py * r + px::r * r, ay - lo, ax - lo] = w[:, :, dy, dx]
    return w2


def _replace_nodes(graph, old: list, new: list) -> None:
    """Put ``new`` where the first of ``old`` was (the graph stays topologically sorted)."""
    nodes = list(graph.node)
    at = min(nodes.index(n) for n in old)
    rest = [n for n in nodes if n not in old]
    del graph.node[:]
    graph.node.extend(rest[:at] + new + rest[at:])


def rewrite_record(records: list[dict]) -> dict[str, str]:
    """The metadata entry for the rewrites done (empty when none)."""
    return {KEY_REWRITES: json.dumps(records, sort_keys=True)} if records else {}
