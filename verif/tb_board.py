"""cocotb testbench of fpga.board.BoardDesign: the host link end to end.

The host is ``sw/uart_link.py`` over cocotbext-uart's ``UartSource``/``UartSink``. The
``protocol`` test sends raw frames (refusals, a damaged frame, a truncated one, a
retransmission); the ``model`` test runs a compiled model through the runtime while
:class:`FaultyPort` damages, shortens or drops requests and answers at random.
"""

import json
import logging
import sys

import cocotb
import numpy as np
from cocotb.triggers import Timer
from cocotb.utils import get_sim_time
from cocotbext.uart import UartSink, UartSource

from hw.config import NPUConfig
from hw.registers import BY_NAME, NPU_MAGIC
from hw.uart_bridge import (CRC_BYTES, INTERBYTE_TIMEOUT_BYTES, MAX_PAYLOAD,
                            RESPONSE_HEADER_BYTES, Command, Status)
from sw.npu_file import CompiledModel
from sw.runtime import Runtime
from sw.uart_link import LinkError, UartBackend, UartLink, encode_request
from verif.tb_util import start_clock_and_reset, tb_params, tb_rng


CLOCK_NS = 10


class CocotbPort:
    """The link's byte transport on the simulated UART pins; timeouts in simulated seconds."""

    def __init__(self, dut, baud):
        self.source = UartSource(dut.uart_rx, baud=baud)
        self.sink = UartSink(dut.uart_tx, baud=baud)
        self.source.log.setLevel(logging.WARNING)
        self.sink.log.setLevel(logging.WARNING)

    async def write(self, payload):
        await self.source.write(payload)
        await self.source.wait()

    async def read(self, count, timeout):
        deadline = get_sim_time("ns") + timeout * 1e9
        received = bytearray()
        while len(received) < count:
            if not self.sink.empty():
                received += self.sink.read_nowait(min(count - len(received), self.sink.count()))
                continue
            remaining = int(deadline - get_sim_time("ns"))
            if remaining <= 0:
                break
            await self.sink.wait(timeout=remaining, timeout_unit="ns")
        return bytes(received)


class FaultyPort:
    """Damages exchanges at random: each request is, with probability ``probability``,
    given one fault, the kinds taken in turn from shuffled rounds of :data:`KINDS`.

    Request faults: one bit flipped or one byte dropped after the sync byte (so the bridge
    sees a frame and must catch it), the whole frame dropped. Answer
    faults: one bit flipped or one byte dropped among the answer's first seven bytes
    (every answer has them), or everything received until the next request dropped (the
    host sees a silent line).
    """

    KINDS = ("request_flip", "request_drop_byte", "request_drop",
             "answer_flip", "answer_drop_byte", "answer_drop")

    def __init__(self, port, rng, probability):
        self.port, self.rng, self.probability = port, rng, probability
        self.injected = {kind: 0 for kind in self.KINDS}
        self.order = []
        self.answer_fault = None
        self.received = 0

    def _kind(self):
        if not self.order:
            self.order = list(self.rng.permutation(self.KINDS))
        return str(self.order.pop())

    async def write(self, payload):
        frame = bytearray(payload)
        self.answer_fault, self.received = None, 0
        if self.rng.random() < self.probability:
            kind = self._kind()
            self.injected[kind] += 1
            if kind == "request_flip":
                frame[self.rng.integers(1, len(frame))] ^= 1 << int(self.rng.integers(8))
            elif kind == "request_drop_byte":
                del frame[self.rng.integers(1, len(frame))]
            elif kind == "request_drop":
                frame = bytearray()
            else:
                self.answer_fault = (kind, int(self.rng.integers(RESPONSE_HEADER_BYTES + CRC_BYTES)),
                                     int(self.rng.integers(8)))
        if frame:
            await self.port.write(frame)

    async def read(self, count, timeout):
        if self.answer_fault is not None and self.answer_fault[0] == "answer_drop":
            # Lost on the line: whatever arrives is discarded for the whole wait, so the
            # host sees silence (returning early would end its drain before the lost
            # answer has, and the rest of that answer would then spoil the retry's).
            await self.port.read(sys.maxsize, timeout)
            return b""
        received = bytearray(await self.port.read(count, timeout))
        if self.answer_fault is None:
            return bytes(received)
        kind, index, bit = self.answer_fault
        position = index - self.received
        self.received += len(received)
        if 0 <= position < len(received):
            if kind == "answer_flip":
                received[position] ^= 1 << bit
            else:
                del received[position]
            self.answer_fault = None
        return bytes(received)

    @property
    def answer_faults(self):
        return sum(count for kind, count in self.injected.items() if kind.startswith("answer"))


