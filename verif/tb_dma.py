"""cocotb testbench of hw.dma.DMA (through verif.dma_harness) against cocotbext-axi's AxiRam.

The memory is an ``AxiRam`` with random pauses on all five channels; pages of it can be
made to fail with SLVERR or DECERR. The expected memory and scratchpad contents come from
a NumPy model that applies each descriptor in order (:func:`apply`); both are compared
byte for byte. A monitor checks every AR/AW burst (INCR, full-width beats, at most 256
beats, no 4 KiB crossing) and records every handshake with its cycle number.
"""

import logging

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, Timer
from cocotbext.axi import AxiBus, AxiRam
from cocotbext.axi.constants import AxiResp

from hw.config import NPUConfig
from hw.dma import DMA, DMAError, Direction
from verif.tb_util import drive_stream, pack, port, start_clock_and_reset, tb_params, tb_rng, unpack


PAGE = 4096
MEM_TO_SP, SP_TO_MEM = Direction.MEM_TO_SP.value, Direction.SP_TO_MEM.value


class PageFault(Exception):
    """Raised by the RAM for an access to a failing page."""


class FaultyRam(AxiRam):
    """An AxiRam whose pages in ``faults`` (page number -> AxiResp) answer with an error.

    cocotbext-axi answers SLVERR for a beat whose ``_read``/``_write`` raises; the
    response channels are wrapped to turn that into the failing page's code.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.faults = {}
        for side, access, channel, field in ((self.read_if, "_read", "r_channel", "rresp"),
                                             (self.write_if, "_write", "b_channel", "bresp")):
            code = {"last": AxiResp.SLVERR}
            setattr(side, access, self._faulting(getattr(side, access), code))
            self._recode(getattr(side, channel), field, code)

    def _faulting(self, access, code):
        async def faulting(address, arg):
            if address // PAGE in self.faults:
                code["last"] = self.faults[address // PAGE]
                raise PageFault(hex(address))
            return await access(address, arg)
        return faulting

    @staticmethod
    def _recode(channel, field, code):
        send = channel.send

        async def send_with_code(txn):
            if int(getattr(txn, field)) == AxiResp.SLVERR:
                setattr(txn, field, code["last"])
            await send(txn)

        channel.send = send_with_code


class Monitor:
    """Samples every handshake once per cycle; checks each burst as it is issued, and
    that AWVALID and WVALID stay up until their handshake.

    Cycle ``c`` is the ``c``-th falling edge; its handshakes happen at the next rising edge.
    """

    def __init__(self, dut, lanes):
        self.dut = dut
        self.lanes = lanes
        self.cycle = 0
        self.errors = []
        self.ar, self.aw, self.w, self.b, self.r = [], [], [], [], []
        self.sp_writes = []
        self.done = []
        self.done_cycles = []
        self.desc_cycles = []
        self.aw_onset = None
        self.w_onset = None

    def _burst(self, kind, addr, length, size, burst):
        beats = length + 1
        if size != self.lanes.bit_length() - 1:
            self.errors.append(f"{kind} {addr:#x}: AxSIZE {size} is not the bus width")
        if burst != 1:
            self.errors.append(f"{kind} {addr:#x}: AxBURST {burst} is not INCR")
        if beats > 256:
            self.errors.append(f"{kind} {addr:#x}: {beats} beats")
        first = addr - addr % self.lanes
        if first % PAGE + beats * self.lanes > PAGE:
            self.errors.append(f"{kind} {addr:#x}+{beats} beats crosses a 4 KiB boundary")

    async def run(self):
        dut = self.dut
        while True:
            # Inputs change at the falling edge (the testbench) or just after the rising
            # edge (cocotbext-axi): what is seen here is what the next rising edge takes.
            await FallingEdge(dut.clk)
            await ReadOnly()
            self.cycle += 1
            c = self.cycle
            if dut.m_axi__arvalid.value and dut.m_axi__arready.value:
                addr, length = int(dut.m_axi__araddr.value), int(dut.m_axi__arlen.value)
                self.ar.append((c, addr, length + 1))
                self._burst("AR", addr, length, int(dut.m_axi__arsize.value),
                            int(dut.m_axi__arburst.value))
            if dut.m_axi__awvalid.value:
                if self.aw_onset is None:
                    self.aw_onset = c
                if dut.m_axi__awready.value:
                    addr, length = int(dut.m_axi__awaddr.value), int(dut.m_axi__awlen.value)
                    self.aw.append((c, self.aw_onset, addr, length + 1))
                    self._burst("AW", addr, length, int(dut.m_axi__awsize.value),
                                int(dut.m_axi__awburst.value))
                    self.aw_onset = None
            elif self.aw_onset is not None:
                self.errors.append(f"cycle {c}: AWVALID dropped before its handshake")
            if dut.m_axi__wvalid.value:
                if self.w_onset is None:
                    self.w_onset = c
                if dut.m_axi__wready.value:
                    self.w.append((c, self.w_onset, int(dut.m_axi__wstrb.value),
                                   int(dut.m_axi__wlast.value)))
                    self.w_onset = None
            elif self.w_onset is not None:
                self.errors.append(f"cycle {c}: WVALID dropped before its handshake")
            if dut.m_axi__bvalid.value and dut.m_axi__bready.value:
                self.b.append((c, int(dut.m_axi__bresp.value)))
            if dut.m_axi__rvalid.value and dut.m_axi__rready.value:
                self.r.append((c, int(dut.m_axi__rresp.value)))
            if dut.sp_write.value:
                self.sp_writes.append(c)
            if dut.done__valid.value and dut.done__ready.value:
                self.done.append(int(dut.done__payload.value))
                self.done_cycles.append(c)
            if dut.desc__valid.value and dut.desc__ready.value:
                self.desc_cycles.append(c)


def apply(desc, mem, sp):
    """The model: ``desc`` applied to the NumPy byte arrays ``mem`` and ``sp``."""
    n = desc["row_bytes"]
    for r in range(desc["rows"]):
        m = desc["mem_addr"] + r * desc["mem_stride"]
        s = desc["sp_addr"] + r * desc["sp_stride"]
        if desc["direction"] == MEM_TO_SP:
            sp[s:s + n] = mem[m:m + n]
        else:
            mem[m:m + n] = sp[s:s + n]


def row_spans(desc, side):
    """``(start, end)`` byte ranges of the rows of ``desc`` on ``side`` ("mem" or "sp")."""
    n = desc["row_bytes"]
    return [(desc[f"{side}_addr"] + r * desc[f"{side}_stride"],
             desc[f"{side}_addr"] + r * desc[f"{side}_stride"] + n) for r in range(desc["rows"])]


def extent(desc, side):
    spans = row_spans(desc, side)
    return min(s for s, _ in spans), max(e for _, e in spans)


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.p = tb_params()
        self.lanes = self.p["bus_width"] // 8
        self.sp_bytes = self.p["scratchpad_bytes"]
        self.mem_bytes = self.p["mem_bytes"]
        self.rng = tb_rng(dut._log)
        config = NPUConfig(bus_width=self.p["bus_width"], scratchpad_bytes=self.sp_bytes)
        dma = DMA(config)
        # Descriptors the DMA queues (the harness's default unless given); with none, those
        # offered behind a failing one are never taken, so the error tests offer none.
        self.queue_depth = self.p.get("queue_depth", dma.queue_depth)
        self.desc_layout = dma.descriptor_layout
        self.error_layout = dma.error.shape()
        self.ram = FaultyRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk,
                             dut.rst, size=self.mem_bytes)
        for side in (self.ram.read_if, self.ram.write_if):
            side.log.setLevel(logging.ERROR)
        self.mon = Monitor(dut, self.lanes)
        self.mem = self.rng.integers(0, 256, self.mem_bytes, dtype=np.uint8)
        self.sp = np.zeros(self.sp_bytes, dtype=np.uint8)
        self.next_id = 0
        self.stall = 0.0

    async def start(self, pause=0.0, stall=0.0):
        dut = self.dut
        self.ram.write(0, self.mem.tobytes())
        self.set_pauses(pause)
        self.stall = stall
        dut.desc__valid.value = 0
        dut.clear.value = 0
        dut.sp_stall.value = 0
        dut.dbg_we.value = 0
        dut.dbg_addr.value = 0
        dut.dbg_wdata.value = 0
        dut.done__ready.value = 1
        await start_clock_and_reset(dut)
        cocotb.start_soon(self.mon.run())
        cocotb.start_soon(self._stalls())
        # The scratchpad keeps its contents from test to test: start the model from them.
        self.sp[:] = await self.read_scratchpad(0, self.sp_bytes)

    def set_pauses(self, probability):
        ram, rng = self.ram, np.random.default_rng(int(self.rng.integers(2**32)))
        channels = [ram.read_if.ar_channel, ram.read_if.r_channel, ram.write_if.aw_channel,
                    ram.write_if.w_channel, ram.write_if.b_channel]
        for channel in channels:
            if probability:
                seed = int(rng.integers(2**32))
                channel.set_pause_generator(_pauses(np.random.default_rng(seed), probability))
            else:
                channel.clear_pause_generator()

    async def _stalls(self):
        """Random scratchpad grant and ``done.ready``, redrawn every cycle."""
        dut, rng = self.dut, np.random.default_rng(int(self.rng.integers(2**32)))
        while True:
            await FallingEdge(dut.clk)
            if self.stall:
                dut.sp_stall.value = int(rng.random() < self.stall)
                dut.done__ready.value = int(rng.random() >= self.stall)
            else:
                dut.sp_stall.value = 0
                dut.done__ready.value = 1

    async def fill_scratchpad(self):
        """Random scratchpad contents, written through the debug port."""
        dut, W = self.dut, self.lanes
        self.sp[:] = self.rng.integers(0, 256, self.sp_bytes, dtype=np.uint8)
        words = self.sp.reshape(-1, W)
        await FallingEdge(dut.clk)
        dut.dbg_we.value = 1
        for addr in range(self.sp_bytes // W):
            dut.dbg_addr.value = addr
            dut.dbg_wdata.value = int.from_bytes(words[addr].tobytes(), "little")
            await FallingEdge(dut.clk)
        dut.dbg_we.value = 0

    async def read_scratchpad(self, start, end):
        """Scratchpad bytes ``[start, end)`` through the combinational debug port."""
        dut, W = self.dut, self.lanes
        first, last = start // W, (end + W - 1) // W
        out = bytearray()
        await FallingEdge(dut.clk)
        for addr in range(first, last):
            dut.dbg_addr.value = addr
            await Timer(100, unit="ps")
            out += int(dut.dbg_rdata.value).to_bytes(W, "little")
        return np.frombuffer(bytes(out), dtype=np.uint8)[start - first * W:end - first * W]

    def read_memory(self):
        return np.frombuffer(self.ram.read(0, self.mem_bytes), dtype=np.uint8)

    def new_id(self):
        self.next_id = (self.next_id + 1) % 256
        return self.next_id

    def descriptor(self, direction, mem_addr, sp_addr, rows, row_bytes, mem_stride, sp_stride):
        return dict(direction=direction, id=self.new_id(), mem_addr=mem_addr, sp_addr=sp_addr,
                    rows=rows, row_bytes=row_bytes, mem_stride=mem_stride, sp_stride=sp_stride)

    def random_descriptor(self, large=0.0):
        """Mostly small (log-uniform 1 B to 1 KiB); 4 KiB to 64 KiB with probability ``large``."""
        rng, W = self.rng, self.lanes
        direction = int(rng.integers(2))
        if rng.random() < large:
            total = int(rng.integers(4096, 65537))
        else:
            total = int(np.exp(rng.uniform(0, np.log(1024))))
        rows = 1 if rng.random() < 0.4 else int(rng.integers(1, min(total, 48) + 1))
        row_bytes = max(1, total // rows)
        gap = lambda: int(rng.choice([0, rng.integers(0, 2 * W + 1), rng.integers(0, 3 * PAGE)]))
        mem_stride, sp_stride = row_bytes + gap(), row_bytes + int(rng.integers(0, 2 * W + 1))
        if rng.random() < 0.1:
            # Overlapping (or repeated) rows on the side that is read.
            if direction == MEM_TO_SP:
                mem_stride = int(rng.integers(0, row_bytes + 1))
            else:
                sp_stride = int(rng.integers(0, row_bytes + 1))
        if (rows - 1) * sp_stride + row_bytes > self.sp_bytes:
            sp_stride = row_bytes
        if (rows - 1) * mem_stride + row_bytes > self.mem_bytes // 2:
            mem_stride = row_bytes
        sp_span = (rows - 1) * sp_stride + row_bytes
        mem_span = (rows - 1) * mem_stride + row_bytes
        return self.descriptor(direction, int(rng.integers(0, self.mem_bytes - mem_span + 1)),
                               int(rng.integers(0, self.sp_bytes - sp_span + 1)), rows,
                               row_bytes, mem_stride, sp_stride)

    async def push(self, descs):
        """Queue ``descs`` back to back (the queue's ready pacing them)."""
        beats = [pack(self.desc_layout, d) for d in descs]
        await drive_stream(self.dut.clk, port(self.dut, "desc"), beats, self.rng)

    async def wait_done(self, count, cycles):
        """Wait until ``count`` completions in total have been seen; fail after ``cycles``."""
        for _ in range(cycles):
            if len(self.mon.done) >= count:
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(f"timeout: {len(self.mon.done)} of {count} completions "
                             f"after {cycles} cycles")

    async def wait_halted(self):
        # A failing descriptor spans up to 6 pages: 6,144 words at 32 bits, twice as many
        # at 16, with pauses and stalls.
        for _ in range(20000 * max(1, 4 // self.lanes)):
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            if self.error()["code"] != DMAError.NONE.value and not self.dut.busy.value:
                return
        raise AssertionError("timeout: the engine did not stop with an error")

    def error(self):
        return unpack(self.error_layout, self.dut.error.value)

    async def clear(self):
        await FallingEdge(self.dut.clk)
        self.dut.clear.value = 1
        await FallingEdge(self.dut.clk)
        self.dut.clear.value = 0
        await ReadOnly()
        assert self.error()["code"] == DMAError.NONE.value, "clear did not clear the error"
        assert not self.dut.busy.value, "queued descriptors survived clear"

    def budget(self, descs):
        total = sum(d["rows"] * (d["row_bytes"] // self.lanes + 8) for d in descs)
        return 40 * total + 5000

    async def run(self, descs):
        """Queue ``descs``, wait for all of them, apply them to the model and compare."""
        before = len(self.mon.done)
        cocotb.start_soon(self.push(descs))
        try:
            await self.wait_done(before + len(descs), self.budget(descs))
        except AssertionError as failure:
            raise AssertionError(f"{failure}; descriptors {descs}, error {self.error()}") from None
        got = self.mon.done[before:]
        assert got == [d["id"] for d in descs], f"completions {got} for {[d['id'] for d in descs]}"
        for d in descs:
            apply(d, self.mem, self.sp)
        await self.check_memory()
        for d in descs:
            if d["direction"] == MEM_TO_SP:
                await self.check_scratchpad(*extent(d, "sp"), d)

    async def check_memory(self):
        mem = self.read_memory()
        bad = np.flatnonzero(mem != self.mem)
        assert not bad.size, (f"{bad.size} memory bytes differ, first at {bad[0]:#x}: "
                              f"{mem[bad[0]]:#04x}, model {self.mem[bad[0]]:#04x}")

    async def check_scratchpad(self, start, end, desc=None):
        sp = await self.read_scratchpad(start, end)
        bad = np.flatnonzero(sp != self.sp[start:end])
        assert not bad.size, (f"{bad.size} scratchpad bytes differ, first at {start + bad[0]:#x}: "
                              f"{sp[bad[0]]:#04x}, model {self.sp[start + bad[0]]:#04x} ({desc})")

    def finish(self):
        assert not self.mon.errors, "; ".join(self.mon.errors[:10])


def _pauses(rng, probability):
    while True:
        yield int(rng.random() < probability)


@cocotb.test()
async def random_transfers(dut):
    """Random 2-D descriptors, both directions, queued back to back, random pauses."""
    tb = TB(dut)
    await tb.start(pause=0.3, stall=0.2)
    await tb.fill_scratchpad()
    count, done = tb.p["descriptors"], 0
    while done < count:
        size = min(int(tb.rng.integers(1, 7)), count - done)
        batch = [tb.random_descriptor(large=0.02) for _ in range(size)]
        await tb.run(batch)
        done += len(batch)
    await tb.check_scratchpad(0, tb.sp_bytes)
    tb.finish()
    dut._log.info("%d descriptors checked, %d AR and %d AW bursts", count, len(tb.mon.ar),
                  len(tb.mon.aw))


def first_fault_address(desc, page):
    """The first memory byte of ``desc``, in transfer order, that lies in ``page``."""
    lo, hi = page * PAGE, (page + 1) * PAGE
    for start, end in row_spans(desc, "mem"):
        if start < hi and end > lo:
            return max(start, lo)
    return None


@cocotb.test()
async def bus_errors(dut):
    """SLVERR and DECERR on reads and writes: error code, id, address, no later writes."""
    tb = TB(dut)
    await tb.start(pause=0.3, stall=0.2)
    rng, W = tb.rng, tb.lanes
    cases = [(MEM_TO_SP, AxiResp.SLVERR, DMAError.READ_SLVERR),
             (MEM_TO_SP, AxiResp.DECERR, DMAError.READ_DECERR),
             (SP_TO_MEM, AxiResp.SLVERR, DMAError.WRITE_SLVERR),
             (SP_TO_MEM, AxiResp.DECERR, DMAError.WRITE_DECERR)] * 3
    for direction, resp, code in cases:
        fault = None
        while fault is None:
            # A 2-D descriptor (spans up to 6 pages) with some row in the failing page.
            page = int(rng.integers(8, tb.mem_bytes // PAGE - 8))
            rows = int(rng.integers(1, 5))
            row_bytes = int(rng.integers(1, 3 * PAGE // rows))
            mem_stride = row_bytes + int(rng.integers(0, PAGE))
            span = (rows - 1) * mem_stride + row_bytes
            mem_addr = page * PAGE - int(rng.integers(1, span + 1)) + int(rng.integers(0, 2))
            sp_stride = row_bytes + int(rng.integers(0, 2 * W))
            sp_addr = int(rng.integers(0, tb.sp_bytes - (rows - 1) * sp_stride - row_bytes))
            bad = tb.descriptor(direction, mem_addr, sp_addr, rows, row_bytes, mem_stride,
                                sp_stride)
            fault = first_fault_address(bad, page)
        # Queued behind it, in the other direction so it cannot start: discarded by clear.
        behind = tb.random_descriptor()
        behind["direction"] = 1 - direction
        tb.ram.faults = {page: resp}
        start_cycle = tb.mon.cycle
        done_before = len(tb.mon.done)
        await tb.push([bad, behind] if tb.queue_depth else [bad])
        await tb.wait_halted()
        halted = tb.mon.cycle
        error = tb.error()
        assert error == {"code": code.value, "id": bad["id"], "addr": fault}, \
            f"error {error}, expected {code.name} id {bad['id']} addr {fault:#x}"
        assert tb.mon.done[done_before:] == [], "a failed or discarded descriptor completed"

        old_mem, old_sp = tb.mem.copy(), tb.sp.copy()
        new_mem, new_sp = tb.mem.copy(), tb.sp.copy()
        apply(bad, new_mem, new_sp)
        if direction == SP_TO_MEM:
            t_err = next(c for c, r in tb.mon.b if c > start_cycle and r != AxiResp.OKAY)
            late_aw = [a for a in tb.mon.aw if a[1] > t_err]
            late_w = [w for w in tb.mon.w if w[1] > t_err and w[2]]
            assert not late_aw, f"AW issued after the error response: {late_aw[:3]}"
            assert not late_w, f"W beats with strobes after the error response: {late_w[:3]}"
            aw_beats = sum(a[3] for a in tb.mon.aw if a[0] > start_cycle)
            w_beats = sum(1 for w in tb.mon.w if w[0] > start_cycle)
            assert aw_beats == w_beats, f"{aw_beats} beats announced on AW, {w_beats} sent on W"
            actual = tb.read_memory()
            order = np.concatenate([np.arange(s, e) for s, e in row_spans(bad, "mem")])
            cut = int(np.flatnonzero(order == fault)[0])
            # Every W beat before the failing burst went out before its response.
            _check_partial(actual, old_mem, new_mem, order, "memory", written=cut, page=page)
            tb.mem[:] = actual
        else:
            t_err = next(c for c, r in tb.mon.r if c > start_cycle and r != AxiResp.OKAY)
            # The data received before the failing beat drains into the scratchpad after
            # the error response (checked below); nothing is written once the engine stops.
            late = [c for c in tb.mon.sp_writes if c >= halted]
            assert t_err < halted, "the engine stopped before the error response"
            assert not late, f"scratchpad writes after the engine stopped, cycles {late[:3]}"
            lo, hi = extent(bad, "sp")
            actual = tb.sp.copy()
            actual[lo:hi] = await tb.read_scratchpad(lo, hi)
            mem_order = np.concatenate([np.arange(s, e) for s, e in row_spans(bad, "mem")])
            sp_order = np.concatenate([np.arange(s, e) for s, e in row_spans(bad, "sp")])
            cut = int(np.flatnonzero(mem_order == fault)[0])
            # A scratchpad word is written once every R beat it needs has arrived: all
            # bytes more than a word before the failing beat, none from it on.
            _check_partial(actual, old_sp, new_sp, sp_order, "scratchpad", written=cut - W,
                           untouched=cut)
            tb.sp[:] = actual

        await tb.clear()
        tb.ram.faults = {}
        await tb.check_memory()
        # Recovery: the engine runs new descriptors in both directions.
        await tb.run([tb.random_descriptor() for _ in range(3)])
    await tb.check_scratchpad(0, tb.sp_bytes)
    tb.finish()


def _check_partial(actual, old, new, order, what, written, untouched=None, page=None):
    """After a failed descriptor whose bytes, in transfer order, are ``order``: bytes
    outside it unchanged, every byte either old or new, ``order[:written]`` new, and
    ``order[untouched:]`` (less bytes an earlier row also wrote) and the failing ``page``
    unchanged."""
    inside = np.zeros(actual.size, dtype=bool)
    inside[order] = True
    outside = np.flatnonzero(~inside & (actual != old))
    assert not outside.size, f"{what}: {outside.size} bytes outside the descriptor changed"
    either = np.flatnonzero(inside & (actual != old) & (actual != new))
    assert not either.size, f"{what}: {either.size} bytes neither old nor new, at {either[:4]}"
    before = order[:max(written, 0)]
    missing = before[actual[before] != new[before]]
    assert not missing.size, f"{what}: {missing.size} bytes before the failure not written"
    if untouched is not None:
        after = np.setdiff1d(order[untouched:], order[:untouched])
        late = after[actual[after] != old[after]]
        assert not late.size, f"{what}: {late.size} bytes at or after the failure written"
    if page is not None:
        span = slice(page * PAGE, (page + 1) * PAGE)
        touched = np.flatnonzero(actual[span] != old[span])
        assert not touched.size, f"{what}: {touched.size} bytes of the failing page written"


@cocotb.test()
async def range_errors(dut):
    """Out-of-range descriptors are rejected before any access; clear; empty descriptors."""
    tb = TB(dut)
    await tb.start(pause=0.2, stall=0.1)
    SP = tb.sp_bytes
    cases = [
        ("past the end", dict(sp_addr=SP - 5, rows=1, row_bytes=6, sp_stride=0), DMAError.SP_RANGE),
        ("last row", dict(sp_addr=100, rows=4, row_bytes=64, sp_stride=(SP - 100 - 63) // 3 + 1),
         DMAError.SP_RANGE),
        ("would wrap", dict(sp_addr=8, rows=2, row_bytes=16, sp_stride=SP), DMAError.SP_RANGE),
        ("whole", dict(sp_addr=1, rows=1, row_bytes=SP, sp_stride=0), DMAError.SP_RANGE),
        ("memory wrap", dict(mem_addr=2**32 - 10, sp_addr=0, rows=1, row_bytes=20, sp_stride=0),
         DMAError.MEM_RANGE),
        ("memory rows", dict(mem_addr=0x1000, mem_stride=2**31, sp_addr=0, rows=3, row_bytes=4,
                             sp_stride=4), DMAError.MEM_RANGE),
    ]
    for name, fields, code in cases:
        for direction in (MEM_TO_SP, SP_TO_MEM):
            bad = tb.descriptor(direction, fields.get("mem_addr", 0x2000), fields["sp_addr"],
                                fields["rows"], fields["row_bytes"], fields.get("mem_stride", 0),
                                fields["sp_stride"])
            good = tb.random_descriptor()
            behind = tb.random_descriptor()
            ar, aw, sp_writes = len(tb.mon.ar), len(tb.mon.aw), len(tb.mon.sp_writes)
            done_before = len(tb.mon.done)
            await tb.push([good, bad, behind] if tb.queue_depth else [good, bad])
            await tb.wait_halted()
            await tb.wait_done(done_before + 1, 100)
            await ClockCycles(dut.clk, 20)
            error = tb.error()
            addr = fields["sp_addr"] if code == DMAError.SP_RANGE else fields.get("mem_addr", 0x2000)
            assert error == {"code": code.value, "id": bad["id"], "addr": addr}, \
                f"{name}: error {error}, expected {code.name} id {bad['id']} addr {addr:#x}"
            assert tb.mon.done[done_before:] == [good["id"]], \
                f"{name}: completions {tb.mon.done[done_before:]}, expected only {good['id']}"
            apply(good, tb.mem, tb.sp)
            await tb.clear()
            # Only `good` reached the bus: the rejected and the discarded one did not.
            lo, hi = extent(good, "mem")
            strays = [(a[-2], a[-1]) for a in tb.mon.ar[ar:] + tb.mon.aw[aw:]
                      if not lo <= a[-2] < hi]
            assert not strays, f"{name}: bursts outside the completed descriptor: {strays[:3]}"
            if good["direction"] == SP_TO_MEM:
                assert len(tb.mon.sp_writes) == sp_writes, f"{name}: scratchpad written"
            await tb.check_memory()
    # Exactly at the end of the scratchpad is in range; empty descriptors just complete.
    edge = tb.descriptor(MEM_TO_SP, 0x3003, SP - 77, 1, 77, 0, 0)
    empty_rows = tb.descriptor(SP_TO_MEM, 0x5000, 0, 0, 100, 0, 0)
    empty_bytes = tb.descriptor(MEM_TO_SP, 0x5000, 0, 7, 0, 0, 0)
    ar, aw = len(tb.mon.ar), len(tb.mon.aw)
    await tb.run([empty_rows, empty_bytes])
    assert (len(tb.mon.ar), len(tb.mon.aw)) == (ar, aw), "an empty descriptor accessed memory"
    await tb.run([edge])
    assert tb.error()["code"] == DMAError.NONE.value
    await tb.check_scratchpad(0, tb.sp_bytes)
    tb.finish()
