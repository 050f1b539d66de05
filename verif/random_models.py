"""Random quantized CNNs, built with onnx's helper and quantized by onnxruntime's static
quantizer: the inputs of the compiler's bit-exactness tests against onnxruntime."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


__all__ = ["random_float_cnn", "quantize", "Calibration"]


class Calibration:
    """onnxruntime's CalibrationDataReader over random inputs."""

    def __init__(self, name, shape, rng, count=8):
        self.batches = iter([{name: rng.standard_normal(shape).astype(np.float32)}
                             for _ in range(count)])

    def get_next(self):
        return next(self.batches, None)

    def rewind(self):
        pass


def random_float_cnn(rng, size=8, channels=3, classes=5, pooling=None):
    """A float CNN: conv stacks (stride 1 and 2, padding, sometimes a depthwise conv), ReLU,
    a residual add, max or average pooling (``pooling``: "max", "average", "both", or
    random), global average pooling and a final fully-connected layer."""
    nodes, inits = [], []
    counter = iter(range(1000))

    def tensor(value, prefix):
        name = f"{prefix}{next(counter)}"
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv(x, cin, cout, k, stride, pad, relu=True, group=1):
        w = tensor(rng.standard_normal((cout, cin // group, k, k)) *
                   np.sqrt(2 / (cin // group * k * k)), "w")
        b = tensor(rng.standard_normal(cout) * 0.1, "b")
        y = f"conv{next(counter)}"
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[pad] * 4, group=group))
        if relu:
            nodes.append(helper.make_node("Relu", [y], [y + "_relu"]))
            y = y + "_relu"
        return y

    width = int(rng.integers(4, 12))
    x = conv("input", channels, width, 3, 1, 1)
    if rng.random() < 0.5:
        x = conv(x, width, width, 3, 1, 1, group=width)
    skip = x
    x = conv(x, width, width, 3, 1, 1, relu=False)
    nodes.append(helper.make_node("Add", [x, skip], ["residual"]))
    nodes.append(helper.make_node("Relu", ["residual"], ["residual_relu"]))
    x = "residual_relu"
    pooling = pooling or ("max" if rng.random() < 0.5 else "average")
    if pooling in ("max", "both"):
        nodes.append(helper.make_node("MaxPool", [x], ["max_pooled"], kernel_shape=[2, 2],
                                      strides=[2, 2]))
        x = "max_pooled"
    if pooling in ("average", "both"):
        stride = 1 if pooling == "both" else 2
        nodes.append(helper.make_node("AveragePool", [x], ["average_pooled"], kernel_shape=[3, 3],
                                      strides=[stride, stride], pads=[1, 1, 1, 1]))
        x = "average_pooled"
    wider = int(rng.integers(8, 20))
    x = conv(x, width, wider, int(rng.choice([1, 3])), 2, 1 if rng.random() < 0.5 else 0)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    fc_w = tensor(rng.standard_normal((classes, wider)) * 0.3, "fc_w")
    fc_b = tensor(rng.standard_normal(classes) * 0.1, "fc_b")
    nodes.append(helper.make_node("Gemm", ["flat", fc_w, fc_b], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "random_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def quantize(model, path, rng, quant_format="QOperator", per_channel=False):
    """Quantize ``model`` with onnxruntime's static quantizer; write it to ``path``."""
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    with tempfile.TemporaryDirectory() as directory:
        float_path = Path(directory) / "float.onnx"
        onnx.save(model, float_path)
        quantize_static(str(float_path), str(path),
                        Calibration(model.graph.input[0].name, shape, rng),
                        quant_format=getattr(QuantFormat, quant_format),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=per_channel)
    return path
