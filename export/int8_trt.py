"""INT8 QDQ models that TensorRT parses: what its ONNX importer accepts, and an exact int8 input.

TensorRT's explicit quantization takes symmetric int8 only (onnx-tensorrt ``onnxOpImporters.cpp``,
``QuantDequantLinearHelper``): a uint8 zero point or a uint8 DequantizeLinear input is an import
error, and zero points must be 0 ("TensorRT only supports symmetric quantization"). The CPU
recipe of ``srdeploy quantize`` (uint8 activations with zero points, which OpenVINO and ONNX
Runtime run fastest, plus int32 bias DequantizeLinear nodes from ONNX Runtime's quantizer) therefore
cannot build an engine. ``tensorrt_int8_problems`` lists what stands in the way, so
``build-engine`` can refuse such a file before TensorRT does, with the fix.

The model input is 8-bit pixels k/255, k = 0..255. As int8 with zero point 0 it would clip at
k = 127 (scale 1/255) or lose every second level (scale 1/127). ``center_input`` keeps all 256
levels exact: x - 128/255 = (k - 128)/255 is an int8 value at scale 1/255. The first convolution
is rewritten so the model still computes the same function: its implicit zero padding becomes an
explicit Pad with value -128/255 (a zero pixel, centred), and 128/255 * sum(W) over each output
channel's window is added to its bias. The int8 quantization of that padded tensor is then exact.
"""

from __future__ import annotations

import numpy as np

#: Name of the centred, padded model input: the tensor quantized int8 with scale 1/255.
CENTERED = "lr_centered_padded"
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def tensorrt_int8_problems(model) -> list[str]:
    """What keeps TensorRT from parsing this QDQ model (empty: nothing found).

    Checks every QuantizeLinear/DequantizeLinear: a zero point must be int8 (or absent, which
    TensorRT reads as int8) and all zeros; a DequantizeLinear must not read a uint8 or int32
    initializer (int32 = a quantized bias).

    Args:
        model: an ``onnx.ModelProto``.
    """
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    uint8_zp = nonzero_zp = int32_dq = uint8_dq = 0
    for node in model.graph.node:
        if node.op_type not in _QDQ:
            continue
        data = inits.get(node.input[0])
        if node.op_type == "DequantizeLinear" and data is not None and data.data_type == TensorProto.INT32:
            int32_dq += 1  # a quantized bias: its int32 zero point is beside the point
            continue
        if node.op_type == "DequantizeLinear" and data is not None and data.data_type == TensorProto.UINT8:
            uint8_dq += 1
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is not None:
            uint8_zp += zp.data_type != TensorProto.INT8
            nonzero_zp += bool(np.any(numpy_helper.to_array(zp) != 0))
    problems = []
    if uint8_zp:
        problems.append(f"{uint8_zp} Q/DQ node(s) with non-int8 (uint8) zero points")
    if nonzero_zp:
        problems.append(f"{nonzero_zp} Q/DQ node(s) with non-zero zero points (TensorRT is symmetric only)")
    if int32_dq:
        problems.append(f"{int32_dq} int32 bias DequantizeLinear node(s)")
    if uint8_dq:
        problems.append(f"{uint8_dq} DequantizeLinear node(s) of uint8 data")
    return problems


def center_input(model, *, input_name: str, step: float):
    """Rewrite ``model`` (in place) so its input enters the first convolution centred and padded.

    ``Sub(input, 128 * step) -> Pad(value -128 * step) -> Conv(pads 0, bias + 128 * step * sum(W))``:
    the same function, with the convolution's input ``CENTERED`` exactly int8 at scale ``step``
    for inputs that are multiples of ``step`` in [0, 255 * step].

    Args:
        model: an ``onnx.ModelProto`` whose input feeds exactly one Conv (weights and bias as
            initializers, explicit ``pads``), and possibly other nodes (a skip), which keep the input.
        input_name: the model input.
        step: the input's quantization step (1/255 for [0, 1] pixels).

    Raises:
        ValueError: the graph does not have that shape.
    """
    from onnx import helper, numpy_helper

    users = [n for n in model.graph.node if input_name in n.input]
    convs = [n for n in users if n.op_type == "Conv" and n.input[0] == input_name]
    if len(convs) != 1:
        # e.g. a normalisation (Sub/Div: PyTorch-GAN, SwinIR) or a pixel-unshuffle (Real-ESRGAN x1/x2)
        # before the first convolution: its input is no longer 8-bit pixels, so no exact int8 scale exists
        raise ValueError(f"the exact int8 input needs {input_name!r} to feed one Conv directly, it feeds "
                         f"{[n.op_type for n in users]}; quantize for the CPU (--target cpu), or build an FP16 "
                         "engine (srdeploy build-engine --fp16)")
    # Other users (a bilinear skip of the input: BasicSR MSRResNet, Real-ESRGAN Compact) keep reading the
    # float input: only the convolution's copy is centred.
    conv = convs[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError(f"{conv.name}: auto_pad {attrs['auto_pad']!r}; the exact int8 input needs explicit pads")
    inits = {i.name: i for i in model.graph.initializer}
    if conv.input[1] not in inits:
        raise ValueError(f"{conv.name}: its weights are not an initializer")
    weight = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
    shift = 128.0 * step
    bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 and \
        conv.input[2] else np.zeros(weight.shape[0])
    # Conv(pad0(x)) = Conv(pad(x - shift, -shift)) + shift * sum(W): pad(x - shift, -shift) = pad0(x) - shift.
    new_bias = (bias + shift * weight.reshape(weight.shape[0], -1).sum(axis=1)).astype(np.float32)
    pads = list(attrs.get("pads", [0] * (2 * (weight.ndim - 2))))
    half = len(pads) // 2
    onnx_pads = [0, 0, *pads[:half], 0, 0, *pads[half:]]  # Pad's layout: all begins (N, C, H, W), then all ends
    names = {"shift": f"{CENTERED}_shift", "pads": f"{CENTERED}_pads", "value": f"{CENTERED}_value",
             "bias": f"{conv.name}_centered_bias", "sub": "lr_centered"}
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array(shift, dtype=np.float32), names["shift"]),
        numpy_helper.from_array(np.array(onnx_pads, dtype=np.int64), names["pads"]),
        numpy_helper.from_array(np.array(-shift, dtype=np.float32), names["value"]),
        numpy_helper.from_array(new_bias, names["bias"]),
    ])
    sub = helper.make_node("Sub", [input_name, names["shift"]], [names["sub"]], name="/input/center")
    pad = helper.make_node("Pad", [names["sub"], names["pads"], names["value"]], [CENTERED], name="/input/pad",
                           mode="constant")
    conv.input[0] = CENTERED
    old_bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
    if len(conv.input) > 2:
        conv.input[2] = names["bias"]
    else:
        conv.input.append(names["bias"])
    if old_bias and not any(old_bias in n.input for n in model.graph.node):  # unused now: ORT would warn
        kept = [i for i in model.graph.initializer if i.name != old_bias]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
    for a in conv.attribute:
        if a.name == "pads":
            a.ints[:] = [0] * len(pads)
    index = list(model.graph.node).index(conv)
    model.graph.node.insert(index, pad)
    model.graph.node.insert(index, sub)
    return model
