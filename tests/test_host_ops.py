"""sw/host_ops.py against onnxruntime's CPU execution provider, bit for bit.

Each test builds a one-node ONNX model, runs it in onnxruntime (graph optimizations off) and
compares with the NumPy implementation on random data (full value range, log-uniform scales,
random zero points, many shapes) and on crafted rounding ties and saturation cases.
"""

import numpy as np
import pytest
from onnx import helper, numpy_helper

from sw import host_ops
from verif.oracle import onnxruntime_session

F32 = np.float32
TYPES = [np.uint8, np.int8]


def run_onnxruntime(op_type, inputs, constants=(), attributes=None, domain="", output_dtype=None, opset=21):
    """Run a single `op_type` node; `inputs` are (name, array) graph inputs, `constants` (name, array)
    initializers, all fed to the node in the given order (inputs first)."""
    value_infos = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape)
                   for name, array in inputs]
    initializers = [numpy_helper.from_array(np.asarray(array), name) for name, array in constants]
    node = helper.make_node(op_type, [name for name, _ in inputs] + [name for name, _ in constants], ["y"],
                            domain=domain, **(attributes or {}))
    out_type = helper.np_dtype_to_tensor_dtype(np.dtype(output_dtype or inputs[0][1].dtype))
    graph = helper.make_graph([node], op_type, value_infos, [helper.make_tensor_value_info("y", out_type, None)],
                              initializers)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    session = onnxruntime_session(model, optimize=False, quiet=True)
    return session.run(None, dict(inputs))[0]


def assert_bit_exact(actual, expected):
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.dtype.kind == "f":
        actual, expected = actual.view(np.uint32), expected.view(np.uint32)
    mismatch = np.nonzero(actual != expected)
    assert mismatch[0].size == 0, f"{mismatch[0].size} mismatches, first at {[m[0] for m in mismatch]}"


def log_uniform(rng, low_exp, high_exp, size=None):
    return np.asarray(10.0 ** rng.uniform(low_exp, high_exp, size), F32)


def full_range(rng, dtype, shape):
    """Random values over the whole range with the extremes always present."""
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    flat = values.reshape(-1)
    flat[: min(2, flat.size)] = [info.min, info.max][: min(2, flat.size)]
    rng.shuffle(flat)
    return values


def random_zero_point(rng, dtype):
    info = np.iinfo(dtype)
    return np.array(rng.integers(info.min, info.max, endpoint=True), dtype)


# ---------------------------------------------------------------- QuantizeLinear / DequantizeLinear

def ort_quantize(x, scale, zero_point, axis=1):
    return run_onnxruntime("QuantizeLinear", [("x", x)], [("s", scale), ("z", zero_point)],
                           {"axis": axis}, output_dtype=zero_point.dtype)


@pytest.mark.parametrize("dtype", TYPES)
def test_quantize_linear_random(seed, dtype):
    rng = np.random.default_rng(seed)
    for _ in range(30):
        shape = tuple(rng.integers(1, 9, size=rng.integers(1, 5)))
        scale = log_uniform(rng, -4, 2)
        x = (rng.standard_normal(shape) * scale * rng.uniform(1, 300)).astype(F32)
        zero_point = random_zero_point(rng, dtype)
        assert_bit_exact(host_ops.quantize_linear(x, scale, zero_point), ort_quantize(x, scale, zero_point))


@pytest.mark.parametrize("dtype", TYPES)
def test_quantize_linear_ties_saturation_and_special_values(seed, dtype):
    rng = np.random.default_rng(seed)
    scale = F32(2.0 ** rng.integers(-8, 4))
    halves = (np.arange(-300, 301) + F32(0.5)) * scale            # every x/scale is exactly k + 0.5
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 3e38], F32)
    x = np.concatenate([halves.astype(F32), special]).reshape(1, -1)
    for zero_point in [np.array(v, dtype) for v in (np.iinfo(dtype).min, 0, 3, np.iinfo(dtype).max)]:
        assert_bit_exact(host_ops.quantize_linear(x, scale, zero_point), ort_quantize(x, scale, zero_point))


