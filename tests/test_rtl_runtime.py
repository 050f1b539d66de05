"""The rtl backend: compiled models run through the runtime on the Verilator NPU, bit for
bit against ONNX's expected outputs and onnxruntime."""

import numpy as np

from hw.config import DEFAULT_CONFIG
from sw.compiler import compile_model
from sw.rtl_backend import run_rtl_jobs
from verif.conformance import UNSUPPORTED, node_tests
from verif.oracle import onnxruntime_session
from verif.random_models import quantize, random_float_cnn


def test_conformance_and_a_random_cnn_on_the_rtl(seed, tmp_path):
    jobs, expectations = [], []
    for name, model, inputs, outputs in node_tests():
        if name in UNSUPPORTED:
            continue
        compiled = compile_model(model, source=name)
        path = tmp_path / f"{name}.npu"
        compiled.save(path)
        jobs.append((path, compiled, inputs, False))
        expectations.append((name, [spec["name"] for spec in compiled.outputs], outputs))

    rng = np.random.default_rng(seed)
    onnx_path = quantize(random_float_cnn(rng), tmp_path / "cnn.onnx", rng, "QDQ", per_channel=True)
    compiled = compile_model(onnx_path)
    compiled.save(tmp_path / "cnn.npu")
    x = rng.standard_normal((3, 1, 3, 8, 8)).astype(np.float32)
    session = onnxruntime_session(onnx_path)
    jobs.append((tmp_path / "cnn.npu", compiled, {"input": x}, True))
    expectations.append(("random CNN", ["logits"],
                         [np.stack([session.run(None, {"input": xi})[0] for xi in x])]))

    results = run_rtl_jobs(jobs, DEFAULT_CONFIG, seed=seed)
    for (name, names, expected), (outputs, report) in zip(expectations, results):
        assert report["npu_runs"] > 0 and report["counters"]["cycles"] > 0
        for output_name, want in zip(names, expected):
            got = outputs[output_name]
            assert got.dtype == want.dtype and got.shape == want.shape, name
            assert np.array_equal(got, want), f"{name}: {np.count_nonzero(got != want)} values differ"
