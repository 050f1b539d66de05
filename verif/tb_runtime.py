"""cocotb testbench that runs a compiled model through the runtime on the RTL NPU
(the ``rtl`` backend of ``npu run``; see ``sw/rtl_backend.py``)."""

import json
import logging
import sys

import cocotb
import numpy as np
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from hw.config import NPUConfig
from sw.driver import NPUDriver
from sw.npu_file import CompiledModel
from sw.runtime import Runtime
from verif.tb_npu import SimTransport
from verif.tb_util import start_clock_and_reset, tb_params


class RTLBackend:
    """Memory through AxiRam's backdoor; programs through the host registers."""

    name = "rtl"

    def __init__(self, ram, driver):
        self.ram, self.driver = ram, driver

    async def write_memory(self, address, data):
        self.ram.write(address, bytes(data))

    async def read_memory(self, address, length):
        return self.ram.read(address, length)

    async def run_program(self, address):
        return await self.driver.run(address, timeout=50_000_000)


@cocotb.test()
async def run_models(dut):
    """Run each job (a compiled model and its inputs) through the runtime on the RTL NPU."""
    params = tb_params()
    config = NPUConfig(**params["config"])
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk, dut.rst,
                 size=params["memory_bytes"])
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"), dut.clk, dut.rst)
    for log in (ram.read_if.log, ram.write_if.log, axil.read_if.log, axil.write_if.log):
        log.setLevel(logging.WARNING)
    driver = NPUDriver(SimTransport(dut, axil))
    await start_clock_and_reset(dut)
    await driver.check_config(config)
    for job in params["jobs"]:
        await run_job(job, config, RTLBackend(ram, driver))


async def run_job(job, config, backend):
    model = CompiledModel.load(job["model"])
    runtime = Runtime(model, backend, config, job["model"])
    stored = np.load(job["inputs"])
    inputs = {name: stored[name] for name in stored.files}
    count = len(next(iter(inputs.values()))) if job["batched"] else 1
    results, cycles = {}, []
    progress = None
    if count > 1:
        from tqdm import tqdm
        progress = tqdm(total=count, desc="rtl inference", unit="run", file=sys.stderr)
    for index in range(count):
        before = runtime.stats.counters.get("cycles", 0)
        one = {name: value[index] for name, value in inputs.items()} if job["batched"] else inputs
        outputs = await runtime.infer(one)
        cycles.append(runtime.stats.counters.get("cycles", 0) - before)
        for name, value in outputs.items():
            results.setdefault(name, []).append(value)
        if progress:
            progress.update()
    if progress:
        progress.close()
    np.savez(job["outputs"], **{name: np.stack(values) if job["batched"] else values[0]
                                for name, values in results.items()})
    stats = runtime.stats
    with open(job["report"], "w") as report:
        json.dump({"npu_runs": stats.npu_runs, "macs": stats.macs,
                   "instructions": stats.instructions, "counters": stats.counters,
                   "cycles_per_inference": cycles}, report)