@pytest.mark.parametrize("dtype", TYPES)
def test_quantize_linear_per_axis(seed, dtype):
    rng = np.random.default_rng(seed)
    for axis in [0, 1, 2, -1]:
        shape = tuple(rng.integers(2, 7, size=4))
        channels = shape[axis]
        scale = log_uniform(rng, -3, 1, channels)
        zero_point = np.array([random_zero_point(rng, dtype) for _ in range(channels)], dtype)
        x = (rng.standard_normal(shape) * 100).astype(F32)
        assert_bit_exact(host_ops.quantize_linear(x, scale, zero_point, axis=axis),
                         ort_quantize(x, scale, zero_point, axis=axis))


@pytest.mark.parametrize("dtype", TYPES)
def test_dequantize_linear(seed, dtype):
    rng = np.random.default_rng(seed)
    for axis in [None, 0, 1, -1]:
        shape = tuple(rng.integers(1, 9, size=3))
        q = full_range(rng, dtype, shape)
        if axis is None:
            scale, zero_point, attributes = log_uniform(rng, -6, 3), random_zero_point(rng, dtype), {}
        else:
            channels = shape[axis]
            scale = log_uniform(rng, -6, 3, channels)
            zero_point = np.array([random_zero_point(rng, dtype) for _ in range(channels)], dtype)
            attributes = {"axis": axis}
        expected = run_onnxruntime("DequantizeLinear", [("q", q)], [("s", scale), ("z", zero_point)], attributes,
                                   output_dtype=F32)
        actual = host_ops.dequantize_linear(q, scale, zero_point, **({} if axis is None else {"axis": axis}))
        assert_bit_exact(actual, expected)


# ---------------------------------------------------------------- QLinearAdd

def ort_qlinear_add(a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero):
    return run_onnxruntime(
        "QLinearAdd",
        [("a", a), ("as", np.array(a_scale, F32)), ("az", a_zero), ("b", b), ("bs", np.array(b_scale, F32)),
         ("bz", b_zero), ("ys", np.array(y_scale, F32)), ("yz", y_zero)],
        domain="com.microsoft")


def check_qlinear_add(a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero):
    expected = ort_qlinear_add(a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero)
    actual = host_ops.qlinear_add(a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero)
    assert_bit_exact(actual, expected)


BROADCAST_SHAPES = [((7,), (7,)), ((1, 3, 5, 5), (1, 3, 5, 5)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 1)),
                    ((3, 1), (1, 33)), ((1,), (37,)), ((37,), (1,)), ((), (5, 2)), ((4, 1, 3), (1, 5, 1)),
                    ((1, 1), (1, 1)), ((2, 1, 1), (1, 1, 1)), ((65,), (65,))]


@pytest.mark.parametrize("dtype", TYPES)
def test_qlinear_add_random_and_broadcasting(seed, dtype):
    rng = np.random.default_rng(seed)
    for _ in range(3):
        for a_shape, b_shape in BROADCAST_SHAPES:
            a, b = full_range(rng, dtype, a_shape), full_range(rng, dtype, b_shape)
            a_scale, b_scale, y_scale = log_uniform(rng, -4, 1, 3)
            check_qlinear_add(a, a_scale, random_zero_point(rng, dtype), b, b_scale, random_zero_point(rng, dtype),
                              y_scale, random_zero_point(rng, dtype))


