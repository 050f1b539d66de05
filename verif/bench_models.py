"""The networks of ``make bench``: MLPerf Tiny's reference models as float ONNX graphs, the
conv and fully-connected layers of any ONNX graph, and one-layer quantized models.

The MLPerf Tiny models are built with onnx's helper from their published (Keras)
architectures, with random weights and batch normalization folded into the biases:

* ResNet-8 (image classification, CIFAR-10): 32x32x3, a 3x3 stem of 16 filters, three
  residual stages of 16, 32 and 64 filters (the last two halve the image, with a 1x1
  stride-2 shortcut), average pooling and a 64 → 10 dense layer;
* DS-CNN (keyword spotting): 49x10x1, a 10x4 stride-2 convolution of 64 filters, four
  depthwise 3x3 / pointwise 1x1 pairs of 64 channels, average pooling, 64 → 12;
* MobileNetV1 0.25 (visual wake words): 96x96x3, a 3x3 stride-2 convolution of 8
  filters, the 13 depthwise / pointwise pairs with widths × 0.25, average pooling, → 2.

Padding is Keras's ``same`` (for even sizes and stride 2, one more row and column at the
bottom and right). The softmax at the end of each is left out (it is not a layer of the
NPU's, and argmax does not need it).
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference


__all__ = ["resnet8", "ds_cnn", "mobilenet_v1", "MLPERF_TINY", "layers", "distinct",
           "layer_macs", "layer_model", "compulsory_bytes"]


class _Builder:
    """A float CNN under construction: nodes, initializers, and the current shape."""

    def __init__(self, name, shape, rng):
        self.name, self.rng = name, rng
        self.nodes, self.inits = [], []
        self.input_shape = shape
        self.x, self.shape = "input", tuple(shape)

    def constant(self, value, name):
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv(self, name, filters, kernel, stride=1, group=1, relu=True, x=None, shape=None):
        x, (c, h, w) = x or self.x, shape or self.shape
        kh, kw = kernel
        oh, ow = -(-h // stride), -(-w // stride)
        pad_h = max((oh - 1) * stride + kh - h, 0)
        pad_w = max((ow - 1) * stride + kw - w, 0)
        fan_in = c // group * kh * kw
        weights = self.constant(self.rng.standard_normal((filters, c // group, kh, kw)) *
                                np.sqrt(2 / fan_in), f"{name}.weight")
        bias = self.constant(self.rng.standard_normal(filters) * 0.1, f"{name}.bias")
        self.nodes.append(helper.make_node(
            "Conv", [x, weights, bias], [name], name=name, kernel_shape=[kh, kw],
            strides=[stride, stride], group=group,
            pads=[pad_h // 2, pad_w // 2, pad_h - pad_h // 2, pad_w - pad_w // 2]))
        y = name
        if relu:
            self.nodes.append(helper.make_node("Relu", [y], [f"{name}.relu"]))
            y = f"{name}.relu"
        self.x, self.shape = y, (filters, oh, ow)
        return y

    def add_relu(self, a, b, name):
        self.nodes.append(helper.make_node("Add", [a, b], [name]))
        self.nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"]))
        self.x = f"{name}.relu"

    def classifier(self, classes):
        c = self.shape[0]
        self.nodes.append(helper.make_node("GlobalAveragePool", [self.x], ["pool"]))
        self.nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], axis=1))
        weights = self.constant(self.rng.standard_normal((classes, c)) * np.sqrt(1 / c),
                                "fc.weight")
        bias = self.constant(self.rng.standard_normal(classes) * 0.1, "fc.bias")
        self.nodes.append(helper.make_node("Gemm", ["flat", weights, bias], ["logits"],
                                           name="fc", transB=1))
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *self.input_shape])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def resnet8(rng):
    """MLPerf Tiny's ResNet-8 for CIFAR-10, as a float ONNX model."""
    b = _Builder("resnet8", (3, 32, 32), rng)
    b.conv("stem", 16, (3, 3))
    for stage, filters in enumerate([16, 32, 64], start=1):
        stride = 1 if stage == 1 else 2
        x, shape = b.x, b.shape
        b.conv(f"stage{stage}.conv1", filters, (3, 3), stride)
        y = b.conv(f"stage{stage}.conv2", filters, (3, 3), relu=False)
        shortcut = x if stage == 1 else \
            b.conv(f"stage{stage}.shortcut", filters, (1, 1), 2, relu=False, x=x, shape=shape)
        b.add_relu(y, shortcut, f"stage{stage}.add")
    return b.classifier(10)


