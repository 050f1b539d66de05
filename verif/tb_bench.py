"""cocotb testbench of ``make bench``: rows through :class:`verif.bench_top.BenchTop`.

No Python runs per simulated cycle while the NPU works: the clock is cocotb's GPI clock,
memory is RTL, and the testbench waits for the interrupt's rising edge. Memory is written
and read through the backdoor, one line per cycle, between runs. The testbench is itself a
backend of ``sw.runtime`` (``write_memory``, ``read_memory``, ``run_program``), so compiled
models run exactly as ``npu run`` runs them, host steps included.

Parameters (``NPU_TB``): ``config``, ``memory_bytes``, ``out`` (the JSON file the results
go to) and ``rows``, each a ``{"name", "kind", ...}`` prepared by ``verif.bench``:

* ``kind: "image"``, ``image``: an ``.npz`` with a memory image (``data``, from address
  0), ``program_addr``, and the expected bytes of each output region (``addrs``,
  ``names``, ``expected{i}``);
* ``kind: "model"``, ``model``: a compiled ``.npu`` file, ``inputs`` and ``expected``: ``.npz``
  files of its inputs and of onnxruntime's outputs.

Every output is checked bit for bit; a mismatch fails the run.
"""

import json
import logging
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from hw.config import NPUConfig
from hw.registers import ErrorCode
from sw.driver import NPUDriver
from sw.npu_file import CompiledModel
from sw.runtime import Runtime
from verif.bench_top import LINE_BYTES
from verif.tb_npu import SimTransport
from verif.tb_util import tb_params


#: Simulated time of one clock cycle, in ns.
PERIOD_NS = 10
#: Cycles a single program may run.
TIMEOUT_CYCLES = 50_000_000


class IrqTransport(SimTransport):
    """The driver's transport, waiting for the ``irq`` pin's rising edge instead of polling."""

    async def wait_for_interrupt(self, timeout):
        if not self.dut.irq.value:
            await First(RisingEdge(self.dut.irq), Timer(timeout * PERIOD_NS, unit="ns"))
        return bool(self.dut.irq.value)


def _strobe(mask):
    return int.from_bytes(np.packbits(mask, bitorder="little").tobytes(), "little")


