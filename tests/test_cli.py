"""The npu command line: compile, run, info, disasm (a CNN with conv, ReLU, max pool, add,
average pool and a fully-connected layer, quantized by quantize_static, run bit-exactly
against onnxruntime), and a one-line error with a non-zero exit for every kind of bad
input."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hw.config import NPUConfig
from sw.cli import parse_config
from verif.oracle import onnxruntime_session
from verif.random_models import quantize, random_float_cnn


def npu(*args):
    result = subprocess.run([sys.executable, "-m", "sw.cli", *map(str, args)],
                            capture_output=True, text=True)
    return result.returncode, result.stdout, result.stderr


def assert_one_line_error(code, stderr, *words):
    assert code != 0
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npu: error: "), stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("model") / "cnn.onnx"
    return quantize(random_float_cnn(rng, size=8, channels=3, pooling="both"), path, rng, "QDQ")


def _qlinear_matmul(path, M, K, N):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.asarray(v), name) for name, v in [
        ("sa", np.float32(0.1)), ("za", np.uint8(128)),
        ("b", rng.integers(-128, 128, (K, N)).astype(np.int8)),
        ("sb", np.float32(0.01)), ("zb", np.int8(0)), ("sy", np.float32(0.5)), ("zy", np.uint8(128))]]
    node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"],
                            name="big_matmul")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, [M, K])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [M, N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path


def test_compile_info_disasm_and_run(quantized, tmp_path):
    out = tmp_path / "cnn.npu"
    code, stdout, stderr = npu("compile", quantized, "-o", out)
    assert code == 0, stderr
    code, stdout, _ = npu("info", out)
    assert code == 0 and "input: float32 [1, 3, 8, 8]" in stdout
    assert "conv (direct)" in stdout or "conv (im2col)" in stdout, stdout
    code, stdout, _ = npu("disasm", out)
    assert code == 0 and "MATMUL" in stdout and "LOAD" in stdout and "END" in stdout
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32))
    code, stdout, stderr = npu("run", out, "--input", x, "--output", tmp_path / "y.npy")
    assert code == 0, stderr
    session = onnxruntime_session(quantized)
    want = session.run(None, {"input": np.load(x)})[0]
    assert np.array_equal(np.load(tmp_path / "y.npy"), want), "npu run differs from onnxruntime"


def test_unsupported_operator_names_the_node(tmp_path):
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant"),
             helper.make_node("Transpose", ["q"], ["t"], name="odd_transpose", perm=[1, 0]),
             helper.make_node("DequantizeLinear", ["t", "s", "z"], ["y"], name="dequant")]
    inits = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.uint8(3), "z")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])], inits)
    path = tmp_path / "transpose.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    assert_one_line_error(*npu("compile", path)[::2], str(path), "odd_transpose", "Transpose",
                          "not supported")


def test_unreadable_file(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model")
    assert_one_line_error(*npu("compile", path)[::2], str(path), "not an ONNX model")
    assert_one_line_error(*npu("compile", tmp_path / "missing.onnx")[::2], "no such file")


def test_float_model_that_was_never_quantized(tmp_path):
    path = tmp_path / "float.onnx"
    onnx.save(random_float_cnn(np.random.default_rng(3)), path)
    assert_one_line_error(*npu("compile", path)[::2], str(path), "never quantized", "Conv")


def test_layer_that_cannot_fit_the_sram(tmp_path):
    path = _qlinear_matmul(tmp_path / "big.onnx", 4, 4096, 8)
    assert_one_line_error(*npu("compile", path, "--config", "scratchpad_bytes=1024")[::2],
                          str(path), "big_matmul", "does not fit the 1024-byte scratchpad")


def test_wrong_input_shape_and_dtype(quantized, tmp_path):
    out = tmp_path / "cnn.npu"
    assert npu("compile", quantized, "-o", out)[0] == 0
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 9, 9), np.float32))
    assert_one_line_error(*npu("run", out, "--input", x)[::2], "input", "shape [1, 3, 9, 9]",
                          "[1, 3, 8, 8]")
    np.save(x, np.zeros((1, 3, 8, 8), np.int32))
    assert_one_line_error(*npu("run", out, "--input", x)[::2], "input", "int32", "float32")


def test_model_compiled_for_another_configuration(quantized, tmp_path):
    out = tmp_path / "small.npu"
    assert npu("compile", quantized, "-o", out, "--config", "rows=4,cols=4")[0] == 0
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 8, 8), np.float32))
    assert_one_line_error(*npu("run", out, "--input", x)[::2], str(out), "4x4", "recompile")
    assert npu("run", out, "--input", x, "--config", "rows=4,cols=4")[0] == 0


def test_not_a_npu_file(tmp_path):
    path = tmp_path / "model.npu"
    path.write_bytes(b"garbage")
    assert_one_line_error(*npu("info", path)[::2], str(path), "not a compiled .npu model")


def test_npu_file_of_an_older_format(quantized, tmp_path):
    """A .npu file written by an earlier version of the compiler is refused in one line:
    its steps lack what this runtime reads."""
    out = tmp_path / "cnn.npu"
    assert npu("compile", quantized, "-o", out)[0] == 0
    with zipfile.ZipFile(out) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(files["manifest.json"])
    manifest["format"] -= 1
    files["manifest.json"] = json.dumps(manifest)
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    assert_one_line_error(*npu("info", out)[::2], str(out), f".npu format {manifest['format']}")


def test_fpga_backend_without_a_board(quantized, tmp_path):
    out = tmp_path / "cnn.npu"
    assert npu("compile", quantized, "-o", out)[0] == 0
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 8, 8), np.float32))
    assert_one_line_error(*npu("run", out, "--input", x, "--backend", "fpga", "--port",
                               tmp_path / "ttyUSB9")[::2], "ttyUSB9", "cannot open")
    assert_one_line_error(*npu("run", out, "--input", x, "--backend", "fpga")[::2], "--port")


def test_a_flag_on_the_command_line_gives_the_hardware_configuration_identifier():
    """``--config elementwise_add=1`` is the configuration built with ``True`` (the
    identifier is a CRC of the values, so 1 and True must not differ)."""
    parsed = parse_config("elementwise_add=1,serial_products=0")
    assert parsed == NPUConfig(elementwise_add=True)
    assert parsed.config_id() == NPUConfig(elementwise_add=True).config_id()
