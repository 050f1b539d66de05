"""Compiled models on the golden backend against onnxruntime, bit for bit: random CNNs
(conv stacks with stride 1 and 2, padding, ReLU, a residual add, max or average pooling,
global average pooling, a fully-connected layer) quantized by onnxruntime's
quantize_static in both formats, with per-tensor and per-channel weight scales."""

import numpy as np
import onnxruntime as ort
import pytest

from sw.compiler import compile_model
from sw.runtime import GoldenBackend, Runtime
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
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for _ in range(4):
            x = (rng.standard_normal((1, channels, size, size)) * rng.uniform(0.5, 3)).astype(np.float32)
            got = runtime.infer_sync({"input": x})["logits"]
            want = session.run(None, {"input": x})[0]
            assert np.array_equal(got, want), \
                f"model {index} ({quant_format}, per_channel={per_channel}): {got} != {want}"
