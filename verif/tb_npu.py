"""Top-level cocotb testbench of hw.npu.NPU.

The host side is cocotbext-axi's ``AxiLiteMaster`` driven through the project's own
driver (``sw.driver.NPUDriver``); memory is cocotbext-axi's ``AxiRam`` with random pauses
on all five channels. Every program also runs on the NumPy NPU simulator
(``sw.simulator``), and the whole final memory of both must be identical; the outputs are
also checked against NumPy results computed from the tensors.
"""

import json
import logging

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from hw.config import NPUConfig
from hw.isa import INSTRUCTION_BYTES, Opcode
from hw.registers import NPU_MAGIC, ErrorCode
from sw.asm import Program
from sw.driver import NPUDriver
from sw.kernels import ConvLayer, candidate_conv_plans
from sw.simulator import NPUSimulator
from verif.npu_workloads import (MemoryImage, Workload, add_workload, conv_workload,
                                 direct_conv_workload, conv_pair_layers, gemm_workload,
                                 random_program, residual_block_workload,
                                 resident_conv_pair_workload)
from verif.runner import BUILD
from verif.tb_util import start_clock_and_reset, tb_params, tb_rng


class SimTransport:
    """The driver's transport in simulation: AXI4-Lite registers, the irq pin."""

    def __init__(self, dut, axil):
        self.dut, self.axil = dut, axil

    async def read_register(self, address):
        return await self.axil.read_dword(address)

    async def write_register(self, address, value):
        await self.axil.write_dword(address, value)

    async def wait_for_interrupt(self, timeout):
        for _ in range(timeout):
            if self.dut.irq.value:
                return True
            await RisingEdge(self.dut.clk)
        return bool(self.dut.irq.value)


