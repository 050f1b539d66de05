"""cocotb testbench of ``make bench``: workloads through :class:`verif.bench_top.BenchTop`.

No Python runs per simulated cycle while the NPU works: the clock is cocotb's GPI clock,
memory is RTL, and the testbench waits for the interrupt's rising edge. Between runs,
memory is loaded and read back through the backdoor, one 64-byte line per cycle. Every
row's outputs are checked bit for bit against the workload's NumPy expectation.

Parameters (``NPU_TB``): ``config``, ``rows`` (a list of ``{"name", "kind", "args"}``,
``kind`` being ``gemm`` or ``conv``, ``args`` the keyword arguments of
``verif.npu_workloads.gemm_workload``/``conv_workload``), ``memory_bytes`` and ``out``,
the JSON file the results go to.
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
from verif.bench_top import LINE_BYTES
from verif.npu_workloads import MemoryImage, conv_workload, gemm_workload
from verif.tb_npu import SimTransport
from verif.tb_util import tb_params, tb_rng


#: Simulated time of one clock cycle, in ns.
PERIOD_NS = 10


class IrqTransport(SimTransport):
    """The driver's transport, waiting for the ``irq`` pin's rising edge instead of polling."""

    async def wait_for_interrupt(self, timeout):
        if not self.dut.irq.value:
            await First(RisingEdge(self.dut.irq), Timer(timeout * PERIOD_NS, unit="ns"))
        return bool(self.dut.irq.value)


class BenchTB:
    def __init__(self, dut):
        self.dut = dut
        self.params = tb_params()
        self.config = NPUConfig(**self.params["config"])
        self.memory_bytes = self.params["memory_bytes"]
        self.rng = tb_rng(dut._log)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"),
                                  dut.clk, dut.rst)
        for log in (self.axil.read_if.log, self.axil.write_if.log):
            log.setLevel(logging.WARNING)
        self.driver = NPUDriver(IrqTransport(dut, self.axil))

    async def start(self):
        dut = self.dut
        Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start()
        dut.backdoor.value = 0
        dut.line_we.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        await self.driver.check_config(self.config)

    async def load(self, data):
        """Write ``data`` (uint8) to memory from address 0, a line per cycle."""
        dut = self.dut
        lines = np.zeros(-(-len(data) // LINE_BYTES) * LINE_BYTES, np.uint8)
        lines[:len(data)] = data
        words = lines.reshape(-1, LINE_BYTES)
        dut.backdoor.value = 1
        dut.line_we.value = 1
        edge = RisingEdge(dut.clk)
        for index, line in enumerate(words):
            dut.line_addr.value = index
            dut.line_wdata.value = int.from_bytes(line.tobytes(), "little")
            await edge
        dut.line_we.value = 0
        dut.backdoor.value = 0

    async def read(self, addr, size):
        """``size`` bytes of memory from ``addr``, a line per cycle."""
        dut = self.dut
        first, end = addr // LINE_BYTES, -(-(addr + size) // LINE_BYTES)
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
        data = np.frombuffer(b"".join(chunks), np.uint8)
        offset = addr - first * LINE_BYTES
        return data[offset:offset + size]

    async def run(self, workload):
        image = workload.image
        if image.next > self.memory_bytes:
            raise MemoryError(f"the workload needs {image.next} bytes, the bench memory has "
                              f"{self.memory_bytes}")
        begin = time.perf_counter()
        await self.load(image.data[:image.next])
        loaded = time.perf_counter()
        status = await self.driver.run(workload.program_addr, 50_000_000)
        ran = time.perf_counter()
        assert status.done and status.error is ErrorCode.NONE, f"the NPU stopped: {status}"
        checks = []
        for name, addr, want in workload.outputs:
            got = await self.read(addr, len(want))
            wrong = int(np.count_nonzero(got != want))
            checks.append({"output": name, "bytes": len(want), "wrong": wrong})
            assert wrong == 0, f"{name}: {wrong} of {len(want)} output bytes differ from NumPy"
        return status, {"load_lines": -(-image.next // LINE_BYTES),
                        "load_seconds": loaded - begin, "run_seconds": ran - loaded,
                        "check_seconds": time.perf_counter() - ran, "checks": checks}


def make_workload(config, rng, kind, args, memory_bytes):
    image = MemoryImage(size=memory_bytes)
    if kind == "gemm":
        return gemm_workload(config, rng, image=image, **args)
    if kind == "conv":
        return conv_workload(config, rng, image=image, **args)
    raise ValueError(f"unknown workload kind {kind!r}")


@cocotb.test()
async def bench(dut):
    """Each row's workload through the RTL NPU: counters, wall-clock times, outputs checked."""
    tb = BenchTB(dut)
    await tb.start()
    results = []
    for row in tb.params["rows"]:
        workload = make_workload(tb.config, tb.rng, row["kind"], row["args"], tb.memory_bytes)
        status, times = await tb.run(workload)
        counters = status.counters
        dut._log.info("%s: %d cycles in %.1f s (%.0f cycles/s); load %.1f s", row["name"],
                      counters["cycles"], times["run_seconds"],
                      counters["cycles"] / times["run_seconds"], times["load_seconds"])
        results.append({**row, "macs": workload.macs, "instructions": len(workload.program),
                        **counters, **times})
    Path(tb.params["out"]).write_text(json.dumps(results, indent=1))
