"""cocotb testbench of hw.scratchpad.Scratchpad against a NumPy byte-array model.

A monitor samples every port in every cycle and replays the accepted requests on the model
with the documented rules: reads see all writes of earlier cycles, and those of their own
cycle with registered banks (write-first) or none of them without (read-first); a DMA
read's data arrives exactly ``read_latency`` cycles later (4, or 1 without registered
banks); compute responses come in request order, ``read_latency`` cycles after their
request at the earliest, with at most ``read_buffers`` requested and not taken (a read
port with fewer than ``read_latency + 1`` must still take that many requests per
``read_latency + 1`` cycles); each bank serves at most one read and one write per cycle; a
held read request waits at most 2 cycles for a bank's read port; a result write is never
stalled, and a DMA write only in a cycle in which a result is written to its bank. The
model keeps the SRAM contents across the tests of one run, like the simulated SRAM does.
"""

import cocotb
import numpy as np
from amaranth.hdl import Shape, unsigned
from cocotb.triggers import FallingEdge, ReadOnly, with_timeout

from hw.config import NPUConfig
from hw.scratchpad import Scratchpad
from verif.tb_util import (collect_stream, drive_stream, pack, port, start_clock_and_reset,
                           tb_params, tb_rng, unpack)


_MODEL = None

READ_WAIT_LIMIT = 2     # three requesters share a bank's read port, round robin
WRITE_WAIT_LIMIT = 0    # result writes own a bank's write port; a DMA write yields to them


class ScratchpadModel:
    """The scratchpad as a flat byte array, with the documented address map."""

    def __init__(self, config):
        self.size = config.scratchpad_bytes
        self.banks = config.scratchpad_banks
        self.rows, self.cols = config.rows, config.cols
        self.bus_bytes = config.bus_width // 8
        self.act_slot = 1 << (config.rows - 1).bit_length()
        self.wgt_slot = 1 << (config.cols - 1).bit_length()
        self.word_bytes = max(self.bus_bytes, self.act_slot, self.wgt_slot)
        self.bank_bytes = self.size // self.banks
        self.mem = np.zeros(self.size, np.uint8)

    def bank(self, byte):
        return byte // self.bank_bytes

    def read(self, byte, count):
        return self.mem[byte:byte + count].copy()

    def write(self, byte, values, enables):
        for i, (value, enable) in enumerate(zip(values, enables)):
            if enable:
                self.mem[byte + i] = value

    def address(self, bank, row, offset, unit):
        """The address, in ``unit``-byte units, of byte ``offset`` of ``row`` of ``bank``."""
        return (bank * self.bank_bytes + row * self.word_bytes + offset) // unit


def _setup():
    """The test parameters, the model (shared by the tests of a run) and the interface."""
    global _MODEL
    p = tb_params()
    config = NPUConfig(rows=p["rows"], cols=p["cols"], bus_width=p["bus_width"],
                       scratchpad_bytes=p["scratchpad_bytes"], scratchpad_banks=p["banks"],
                       registered_banks=p["registered_banks"], read_buffers=p["read_buffers"])
    if _MODEL is None:
        _MODEL = ScratchpadModel(config)
    return p, _MODEL, Scratchpad(config, tag_shape=unsigned(p["tag_bits"]))


def _bytes(value, count):
    return np.frombuffer(int(value).to_bytes(count, "little"), np.uint8)