@pytest.mark.parametrize("dtype", TYPES)
def test_qlinear_add_every_input_pair(seed, dtype):
    """All 256 x 256 input pairs: with float32 rounding errors this hits values within an ulp of .5."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    grid = np.arange(info.min, info.max + 1).astype(dtype)
    for _ in range(6):
        a_scale, b_scale, y_scale = log_uniform(rng, -3, 0, 3)
        zeros = [random_zero_point(rng, dtype) for _ in range(3)]
        check_qlinear_add(grid[:, None], a_scale, zeros[0], grid[None, :], b_scale, zeros[1], y_scale, zeros[2])
        check_qlinear_add(np.repeat(grid, 256), a_scale, zeros[0], np.tile(grid, 256), b_scale, zeros[1],
                          y_scale, zeros[2])


@pytest.mark.parametrize("dtype", TYPES)
def test_qlinear_add_exact_ties_and_saturation(seed, dtype):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    grid = np.arange(info.min, info.max + 1).astype(dtype)
    zero = np.array(0, dtype)
    # Scale ratios 1/2 and 1: every result is an exact k + 0.5 tie or an integer; wide output range
    # saturates at both ends.
    for y_zero in [zero, random_zero_point(rng, dtype)]:
        check_qlinear_add(grid[:, None], F32(0.5), random_zero_point(rng, dtype), grid[None, :], F32(1.0),
                          random_zero_point(rng, dtype), F32(1.0), y_zero)
    # Scalar operand (both sides) with exact ties.
    check_qlinear_add(grid, F32(0.25), zero, np.array([1], dtype), F32(0.125), zero, F32(0.5), zero)
    check_qlinear_add(np.array([3], dtype), F32(0.25), zero, grid, F32(0.125), zero, F32(0.25), zero)
    # Huge ratio: values beyond int32 convert to INT32_MIN and saturate to the minimum.
    check_qlinear_add(grid, F32(1e3), zero, grid[::-1].copy(), F32(1e-3), zero, F32(1e-7), zero)


@pytest.mark.parametrize("scales, zero_points", [
    ((0.03431349, 0.71021706, 0.0027069412), (210, 242, 63)),
    ((0.5718286, 0.30232635, 0.45348278), (172, 18, 169)),
    ((0.26966405, 0.010601912, 0.042757064), (161, 223, 50)),
])
def test_qlinear_add_streams_b_when_a_is_broadcast_innermost(scales, zero_points):
    """a of shape (256, 1) is constant along the innermost axis, so onnxruntime swaps the operands;
    each of these parameter sets gives a different result without the swap."""
    grid = np.arange(256).astype(np.uint8)
    a_scale, b_scale, y_scale = (F32(s) for s in scales)
    a_zero, b_zero, y_zero = (np.array(z, np.uint8) for z in zero_points)
    check_qlinear_add(grid[:, None], a_scale, a_zero, grid[None, :], b_scale, b_zero, y_scale, y_zero)


def test_qlinear_add_fused_multiply_add_rounds_once():
    """130 * (16519105 * 2**-54) = 2**-23 + 2**-53 added to 5 * 0.5 = 2.5: the exact sum lies just above
    the float32 midpoint 2.5 + 2**-23, so a single-rounding FMA gives 2.5 + 2**-22 -> 3, while any
    double rounding lands on the tie and gives 2."""
    zero = np.array(0, np.uint8)
    a = np.array([130, 0, 1, 205, 255], np.uint8)
    b = np.full(5, 5, np.uint8)
    ratio = F32(16519105 * 2.0**-54)
    check_qlinear_add(a, ratio, zero, b, F32(0.5), zero, F32(1.0), zero)
    assert host_ops.qlinear_add(a, ratio, zero, b, F32(0.5), zero, F32(1.0), zero)[0] == 3


# ---------------------------------------------------------------- MaxPool

POOL_CASES = [  # (spatial shape, kernel, strides, pads)
    ((9,), [3], [2], [1, 1]), ((2,), [1], [1], [0, 0]), ((7, 7), [3, 3], [2, 2], [1, 1, 1, 1]),
    ((8, 5), [2, 3], [2, 1], [0, 1, 1, 2]), ((5, 6), [5, 5], [3, 3], [2, 4, 0, 1]), ((4, 4), [1, 1], [3, 2], [0] * 4),
    ((6, 5), [4, 2], [1, 3], [3, 0, 1, 1]), ((13, 11), [2, 2], [2, 2], [0, 0, 0, 0]),
    ((4, 5, 6), [2, 3, 2], [2, 1, 3], [1, 0, 1, 0, 2, 1]),
]


def random_pool_case(rng):
    rank = int(rng.integers(1, 3, endpoint=True))
    kernel = [int(k) for k in rng.integers(1, 5, size=rank, endpoint=True)]
    strides = [int(s) for s in rng.integers(1, 3, size=rank, endpoint=True)]
    pads = [int(rng.integers(0, k)) for k in kernel * 2]
    spatial = [int(max(k, rng.integers(1, 12))) for k in kernel]
    if spatial == kernel and not any(pads):
        spatial[0] += 1  # a whole-image kernel is the global path, tested on its own
    return tuple(spatial), kernel, strides, pads


def pool_cases(rng, count):
    return POOL_CASES + [random_pool_case(rng) for _ in range(count)]


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_max_pool(seed, dtype, ceil_mode):
    rng = np.random.default_rng(seed)
    for spatial, kernel, strides, pads in pool_cases(rng, 25):
        dilations = [int(d) for d in rng.integers(1, 2, size=len(kernel), endpoint=True)]
        if any((k - 1) * d + 1 > s + pads[i] + pads[i + len(kernel)]
               for i, (k, d, s) in enumerate(zip(kernel, dilations, spatial))):
            dilations = [1] * len(kernel)
        x = full_range(rng, dtype, (2, 3) + spatial)
        attributes = {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations,
                      "ceil_mode": ceil_mode}
        expected = run_onnxruntime("MaxPool", [("x", x)], attributes=attributes)
        assert_bit_exact(host_ops.max_pool(x, kernel, strides, pads, dilations, ceil_mode), expected)


@pytest.mark.parametrize("dtype", TYPES)
def test_max_pool_ceil_mode_drops_window_starting_in_padding(dtype):
    for kernel, strides, pads, size in [([1], [2], [0, 0], 4), ([2], [2], [1, 1], 5), ([2], [3], [0, 1], 4)]:
        x = (np.arange(size) * 7 - 20).astype(dtype).reshape(1, 1, size)
        expected = run_onnxruntime("MaxPool", [("x", x)], attributes={"kernel_shape": kernel, "strides": strides,
                                                                      "pads": pads, "ceil_mode": 1})
        assert_bit_exact(host_ops.max_pool(x, kernel, strides, pads, ceil_mode=1), expected)


# ---------------------------------------------------------------- QLinearAveragePool

def ort_qlinear_average_pool(x, x_scale, x_zero, y_scale, y_zero, attributes):
    return run_onnxruntime(
        "QLinearAveragePool",
        [("x", x), ("xs", np.array(x_scale, F32)), ("xz", x_zero), ("ys", np.array(y_scale, F32)), ("yz", y_zero)],
        attributes=attributes, domain="com.microsoft")


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_qlinear_average_pool(seed, dtype, count_include_pad, ceil_mode):
    rng = np.random.default_rng(seed)
    for spatial, kernel, strides, pads in pool_cases(rng, 20):
        x = full_range(rng, dtype, (2, 3) + spatial)
        x_scale, y_scale = log_uniform(rng, -3, 1, 2)
        x_zero, y_zero = random_zero_point(rng, dtype), random_zero_point(rng, dtype)
        attributes = {"kernel_shape": kernel, "strides": strides, "pads": pads, "count_include_pad": count_include_pad,
                      "ceil_mode": ceil_mode}
        expected = ort_qlinear_average_pool(x, x_scale, x_zero, y_scale, y_zero, attributes)
        actual = host_ops.qlinear_average_pool(x, x_scale, x_zero, y_scale, y_zero, kernel, strides, pads,
                                               count_include_pad, ceil_mode)
        assert_bit_exact(actual, expected)


@pytest.mark.parametrize("dtype", TYPES)
def test_qlinear_average_pool_ties_and_saturation(dtype):
    info = np.iinfo(dtype)
    zero = np.array(0, dtype)
    # Pairs (v, v + 1) average to v + 0.5 exactly: round half to even.
    x = np.arange(info.min, info.max, dtype=np.int64)
    x = np.stack([x, x + 1], axis=-1).astype(dtype).reshape(1, 1, -1)
    attributes = {"kernel_shape": [2], "strides": [2]}
    # y_scale = 1 + 2**-23 puts averages just below k + 0.5; adding the zero point before rounding
    # rounds them onto the tie.
    for x_scale, y_scale, y_zero in [(1.0, 1.0, zero), (0.5, 0.25, zero), (4.0, 1.0, np.array(info.max, dtype)),
                                     (1e6, 1e-6, zero), (1e-3, 1e3, zero), (1.0, 1.0 + 2.0**-23, np.array(3, dtype))]:
        expected = ort_qlinear_average_pool(x, x_scale, zero, y_scale, y_zero, attributes)
        assert_bit_exact(host_ops.qlinear_average_pool(x, x_scale, zero, y_scale, y_zero, [2], [2]), expected)


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_qlinear_average_pool_divides_by_window_size(seed, dtype, count_include_pad):
    """Windows of 14 with unit scales: sums 14k + 7 are exact ties only under a true division
    (multiplying by the float32 reciprocal of 14 moves them off the tie)."""
    rng = np.random.default_rng(seed)
    zero = np.array(0, dtype)
    x = full_range(rng, dtype, (1, 8, 16, 16))
    for kernel, pads in [([2, 7], [0] * 4), ([1, 14], [0] * 4), ([3, 3], [1, 1, 1, 1]), ([2, 5], [1, 2, 0, 1])]:
        attributes = {"kernel_shape": kernel, "pads": pads, "count_include_pad": count_include_pad}
        expected = ort_qlinear_average_pool(x, 1.0, zero, 1.0, zero, attributes)
        actual = host_ops.qlinear_average_pool(x, 1.0, zero, 1.0, zero, kernel, pads=pads,
                                               count_include_pad=count_include_pad)
        assert_bit_exact(actual, expected)


@pytest.mark.parametrize("dtype", TYPES)
def test_qlinear_average_pool_sums_in_row_major_order(seed, dtype):
    """With y_scale == x_scale and power-of-two windows the averages sit near exact ties, where the
    float32 rounding of the running sum (and so its order) decides the result."""
    rng = np.random.default_rng(seed)
    x = full_range(rng, dtype, (1, 16, 24, 24))
    for kernel in [[2, 2], [1, 4], [4, 4], [2, 8]]:
        scale = log_uniform(rng, -3, 0)
        x_zero = random_zero_point(rng, dtype)
        zero = np.array(0, dtype)
        attributes = {"kernel_shape": kernel, "strides": kernel}
        expected = ort_qlinear_average_pool(x, scale, x_zero, scale, zero, attributes)
        assert_bit_exact(host_ops.qlinear_average_pool(x, scale, x_zero, scale, zero, kernel, kernel), expected)


@pytest.mark.parametrize("dtype", TYPES)
def test_qlinear_average_pool_whole_image_kernel_uses_integer_global_path(seed, dtype):
    rng = np.random.default_rng(seed)
    for spatial, unit_scales in [((2, 7), True), ((1, 14), True), ((3, 3), False), ((7,), False), ((2, 5, 3), False),
                                 ((16, 16), False)]:
        x = full_range(rng, dtype, (2, 64) + spatial)
        x_scale, y_scale = (F32(1), F32(1)) if unit_scales else log_uniform(rng, -2, 0, 2)
        x_zero, y_zero = random_zero_point(rng, dtype), random_zero_point(rng, dtype)
        kernel = list(spatial)
        attributes = {"kernel_shape": kernel, "count_include_pad": 1}
        expected = ort_qlinear_average_pool(x, x_scale, x_zero, y_scale, y_zero, attributes)
        actual = host_ops.qlinear_average_pool(x, x_scale, x_zero, y_scale, y_zero, kernel, count_include_pad=1)
        assert_bit_exact(actual, expected)


# ---------------------------------------------------------------- QLinearGlobalAveragePool

def ort_qlinear_global_average_pool(x, x_scale, x_zero, y_scale, y_zero):
    return run_onnxruntime(
        "QLinearGlobalAveragePool",
        [("x", x), ("xs", np.array(x_scale, F32)), ("xz", x_zero), ("ys", np.array(y_scale, F32)), ("yz", y_zero)],
        attributes={"channels_last": 0}, domain="com.microsoft")


@pytest.mark.parametrize("dtype", TYPES)
def test_qlinear_global_average_pool(seed, dtype):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        spatial = tuple(int(v) for v in rng.integers(1, 12, size=rng.integers(1, 3, endpoint=True)))
        x = full_range(rng, dtype, (int(rng.integers(1, 3)), int(rng.integers(1, 20))) + spatial)
        x_scale = log_uniform(rng, -3, 0)
        y_scale = F32(x_scale * log_uniform(rng, -2, 1))
        x_zero, y_zero = random_zero_point(rng, dtype), random_zero_point(rng, dtype)
        expected = ort_qlinear_global_average_pool(x, x_scale, x_zero, y_scale, y_zero)
        assert_bit_exact(host_ops.qlinear_global_average_pool(x, x_scale, x_zero, y_scale, y_zero), expected)


@pytest.mark.parametrize("dtype", TYPES)
def test_qlinear_global_average_pool_ties_and_saturation(dtype):
    info = np.iinfo(dtype)
    zero = np.array(0, dtype)
    # 2 x 2 images with sums 4k + 2: averages k + 0.5 exactly.
    base = np.arange(info.min, info.max - 1, dtype=np.int64)
    x = np.stack([base, base + 1, base + 1, base], axis=-1).astype(dtype).reshape(1, -1, 2, 2)
    for x_scale, y_scale, y_zero in [(1.0, 1.0, zero), (1.0, 0.5, zero), (8.0, 1.0, np.array(info.min, dtype)),
                                     (0.25, 1.0, np.array(info.max, dtype))]:
        expected = ort_qlinear_global_average_pool(x, x_scale, zero, y_scale, y_zero)
        assert_bit_exact(host_ops.qlinear_global_average_pool(x, x_scale, zero, y_scale, y_zero), expected)
    # 2 x 7 images: the float32 scale 1/14 makes sums 14k + 7 miss the exact tie k + 0.5.
    x = np.stack([base, base + 1] * 7, axis=-1).astype(dtype).reshape(1, -1, 2, 7)
    expected = ort_qlinear_global_average_pool(x, 1.0, zero, 1.0, zero)
    assert_bit_exact(host_ops.qlinear_global_average_pool(x, 1.0, zero, 1.0, zero), expected)


def test_qlinear_global_average_pool_rejects_what_onnxruntime_rejects():
    x = np.zeros((1, 1, 2, 2), np.uint8)
    zero = np.array(0, np.uint8)
    with pytest.raises(Exception, match="out of computation range"):
        ort_qlinear_global_average_pool(x, 2000.0, zero, 1.0, zero)
    with pytest.raises(ValueError, match="out of computation range"):
        host_ops.qlinear_global_average_pool(x, 2000.0, zero, 1.0, zero)


# ---------------------------------------------------------------- Relu on quantized tensors

@pytest.mark.parametrize("dtype", TYPES)
def test_relu_quantized_matches_dequantize_relu_quantize(seed, dtype):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    q = np.arange(info.min, info.max + 1).astype(dtype).reshape(1, 1, 16, 16)
    for _ in range(5):
        scale, zero_point = log_uniform(rng, -4, 1), random_zero_point(rng, dtype)
        real = run_onnxruntime("DequantizeLinear", [("q", q)], [("s", scale), ("z", zero_point)], output_dtype=F32)
        relu = run_onnxruntime("Relu", [("r", real)])
        expected = ort_quantize(relu, scale, zero_point)
        assert_bit_exact(host_ops.relu_quantized(q, zero_point), expected)
