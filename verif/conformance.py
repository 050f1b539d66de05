"""ONNX's own node tests for quantized operators, loaded from the installed onnx package."""

import warnings

__all__ = ["QUANTIZED_NODE_TESTS", "UNSUPPORTED", "node_tests"]

QUANTIZED_NODE_TESTS = ("qlinearmatmul", "qlinearconv", "matmulinteger", "convinteger")

#: Cases the NPU does not run, and why (also listed in the README).
UNSUPPORTED = {
    "test_qlinearmatmul_2D_uint8_float16": "float16 scales: the NPU's multipliers are float32",
    "test_qlinearmatmul_3D_uint8_float16": "float16 scales: the NPU's multipliers are float32",
    "test_qlinearmatmul_2D_int8_float16": "float16 scales: the NPU's multipliers are float32",
    "test_qlinearmatmul_3D_int8_float16": "float16 scales: the NPU's multipliers are float32",
}


def node_tests():
    """[(name, model, inputs {name: array}, outputs [array])] of the quantized node tests."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    selected = []
    for case in cases:
        if not any(key in case.name for key in QUANTIZED_NODE_TESTS):
            continue
        inputs, outputs = case.data_sets[0]
        names = [value.name for value in case.model.graph.input]
        selected.append((case.name, case.model, dict(zip(names, inputs)), list(outputs)))
    return selected