class BoardBench:
    def __init__(self, dut):
        self.dut = dut
        self.params = tb_params()
        self.config = NPUConfig(**self.params["config"])
        self.divisor = self.params["divisor"]
        self.baud = round(1e9 / (CLOCK_NS * self.divisor))
        self.byte_time = 10 / self.baud
        self.port = CocotbPort(dut, self.baud)

    def link(self, port=None, retries=8):
        # The answer timeout: the bridge's inter-byte timeout twice over, and a margin for
        # the longest execution (a 256-byte memory write, two cycles a byte).
        timeout = 2 * INTERBYTE_TIMEOUT_BYTES * self.byte_time + 2 * MAX_PAYLOAD * CLOCK_NS * 1e-9
        return UartLink(port or self.port, baud=self.baud, timeout=timeout, retries=retries)

    async def start(self):
        await start_clock_and_reset(self.dut)
        await Timer(100, unit="ns")

    async def exchange(self, link, frame):
        """Send ``frame`` as is; (status, data) of the answer, or None."""
        await self.port.write(frame)
        return await link.receive_answer(frame[1])


@cocotb.test()
async def protocol(dut):
    """Register and memory access, refusals, a damaged, a truncated and a repeated frame."""
    bench = BoardBench(dut)
    rng = tb_rng(dut._log)
    await bench.start()
    link = bench.link()
    assert await link.read_register(BY_NAME["ID"].address) == NPU_MAGIC
    await link.write_register(BY_NAME["PROGRAM_ADDR"].address, 0x1230)
    assert await link.read_register(BY_NAME["PROGRAM_ADDR"].address) == 0x1230

    image = rng.integers(0, 256, 700, np.uint8).tobytes()
    await link.write_memory(0x103, image)
    assert await link.read_memory(0x103, len(image)) == image
    assert await link.read_memory(0x100, 3) == bytes(3)

    status = await link.status()
    assert status["irq"] == 0 and status["executed"] == link.stats.executed == 10, status

    # Refused without being applied: unknown command, wrong length, unmapped register.
    assert await bench.exchange(link, encode_request(1, 0x7F, 0x100, 4, b"")) == \
        (Status.BAD_COMMAND, b"")
    assert await bench.exchange(link, encode_request(2, Command.READ_REG, 0, 3)) == \
        (Status.BAD_LENGTH, b"")
    assert await bench.exchange(link, encode_request(3, Command.WRITE_MEM, 0x100, 300,
                                                     bytes(300))) == (Status.BAD_LENGTH, b"")
    # A write longer than MAX_PAYLOAD ends with the inter-byte timeout: damaged, it is NAKed.
    frame = bytearray(encode_request(3, Command.WRITE_MEM, 0x100, 300, bytes(300)))
    frame[200] ^= 0x01
    assert await bench.exchange(link, bytes(frame)) == (Status.BAD_CRC, b"")
    try:
        await link.read_register(0xFC)
    except LinkError as error:
        assert "BUS_ERROR" in str(error)
    else:
        raise AssertionError("an unmapped register read was not refused")

    # A damaged frame is NAKed and not applied; a truncated one is dropped unanswered.
    # The damage may be in the payload or in either byte of the CRC.
    for position in (12, -2, -1):
        frame = bytearray(encode_request(4, Command.WRITE_MEM, 0x103, 4, b"\xde\xad\xbe\xef"))
        frame[position] ^= 0x10
        assert await bench.exchange(link, bytes(frame)) == (Status.BAD_CRC, b"")
    frame = encode_request(5, Command.WRITE_MEM, 0x103, 4, b"\xde\xad\xbe\xef")
    await bench.port.write(frame[:10])
    assert await bench.port.read(1, link.timeout) == b""
    assert await link.read_memory(0x103, 4) == image[:4]

    # A retransmitted frame is answered again but executed once.
    before = await link.status()
    frame = encode_request(6, Command.WRITE_MEM, 0x200, 4, b"\x01\x02\x03\x04")
    assert await bench.exchange(link, frame) == (Status.OK, b"")
    assert await bench.exchange(link, frame) == (Status.OK, b"")
    after = await link.status()
    assert after["duplicates"] == before["duplicates"] + 1, (before, after)
    assert after["executed"] == before["executed"] + 1, (before, after)
    assert after["bad_frames"] == 4 and after["truncated"] == 1, after
    assert await link.read_memory(0x200, 4) == b"\x01\x02\x03\x04"

    # A retransmitted register read is not executed again either, but the register is read
    # again: the same value, or the same bus error.
    before = await link.status()
    value = (Status.OK, (0x1230).to_bytes(4, "little"))
    for seq, address, answer in ((7, BY_NAME["PROGRAM_ADDR"].address, value),
                                 (8, 0xFC, (Status.BUS_ERROR, b""))):
        frame = encode_request(seq, Command.READ_REG, address, 4)
        assert await bench.exchange(link, frame) == answer
        assert await bench.exchange(link, frame) == answer
    after = await link.status()
    assert after["duplicates"] == before["duplicates"] + 2, (before, after)
    assert after["executed"] == before["executed"] + 2, (before, after)

    # The executed counter carries from its low byte into the next.
    requests = 257 - after["executed"] % 256
    for _ in range(requests):
        await link.read_memory(0x200, 1)
    final = await link.status()
    assert final["executed"] == after["executed"] + requests, (after, final)


