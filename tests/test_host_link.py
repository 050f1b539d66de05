"""The UART host link end to end: fpga.board.BoardDesign in Verilator, driven by
sw/uart_link.py and the runtime through cocotbext-uart, with random faults on the line;
outputs bit for bit against onnxruntime."""

import json
import time
from dataclasses import asdict

import numpy as np

from fpga.board import BoardDesign
from hw.config import NPUConfig
from sw.compiler import compile_model
from verif.oracle import onnxruntime_session
from verif.random_models import quantize, random_float_cnn
from verif.runner import simulate

MEMORY_BYTES = 64 * 1024
DIVISOR = 4
FAULT_PROBABILITY = 0.15
# The link does not depend on the array: a small NPU keeps the build and the run short. Its
# addresses are as wide as the memory, as on the iCEBreaker.
CONFIG = NPUConfig(rows=4, cols=4, scratchpad_bytes=16 * 1024, acc_depth=128, channel_depth=16,
                   addr_width=16)


def test_uart_link_runs_a_model_through_faults(seed, tmp_path, waves):
    rng = np.random.default_rng(seed)
    onnx_path = quantize(random_float_cnn(rng, size=6, channels=2), tmp_path / "cnn.onnx", rng,
                         "QDQ", per_channel=True)
    compiled = compile_model(onnx_path, CONFIG)
    assert compiled.memory_bytes <= MEMORY_BYTES
    compiled.save(tmp_path / "cnn.npu")
    x = rng.standard_normal((1, 1, 2, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", input=x)
    session = onnxruntime_session(onnx_path)
    expected = np.stack([session.run(None, {"input": xi})[0] for xi in x])

    name = f"board_d{DIVISOR}_{MEMORY_BYTES // 1024}k"
    started = time.monotonic()
    simulate(BoardDesign(CONFIG, MEMORY_BYTES, DIVISOR), name=name,
             test_module="verif.tb_board", seed=seed, waves=waves,
             params={"config": asdict(CONFIG), "divisor": DIVISOR,
                     "fault_probability": FAULT_PROBABILITY,
                     "model": str(tmp_path / "cnn.npu"), "inputs": str(tmp_path / "inputs.npz"),
                     "outputs": str(tmp_path / "outputs.npz"),
                     "report": str(tmp_path / "report.json")})
    report = json.loads((tmp_path / "report.json").read_text())
    print(f"build and simulation {time.monotonic() - started:.0f} s; {report}")
    got = np.load(tmp_path / "outputs.npz")["logits"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected), f"{np.count_nonzero(got != expected)} values differ"
