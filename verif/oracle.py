"""onnxruntime as the oracle, with the same answer on every x86-64 CPU.

On x86-64 CPUs without VNNI instructions (AVX2 only, as on many AMD EPYC servers),
onnxruntime's MLAS multiplies uint8 activations by int8 weights with ``vpmaddubsw``,
which saturates the sum of two adjacent products at the int16 range: with full-range
data some outputs of ``QLinearConv``, ``QLinearMatMul``, their QDQ forms and the
contrib ``QGemm`` of onnxruntime's quantizer come out wrong, on those machines only. Its
uint8 × uint8 kernels widen to 16 bits before multiplying and are exact everywhere.

:func:`onnxruntime_session` therefore runs an equivalent model: every int8 weight
initializer that meets uint8 activations becomes uint8 with 128 added to it and to its
zero point. ``w - zero_point`` is unchanged, so the model computes the same function,
and onnxruntime computes it exactly. The model given is not modified.
"""

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper


__all__ = ["onnxruntime_session", "uint8_weights"]


#: For each operator, the input index of its activation's zero point, and of its weights
#: and their zero point.
_QLINEAR_WEIGHTS = {name: (2, 3, 5) for name in ("QLinearConv", "QLinearMatMul", "QGemm")}


def _is_uint8(initializers, name):
    return name in initializers and initializers[name].data_type == onnx.TensorProto.UINT8


def _is_int8(initializers, name):
    return name in initializers and initializers[name].data_type == onnx.TensorProto.INT8


def uint8_weights(model):
    """A copy of ``model`` whose int8 weights meeting uint8 activations are uint8."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    rewritten = {}

    def shifted(name, like=None):
        """The uint8 initializer for int8 ``name`` (or a zero point of 128 shaped as
        ``like`` when ``name`` is absent)."""
        key = (name, like)
        if key not in rewritten:
            if name:
                values = numpy_helper.to_array(initializers[name]).astype(np.int16) + 128
            else:
                values = np.full(numpy_helper.to_array(initializers[like]).shape, 128)
            new_name = f"{name or like}__uint8"
            graph.initializer.append(numpy_helper.from_array(values.astype(np.uint8), new_name))
            rewritten[key] = new_name
        return rewritten[key]

    for node in graph.node:
        if node.op_type in _QLINEAR_WEIGHTS:
            act_zp, weights, weight_zp = _QLINEAR_WEIGHTS[node.op_type]
            inputs = list(node.input)
            if (len(inputs) > weight_zp and _is_uint8(initializers, inputs[act_zp])
                    and _is_int8(initializers, inputs[weights])
                    and _is_int8(initializers, inputs[weight_zp])):
                node.input[weights] = shifted(inputs[weights])
                node.input[weight_zp] = shifted(inputs[weight_zp])
        elif node.op_type in ("Conv", "MatMul", "Gemm") and len(node.input) >= 2:
            activation, weight = (producers.get(name) for name in node.input[:2])
            if not (activation and weight and activation.op_type == "DequantizeLinear"
                    and weight.op_type == "DequantizeLinear"):
                continue
            act_inputs = list(activation.input) + [""] * 3
            weight_inputs = list(weight.input) + [""] * 3
            if (_is_uint8(initializers, act_inputs[2])
                    and _is_int8(initializers, weight_inputs[0])
                    and (not weight_inputs[2] or _is_int8(initializers, weight_inputs[2]))):
                new_inputs = [shifted(weight_inputs[0]), weight_inputs[1],
                              shifted(weight_inputs[2]) if weight_inputs[2]
                              else shifted("", like=weight_inputs[1])]
                del weight.input[:]
                weight.input.extend(new_inputs)
    used = {name for node in graph.node for name in node.input}
    replaced = {name for name, _ in rewritten}
    unused = [tensor for tensor in graph.initializer
              if tensor.name in replaced and tensor.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return model


def onnxruntime_session(model, *, optimize=True, quiet=False):
    """An onnxruntime CPU session of ``model`` (a ``ModelProto`` or a path) with
    :func:`uint8_weights` applied; ``optimize=False`` disables graph optimizations."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    options = onnxruntime.SessionOptions()
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    if quiet:
        options.log_severity_level = 3
    return onnxruntime.InferenceSession(uint8_weights(model).SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])