def ds_cnn(rng):
    """MLPerf Tiny's DS-CNN for keyword spotting, as a float ONNX model."""
    b = _Builder("ds_cnn", (1, 49, 10), rng)
    b.conv("conv1", 64, (10, 4), 2)
    for block in range(1, 5):
        b.conv(f"block{block}.depthwise", 64, (3, 3), group=64)
        b.conv(f"block{block}.pointwise", 64, (1, 1))
    return b.classifier(12)


def mobilenet_v1(rng, alpha=0.25, size=96, classes=2):
    """MobileNetV1 (width ``alpha``) as in MLPerf Tiny's visual wake words, float ONNX."""
    b = _Builder("mobilenet_v1", (3, size, size), rng)
    b.conv("conv1", int(32 * alpha), (3, 3), 2)
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5,
              (1024, 2), (1024, 1)]
    for index, (filters, stride) in enumerate(blocks, start=1):
        channels = b.shape[0]
        b.conv(f"block{index}.depthwise", channels, (3, 3), stride, group=channels)
        b.conv(f"block{index}.pointwise", int(filters * alpha), (1, 1))
    return b.classifier(classes)


#: name → builder of each MLPerf Tiny reference model.
MLPERF_TINY = {"ResNet-8": resnet8, "DS-CNN": ds_cnn, "MobileNetV1 0.25": mobilenet_v1}


def layers(model):
    """Every Conv and Gemm node of ``model`` (a float ``ModelProto``) as a layer: a dict
    with ``name``, ``kind`` (``conv`` or ``fc``), ``input`` (C, H, W or K), ``weight``
    (the weight tensor's shape) and, for convolutions, ``strides``, ``pads``, ``group``.
    Shapes come from onnx's shape inference."""
    model = shape_inference.infer_shapes(model)
    graph = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.input, *graph.value_info, *graph.output]}
    shapes.update({init.name: list(init.dims) for init in graph.initializer})
    out = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = shapes[node.input[1]]
        if node.op_type == "Conv":
            kernel = weight[2:]
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            out.append({"name": node.name, "kind": "conv", "input": shapes[node.input[0]][1:],
                        "weight": weight, "strides": list(attrs.get("strides", [1, 1])),
                        "pads": pads, "group": int(attrs.get("group", 1)), "kernel": kernel})
        elif node.op_type == "Gemm":
            if not attrs.get("transB", 0):
                weight = weight[::-1]
            out.append({"name": node.name, "kind": "fc", "input": [weight[1]], "weight": weight})
    return out


