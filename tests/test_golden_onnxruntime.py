"""The golden output stage against onnxruntime: QLinearMatMul and per-channel QLinearConv
on random data, scales and zero points, bit for bit."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from verif.golden import quantized_multiplier, requantize
from verif.oracle import onnxruntime_session
from verif.stimulus import float32_rounding_edges, int8_full_range

DTYPES = {"uint8": (np.uint8, TensorProto.UINT8, 0, 255), "int8": (np.int8, TensorProto.INT8, -128, 127)}


def _session(graph):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return onnxruntime_session(model, optimize=False)


def _quantized(rng, dtype, shape):
    np_type, _, lo, hi = DTYPES[dtype]
    values = rng.integers(lo, hi + 1, size=shape)
    if values.size >= 16:
        flat = values.reshape(-1)
        flat[:2] = [lo, hi]
    return values.astype(np_type)


def _scale(rng):
    return np.float32(np.exp2(rng.uniform(-12, 0)))


@pytest.mark.parametrize("a_type,b_type,y_type", [
    ("uint8", "uint8", "uint8"), ("uint8", "int8", "uint8"), ("int8", "int8", "int8")])
def test_qlinearmatmul_matches_golden(a_type, b_type, y_type, seed):
    rng = np.random.default_rng(seed)
    for case in range(60):
        M, K, N = (int(v) for v in rng.integers(1, 40, size=3))
        a, b = _quantized(rng, a_type, (M, K)), _quantized(rng, b_type, (K, N))
        sa, sb = _scale(rng), _scale(rng)
        za = _quantized(rng, a_type, ())
        zb = _quantized(rng, b_type, ()) if rng.random() < 0.5 else DTYPES[b_type][0](0)
        zy = _quantized(rng, y_type, ())
        # An output scale that puts typical results in range, sometimes past it (saturation).
        sy = np.float32(sa * sb * np.sqrt(K) * 2 ** rng.uniform(2, 8))
        graph = helper.make_graph(
            [helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])],
            "qlinearmatmul",
            [helper.make_tensor_value_info("a", DTYPES[a_type][1], [M, K])],
            [helper.make_tensor_value_info("y", DTYPES[y_type][1], [M, N])],
            [onnx.numpy_helper.from_array(np.asarray(v), name) for name, v in
             [("sa", sa), ("za", za), ("b", b), ("sb", sb), ("zb", zb), ("sy", sy), ("zy", zy)]])
        expected = _session(graph).run(None, {"a": a})[0].astype(np.int64)
        acc = (a.astype(np.int64) - za) @ (b.astype(np.int64) - zb)
        got = requantize(acc, 0, quantized_multiplier(sa, sb, sy), int(zy),
                         unsigned=y_type == "uint8")
        assert np.array_equal(got, expected), \
            f"case {case}: {np.count_nonzero(got != expected)} of {got.size} outputs differ"


def test_per_channel_qlinearconv_with_bias_matches_golden(seed):
    """1x1 QLinearConv with per-channel weight scales and an int32 bias, with large
    accumulators (long reductions of extreme values)."""
    rng = np.random.default_rng(seed)
    for case in range(40):
        C, OC, H = int(rng.integers(1, 600)), int(rng.integers(1, 24)), int(rng.integers(1, 6))
        x = _quantized(rng, "uint8", (1, C, H, H))
        if case % 4 == 0:
            x[:] = rng.choice(np.uint8([0, 255]), size=x.shape)
        w = int8_full_range(rng, (OC, C, 1, 1)).astype(np.int8)
        bias = rng.integers(-2**20, 2**20, size=OC).astype(np.int32)
        sx, sy = _scale(rng), _scale(rng)
        sw = np.exp2(rng.uniform(-10, -2, size=OC)).astype(np.float32)
        zx, zy = np.uint8(rng.integers(0, 256)), np.uint8(rng.integers(0, 256))
        graph = helper.make_graph(
            [helper.make_node("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "bias"], ["y"])],
            "qlinearconv",
            [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
            [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, OC, H, H])],
            [onnx.numpy_helper.from_array(np.asarray(v), name) for name, v in
             [("sx", sx), ("zx", zx), ("w", w), ("sw", sw), ("zw", np.zeros(OC, np.int8)),
              ("sy", sy), ("zy", zy), ("bias", bias)]])
        expected = _session(graph).run(None, {"x": x})[0].astype(np.int64)
        pixels = x[0].reshape(C, -1).T.astype(np.int64) - zx
        acc = pixels @ w.reshape(OC, C).T.astype(np.int64)
        got = requantize(acc, bias, quantized_multiplier(sx, sw, sy), int(zy), unsigned=True)
        got = got.T.reshape(expected.shape)
        assert np.array_equal(got, expected), \
            f"case {case}: {np.count_nonzero(got != expected)} of {got.size} outputs differ"


def test_float32_rounding_edges_match_onnxruntime(seed):
    """Accumulators (after bias) where int32 -> float32 rounds, and exact .5 ties, through
    QLinearConv with power-of-two per-channel multipliers: only float32 semantics with
    round-half-to-even match onnxruntime here."""
    rng = np.random.default_rng(seed)
    targets, multipliers = float32_rounding_edges()
    OC, C = len(targets), 8
    x = _quantized(rng, "uint8", (1, C, 1, 1))
    zx = np.uint8(rng.integers(0, 256))
    w = int8_full_range(rng, (OC, C, 1, 1)).astype(np.int8)
    sums = w.reshape(OC, C).astype(np.int64) @ (x.reshape(C).astype(np.int64) - zx)
    bias = (targets - sums).astype(np.int32)
    graph = helper.make_graph(
        [helper.make_node("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "bias"], ["y"])],
        "rounding_edges",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, C, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, OC, 1, 1])],
        [onnx.numpy_helper.from_array(np.asarray(v), name) for name, v in
         [("sx", np.float32(1)), ("zx", zx), ("w", w), ("sw", multipliers),
          ("zw", np.zeros(OC, np.int8)), ("sy", np.float32(1)), ("zy", np.uint8(128)),
          ("bias", bias)]])
    expected = _session(graph).run(None, {"x": x})[0].reshape(OC).astype(np.int64)
    got = requantize(sums, bias, quantized_multiplier(1, multipliers, 1), 128, unsigned=True)
    assert np.array_equal(got, expected), \
        f"{np.count_nonzero(got != expected)} of {OC} rounding edges differ: " \
        f"{[(targets[i], got[i], expected[i]) for i in np.flatnonzero(got != expected)[:5]]}"


def test_oracle_is_exact_where_uint8_by_int8_products_saturate_int16():
    """255 × -128 in every product: onnxruntime's AVX2 kernel without VNNI saturates each
    pair of them at -32768; the oracle's uint8 weights give the exact sum on every CPU."""
    K, N = 64, 4
    a = np.full((1, K), 255, np.uint8)
    b = np.full((K, N), -128, np.int8)
    sy = np.float32(20000)
    graph = helper.make_graph(
        [helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])],
        "saturating_pairs",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, K])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, N])],
        [onnx.numpy_helper.from_array(np.asarray(v), name) for name, v in
         [("sa", np.float32(1)), ("za", np.uint8(0)), ("b", b), ("sb", np.float32(1)),
          ("zb", np.int8(0)), ("sy", sy), ("zy", np.uint8(128))]])
    got = _session(graph).run(None, {"a": a})[0].astype(np.int64)
    acc = a.astype(np.int64) @ b.astype(np.int64)
    want = requantize(acc, 0, quantized_multiplier(1, 1, sy), 128, unsigned=True)
    assert acc[0, 0] == -2088960 and want[0, 0] == 24
    assert np.array_equal(got, want), f"{got} != {want}"
