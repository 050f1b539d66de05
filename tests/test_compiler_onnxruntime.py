"""Compiled models on the golden backend against onnxruntime, bit for bit: random CNNs
(conv stacks with stride 1 and 2, padding, ReLU, a residual add, max or average pooling,
global average pooling, a fully-connected layer) quantized by onnxruntime's
quantize_static in both formats, with per-tensor and per-channel weight scales; and adds
in the NPU's add mode or, where it cannot compute them, on the host."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import sw.compiler
from hw.config import DEFAULT_CONFIG
from sw.compiler import compile_model
from sw.runtime import GoldenBackend, Runtime
from verif.oracle import onnxruntime_session
from verif.random_models import quantize, random_float_cnn

VARIANTS = [(fmt, per_channel) for fmt in ("QOperator", "QDQ") for per_channel in (False, True)]


@pytest.mark.parametrize("quant_format,per_channel", VARIANTS,
                         ids=[f"{f}-{'per_channel' if p else 'per_tensor'}" for f, p in VARIANTS])
def test_random_quantized_cnns_match_onnxruntime(quant_format, per_channel, seed, tmp_path):
    rng = np.random.default_rng(seed)
    for index in range(3):
        size = int(rng.choice([6, 8, 9]))
        channels = int(rng.integers(1, 5))
        model = random_float_cnn(rng, size=size, channels=channels)
        path = quantize(model, tmp_path / f"model{index}.onnx", rng, quant_format, per_channel)
        compiled = compile_model(path)
        runtime = Runtime(compiled, GoldenBackend(compiled.config, compiled.memory_bytes))
        session = onnxruntime_session(path)
        for _ in range(4):
            x = (rng.standard_normal((1, channels, size, size)) * rng.uniform(0.5, 3)).astype(np.float32)
            got = runtime.infer_sync({"input": x})["logits"]
            want = session.run(None, {"input": x})[0]
            assert np.array_equal(got, want), \
                f"model {index} ({quant_format}, per_channel={per_channel}): {got} != {want}"


@pytest.mark.parametrize("group, depthwise", [(2, False), (12, True)])
def test_direct_grouped_convolutions_on_a_batch_match_onnxruntime(group, depthwise, seed,
                                                                 monkeypatch):
    """QLinearConv on a batch of two int8 images, grouped (each group its own direct
    convolution over its slice of channels) or depthwise (one over every channel), with
    uneven padding and per-channel weight scales, against onnxruntime bit for bit. The
    direct lowering is forced: the cost model may prefer im2col for shapes this small."""
    monkeypatch.setattr(sw.compiler._Compiler, "prefers_direct", lambda *args: True)
    rng = np.random.default_rng(seed)
    C, H, W = 12, 11, 13
    N = C if depthwise else 16
    w = rng.integers(-128, 128, size=(N, C // group, 3, 3)).astype(np.int8)
    x_scale, y_scale = np.float32(0.02), np.float32(0.3 if depthwise else 0.9)
    inits = [numpy_helper.from_array(np.asarray(value), name) for name, value in [
        ("x_scale", x_scale), ("x_zero_point", np.int8(rng.integers(-20, 20))), ("w", w),
        ("w_scale", rng.uniform(0.002, 0.02, size=N).astype(np.float32)),
        ("w_zero_point", np.zeros(N, np.int8)), ("y_scale", y_scale),
        ("y_zero_point", np.int8(-3)), ("bias", rng.integers(-2**12, 2**12, size=N).astype(np.int32))]]
    node = helper.make_node(
        "QLinearConv", ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point",
                        "y_scale", "y_zero_point", "bias"], ["y"], name="grouped",
        kernel_shape=[3, 3], pads=[1, 0, 2, 1], group=group)
    graph = helper.make_graph(
        [node], "grouped", [helper.make_tensor_value_info("x", TensorProto.INT8, [2, C, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [2, N, H + 1, W - 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = rng.integers(-128, 128, size=(2, C, H, W)).astype(np.int8)
    compiled = compile_model(model)
    layers = compiled.steps[0]["layers"]
    assert all(layer.get("direct") for layer in layers)
    assert len(layers) == (2 if depthwise else 2 * group)
    runtime = Runtime(compiled, GoldenBackend(compiled.config, compiled.memory_bytes))
    session = onnxruntime_session(model)
    want = session.run(None, {"x": x})[0]
    assert np.count_nonzero((want > -128) & (want < 127)) > want.size // 2, "outputs saturate"
    np.testing.assert_array_equal(runtime.infer_sync({"x": x})["y"], want)


def _conv_chain(rng, size, channels, widths):
    """A float model: 3x3 convolutions with ReLU, one after another, then global average
    pooling and a fully-connected layer."""
    nodes, inits = [], []
    x, cin = "input", channels
    for index, width in enumerate(widths):
        w, b, y = f"w{index}", f"b{index}", f"conv{index}"
        inits += [numpy_helper.from_array((rng.standard_normal((width, cin, 3, 3)) *
                                           np.sqrt(2 / (cin * 9))).astype(np.float32), w),
                  numpy_helper.from_array((rng.standard_normal(width) * 0.1).astype(np.float32), b)]
        nodes += [helper.make_node("Conv", [x, w, b], [y], kernel_shape=[3, 3], pads=[1] * 4),
                  helper.make_node("Relu", [y], [y + "_relu"])]
        x, cin = y + "_relu", width
    inits += [numpy_helper.from_array(rng.standard_normal((4, cin)).astype(np.float32), "fc_w")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
              helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "conv_chain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("quant_format", ["QOperator", "QDQ"])
def test_convolutions_in_a_row_keep_their_tensor_in_the_scratchpad(quant_format, seed, tmp_path):
    """Three convolutions whose tensors between them have no other reader run as one NPU
    program, those tensors kept in the scratchpad (each step but the last runs with the
    next) and not in memory, and the model still matches onnxruntime bit for bit."""
    rng = np.random.default_rng(seed)
    path = quantize(_conv_chain(rng, 16, 8, [16, 16, 24]), tmp_path / "chain.onnx", rng,
                    quant_format, per_channel=True)
    compiled = compile_model(path)
    npu = [step for step in compiled.steps if step["op"] == "gemm"][:3]
    assert all(step.get("runs_with_next") and step["program"] is None for step in npu[:2])
    assert not npu[2].get("runs_with_next") and npu[2]["program"]
    for first, second in zip(npu, npu[1:]):
        # The tensor between them has no memory: neither writes nor reads it there.
        assert first.get("y_resident") and second["layers"][0].get("x_resident")
        assert first["layers"][0]["y_addr"] == second["layers"][0]["x_addr"] == 0
    runtime = Runtime(compiled, GoldenBackend(compiled.config, compiled.memory_bytes))
    session = onnxruntime_session(path)
    for _ in range(3):
        x = (rng.standard_normal((1, 8, 16, 16)) * rng.uniform(0.5, 3)).astype(np.float32)
        np.testing.assert_array_equal(runtime.infer_sync({"input": x})["logits"],
                                      session.run(None, {"input": x})[0])


def test_the_network_spends_cycles_where_they_save_the_most_bytes(seed, tmp_path):
    """A 3-channel first convolution is twice as slow run straight from its input as on
    im2col, so alone it takes im2col; followed by larger convolutions, the network has
    cycles to spare within the lowering's tolerance and runs it directly, for a ninth of
    its input bytes (sw.compiler network_lowerings). Both match onnxruntime bit for bit."""
    rng = np.random.default_rng(seed)
    for widths, direct in (([16], False), ([16, 16, 16], True)):
        path = quantize(_conv_chain(rng, 32, 3, widths), tmp_path / f"chain{len(widths)}.onnx",
                        rng, "QOperator", per_channel=True)
        compiled = compile_model(path)
        first = next(step for step in compiled.steps if step["op"] == "gemm")
        assert bool(first["layers"][0].get("direct")) == direct, widths
        runtime = Runtime(compiled, GoldenBackend(compiled.config, compiled.memory_bytes))
        x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
        np.testing.assert_array_equal(runtime.infer_sync({"input": x})["logits"],
                                      onnxruntime_session(path).run(None, {"input": x})[0])


def _full_range(rng, dtype, shape):
    """Uniform values of ``dtype`` with both extremes (and 0) among the first elements."""
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
    values.reshape(-1)[:3] = [info.min, info.max, 0][:values.size]
    return values


def _add_model(nodes, inputs, outputs, inits, microsoft=False):
    graph = helper.make_graph(
        nodes, "adds", [helper.make_tensor_value_info(*value) for value in inputs],
        [helper.make_tensor_value_info(*value) for value in outputs],
        [numpy_helper.from_array(np.asarray(value), name) for name, value in inits])
    opsets = [helper.make_opsetid("", 13)]
    if microsoft:
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def _qlinear_add(name, a, b, y, scales, zero_points):
    """A QLinearAdd node of ``a`` and ``b`` into ``y``, and its scales and zero points as
    initializers (named after the node)."""
    params = [f"{name}_{p}" for p in ("sa", "za", "sb", "zb", "sy", "zy")]
    node = helper.make_node("QLinearAdd", [a, *params[:2], b, *params[2:4], *params[4:]], [y],
                            name=name, domain="com.microsoft")
    values = [scales[0], zero_points[0], scales[1], zero_points[1], scales[2], zero_points[2]]
    return node, list(zip(params, values))


def _run_against_onnxruntime(model, config, feeds):
    """Compile ``model`` for ``config``; its outputs for each of ``feeds`` on the golden
    backend, asserted equal to onnxruntime's bit for bit; return the compiled model and the
    last outputs."""
    compiled = compile_model(model, config)
    runtime = Runtime(compiled, GoldenBackend(compiled.config, compiled.memory_bytes), config)
    session = onnxruntime_session(model)
    for inputs in feeds:
        want = session.run(None, inputs)
        got = runtime.infer_sync(inputs)
        for output, value in zip(session.get_outputs(), want):
            np.testing.assert_array_equal(got[output.name], value, err_msg=output.name)
    return compiled, want


#: The default configuration with the output stage's add mode (``hw.add_stage``).
ADD_MODE = DEFAULT_CONFIG.with_(elementwise_add=True)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_adds_run_in_the_add_mode(dtype, seed):
    """com.microsoft QLinearAdd on the NPU's add mode, bit for bit with onnxruntime: 210
    elements (not a whole number of vectors), full-range inputs, random zero points,
    scales under which some outputs saturate; and a one-element add, whose operands
    onnxruntime swaps (input B is X)."""
    rng = np.random.default_rng(seed)
    type_ = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    info = np.iinfo(dtype)
    shapes = {"sum": [2, 3, 5, 7], "one": [1]}
    nodes, inputs, outputs, inits = [], [], [], []
    for name, shape in shapes.items():
        scales = np.exp2(rng.uniform(-7, -3, size=3)).astype(np.float32)
        scales[2] = np.float32(max(scales[:2]) * rng.uniform(0.5, 0.9))
        zero_points = rng.integers(info.min, info.max + 1, size=3).astype(dtype)
        node, values = _qlinear_add(name, f"{name}_a", f"{name}_b", f"{name}_y", scales,
                                    zero_points)
        nodes.append(node)
        inits += values
        inputs += [(f"{name}_a", type_, shape), (f"{name}_b", type_, shape)]
        outputs.append((f"{name}_y", type_, shape))
    model = _add_model(nodes, inputs, outputs, inits, microsoft=True)
    feeds = [{name: _full_range(rng, dtype, shape) for name, _, shape in inputs} for _ in range(3)]
    compiled, want = _run_against_onnxruntime(model, ADD_MODE, feeds)
    assert [step["op"] for step in compiled.steps] == ["npu_add", "npu_add"]
    assert compiled.steps[1]["a"]["tensor"] == "one_b", "onnxruntime streams input B as X"
    saturated = np.isin(want[0], [info.min, info.max])
    assert saturated.any() and not saturated.all(), want[0]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qdq_add_with_relu_runs_in_the_add_mode(dtype, seed):
    """DequantizeLinear → Add → Relu → QuantizeLinear folds into one add on the NPU, its
    clamp from the output zero point, bit for bit with onnxruntime."""
    rng = np.random.default_rng(seed)
    type_ = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    info = np.iinfo(dtype)
    shape = [1, 4, 6, 5]
    scales = np.exp2(rng.uniform(-7, -3, size=3)).astype(np.float32)
    zero_points = rng.integers(info.min // 2, info.max // 2, size=3).astype(dtype)
    nodes = [helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["a_float"]),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["b_float"]),
             helper.make_node("Add", ["a_float", "b_float"], ["sum"], name="residual"),
             helper.make_node("Relu", ["sum"], ["relu"]),
             helper.make_node("QuantizeLinear", ["relu", "sy", "zy"], ["y"])]
    inits = list(zip(["sa", "sb", "sy"], scales)) + list(zip(["za", "zb", "zy"], zero_points))
    model = _add_model(nodes, [("a", type_, shape), ("b", type_, shape)], [("y", type_, shape)],
                       inits)
    feeds = [{name: _full_range(rng, dtype, shape) for name in "ab"} for _ in range(3)]
    compiled, want = _run_against_onnxruntime(model, ADD_MODE, feeds)
    (step,) = compiled.steps
    assert step["op"] == "npu_add" and step["activation"] == "relu"
    assert (want[0] == zero_points[2]).any() and (want[0] > zero_points[2]).any(), want[0]


def test_adds_the_add_mode_cannot_compute_run_on_the_host(seed):
    """An add stays on the host, with the reason recorded, when its inputs broadcast, when
    its ratios are too far apart for the add mode to compute exactly, or when the
    configuration has no add mode; bit for bit with onnxruntime either way."""
    rng = np.random.default_rng(seed)
    U8 = TensorProto.UINT8
    zero_points = rng.integers(0, 256, size=3).astype(np.uint8)
    broadcast, inits = _qlinear_add("broadcast", "x", "bias", "y",
                                    np.float32([0.02, 0.03, 0.04]), zero_points)
    far, far_inits = _qlinear_add("far", "x", "z", "w", np.float32([0.02, 0.02 * 2.0**-20, 0.04]),
                                  zero_points)
    model = _add_model([broadcast, far], [("x", U8, [1, 3, 4, 4]), ("bias", U8, [1, 3, 1, 1]),
                                          ("z", U8, [1, 3, 4, 4])],
                       [("y", U8, [1, 3, 4, 4]), ("w", U8, [1, 3, 4, 4])], inits + far_inits,
                       microsoft=True)
    feeds = [{"x": _full_range(rng, np.uint8, (1, 3, 4, 4)),
              "bias": _full_range(rng, np.uint8, (1, 3, 1, 1)),
              "z": _full_range(rng, np.uint8, (1, 3, 4, 4))} for _ in range(2)]
    compiled, _ = _run_against_onnxruntime(model, ADD_MODE, feeds)
    assert [step["op"] for step in compiled.steps] == ["add", "add"]
    assert compiled.steps[0]["host_reason"] == \
        "its inputs broadcast ([1, 3, 4, 4] and [1, 3, 1, 1])"
    assert "ratio_x is more than 2^15 times" in compiled.steps[1]["host_reason"]
    compiled, _ = _run_against_onnxruntime(model, DEFAULT_CONFIG, feeds)
    assert {step["host_reason"] for step in compiled.steps} == {"the configuration has no add mode"}