class Monitor:
    """Replays every accepted request on the model and checks the documented rules."""

    PORTS = ("dma", "act", "wgt", "res")

    def __init__(self, dut, model, sp):
        self.dut, self.model = dut, model
        self.dma_layout = sp.dma.req.p.shape()
        self.act_layout, self.act_resp_layout = sp.act_req.p.shape(), sp.act_resp.p.shape()
        self.wgt_layout, self.wgt_resp_layout = sp.wgt_req.p.shape(), sp.wgt_resp.p.shape()
        self.res_layout = sp.res.p.shape()
        self.expected = {"act": [], "wgt": []}
        self.accepted = {name: [] for name in self.PORTS}
        self.stalls = {name: 0 for name in self.PORTS}
        self.waits = {name: 0 for name in self.PORTS}
        self.yields = 0     # cycles a DMA write waited for a result write to its bank
        # The cycles of compute requests whose responses have not been taken: a read port
        # buffers read_buffers.
        self.outstanding = {"act": [], "wgt": []}
        self.latency = sp.read_latency
        self.buffers = sp.read_buffers
        self.read_write_overlaps = 0  # cycles that read bytes written in the same cycle
        self.write_first = sp.config.registered_banks
        self.dma_pending = [None] * self.latency    # data due in 1, ... read_latency cycles
        self.errors = []
        self.cycle = 0

    def start(self):
        cocotb.start_soon(self._run())
        return self

    def error(self, message):
        if len(self.errors) < 10:
            self.dut._log.error("cycle %d: %s", self.cycle, message)
        self.errors.append(message)

    def _stall(self, name, wants, ready, limit):
        """Count a cycle in which ``name`` asks for a bank and is not granted."""
        if wants and not ready:
            self.stalls[name] += 1
            self.waits[name] += 1
            if self.waits[name] > limit:
                self.error(f"{name} waited {self.waits[name]} cycles, more than {limit}")
        else:
            self.waits[name] = 0

    async def _run(self):
        dut, model = self.dut, self.model
        while True:
            await FallingEdge(dut.clk)
            await ReadOnly()
            self.cycle += 1
            self._sample(dut, model)

    def _sample(self, dut, model):
        reads, writes = [], []          # (port, byte address, ...) accepted this cycle
        tags = {}                       # the tags of this cycle's compute reads

        due = self.dma_pending.pop(0)
        self.dma_pending.append(None)
        if int(dut.dma__rvalid.value):
            if due is None:
                self.error(f"dma.rvalid without a read {self.latency} cycles earlier")
            else:
                got = dut.dma__rdata.value.to_unsigned()
                if got != due:
                    self.error(f"dma read data {got:#x}, model {due:#x}")
        elif due is not None:
            self.error(f"no dma.rvalid {self.latency} cycles after an accepted read")

        result_bank = None
        if int(dut.res__valid.value):
            req = unpack(self.res_layout, dut.res__payload.value.to_unsigned())
            result_bank = model.bank(req["addr"] * model.wgt_slot)

        valid, ready = int(dut.dma__req__valid.value), int(dut.dma__req__ready.value)
        if valid:
            req = unpack(self.dma_layout, dut.dma__req__payload.value.to_unsigned())
            byte = req["addr"] * model.bus_bytes
            if req["write"] and not ready and model.bank(byte) == result_bank:
                self.yields += 1
                self.waits["dma"] = 0
            else:
                self._stall("dma", True, ready,
                            WRITE_WAIT_LIMIT if req["write"] else READ_WAIT_LIMIT)
            if ready:
                self.accepted["dma"].append(self.cycle)
                if req["write"]:
                    writes.append(("dma", byte, _bytes(req["data"], model.bus_bytes),
                                   [(req["strb"] >> i) & 1 for i in range(model.bus_bytes)]))
                else:
                    reads.append(("dma", byte, model.bus_bytes))
        else:
            self.waits["dma"] = 0

        for name, slot, lanes, layout in (("act", model.act_slot, model.rows, self.act_layout),
                                          ("wgt", model.wgt_slot, model.cols, self.wgt_layout)):
            valid = int(getattr(dut, f"{name}_req__valid").value)
            ready = int(getattr(dut, f"{name}_req__ready").value)
            outstanding = self.outstanding[name]
            free = len(outstanding) < self.buffers
            self._stall(name, valid and free, ready, READ_WAIT_LIMIT)
            if ready and not (valid and free):
                self.error(f"{name}_req ready without a valid request and a free response")
            if int(getattr(dut, f"{name}_resp__valid").value):
                if not outstanding or outstanding[0] > self.cycle - self.latency:
                    self.error(f"{name}_resp valid less than {self.latency} cycles after its "
                               f"request")
                elif int(getattr(dut, f"{name}_resp__ready").value):
                    outstanding.pop(0)
            if valid and ready:
                req = unpack(layout, getattr(dut, f"{name}_req__payload").value.to_unsigned())
                byte = req["addr"] * slot
                reads.append((name, byte, lanes))
                self.accepted[name].append(self.cycle)
                outstanding.append(self.cycle)
                tags[name] = req["tag"]

        valid, ready = int(dut.res__valid.value), int(dut.res__ready.value)
        self._stall("res", valid, ready, WRITE_WAIT_LIMIT)
        if valid and ready:
            req = unpack(self.res_layout, dut.res__payload.value.to_unsigned())
            self.accepted["res"].append(self.cycle)
            writes.append(("res", req["addr"] * model.wgt_slot,
                           np.array(req["data"], np.uint8), [1] * model.cols))

        for kind, accesses in (("reads", reads), ("writes", writes)):
            banks = [model.bank(access[1]) for access in accesses]
            if len(set(banks)) != len(banks):
                self.error(f"two {kind} of bank {banks} in one cycle: {accesses}")
        written = {w + i for _, w, _, enables in writes for i, e in enumerate(enables) if e}
        if any(r + i in written for _, r, length in reads for i in range(length)):
            self.read_write_overlaps += 1
        if not self.write_first:
            self._expect(model, reads, tags)
        for _, byte, values, enables in writes:
            model.write(byte, values, enables)
        if self.write_first:
            self._expect(model, reads, tags)

    def _expect(self, model, reads, tags):
        """The model's data for this cycle's ``reads``: the DMA read's data due in
        ``read_latency`` cycles, the compute reads' responses."""
        for name, byte, length in reads:
            data = model.read(byte, length)
            if name == "dma":
                self.dma_pending[-1] = int.from_bytes(data.tobytes(), "little")
            else:
                layout = getattr(self, f"{name}_resp_layout")
                self.expected[name].append(pack(layout, {"data": data, "tag": tags[name]}))


