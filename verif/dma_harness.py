"""Test-only top level: the DMA engine next to a plain scratchpad memory.

The scratchpad is one :class:`amaranth.lib.memory.Memory` of ``bus_width``-bit words with
byte write enables and a synchronous read port, so it answers the DMA's scratchpad
protocol exactly (2-cycle read latency). The testbench reaches it through debug ports.

Members
-------
m_axi, desc, done, error, clear, busy
    The :class:`hw.dma.DMA` ports, passed through.
sp_stall : ``In(1)``
    Withholds the scratchpad's grant from the DMA this cycle (a bank conflict).
sp_write : ``Out(1)``
    A DMA write to the scratchpad is granted this cycle.
dbg_addr : ``In(sp_addr_width)``, dbg_rdata : ``Out(bus_width)``
    Combinational read of scratchpad word ``dbg_addr``.
dbg_we : ``In(1)``, dbg_wdata : ``In(bus_width)``
    Writes ``dbg_wdata`` to word ``dbg_addr`` on the clock edge; the DMA is not granted
    in that cycle.
"""

from amaranth import *
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from hw.dma import DMA


__all__ = ["DMAHarness"]


class DMAHarness(wiring.Component):
    def __init__(self, config, **dma_args):
        self.dma = DMA(config, **dma_args)
        self.words = config.scratchpad_bytes // self.dma.lanes
        dma_ports = self.dma.signature.members
        super().__init__({
            "m_axi":     dma_ports["m_axi"],
            "desc":      dma_ports["desc"],
            "done":      dma_ports["done"],
            "error":     dma_ports["error"],
            "clear":     dma_ports["clear"],
            "busy":      dma_ports["busy"],
            "sp_stall":  In(1),
            "sp_write":  Out(1),
            "dbg_addr":  In(self.dma.sp_addr_width),
            "dbg_rdata": Out(config.bus_width),
            "dbg_we":    In(1),
            "dbg_wdata": In(config.bus_width),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma = dma = self.dma
        connect(m, flipped(self.m_axi), dma.m_axi)
        connect(m, flipped(self.desc), dma.desc)
        connect(m, dma.done, flipped(self.done))
        m.d.comb += [
            self.error.eq(dma.error),
            self.busy.eq(dma.busy),
            dma.clear.eq(self.clear),
        ]

        m.submodules.mem = mem = memory.Memory(shape=unsigned(8 * dma.lanes), depth=self.words,
                                               init=[])
        write = mem.write_port(granularity=8)
        read = mem.read_port()
        debug = mem.read_port(domain="comb")

        req = dma.sp.req
        grant = ~self.sp_stall & ~self.dbg_we
        granted = req.valid & grant
        # The scratchpad's read latency: the word registered after the memory's read port.
        read_word = Signal.like(read.data)
        read_fresh = Signal()
        m.d.sync += [read_word.eq(read.data), read_fresh.eq(granted & ~req.p.write),
                     dma.sp.rvalid.eq(read_fresh)]
        m.d.comb += [
            req.ready.eq(grant),
            write.addr.eq(Mux(self.dbg_we, self.dbg_addr, req.p.addr)),
            write.data.eq(Mux(self.dbg_we, self.dbg_wdata, req.p.data)),
            write.en.eq(Mux(self.dbg_we, ~0, Mux(granted & req.p.write, req.p.strb, 0))),
            read.addr.eq(req.p.addr),
            dma.sp.rdata.eq(read_word),
            self.sp_write.eq(granted & req.p.write),
            debug.addr.eq(self.dbg_addr),
            self.dbg_rdata.eq(debug.data),
        ]
        return m