class PoisonedRam(AxiRam):
    """``AxiRam`` answering SLVERR for reads of the bytes in ``poisoned`` (a range):
    cocotbext-axi answers SLVERR for a beat whose ``_read`` raises."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.poisoned = range(0)
        read = self.read_if._read

        async def poisonable_read(address, length):
            if address < self.poisoned.stop and address + length > self.poisoned.start:
                raise MemoryError(f"poisoned read at {address:#x}")
            return await read(address, length)
        self.read_if._read = poisonable_read


def _pauses(rng, probability):
    while True:
        yield int(rng.random() < probability)


class NPUBench:
    def __init__(self, dut, memory_bytes=4 << 20):
        self.dut = dut
        self.params = tb_params()
        self.config = NPUConfig(**self.params["config"])
        self.rng = tb_rng(dut._log)
        self.memory_bytes = memory_bytes
        self.ram = PoisonedRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk,
                               dut.rst, size=memory_bytes)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"),
                                  dut.clk, dut.rst)
        for log in (self.ram.read_if.log, self.ram.write_if.log, self.axil.read_if.log,
                    self.axil.write_if.log):
            log.setLevel(logging.WARNING)
        self.driver = NPUDriver(SimTransport(dut, self.axil))

    async def start(self, pause=0.0):
        self.set_pauses(pause)
        await start_clock_and_reset(self.dut)
        await ClockCycles(self.dut.clk, 2)
        await self.driver.check_config(self.config)

    def set_pauses(self, probability):
        ram = self.ram
        channels = [ram.read_if.ar_channel, ram.read_if.r_channel, ram.write_if.aw_channel,
                    ram.write_if.w_channel, ram.write_if.b_channel]
        for channel in channels:
            if probability:
                seed = int(self.rng.integers(2**32))
                channel.set_pause_generator(_pauses(np.random.default_rng(seed), probability))
            else:
                channel.clear_pause_generator()

    def load(self, image):
        self.ram.write(0, image.data.tobytes())

    def memory(self, size):
        return np.frombuffer(self.ram.read(0, size), np.uint8)

    async def run(self, workload, timeout=None):
        """Run ``workload`` on the RTL and on the simulator; compare; return the status.
        ``timeout`` (cycles) defaults to the ``timeout`` parameter, else 2,000,000."""
        if timeout is None:
            timeout = self.params.get("timeout", 2_000_000)
        self.load(workload.image)
        status = await self.driver.run(workload.program_addr, timeout)
        size = len(workload.image.data)
        rtl = self.memory(size)
        golden = workload.image.data.copy()
        sim = NPUSimulator(self.config)
        result = sim.run(golden, workload.program_addr)
        assert status.error is result.error, \
            f"RTL stopped with {status}, the simulator with {result.error.name}"
        if status.error is not ErrorCode.NONE:
            assert status.error_addr == result.error_addr, \
                f"RTL faulted at 0x{status.error_addr:x}, the simulator at 0x{result.error_addr:x}"
            return status
        assert status.done, f"RTL not done: {status}"
        differ = np.flatnonzero(rtl != golden)
        assert not differ.size, (f"{differ.size} bytes of memory differ between the RTL and the "
                                 f"simulator, first at 0x{differ[0]:x}")
        for name, wrong, total in workload.check(rtl):
            assert wrong == 0, f"{name}: {wrong} of {total} output bytes differ from NumPy"
        counters = status.counters
        assert counters["mac_cycles"] == result.mac_cycles, \
            f"MAC_CYCLES {counters['mac_cycles']}, the program has {result.mac_cycles}"
        assert counters["dma_read_bytes"] == result.dma_read_bytes
        assert counters["dma_write_bytes"] == result.dma_write_bytes
        return status

    def report(self, name, workload, status):
        c = status.counters
        peak = self.config.rows * self.config.cols
        utilization = workload.macs / (peak * c["cycles"]) if c["cycles"] else 0.0
        self.dut._log.info(
            "%s: %d instructions, %d MACs in %d cycles: MAC utilization %.1f%% (hardware "
            "counters: %d array cycles), DMA %d bytes read, %d written; stalls: load %d, "
            "compute %d, store %d, fetch %d", name, len(workload.program), workload.macs,
            c["cycles"], 100 * utilization, c["mac_cycles"], c["dma_read_bytes"],
            c["dma_write_bytes"], c["load_stall_cycles"], c["compute_stall_cycles"],
            c["store_stall_cycles"], c["fetch_stall_cycles"])
        return {"name": name, "instructions": len(workload.program), "macs": workload.macs,
                **c, "utilization": utilization,
                "array_utilization": c["mac_cycles"] / c["cycles"] if c["cycles"] else 0.0}


@cocotb.test()
async def random_programs(dut):
    """Random sequences of GEMM and convolution layers, with random AXI pauses: RTL memory
    equals the simulator's, outputs equal NumPy's."""
    bench = NPUBench(dut)
    await bench.start(pause=0.2)
    for index in range(bench.params.get("programs", 3)):
        workload = random_program(bench.config, bench.rng, layers=int(bench.rng.integers(1, 4)),
                                  scale=bench.params.get("scale", 1.0))
        status = await bench.run(workload)
        bench.report(f"random program {index}", workload, status)


@cocotb.test()
async def conv_layers(dut):
    """Convolutions with zero points and random pauses: a 3x3 one with ReLU as a GEMM on
    im2col in software, and four run straight from their NHWC input on the NPU (stride 1,
    one MATMUL per band; stride 2 with 12 channels, uneven padding and int8 activations;
    depthwise, with diagonal weight tiles; one whose weights stay resident while its
    bands go through; and two in one program, the tensor between them kept in the
    scratchpad)."""
    bench = NPUBench(dut)
    await bench.start(pause=0.1)
    size = bench.params.get("conv_size", 8)
    resident = next(plan for plan in candidate_conv_plans(
        bench.config, ConvLayer(size + 3, size, 16, 20, (3, 3), (1, 1), (1, 1, 1, 1)))
        if plan.resident)
    # The first convolution computed wide writes its unstored results into the padding of
    # the tensor it leaves in the scratchpad; the second must fill that padding again.
    first = dict(H=size, W=size + 1, C=12, N=16, kernel=(3, 3), strides=(1, 1),
                 pads=(1, 1, 1, 1), act_flip=True)
    second = dict(N=20, kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), act_flip=False)
    producer, _ = conv_pair_layers(bench.config, first, second)
    wide_into_padding = next(plan for plan in candidate_conv_plans(bench.config, producer)
                             if plan.wide)
    workloads = [
        ("conv im2col", conv_workload(bench.config, bench.rng, channels=16, out_channels=16,
                                      size=size)),
        ("conv direct, stride 1", direct_conv_workload(bench.config, bench.rng, size, size + 3,
                                                       16, 20)),
        ("conv direct, stride 2", direct_conv_workload(
            bench.config, bench.rng, size + 1, size, 12, 9, strides=(2, 2), pads=(1, 0, 1, 2),
            act_flip=False)),
        ("conv depthwise", direct_conv_workload(bench.config, bench.rng, size, size, 20, 20,
                                                depthwise=True)),
        ("conv direct, weights resident over its bands", direct_conv_workload(
            bench.config, bench.rng, size + 3, size, 16, 20, plan=resident)),
        ("two convs, the tensor between them in the scratchpad", resident_conv_pair_workload(
            bench.config, bench.rng, first, second, (wide_into_padding, None)))]
    for name, workload in workloads:
        status = await bench.run(workload)
        bench.report(name, workload, status)


@cocotb.test()
async def elementwise_adds(dut):
    """QLinearAdds in the output stage's add mode (``hw.add_stage``): uint8 over the
    compiler's chunks, and int8 in chunks of 8 vectors, so that many emitting MATMULs go
    through the add stage back to back; a residual block in one program, its tensors kept
    in the scratchpad; random pauses."""
    bench = NPUBench(dut)
    await bench.start(pause=0.1)
    workloads = [
        ("add uint8", add_workload(bench.config, bench.rng, 3001, unsigned=True)),
        ("add int8, chunks of 8 vectors", add_workload(bench.config, bench.rng, 1000,
                                                        unsigned=False, chunk_vectors=8)),
        ("residual block, tensors in the scratchpad", residual_block_workload(
            bench.config, bench.rng, 7, 6, 5, 8, unsigned=True))]
    for name, workload in workloads:
        status = await bench.run(workload)
        bench.report(name, workload, status)


@cocotb.test()
async def repeated_runs_are_identical(dut):
    """The same program three times in a row: identical memory and counters each time."""
    bench = NPUBench(dut)
    await bench.start(pause=0.0)
    workload = random_program(bench.config, bench.rng, layers=2)
    first = None
    for run in range(3):
        status = await bench.run(workload)
        memory = bench.memory(len(workload.image.data)).copy()
        counters = dict(status.counters)
        if first is None:
            first = (memory, counters)
        else:
            assert np.array_equal(memory, first[0]), f"run {run}: memory differs from run 0"
            assert counters == first[1], f"run {run}: counters {counters} != {first[1]}"


def _bad_program(config, kind):
    """A program that must stop with an error, and the address of its faulting instruction."""
    image = MemoryImage()
    program = Program()
    program.emit(Opcode.LOAD, mem_addr=0x2000, sp_addr=0, rows=2, row_bytes=16, mem_stride=16,
                 sp_stride=16, push_next=1)
    program.emit(Opcode.MATMUL, weight_addr=0, act_addr=0, act_stride=1, count=1, pop_prev=1)
    if kind == "opcode":
        program.words.append(0xF)
    elif kind == "range":
        program.emit(Opcode.LOAD, mem_addr=0x2000, sp_addr=config.scratchpad_bytes - 8, rows=1,
                     row_bytes=16)
    elif kind == "token":
        program.emit(Opcode.MATMUL, weight_addr=0, act_addr=0, count=1, pop_prev=1)
    elif kind == "tokens":
        # Two engines wait, the later one in the engines' order first in the program.
        program.emit(Opcode.STORE, mem_addr=0x3000, sp_addr=0, rows=1, row_bytes=16,
                     pop_prev=1)
        program.emit(Opcode.LOAD, mem_addr=0x2000, sp_addr=0, rows=1, row_bytes=16, pop_next=1)
    elif kind == "misaligned":
        program.emit(Opcode.MATMUL, weight_addr=1, act_addr=0, count=1)
    program.end()
    addr = image.place(np.frombuffer(program.to_bytes(), np.uint8), INSTRUCTION_BYTES)
    return Workload(image, addr, program)


@cocotb.test()
async def bad_programs_stop_with_an_error(dut):
    """Unknown opcode, scratchpad range, a token that never arrives (for one engine, or for
    two, reported at the lower address), misalignment: each stops the NPU with its error
    code and address, raises the interrupt, leaves the registers readable; a soft reset
    recovers and the next program runs correctly."""
    bench = NPUBench(dut)
    await bench.start(pause=0.1)
    expected = {"opcode": ErrorCode.ILLEGAL_OPCODE, "range": ErrorCode.SCRATCHPAD_RANGE,
                "token": ErrorCode.DEADLOCK, "tokens": ErrorCode.DEADLOCK,
                "misaligned": ErrorCode.MISALIGNED}
    for kind, code in expected.items():
        workload = _bad_program(bench.config, kind)
        status = await bench.run(workload, timeout=20_000)
        assert status.error is code, f"{kind}: {status}, expected {code.name}"
        assert status.error_addr == workload.program_addr + 2 * INSTRUCTION_BYTES, \
            f"{kind}: fault at 0x{status.error_addr:x}"
        assert await bench.driver.read("ID") == NPU_MAGIC, "registers unreadable after an error"
        await bench.driver.soft_reset()
        await ClockCycles(dut.clk, 20)
        status = await bench.driver.status()
        assert status.error is ErrorCode.NONE and not status.done, f"after soft reset: {status}"
        good = gemm_workload(bench.config, bench.rng, 20, 30, 12)
        await bench.run(good)
        dut._log.info("%s: %s at 0x%x, recovered", kind, code.name, workload.program_addr + 32)


@cocotb.test()
async def fetch_bus_errors(dut):
    """A read error on an instruction stops the NPU with BUS_ERROR_FETCH at that
    instruction; errors on the memory the fetcher reads ahead past ``END`` are ignored."""
    bench = NPUBench(dut)
    await bench.start(pause=0.1)
    for faulting in (0, 2, 9):
        workload = random_program(bench.config, bench.rng, layers=1,
                                  scale=bench.params.get("scale", 1.0))
        faulting = min(faulting, len(workload.program) - 1)
        bad = workload.program_addr + faulting * INSTRUCTION_BYTES
        bench.ram.poisoned = range(bad, bad + INSTRUCTION_BYTES)
        bench.load(workload.image)
        dut._log.info("instruction %d of %d unreadable", faulting, len(workload.program))
        status = await bench.driver.run(workload.program_addr, 200_000)
        assert status.error is ErrorCode.BUS_ERROR_FETCH and status.error_addr == bad, \
            f"instruction {faulting} unreadable: {status}"
        await bench.driver.soft_reset()
        await ClockCycles(dut.clk, 20)
    workload = random_program(bench.config, bench.rng, layers=1,
                              scale=bench.params.get("scale", 1.0))
    after_end = workload.program_addr + len(workload.program) * INSTRUCTION_BYTES
    bench.ram.poisoned = range(after_end, after_end + 4096)
    status = await bench.run(workload)
    assert status.done, f"a program followed by unreadable memory: {status}"


@cocotb.test()
async def beyond_the_address_space(dut):
    """An NPU with fewer address bits than the bench memory (``addr_width`` < 32) reaches
    nothing at or above ``2**addr_width``, and nothing wraps to low memory: a LOAD or STORE
    with a row there stops with BUS_ERROR_DMA at its address, and an instruction there,
    whether the program starts or runs into it, with BUS_ERROR_FETCH at the instruction's
    address. A transfer ending just below the top completes."""
    bench = NPUBench(dut)
    top = 2**bench.config.addr_width
    assert top < bench.memory_bytes, "the bench memory must reach beyond the NPU's addresses"
    await bench.start(pause=0.1)
    pattern = bytes(range(0xA0, 0xB0))
    end = Program().end().to_bytes()
    sync = Program().emit(Opcode.SYNC, engine=0).to_bytes()

    async def run(program_addr, expected, error_addr=None):
        status = await bench.driver.run(program_addr, 20_000)
        if expected is ErrorCode.NONE:
            assert status.done and status.error is ErrorCode.NONE, status
        else:
            assert status.error is expected and status.error_addr == error_addr, \
                f"expected {expected.name} at 0x{error_addr:x}: {status}"
            await bench.driver.soft_reset()
            await ClockCycles(dut.clk, 20)

    # (mem_addr, rows, mem_stride): the transfer's last row reaches beyond the top, or not.
    transfers = [(top - 16, 1, 0, ErrorCode.NONE), (top - 8, 1, 0, ErrorCode.BUS_ERROR_DMA),
                 (top + 0x100, 1, 0, ErrorCode.BUS_ERROR_DMA),
                 (0x2000, 3, top // 2, ErrorCode.BUS_ERROR_DMA),
                 (0x2000, 2, top + 0x40, ErrorCode.BUS_ERROR_DMA)]
    for opcode in (Opcode.LOAD, Opcode.STORE):
        for mem_addr, rows, stride, expected in transfers:
            program = Program()
            if opcode is Opcode.STORE:
                program.emit(Opcode.LOAD, mem_addr=0x9000, sp_addr=0, rows=1, row_bytes=16)
            program.emit(opcode, mem_addr=mem_addr, sp_addr=0, rows=rows, row_bytes=16,
                         mem_stride=stride, sp_stride=0).end()
            bench.ram.write(0, bytes(0x8000))
            bench.ram.write(0x8000, program.to_bytes())
            bench.ram.write(0x9000, pattern)
            faulting = 0x8000 + (len(program.words) - 2) * INSTRUCTION_BYTES
            dut._log.info("%s of %d rows at 0x%x, stride 0x%x", opcode.name, rows, mem_addr, stride)
            await run(0x8000, expected, faulting)
            assert bench.ram.read(0, 0x8000) == bytes(0x8000), "a transfer wrapped to low memory"

    bench.ram.write(0, end)
    bench.ram.write(top, end)
    bench.ram.write(top + 0x40, sync + end)
    await run(top + 0x40, ErrorCode.BUS_ERROR_FETCH, top + 0x40)
    # Its bit addr_width clear: reported whole, and nothing read at its low bits.
    bench.ram.write(0x80, sync + end)
    await run(2 * top + 0x80, ErrorCode.BUS_ERROR_FETCH, 2 * top + 0x80)
    bench.ram.write(top - 2 * INSTRUCTION_BYTES, sync + sync)
    await run(top - 2 * INSTRUCTION_BYTES, ErrorCode.BUS_ERROR_FETCH, top)


@cocotb.test()
async def load_offered_while_a_store_is_walked(dut):
    """A LOAD that reaches the DMA while it still walks a long STORE (they share it, and
    without a descriptor queue the DMA reads the STORE's descriptor from its engine until
    its last burst): both move the right bytes. The compute engine's two SYNCs free the
    STORE, then the LOAD, a cycle apart."""
    bench = NPUBench(dut)
    rng = tb_rng(dut._log)
    await bench.start(pause=0.1)
    rows, row_bytes = 64, 16
    first = rng.integers(0, 256, rows * row_bytes, np.uint8).tobytes()
    second = rng.integers(0, 256, 8 * row_bytes, np.uint8).tobytes()
    program = Program()
    program.emit(Opcode.LOAD, mem_addr=0x9000, sp_addr=0, rows=rows, row_bytes=row_bytes,
                 mem_stride=row_bytes, sp_stride=row_bytes, push_next=1)
    program.emit(Opcode.SYNC, engine=1, pop_prev=1, push_next=1)
    program.emit(Opcode.SYNC, engine=1, push_prev=1)
    program.emit(Opcode.STORE, mem_addr=0xA000, sp_addr=0, rows=rows, row_bytes=row_bytes,
                 mem_stride=2 * row_bytes, sp_stride=row_bytes, pop_prev=1)
    program.emit(Opcode.LOAD, mem_addr=0x9800, sp_addr=0x400, rows=8, row_bytes=row_bytes,
                 mem_stride=row_bytes, sp_stride=row_bytes, pop_next=1, push_next=1)
    program.emit(Opcode.SYNC, engine=1, pop_prev=1, push_next=1)
    program.emit(Opcode.STORE, mem_addr=0xB000, sp_addr=0x400, rows=8, row_bytes=row_bytes,
                 mem_stride=row_bytes, sp_stride=row_bytes, pop_prev=1)
    program.end()
    bench.ram.write(0x8000, program.to_bytes())
    bench.ram.write(0x9000, first)
    bench.ram.write(0x9800, second)
    status = await bench.driver.run(0x8000, 200_000)
    assert status.done and status.error is ErrorCode.NONE, status
    stored = bench.ram.read(0xA000, 2 * rows * row_bytes)
    for r in range(rows):
        assert stored[2 * r * row_bytes:(2 * r + 1) * row_bytes] == \
            first[r * row_bytes:(r + 1) * row_bytes], f"STORE row {r}"
    assert bench.ram.read(0xB000, len(second)) == second, "the LOAD's bytes"


@cocotb.test()
async def throughput(dut):
    """`make sim`: a large GEMM and a convolution layer at zero wait states, with the
    hardware counters' cycles, MAC utilization and DMA bytes."""
    bench = NPUBench(dut, memory_bytes=8 << 20)
    await bench.start(pause=0.0)
    M, K, N = bench.params.get("gemm", (128, 512, 128))
    rows = []
    for name, workload in [
            (f"GEMM {M}x{K}x{N} + bias + requantization + ReLU-clamp",
             gemm_workload(bench.config, bench.rng, M, K, N, image=MemoryImage(8 << 20))),
            ("conv 3x3, 32->32 channels, 16x16, padding 1 (im2col)",
             conv_workload(bench.config, bench.rng, image=MemoryImage(8 << 20))),
            ("conv 3x3, 32->32 channels, 16x16, padding 1 (direct, NHWC)",
             direct_conv_workload(bench.config, bench.rng, 16, 16, 32, 32,
                                  image=MemoryImage(8 << 20)))]:
        status = await bench.run(workload, timeout=20_000_000)
        rows.append(bench.report(name, workload, status))
    (BUILD / "sim").mkdir(parents=True, exist_ok=True)
    (BUILD / "sim" / "npu_report.json").write_text(json.dumps(rows, indent=2))