def _output_shape(layer):
    c, h, w = layer["input"]
    kh, kw = layer["weight"][2:]
    sh, sw = layer["strides"]
    pt, pl, pb, pr = layer["pads"]
    return layer["weight"][0], (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


def layer_macs(layer):
    """Multiply-accumulates of one layer."""
    if layer["kind"] == "fc":
        return int(np.prod(layer["weight"]))
    oc, oh, ow = _output_shape(layer)
    return oh * ow * int(np.prod(layer["weight"]))


def compulsory_bytes(layer):
    """DRAM bytes with every 8-bit input, weight and output byte moved once."""
    if layer["kind"] == "fc":
        n, k = layer["weight"]
        return k + n * k + n
    return int(np.prod(layer["input"])) + int(np.prod(layer["weight"])) + \
        int(np.prod(_output_shape(layer)))


def describe(layer):
    """A layer's shape in a few words: ``3x3/2 dw 16->16 32x32``, ``FC 64->10``."""
    if layer["kind"] == "fc":
        n, k = layer["weight"]
        return f"FC {k}->{n}"
    c, h, w = layer["input"]
    oc, _, kh, kw = layer["weight"]
    depthwise = " dw" if layer["group"] > 1 and layer["group"] == c else \
        (f" g{layer['group']}" if layer["group"] > 1 else "")
    return f"{kh}x{kw}/{layer['strides'][0]}{depthwise} {c}->{oc} {h}x{w}"


def distinct(model_layers):
    """The layers with distinct shapes, in order, each with ``count`` (its instances) and
    ``names`` (theirs)."""
    out = {}
    for layer in model_layers:
        key = repr({k: v for k, v in layer.items() if k != "name"})
        if key in out:
            out[key]["count"] += 1
            out[key]["names"].append(layer["name"])
        else:
            out[key] = dict(layer, count=1, names=[layer["name"]])
    return list(out.values())


def layer_model(layer, rng):
    """A one-node quantized model of ``layer`` (QLinearConv, or com.microsoft QGemm for a
    fully-connected layer) with random int8 weights, per-channel weight scales, an int32
    bias, uint8 activations with a zero point, and an output scale that spreads the
    outputs over the uint8 range; and a random input for it. Returns (model, {name: x})."""
    weight_shape = layer["weight"]
    n = weight_shape[0]
    k = int(np.prod(weight_shape[1:]))
    weights = rng.integers(-128, 128, size=weight_shape).astype(np.int8)
    x_scale, x_zero = np.float32(rng.uniform(0.01, 0.05)), np.uint8(rng.integers(64, 192))
    w_scale = rng.uniform(0.002, 0.02, size=n).astype(np.float32)
    # The accumulator's spread is about sqrt(K) * 74 * 74 (full-range operands).
    y_scale = np.float32(x_scale * w_scale.mean() * np.sqrt(k) * 74 * 74 / 40)
    bias = rng.integers(-2**14, 2**14, size=n).astype(np.int32)
    inits = [numpy_helper.from_array(np.asarray(value), name) for name, value in [
        ("x_scale", x_scale), ("x_zero_point", x_zero), ("w", weights),
        ("y_scale", y_scale), ("y_zero_point", np.uint8(128)), ("bias", bias)]]
    if layer["kind"] == "conv":
        x_shape = [1, *layer["input"]]
        inits += [numpy_helper.from_array(w_scale, "w_scale"),
                  numpy_helper.from_array(np.zeros(n, np.int8), "w_zero_point")]
        c, h, w = layer["input"]
        node = helper.make_node(
            "QLinearConv", ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point",
                            "y_scale", "y_zero_point", "bias"], ["y"], name=layer["name"],
            kernel_shape=weight_shape[2:], strides=layer["strides"], pads=layer["pads"],
            group=layer["group"])
        y_shape = [1, *_output_shape(layer)]
        domain = []
    else:
        x_shape = [1, k]
        inits += [numpy_helper.from_array(np.float32(w_scale.mean()), "w_scale"),
                  numpy_helper.from_array(np.int8(0), "w_zero_point")]
        node = helper.make_node(
            "QGemm", ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "bias",
                      "y_scale", "y_zero_point"], ["y"], name=layer["name"], domain="com.microsoft",
            transB=1)
        y_shape = [1, n]
        domain = [helper.make_opsetid("com.microsoft", 1)]
    graph = helper.make_graph(
        [node], layer["name"], [helper.make_tensor_value_info("x", TensorProto.UINT8, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), *domain])
    model.ir_version = 8
    x = rng.integers(0, 256, size=x_shape).astype(np.uint8)
    x.reshape(-1)[:2] = [0, 255]
    return model, {"x": x}
