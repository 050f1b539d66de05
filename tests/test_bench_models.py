"""The networks of ``make bench`` (verif/bench_models.py), without RTL: the MLPerf Tiny
reference models have their published layers and MAC counts, and the one-layer models the
bench runs give onnxruntime's outputs through the compiler and the golden runtime."""

import numpy as np
import onnx
import pytest

from hw.config import DEFAULT_CONFIG
from sw.compiler import compile_model
from sw.runtime import GoldenBackend, Runtime
from verif import bench_models
from verif.oracle import onnxruntime_session


def _layers(name):
    return bench_models.layers(bench_models.MLPERF_TINY[name](np.random.default_rng(0)))


@pytest.mark.parametrize("name, convs, macs", [
    ("ResNet-8", 9, 12_501_632),            # MLPerf Tiny: 12.5 M MACs
    ("DS-CNN", 9, 2_656_768),               # 2.7 M
    ("MobileNetV1 0.25", 27, 7_489_664),    # 7.5 M
])
def test_mlperf_tiny_models_have_the_published_layers_and_macs(name, convs, macs):
    layers = _layers(name)
    assert [layer["kind"] for layer in layers] == ["conv"] * convs + ["fc"]
    assert sum(bench_models.layer_macs(layer) for layer in layers) == macs


def test_distinct_layers_count_every_instance():
    layers = _layers("ResNet-8")
    distinct = bench_models.distinct(layers)
    assert sum(layer["count"] for layer in distinct) == len(layers)
    stage1 = [layer for layer in distinct if layer["names"][0] == "stage1.conv1"]
    assert stage1[0]["count"] == 2 and stage1[0]["names"] == ["stage1.conv1", "stage1.conv2"]


@pytest.mark.parametrize("index", range(4))
def test_layer_models_match_onnxruntime_through_the_compiler(index):
    """DS-CNN's conv, depthwise, pointwise and fully-connected layers as one-node models."""
    layer = bench_models.distinct(_layers("DS-CNN"))[index]
    model, inputs = bench_models.layer_model(layer, np.random.default_rng(index))
    session = onnxruntime_session(model)
    want = session.run(None, inputs)[0]
    compiled = compile_model(model)
    runtime = Runtime(compiled, GoldenBackend(DEFAULT_CONFIG, compiled.memory_bytes))
    got = runtime.infer_sync(inputs)["y"]
    np.testing.assert_array_equal(got, want)
    assert np.count_nonzero((want > 0) & (want < 255)) > want.size // 2, "outputs saturate"


def test_resnet8_end_to_end_matches_onnxruntime(tmp_path):
    """ResNet-8 quantized per channel, compiled and run by the golden runtime: bit-exact
    with onnxruntime, with its stride-1 3x3 convolutions run straight from their NHWC
    inputs rather than on the host's im2col."""
    from verif.random_models import quantize

    rng = np.random.default_rng(5)
    path = quantize(bench_models.resnet8(rng), tmp_path / "resnet8_int8.onnx", rng,
                    quant_format="QOperator", per_channel=True)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    session = onnxruntime_session(path)
    name = session.get_inputs()[0].name
    want = session.run(None, {name: x})[0]
    compiled = compile_model(str(path))
    direct = [step["node"] for step in compiled.steps
              if step["op"] == "gemm" and step["layers"][0].get("direct")]
    assert "stage1.conv1_quant" in direct and "stage1.conv2_quant" in direct, direct
    runtime = Runtime(compiled, GoldenBackend(DEFAULT_CONFIG, compiled.memory_bytes))
    np.testing.assert_array_equal(runtime.infer_sync({name: x})["logits"], want)


def test_resnet8_with_the_add_mode_keeps_its_activations_on_chip(seed, tmp_path):
    """With the add mode, ResNet-8 runs on the NPU as one program up to its pooling, every
    activation between its layers kept in the scratchpad: bit-exact with onnxruntime on a
    random input, and the DMA (the golden NPU's counters) moves at most 1.5 times the
    compulsory bytes (every initializer of the model, its input and its output once)."""
    from verif.random_models import quantize

    rng = np.random.default_rng(seed)
    path = quantize(bench_models.resnet8(rng), tmp_path / "resnet8_int8.onnx", rng,
                    quant_format="QOperator", per_channel=True)
    config = DEFAULT_CONFIG.with_(elementwise_add=True)
    compiled = compile_model(str(path), config)
    npu = [step for step in compiled.steps if step["op"] in ("gemm", "npu_add")]
    assert [step["op"] for step in npu].count("npu_add") == 3
    assert all(step.get("runs_with_next") for step in npu[:-2]), [s["node"] for s in npu]
    model = onnx.load(path)
    compulsory = sum(onnx.numpy_helper.to_array(init).nbytes for init in model.graph.initializer) \
        + 3 * 32 * 32 + 10
    session = onnxruntime_session(path)
    name = session.get_inputs()[0].name
    runtime = Runtime(compiled, GoldenBackend(config, compiled.memory_bytes), config)
    x = (rng.standard_normal((1, 3, 32, 32)) * rng.uniform(0.5, 2)).astype(np.float32)
    np.testing.assert_array_equal(runtime.infer_sync({name: x})["logits"],
                                  session.run(None, {name: x})[0])
    moved = runtime.stats.counters["dma_read_bytes"] + runtime.stats.counters["dma_write_bytes"]
    assert moved <= 1.5 * compulsory, (moved, compulsory)