def _hot_address(rng, model, unit, banks=None, hot_rows=4):
    """An address (in ``unit``-byte units) in a few rows of ``banks``, to make collisions."""
    bank = int(rng.choice(banks if banks is not None else model.banks))
    if rng.random() < 0.2:
        row = int(rng.integers(model.bank_bytes // model.word_bytes))
    else:
        row = int(rng.integers(hot_rows))
    offset = int(rng.integers(model.word_bytes // unit)) * unit
    return model.address(bank, row, offset, unit)


def _dma_beats(rng, sp, model, addresses, writes):
    layout = sp.dma.req.p.shape()
    n = model.bus_bytes
    beats = []
    for addr, write in zip(addresses, writes):
        strb = int(rng.choice([0, (1 << n) - 1, int(rng.integers(1 << n))]))
        beats.append(pack(layout, {"addr": addr, "write": int(write),
                                   "data": int.from_bytes(rng.bytes(n), "little"),
                                   "strb": strb}))
    return beats


def _read_beats(rng, layout, addresses):
    tag_max = 1 << Shape.cast(layout["tag"].shape).width
    return [pack(layout, {"addr": a, "tag": int(rng.integers(tag_max))}) for a in addresses]


def _result_beats(rng, sp, model, addresses):
    layout = sp.res.p.shape()
    return [pack(layout, {"addr": a, "data": rng.integers(0, 256, model.cols)})
            for a in addresses]


async def _run(dut, sp, model, streams, idle, stall, rng):
    """Drive ``streams`` (port name -> beats) at once; return the monitor when all is done."""
    for name in ("dma__req", "act_req", "wgt_req", "res"):
        getattr(dut, f"{name}__valid").value = 0
    for name in ("act_resp", "wgt_resp"):
        getattr(dut, f"{name}__ready").value = 0
    await start_clock_and_reset(dut)
    monitor = Monitor(dut, model, sp).start()
    drivers = [cocotb.start_soon(drive_stream(dut.clk, port(dut, name), beats, rng, idle))
               for name, beats in streams.items()]
    received = {}
    for name in ("act", "wgt"):
        count = len(streams.get(f"{name}_req", []))
        received[name] = cocotb.start_soon(
            collect_stream(dut.clk, port(dut, f"{name}_resp"), count, rng, stall))
    for task in drivers:
        await with_timeout(task, 2, "ms")
    for name, task in received.items():
        got = await with_timeout(task, 2, "ms")
        expected = monitor.expected[name]
        assert len(got) == len(expected), f"{name}: {len(got)} responses, {len(expected)} reads"
        layout = sp.act_resp.p.shape() if name == "act" else sp.wgt_resp.p.shape()
        for i, (g, e) in enumerate(zip(got, expected)):
            if g != e:
                monitor.error(f"{name} response {i}: {unpack(layout, g)}, model {unpack(layout, e)}")
    for _ in range(3):
        await FallingEdge(dut.clk)
    assert not monitor.errors, f"{len(monitor.errors)} errors, first: {monitor.errors[0]}"
    return monitor


@cocotb.test()
async def random_traffic(dut):
    """Random DMA reads and strobed writes, compute reads and result writes, all at once."""
    p, model, sp = _setup()
    rng = tb_rng(dut._log)
    n = p["beats"]

    def addresses(unit):
        return [_hot_address(rng, model, unit) for _ in range(n)]

    streams = {
        "dma__req": _dma_beats(rng, sp, model, addresses(model.bus_bytes), rng.random(n) < 0.5),
        "act_req": _read_beats(rng, sp.act_req.p.shape(), addresses(model.act_slot)),
        "wgt_req": _read_beats(rng, sp.wgt_req.p.shape(), addresses(model.wgt_slot)),
        "res": _result_beats(rng, sp, model, addresses(model.wgt_slot)),
    }
    monitor = await _run(dut, sp, model, streams, idle=0.3, stall=0.3, rng=rng)
    for name in Monitor.PORTS:
        assert len(monitor.accepted[name]) == n, f"{name}: {len(monitor.accepted[name])} of {n}"
    assert all(monitor.stalls[name] for name in ("dma", "act", "wgt")), \
        f"no bank conflict on some read port: {monitor.stalls}"
    assert monitor.yields, "no DMA write waited for a result write to its bank"
    assert monitor.read_write_overlaps, "no read of a byte written in the same cycle"
    dut._log.info("%d beats per port checked; conflict stalls %s, DMA writes behind results "
                  "%d; %d same-cycle read/write overlaps", n, monitor.stalls, monitor.yields,
                  monitor.read_write_overlaps)


@cocotb.test()
async def ping_pong_without_stalls(dut):
    """The DMA streams through one half while compute reads and writes the other, then swap.

    Every port must accept one request in every cycle: no stall, no bubble. With two banks
    (one per half) the activation and weight reads share their half's bank, and each must
    take its turn every other cycle.
    """
    p, model, sp = _setup()
    rng = tb_rng(dut._log)
    half = model.banks // 2
    for compute_half in (0, 1):
        compute_banks = [compute_half * half + i for i in range(half)]
        act_bank, wgt_bank = compute_banks[0], compute_banks[1 % half]
        dma_banks = [(1 - compute_half) * half + i for i in range(half)]
        n = min(256, model.bank_bytes // model.word_bytes)
        words_per_row = model.word_bytes // model.bus_bytes
        dma_words = [model.address(dma_banks[i % half], i // half // words_per_row,
                                   (i // half % words_per_row) * model.bus_bytes, model.bus_bytes)
                     for i in range(n)]
        dma_writes = rng.random(n) < 0.6
        act = [model.address(act_bank, i, 0, model.act_slot) for i in range(n)]
        wgt = [model.address(wgt_bank, i, 0, model.wgt_slot) for i in range(n)]
        # Results from the bank's last row down: with more rows than requests they never
        # meet the reads, which other tests collide with writes.
        rows = model.bank_bytes // model.word_bytes
        res = [model.address(act_bank, rows - 1 - i, model.word_bytes - model.wgt_slot,
                             model.wgt_slot) for i in range(n)]
        streams = {
            "dma__req": _dma_beats(rng, sp, model, dma_words, dma_writes),
            "act_req": _read_beats(rng, sp.act_req.p.shape(), act),
            "wgt_req": _read_beats(rng, sp.wgt_req.p.shape(), wgt),
            "res": _result_beats(rng, sp, model, res),
        }
        monitor = await _run(dut, sp, model, streams, idle=0.0, stall=0.0, rng=rng)
        shared = act_bank == wgt_bank
        for name in Monitor.PORTS:
            cycles = monitor.accepted[name]
            assert len(cycles) == n, f"{name}: {len(cycles)} of {n} accepted"
            if shared and name in ("act", "wgt"):
                assert np.all(np.diff(cycles) <= 2), f"{name}: a turn missed while sharing"
                continue
            assert cycles[-1] - cycles[0] == n - 1, \
                f"{name}: {n} requests took {cycles[-1] - cycles[0] + 1} cycles"
            assert monitor.stalls[name] == 0, f"{name} stalled {monitor.stalls[name]} cycles"
        dut._log.info("compute in half %d, DMA in half %d: %d requests per port in %d cycles",
                      compute_half, 1 - compute_half, n, n)


@cocotb.test()
async def same_bank_conflicts(dut):
    """Every port hammers one bank: all make progress, reads within the round-robin bound,
    result writes never stalled and DMA writes waiting only for them."""
    p, model, sp = _setup()
    rng = tb_rng(dut._log)
    bank = [int(rng.integers(model.banks))]
    n = p["beats"] // 4

    def addresses(unit):
        return [_hot_address(rng, model, unit, banks=bank, hot_rows=2) for _ in range(n)]

    streams = {
        "dma__req": _dma_beats(rng, sp, model, addresses(model.bus_bytes), rng.random(n) < 0.5),
        "act_req": _read_beats(rng, sp.act_req.p.shape(), addresses(model.act_slot)),
        "wgt_req": _read_beats(rng, sp.wgt_req.p.shape(), addresses(model.wgt_slot)),
        "res": _result_beats(rng, sp, model, addresses(model.wgt_slot)),
    }
    monitor = await _run(dut, sp, model, streams, idle=0.0, stall=0.0, rng=rng)
    for name in Monitor.PORTS:
        assert len(monitor.accepted[name]) == n, f"{name}: {len(monitor.accepted[name])} of {n}"
    for name in ("dma", "act", "wgt"):
        assert monitor.stalls[name] > 0, f"{name} never lost arbitration: no conflict tested"
    assert monitor.stalls["res"] == 0, f"result writes stalled {monitor.stalls['res']} times"
    assert monitor.yields > 0, "no DMA write waited for a result write: no conflict tested"
    span = max(c[-1] for c in monitor.accepted.values()) - min(c[0] for c in monitor.accepted.values()) + 1
    dut._log.info("bank %d: %d requests per port in %d cycles; stalls %s, DMA writes "
                  "behind results %d", bank[0], n, span, monitor.stalls, monitor.yields)
