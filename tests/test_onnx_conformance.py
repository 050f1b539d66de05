"""ONNX's node tests for QLinearMatMul, QLinearConv, MatMulInteger and ConvInteger through
the compiler and the golden backend, bit for bit (the RTL backend: tests/test_rtl_runtime.py)."""

import numpy as np
import pytest

from sw.compiler import CompileError, compile_model
from sw.runtime import GoldenBackend, Runtime
from verif.conformance import UNSUPPORTED, node_tests

CASES = node_tests()


def test_the_onnx_package_has_the_quantized_node_tests():
    names = {name for name, *_ in CASES}
    assert {"test_qlinearconv", "test_matmulinteger", "test_qlinearmatmul_2D_uint8_float32",
            "test_convinteger_with_padding"} <= names


@pytest.mark.parametrize("name,model,inputs,outputs", CASES, ids=[c[0] for c in CASES])
def test_node_conformance_golden(name, model, inputs, outputs):
    if name in UNSUPPORTED:
        with pytest.raises(CompileError, match="float16"):
            compile_model(model, source=name)
        return
    compiled = compile_model(model, source=name)
    runtime = Runtime(compiled, GoldenBackend(compiled.config, compiled.memory_bytes))
    results = runtime.infer_sync(inputs)
    for spec, expected in zip(compiled.outputs, outputs):
        got = results[spec["name"]]
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.array_equal(got, expected), f"{name}: {np.count_nonzero(got != expected)} differ"
