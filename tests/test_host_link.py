"""The UART host link end to end: fpga.board.BoardDesign in Verilator, driven by
sw/uart_link.py and the runtime through cocotbext-uart, with random faults on the line;
outputs bit for bit against onnxruntime."""

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fpga.board import BoardDesign
from hw.config import DEFAULT_CONFIG
from sw.compiler import compile_model
from verif.random_models import quantize, random_float_cnn
from verif.runner import simulate

MEMORY_BYTES = 64 * 1024
DIVISOR = 4
FAULT_PROBABILITY = 0.1


def test_uart_link_runs_a_model_through_faults(seed, tmp_path, waves):
    rng = np.random.default_rng(seed)
    onnx_path = quantize(random_float_cnn(rng), tmp_path / "cnn.onnx", rng, "QDQ", per_channel=True)
    compiled = compile_model(onnx_path)
    assert compiled.memory_bytes <= MEMORY_BYTES
    compiled.save(tmp_path / "cnn.npu")
    x = rng.standard_normal((2, 1, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", input=x)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = np.stack([session.run(None, {"input": xi})[0] for xi in x])

    # The runner's design fingerprint covers hw/ and the NPU configuration only: name the
    # build after the board parameters and fpga/board.py.
    source = Path(__file__).resolve().parent.parent / "fpga" / "board.py"
    name = f"board_d{DIVISOR}_{MEMORY_BYTES // 1024}k_" \
        f"{hashlib.sha256(source.read_bytes()).hexdigest()[:8]}"
    started = time.monotonic()
    simulate(BoardDesign(DEFAULT_CONFIG, MEMORY_BYTES, DIVISOR), name=name,
             test_module="verif.tb_board", seed=seed, waves=waves,
             params={"config": asdict(DEFAULT_CONFIG), "divisor": DIVISOR,
                     "fault_probability": FAULT_PROBABILITY,
                     "model": str(tmp_path / "cnn.npu"), "inputs": str(tmp_path / "inputs.npz"),
                     "outputs": str(tmp_path / "outputs.npz"),
                     "report": str(tmp_path / "report.json")})
    report = json.loads((tmp_path / "report.json").read_text())
    print(f"build and simulation {time.monotonic() - started:.0f} s; {report}")
    got = np.load(tmp_path / "outputs.npz")["logits"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected), f"{np.count_nonzero(got != expected)} values differ"