class BenchTB:
    """The bench top's clock, reset, driver and backdoor; a backend of ``sw.runtime``."""

    name = "rtl"

    def __init__(self, dut):
        self.dut = dut
        self.params = tb_params()
        self.config = NPUConfig(**self.params["config"])
        self.memory_bytes = self.params["memory_bytes"]
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"),
                                  dut.clk, dut.rst)
        for log in (self.axil.read_if.log, self.axil.write_if.log):
            log.setLevel(logging.WARNING)
        self.driver = NPUDriver(IrqTransport(dut, self.axil))
        self.run_seconds = 0.0

    async def start(self):
        dut = self.dut
        Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start()
        dut.backdoor.value = 0
        dut.line_wstrb.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        await self.driver.check_config(self.config)

    def _check_range(self, address, length):
        if address + length > self.memory_bytes:
            raise MemoryError(f"[{address:#x}, {address + length:#x}) is beyond the "
                              f"{self.memory_bytes}-byte bench memory")

    async def write_memory(self, address, data):
        """Write ``data`` from ``address``, a line per cycle (byte strobes at the ends)."""
        data = np.frombuffer(bytes(data), np.uint8)
        self._check_range(address, len(data))
        dut = self.dut
        first, offset = divmod(address, LINE_BYTES)
        count = -(-(offset + len(data)) // LINE_BYTES)
        lines = np.zeros(count * LINE_BYTES, np.uint8)
        lines[offset:offset + len(data)] = data
        mask = np.zeros(count * LINE_BYTES, bool)
        mask[offset:offset + len(data)] = True
        full = (1 << LINE_BYTES) - 1
        dut.backdoor.value = 1
        edge = RisingEdge(dut.clk)
        for index in range(count):
            line = slice(index * LINE_BYTES, (index + 1) * LINE_BYTES)
            dut.line_addr.value = first + index
            dut.line_wdata.value = int.from_bytes(lines[line].tobytes(), "little")
            dut.line_wstrb.value = full if 0 < index < count - 1 else _strobe(mask[line])
            await edge
        dut.line_wstrb.value = 0
        dut.backdoor.value = 0

    async def read_memory(self, address, length):
        """``length`` bytes of memory from ``address``, a line per cycle."""
        self._check_range(address, length)
        dut = self.dut
        first, end = address // LINE_BYTES, -(-(address + length) // LINE_BYTES)
        chunks = []
        dut.backdoor.value = 1
        edge = RisingEdge(dut.clk)
        dut.line_addr.value = first
        await edge
        for index in range(first + 1, end + 1):
            dut.line_addr.value = index % (self.memory_bytes // LINE_BYTES)
            await edge
            chunks.append(int(dut.line_rdata.value).to_bytes(LINE_BYTES, "little"))
        dut.backdoor.value = 0
        offset = address - first * LINE_BYTES
        return b"".join(chunks)[offset:offset + length]

    async def run_program(self, address):
        began = time.perf_counter()
        status = await self.driver.run(address, TIMEOUT_CYCLES)
        self.run_seconds += time.perf_counter() - began
        assert status.done and status.error is ErrorCode.NONE, f"the NPU stopped: {status}"
        return status

    async def run_image(self, row):
        """A memory image with one program; its output regions checked against NumPy."""
        stored = np.load(row["image"])
        await self.write_memory(0, stored["data"])
        status = await self.run_program(int(stored["program_addr"]))
        checks = []
        for index, (name, addr) in enumerate(zip(stored["names"], stored["addrs"])):
            want = stored[f"expected{index}"]
            got = np.frombuffer(await self.read_memory(int(addr), len(want)), np.uint8)
            checks.append({"output": str(name), "bytes": len(want),
                           "wrong": int(np.count_nonzero(got != want))})
        return {"npu_runs": 1, **status.counters}, checks

    async def run_model(self, row):
        """A compiled model through ``sw.runtime``; its outputs checked against onnxruntime."""
        runtime = Runtime(CompiledModel.load(row["model"]), self, self.config, row["model"])
        stored, expected = np.load(row["inputs"]), np.load(row["expected"])
        outputs = await runtime.infer({name: stored[name] for name in stored.files})
        checks = []
        for name in expected.files:
            want, got = expected[name], outputs[name]
            wrong = want.size if got.dtype != want.dtype or got.shape != want.shape else \
                int(np.count_nonzero(got.view(np.uint8) != want.view(np.uint8)))
            checks.append({"output": name, "bytes": want.nbytes, "wrong": wrong})
        stats = runtime.stats
        return {"npu_runs": stats.npu_runs, "macs": stats.macs, **stats.counters}, checks


@cocotb.test()
async def bench(dut):
    """Each row through the RTL NPU: counters, wall-clock times, outputs checked."""
    tb = BenchTB(dut)
    await tb.start()
    results = []
    for row in tb.params["rows"]:
        tb.run_seconds = 0.0
        began = time.perf_counter()
        counters, checks = await getattr(tb, f"run_{row['kind']}")(row)
        dut._log.info("%s: %d cycles in %.1f s of simulation (%.0f cycles/s), %.1f s in all",
                      row["name"], counters["cycles"], tb.run_seconds,
                      counters["cycles"] / tb.run_seconds, time.perf_counter() - began)
        for check in checks:
            assert check["wrong"] == 0, \
                f"{row['name']}: {check['output']}: {check['wrong']} of {check['bytes']} " \
                f"output bytes differ from the reference"
        results.append({"name": row["name"], **counters, "run_seconds": tb.run_seconds,
                        "row_seconds": time.perf_counter() - began, "checks": checks})
    Path(tb.params["out"]).write_text(json.dumps(results, indent=1))
