"""A simulation-only top for long NPU runs: the NPU with its ``m_axi`` served by RTL memory.

``make bench`` runs whole GEMMs, layers and networks through the NPU. With cocotbext-axi's
``AxiRam`` every AXI beat is a Python call, so long runs are slow; here the memory is
RTL (:class:`BenchMemory`) and the testbench only touches the host registers (a few
AXI4-Lite accesses per run, through ``AxiLiteMaster``) and a wide backdoor port that
loads and reads memory one 256-byte line per cycle between runs.

The memory is built from one ``lib.memory.Memory`` of 256-byte lines rather than of
bus-width words: the testbench pays a Python call per backdoor line, so wide lines load
megabytes in a fraction of a second, and Amaranth converts a memory element by element
(amaranth#1522), so fewer elements also convert faster.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from hw.axi import AXI4LiteSignature, AXI4Signature, Resp
from hw.config import NPUConfig
from hw.npu import NPU


__all__ = ["BenchMemory", "BenchTop", "LINE_BYTES", "DEFAULT_BENCH_MEMORY"]


#: Bytes of one memory line (the backdoor's width).
LINE_BYTES = 256
DEFAULT_BENCH_MEMORY = 1 << 20


class BenchMemory(wiring.Component):
    """RTL memory behind an AXI4 subordinate, with a line-wide backdoor port.

    In the spirit of :class:`fpga.board.AXI4Memory`, but with one read and one write
    port, so that a read burst and a write burst proceed at the same time (as with a
    zero-wait ``AxiRam``). Addresses wrap at ``memory_bytes``; responses are always OKAY.

    Parameters
    ----------
    data_width : int
        AXI data width, at most ``8 * LINE_BYTES``.
    memory_bytes : int
        Size, a power of two, at least one line.

    Members
    -------
    axi : ``In(AXI4Signature(data_width=data_width, addr_width=32, id_width=1))``
        INCR bursts of the full data width.
    backdoor : ``In(1)``
        The testbench owns the memory: new AXI transactions wait while it is high.
    line_addr : ``In(ceil_log2(memory_bytes // LINE_BYTES))``
    line_wdata : ``In(8 * LINE_BYTES)``
    line_wstrb : ``In(LINE_BYTES)``
        With ``backdoor``: write byte ``i`` of ``line_wdata`` (bits ``8 i .. 8 i + 7``) to
        byte ``i`` of line ``line_addr`` where bit ``i`` is set.
    line_rdata : ``Out(8 * LINE_BYTES)``
        With ``backdoor``: line ``line_addr`` of the previous cycle.

    Timing
    ------
    Read bursts: the first ``R`` beat two cycles after the ``AR`` handshake, then one beat
    per cycle while ``RREADY`` is high; the next ``AR`` is taken the cycle after the last
    beat. Write bursts: ``WREADY`` from the cycle after the ``AW`` handshake, ``BVALID``
    the cycle after the last beat.
    """

    def __init__(self, data_width, memory_bytes=DEFAULT_BENCH_MEMORY):
        if data_width > 8 * LINE_BYTES or memory_bytes < LINE_BYTES or \
                memory_bytes & (memory_bytes - 1):
            raise ValueError(f"unsupported bench memory: {data_width}-bit AXI, "
                             f"{memory_bytes} bytes")
        self.data_width = data_width
        self.memory_bytes = memory_bytes
        self.depth = memory_bytes // LINE_BYTES
        super().__init__({
            "axi": In(AXI4Signature(data_width=data_width, addr_width=32, id_width=1)),
            "backdoor": In(1),
            "line_addr": In(ceil_log2(self.depth)),
            "line_wdata": In(8 * LINE_BYTES),
            "line_wstrb": In(LINE_BYTES),
            "line_rdata": Out(8 * LINE_BYTES),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        word_bytes = self.data_width // 8
        lanes = LINE_BYTES // word_bytes
        word_bits = exact_log2(word_bytes)
        lane_bits = exact_log2(lanes)
        index_bits = ceil_log2(self.depth)
        m.submodules.memory = memory = Memory(shape=8 * LINE_BYTES, depth=self.depth, init=[])
        write = memory.write_port(granularity=8)
        read = memory.read_port(domain="sync")
        m.d.comb += self.line_rdata.eq(read.data)

        def line(word):
            return word[lane_bits:][:index_bits]

        # --- Writes -------------------------------------------------------------------------
        w_word = Signal(32 - word_bits)
        w_id = Signal(1)
        with m.If(self.backdoor):
            m.d.comb += [write.addr.eq(self.line_addr), write.data.eq(self.line_wdata),
                         write.en.eq(self.line_wstrb)]
        with m.Else():
            lane = w_word[:lane_bits] if lane_bits else 0
            m.d.comb += [write.addr.eq(line(w_word)), write.data.eq(axi.wdata.replicate(lanes))]
        m.d.comb += [axi.bid.eq(w_id), axi.bresp.eq(Resp.OKAY)]
        with m.FSM(name="write_fsm"):
            with m.State("IDLE"):
                m.d.comb += axi.awready.eq(~self.backdoor)
                with m.If(axi.awvalid & ~self.backdoor):
                    m.d.sync += [w_word.eq(axi.awaddr[word_bits:]), w_id.eq(axi.awid)]
                    m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += axi.wready.eq(1)
                with m.If(axi.wvalid):
                    m.d.comb += write.en.eq(axi.wstrb << (lane * word_bytes))
                    m.d.sync += w_word.eq(w_word + 1)
                    with m.If(axi.wlast):
                        m.next = "RESPOND"
            with m.State("RESPOND"):
                m.d.comb += axi.bvalid.eq(1)
                with m.If(axi.bready):
                    m.next = "IDLE"

        # --- Reads --------------------------------------------------------------------------
        r_word = Signal(32 - word_bits)
        r_id = Signal(1)
        beats = Signal(9)                       # beats still to fetch
        last = Signal(8)                        # beats still to send after this one
        rvalid = Signal()
        r_lane = Signal(max(lane_bits, 1))      # lane of the line on read.data
        m.d.comb += [
            axi.rid.eq(r_id), axi.rresp.eq(Resp.OKAY), axi.rlast.eq(last == 0),
            axi.rvalid.eq(rvalid), axi.rdata.eq(read.data.word_select(r_lane, self.data_width)),
        ]
        with m.If(self.backdoor):
            m.d.comb += [read.addr.eq(self.line_addr), read.en.eq(1)]
        with m.FSM(name="read_fsm"):
            with m.State("IDLE"):
                m.d.comb += axi.arready.eq(~self.backdoor)
                with m.If(axi.arvalid & ~self.backdoor):
                    m.d.sync += [r_word.eq(axi.araddr[word_bits:]), r_id.eq(axi.arid),
                                 beats.eq(axi.arlen + 1), last.eq(axi.arlen), rvalid.eq(0)]
                    m.next = "READ"
            with m.State("READ"):
                advance = ~rvalid | axi.rready
                fetch = advance & (beats != 0)
                m.d.comb += [read.addr.eq(line(r_word)), read.en.eq(fetch)]
                with m.If(fetch):
                    m.d.sync += [r_word.eq(r_word + 1), beats.eq(beats - 1)]
                    if lane_bits:
                        m.d.sync += r_lane.eq(r_word[:lane_bits])
                with m.If(advance):
                    m.d.sync += rvalid.eq(fetch)
                with m.If(rvalid & axi.rready):
                    m.d.sync += last.eq(last - 1)
                    with m.If(last == 0):
                        m.next = "IDLE"
        return m


class BenchTop(wiring.Component):
    """The NPU and a :class:`BenchMemory`, with plain top-level ports for cocotb.

    Members
    -------
    s_axil : ``In(AXI4LiteSignature(data_width=32, addr_width=8))``
        The NPU's registers.
    irq : ``Out(1)``
    backdoor, line_addr, line_wdata, line_wstrb, line_rdata :
        The memory's backdoor (see :class:`BenchMemory`).
    """

    def __init__(self, config=NPUConfig(), memory_bytes=DEFAULT_BENCH_MEMORY):
        self.config = config
        self.memory_bytes = memory_bytes
        depth = memory_bytes // LINE_BYTES
        super().__init__({
            "s_axil": In(AXI4LiteSignature(data_width=32, addr_width=8)),
            "irq": Out(1),
            "backdoor": In(1),
            "line_addr": In(ceil_log2(depth)),
            "line_wdata": In(8 * LINE_BYTES),
            "line_wstrb": In(LINE_BYTES),
            "line_rdata": Out(8 * LINE_BYTES),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.npu = npu = NPU(self.config)
        m.submodules.memory = memory = BenchMemory(self.config.bus_width, self.memory_bytes)
        wiring.connect(m, wiring.flipped(self.s_axil), npu.s_axil)
        wiring.connect(m, npu.m_axi, memory.axi)
        m.d.comb += [
            self.irq.eq(npu.irq),
            memory.backdoor.eq(self.backdoor),
            memory.line_addr.eq(self.line_addr),
            memory.line_wdata.eq(self.line_wdata),
            memory.line_wstrb.eq(self.line_wstrb),
            self.line_rdata.eq(memory.line_rdata),
        ]
        return m
