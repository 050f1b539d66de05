"""The board-level design: the NPU, on-chip memory and the UART host link, independent of
any FPGA platform. Board tops instantiate :class:`BoardDesign` and wire its pins.

Structure::

    uart_rx ─► UartBridge ─ m_axil ─► NPU.s_axil          (registers 0x00..0xFF)
    uart_tx ◄─     │   ▲ irq ──────── NPU.irq ──► irq      (LED)
                   └ mem (bytes) ─┐
                  NPU.m_axi ──────┴─► AXI4Memory           (memory 0 .. memory_bytes-1)

Memory map: the NPU and the host see the same memory at byte addresses
``0 .. memory_bytes - 1``; the host reaches the NPU's registers (``hw/registers.py``)
with the bridge's register commands.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from hw.axi import AXI4Signature, Resp
from hw.config import NPUConfig
from hw.npu import NPU
from hw.uart_bridge import MemoryBusSignature, UartBridge


__all__ = ["AXI4Memory", "BoardDesign", "DEFAULT_MEMORY_BYTES"]


DEFAULT_MEMORY_BYTES = 256 * 1024


class AXI4Memory(wiring.Component):
    """Single-port on-chip memory (``lib.memory.Memory``) behind an AXI4 subordinate and a
    byte-wide port.

    One address per cycle, so the memory maps to single-port block RAM or SPRAM. One AXI
    transaction (a read or a write burst) is served at a time, one beat per cycle; the
    byte port is served between transactions, before waiting AXI requests.

    Parameters
    ----------
    data_width : int
        AXI data width (the memory's word width).
    memory_bytes : int
        Size, a power of two and a multiple of ``data_width // 8``.

    Members
    -------
    axi : ``In(AXI4Signature(data_width=data_width, addr_width=32, id_width=1))``
        INCR bursts of the full data width (``AxSIZE`` = log2 bytes per beat; the NPU
        issues no others), unaligned first beats through ``WSTRB``. A beat outside the
        memory reads as zero with ``DECERR`` and is not written; a write burst with such
        a beat ends with ``BRESP`` = ``DECERR``.
    host : ``In(MemoryBusSignature())``
        Addresses wrap at ``memory_bytes``.

    Timing
    ------
    Read bursts: the first ``R`` beat two cycles after the ``AR`` handshake, then one beat
    per cycle while ``RREADY`` is high. Write bursts: ``WREADY`` from the cycle after the
    ``AW`` handshake; ``BVALID`` the cycle after the last beat. A byte read's data is on
    ``host.rdata`` the cycle after it is accepted.
    """

    def __init__(self, data_width, memory_bytes):
        self.data_width = data_width
        self.word_bytes = data_width // 8
        if memory_bytes < self.word_bytes or memory_bytes & (memory_bytes - 1):
            raise ValueError(f"memory_bytes must be a power of two of at least "
                             f"{self.word_bytes}, not {memory_bytes}")
        self.memory_bytes = memory_bytes
        super().__init__({
            "axi": In(AXI4Signature(data_width=data_width, addr_width=32, id_width=1)),
            "host": In(MemoryBusSignature()),
        })

    def elaborate(self, platform):
        m = Module()
        axi, port = self.axi, self.host
        offset_bits = exact_log2(self.word_bytes)
        depth = self.memory_bytes // self.word_bytes
        index_bits = ceil_log2(depth)
        m.submodules.memory = memory = Memory(shape=self.data_width, depth=depth, init=[])
        write = memory.write_port(granularity=8)
        read = memory.read_port(domain="sync")
        address = Signal(index_bits)
        m.d.comb += [write.addr.eq(address), read.addr.eq(address)]

        def outside(word):
            return word[index_bits:] != 0

        word = Signal(32 - offset_bits)         # index of the next beat of the burst
        beats = Signal(9)                       # read beats still to fetch
        last = Signal(8)                        # read beats still to send after this one
        rvalid = Signal()
        error = Signal()                        # the beat on R, or a past W beat, was outside
        txn_id = Signal(1)
        lane = Signal(range(self.word_bytes))
        m.d.comb += [
            port.rdata.eq(read.data.word_select(lane, 8)),
            axi.rid.eq(txn_id), axi.bid.eq(txn_id),
            axi.rdata.eq(Mux(error, 0, read.data)),
            axi.rresp.eq(Mux(error, Resp.DECERR, Resp.OKAY)),
            axi.rlast.eq(last == 0),
            axi.rvalid.eq(rvalid),
            axi.bresp.eq(Mux(error, Resp.DECERR, Resp.OKAY)),
        ]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [port.ready.eq(1), read.en.eq(1),
                             address.eq(port.addr[offset_bits:])]
                with m.If(port.valid):
                    m.d.sync += lane.eq(port.addr[:offset_bits])
                    with m.If(port.write):
                        m.d.comb += [write.en.eq(1 << port.addr[:offset_bits]),
                                     write.data.eq(port.wdata.replicate(self.word_bytes))]
                with m.Elif(axi.awvalid):
                    m.d.comb += axi.awready.eq(1)
                    m.d.sync += [word.eq(axi.awaddr[offset_bits:]), txn_id.eq(axi.awid),
                                 error.eq(0)]
                    m.next = "WRITE"
                with m.Elif(axi.arvalid):
                    m.d.comb += axi.arready.eq(1)
                    m.d.sync += [word.eq(axi.araddr[offset_bits:]), txn_id.eq(axi.arid),
                                 beats.eq(axi.arlen + 1), last.eq(axi.arlen), rvalid.eq(0)]
                    m.next = "READ"
            with m.State("WRITE"):
                m.d.comb += [axi.wready.eq(1), address.eq(word), write.data.eq(axi.wdata)]
                with m.If(axi.wvalid):
                    m.d.sync += word.eq(word + 1)
                    with m.If(outside(word)):
                        m.d.sync += error.eq(1)
                    with m.Else():
                        m.d.comb += write.en.eq(axi.wstrb)
                    with m.If(axi.wlast):
                        m.next = "RESPOND"
            with m.State("RESPOND"):
                m.d.comb += axi.bvalid.eq(1)
                with m.If(axi.bready):
                    m.next = "IDLE"
            with m.State("READ"):
                advance = ~rvalid | axi.rready
                fetch = advance & (beats != 0)
                m.d.comb += [address.eq(word), read.en.eq(fetch)]
                with m.If(fetch):
                    m.d.sync += [word.eq(word + 1), beats.eq(beats - 1), error.eq(outside(word))]
                with m.If(advance):
                    m.d.sync += rvalid.eq(fetch)
                with m.If(rvalid & axi.rready):
                    m.d.sync += last.eq(last - 1)
                    with m.If(last == 0):
                        m.next = "IDLE"
        return m


class BoardDesign(wiring.Component):
    """The NPU with ``memory_bytes`` of on-chip memory and a UART host link.

    Parameters
    ----------
    config : :class:`hw.config.NPUConfig`
    memory_bytes : int
        On-chip memory, a power of two (256 KiB by default).
    divisor : int
        Clock cycles per UART bit: ``round(clock_hz / baud)``.

    Members
    -------
    uart_rx : ``In(1)``
        From the host (idle high).
    uart_tx : ``Out(1)``
        To the host (idle high).
    irq : ``Out(1)``
        The NPU's interrupt, for an LED.
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    irq: Out(1)

    def __init__(self, config=NPUConfig(), memory_bytes=DEFAULT_MEMORY_BYTES, divisor=217):
        self.config = config
        self.memory_bytes = memory_bytes
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = UartBridge(self.divisor)
        m.submodules.npu = npu = NPU(self.config)
        m.submodules.memory = memory = AXI4Memory(self.config.bus_width, self.memory_bytes)
        wiring.connect(m, bridge.m_axil, npu.s_axil)
        wiring.connect(m, bridge.mem, memory.host)
        wiring.connect(m, npu.m_axi, memory.axi)
        m.d.comb += [
            bridge.rx.eq(self.uart_rx),
            self.uart_tx.eq(bridge.tx),
            bridge.irq.eq(npu.irq),
            self.irq.eq(npu.irq),
        ]
        return m