@cocotb.test()
async def model(dut):
    """A compiled model through the runtime over the UART, with faults injected."""
    bench = BoardBench(dut)
    params = bench.params
    rng = tb_rng(dut._log)
    await bench.start()
    faulty = FaultyPort(bench.port, rng, params["fault_probability"])
    link = bench.link(faulty)
    backend = UartBackend(link, poll_interval=50 * bench.byte_time, run_timeout=0.05)
    await backend.driver.check_config(bench.config)
    compiled = CompiledModel.load(params["model"])
    runtime = Runtime(compiled, backend, bench.config, params["model"])
    stored = np.load(params["inputs"])
    outputs = {}
    started = get_sim_time("us")
    for index in range(len(stored["input"])):
        result = await runtime.infer({"input": stored["input"][index]})
        for name, value in result.items():
            outputs.setdefault(name, []).append(value)
    elapsed_us = get_sim_time("us") - started
    np.savez(params["outputs"], **{name: np.stack(values) for name, values in outputs.items()})

    faulty.probability = 0
    device = await link.status()
    stats = link.stats
    injected = sum(faulty.injected.values())
    dut._log.info("link: %s; injected %s; bridge %s; %.0f us simulated", stats, faulty.injected,
                  device, elapsed_us)
    with open(params["report"], "w") as report:
        json.dump({"injected": faulty.injected, "link": vars(stats), "bridge": device,
                   "simulated_us": elapsed_us}, report)
    assert all(count > 0 for count in faulty.injected.values()), faulty.injected
    # Every fault cost exactly one retransmission, and nothing else did.
    assert stats.retries == injected, (stats, faulty.injected)
    # Every answer lost after execution was resent from the saved answer, not re-executed:
    assert device["duplicates"] == faulty.answer_faults % 256, (device, faulty.injected)
    # the bridge executed exactly the requests the host completed, once each.
    assert device["executed"] == stats.executed, (device, stats)
    # Every damaged or shortened request was caught by the bridge (NAK or timeout).
    assert device["bad_frames"] + device["truncated"] >= \
        faulty.injected["request_flip"] + faulty.injected["request_drop_byte"], device
    assert stats.timeouts >= faulty.injected["request_drop"], stats
