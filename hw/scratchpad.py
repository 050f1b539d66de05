"""Scratchpad: banked on-chip SRAM for activations and weights.

The scratchpad holds ``config.scratchpad_bytes`` bytes in ``config.scratchpad_banks``
banks, each an :class:`amaranth.lib.memory.Memory` with one read port and one byte-masked
write port, so it maps to simple dual-port FPGA block RAM. One side of it belongs to the
DMA engine, the other to the matrix unit: an activation read port, a weight read port and
a result write port.

Address map
-----------
Every port addresses the same byte space ``[0, scratchpad_bytes)`` in its own unit, and
its ``addr`` is ``log2(scratchpad_bytes / unit)`` bits wide:

* DMA: words of ``bus_width / 8`` bytes (``byte = addr * bus_width / 8``);
* activations: slots of ``2**ceil_log2(rows)`` bytes (``byte = addr * slot``), of which the
  first ``rows`` bytes are the vector;
* weights and results: slots of ``2**ceil_log2(cols)`` bytes, of which the first ``cols``
  bytes are the vector.

Vectors are little-endian: element ``i`` is the byte at ``byte + i``, and bits
``8*i .. 8*i+7`` of a DMA word are the byte at ``addr * bus_width / 8 + i``, written when
``strb[i]`` is set.

Each bank is ``word_bytes = max(bus_width / 8, activation slot, weight slot)`` bytes wide,
so every DMA word and every vector lies inside one bank word (a *lane* of it): narrower
accesses select their lane on reads and write it with byte enables. Banks are contiguous::

    byte address  = | bank | row | lane offset |
    bank          = byte // bank_bytes             (bank_bytes = scratchpad_bytes / banks)
    row           = (byte % bank_bytes) // word_bytes
    offset        = byte % word_bytes

The top address bit therefore selects a *half*: banks ``0 .. banks/2 - 1`` hold the lower
half, banks ``banks/2 .. banks - 1`` the upper half. The halves share no bank, so the DMA
can fill one half while the matrix unit computes from the other (ping-pong) without any
conflict. With the default 4 banks each half has two banks: placing a tile's activations
and its weights in different banks of a half lets both read ports run every cycle.

Parameters
----------
config : :class:`hw.config.NPUConfig`
    ``rows``, ``cols``, ``bus_width``, ``scratchpad_bytes`` and ``scratchpad_banks``.
    ``scratchpad_bytes`` must be a power of two and ``scratchpad_banks`` a power of two
    of at least 2 (one bank group per half).
tag_shape : shape
    Of the ``tag`` carried from a compute read request to its response (for example the
    matrix unit's per-vector control).

Members
-------
dma : ``In(DMAPortSignature(addr_width, bus_width))``
    ``dma.req``: stream of :func:`dma_request_layout` (``addr`` in words, ``write``,
    ``data``, ``strb``: one write enable per byte of ``data``); ``ready`` low stalls the
    DMA on a bank conflict. ``dma.rvalid``/``dma.rdata``: read data, :attr:`read_latency`
    cycles after an accepted read; the DMA cannot stall it.
act_req : ``In(stream.Signature(read_request_layout(addr_width, tag_shape)))``
    ``addr`` (activation slots) and ``tag`` of one activation vector.
act_resp : ``Out(stream.Signature(read_response_layout(rows, tag_shape)))``
    ``data``: ``rows`` int8 values, lowest address first; ``tag``: the request's tag.
wgt_req : ``In(stream.Signature(read_request_layout(addr_width, tag_shape)))``
    ``addr`` (weight slots) and ``tag`` of one weight row.
wgt_resp : ``Out(stream.Signature(read_response_layout(cols, tag_shape)))``
    ``data``: ``cols`` int8 weights; ``tag``.
res : ``In(stream.Signature(result_write_layout(addr_width, cols)))``
    ``addr`` (result slots, the same unit as weights) and ``data``: ``cols`` bytes.
    ``ready`` is always high: a result write is never stalled.

Latency
-------
``L`` = :attr:`read_latency`: 4, or 1 without ``config.registered_banks``.

* DMA: a request is accepted in cycle ``t`` when ``valid & ready``. A read's data is on
  ``dma.rdata`` with ``dma.rvalid`` high in cycle ``t + L``, exactly.
* Compute reads: a request accepted in cycle ``t`` has its response valid from cycle
  ``t + L``, held (with its data) until ``ready``. Responses come in request order. Each
  read port buffers ``B`` = :attr:`read_buffers` responses (``L + 1``, or
  ``config.read_buffers``): a request is accepted only when fewer than ``B`` responses
  are waiting or on their way (requests accepted in the ``L`` previous cycles), so with
  ``resp.ready`` high each read port takes one request per cycle when ``B`` is ``L +
  1``, and ``B`` requests every ``L + 1`` cycles when it is fewer.
* With ``config.registered_banks``, each bank's granted read and write (address, data,
  enables) are registered before they reach its block RAM, which reads and writes in
  cycle ``t + 1``; its read word is registered twice as it leaves the block RAM (cycles
  ``t + 2`` and ``t + 3``: an ECP5 block RAM's output comes 5.6 ns after the clock, and the
  first register can sit beside it), and the bank and lane multiplexers work from the
  second in cycle ``t + 4``.
  Without, the block RAM works in cycle ``t`` and the multiplexers from its output in
  cycle ``t + 1``.
* Result writes take effect in the cycle they are accepted, or the one after with
  ``config.registered_banks``.
* Ordering: a read accepted in cycle ``t`` returns every write accepted before cycle
  ``t``, whichever ports issued them. With ``config.registered_banks`` it also returns
  the writes accepted in cycle ``t`` itself (write-first): a bank's block RAM returns no
  defined value for a row read as it is written, so the bytes written are taken from the
  write instead, after the block RAM's word registers. Without, it returns none of them
  (read-first).
* ``ready`` of the DMA and compute read requests depends combinationally on the ``valid``
  and ``addr`` of the other requests, not on any response's ``ready``; ``res.ready`` is a
  constant.

Conflicts: requests proceed in the same cycle unless two of them need the same port of
the same bank. Each bank's read port is shared by activation reads, weight reads and DMA
reads; its write port by result writes and DMA writes. A read and a write never conflict.
Each bank's read port has a round-robin arbiter with no fixed priority: among the
requesters of that port in a cycle, the first one after the last winner (in the order
activations, weights, DMA) wins. A read request that is held valid therefore waits at most
2 cycles (a compute read counts as waiting while its response buffer has room): neither the
DMA nor the compute side can starve, and under a persistent conflict each requester gets an
equal share of the bank. A bank's write port belongs to result writes: a DMA write waits
only in the cycles in which a result is written to its bank, so that nothing reaches the
compute engine's result path from the DMA's request (results come at most one per cycle,
in bursts of an output tile, and the DMA fills the other half of the scratchpad while the
compute engine works in one). Arbitration keeps no state but the last winners, so a
request that has not been granted may also be changed or withdrawn (the DMA engine relies
on this).
"""

from amaranth import *
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from .config import DEFAULT_CONFIG


__all__ = ["Scratchpad", "DMAPortSignature", "dma_request_layout", "read_request_layout",
           "read_response_layout", "result_write_layout"]


def dma_request_layout(addr_width, bus_width):
    return data.StructLayout({
        "addr":  unsigned(addr_width),
        "write": unsigned(1),
        "data":  unsigned(bus_width),
        "strb":  unsigned(bus_width // 8),
    })


def read_request_layout(addr_width, tag_shape):
    return data.StructLayout({
        "addr": unsigned(addr_width),
        "tag":  tag_shape,
    })


def read_response_layout(lanes, tag_shape):
    return data.StructLayout({
        "data": data.ArrayLayout(signed(8), lanes),
        "tag":  tag_shape,
    })


def result_write_layout(addr_width, lanes):
    return data.StructLayout({
        "addr": unsigned(addr_width),
        "data": data.ArrayLayout(unsigned(8), lanes),
    })


class DMAPortSignature(wiring.Signature):
    """The scratchpad's DMA port, seen from the DMA engine (the initiator).

    Members
    -------
    req : ``Out(stream.Signature(dma_request_layout(addr_width, bus_width)))``
        Word-addressed reads (``write`` = 0) and byte-masked writes (``write`` = 1).
    rvalid : ``In(1)``
        High in the cycle after a read was accepted.
    rdata : ``In(bus_width)``
        The word read; valid while ``rvalid`` is high.
    """

    def __init__(self, addr_width, bus_width):
        if bus_width % 8:
            raise ValueError(f"bus_width must be a multiple of 8, not {bus_width}")
        self.addr_width = addr_width
        self.bus_width = bus_width
        super().__init__({
            "req":    Out(stream.Signature(dma_request_layout(addr_width, bus_width))),
            "rvalid": In(1),
            "rdata":  In(bus_width),
        })


class _Geometry:
    """Splits a port's address (in units of ``unit_bytes``) into bank, row and lane."""

    def __init__(self, scratchpad_bytes, banks, word_bytes, unit_bytes):
        self.lane_bits = exact_log2(word_bytes // unit_bytes)
        self.row_bits = exact_log2(scratchpad_bytes // banks // word_bytes)
        self.bank_bits = exact_log2(banks)
        self.addr_width = self.lane_bits + self.row_bits + self.bank_bits

    def split(self, addr):
        row_end = self.lane_bits + self.row_bits
        return addr[:self.lane_bits], addr[self.lane_bits:row_end], addr[row_end:]


def _delayed(m, value, name, cycles=1, *, reset_less=False):
    """``value`` ``cycles`` cycles later, through registers named ``name`` (the last one)
    and ``name_1``, ``name_2``, ... (the earlier ones); a zero-width value is a constant and
    is returned as is."""
    if len(value) == 0:
        return value
    for stage in range(1, cycles + 1):
        register = Signal(value.shape(), name=name if stage == cycles else f"{name}_{stage}",
                          reset_less=reset_less)
        m.d.sync += register.eq(value)
        value = register
    return value


def _round_robin(m, requests, name):
    """One-hot grants for ``requests``; the last winner has the lowest priority next."""
    count = len(requests)
    last = Signal(range(count), init=count - 1, name=f"{name}_last")
    grants = [Signal(name=f"{name}_grant{i}") for i in range(count)]
    with m.Switch(last):
        for previous in range(count):
            with m.Case(previous):
                order = [(previous + 1 + j) % count for j in range(count)]
                for position, index in enumerate(order):
                    earlier = [requests[i] for i in order[:position]]
                    m.d.comb += grants[index].eq(requests[index] & ~Cat(*earlier).any())
    for index, grant in enumerate(grants):
        with m.If(grant):
            m.d.sync += last.eq(index)
    return grants


class Scratchpad(wiring.Component):
    @staticmethod
    def read_latency_of(config):
        """Cycles from an accepted read request to its data (DMA) or response (compute, at
        the earliest): :attr:`read_latency`, without building a scratchpad."""
        return 4 if config.registered_banks else 1

    def __init__(self, config=DEFAULT_CONFIG, tag_shape=unsigned(1)):
        self.config = config
        self.tag_shape = tag_shape
        self.read_latency = self.read_latency_of(config)
        self.read_buffers = config.read_buffers or self.read_latency + 1
        size, banks = config.scratchpad_bytes, config.scratchpad_banks
        if banks < 2 or banks & (banks - 1):
            raise ValueError(f"scratchpad_banks must be a power of two of at least 2 (one "
                             f"bank group per ping-pong half), not {banks}")
        if size & (size - 1):
            raise ValueError(f"scratchpad_bytes must be a power of two, not {size}")
        self.bus_bytes = config.bus_width // 8
        self.act_slot = 1 << ceil_log2(config.rows)
        self.wgt_slot = 1 << ceil_log2(config.cols)
        self.word_bytes = max(self.bus_bytes, self.act_slot, self.wgt_slot)
        self.bank_bytes = size // banks
        if self.bank_bytes < self.word_bytes:
            raise ValueError(f"a bank of {self.bank_bytes} bytes is narrower than one "
                             f"{self.word_bytes}-byte bank word")
        self.depth = self.bank_bytes // self.word_bytes
        self.dma_geometry = _Geometry(size, banks, self.word_bytes, self.bus_bytes)
        self.act_geometry = _Geometry(size, banks, self.word_bytes, self.act_slot)
        self.wgt_geometry = _Geometry(size, banks, self.word_bytes, self.wgt_slot)
        act_aw, wgt_aw = self.act_geometry.addr_width, self.wgt_geometry.addr_width
        super().__init__({
            "dma":      In(DMAPortSignature(self.dma_geometry.addr_width, config.bus_width)),
            "act_req":  In(stream.Signature(read_request_layout(act_aw, tag_shape))),
            "act_resp": Out(stream.Signature(read_response_layout(config.rows, tag_shape))),
            "wgt_req":  In(stream.Signature(read_request_layout(wgt_aw, tag_shape))),
            "wgt_resp": Out(stream.Signature(read_response_layout(config.cols, tag_shape))),
            "res":      In(stream.Signature(result_write_layout(wgt_aw, config.cols))),
        })

    def elaborate(self, platform):
        m = Module()
        banks = self.config.scratchpad_banks
        word_bits = self.word_bytes * 8

        read_ports, write_ports, read_words, bank_words = [], [], [], []
        for k in range(banks):
            bank = memory.Memory(shape=unsigned(word_bits), depth=self.depth, init=[])
            m.submodules[f"bank{k}_memory"] = bank
            read_ports.append(bank.read_port())
            write_ports.append(bank.write_port(granularity=8))
            # The word read, registered twice next to its block RAM or straight from it;
            # with the registers, the bytes written as it was read replaced (_write_first).
            read_words.append(_delayed(m, read_ports[-1].data, f"bank{k}_word",
                                       2 * self.config.registered_banks, reset_less=True))
            bank_words.append(Signal(word_bits, name=f"bank{k}_merged")
                              if self.config.registered_banks else read_words[-1])

        dma_req = self.dma.req
        dma_lane, dma_row, dma_bank = self.dma_geometry.split(dma_req.p.addr)
        act_lane, act_row, act_bank = self.act_geometry.split(self.act_req.p.addr)
        wgt_lane, wgt_row, wgt_bank = self.wgt_geometry.split(self.wgt_req.p.addr)
        res_lane, res_row, res_bank = self.wgt_geometry.split(self.res.p.addr)

        # A compute read may go ahead while its response buffer has room (registers only).
        bank_data = Array(bank_words)
        act_free = self._read_response(m, "act", self.act_req, self.act_resp, act_bank, act_lane,
                                       self.act_slot, bank_data)
        wgt_free = self._read_response(m, "wgt", self.wgt_req, self.wgt_resp, wgt_bank, wgt_lane,
                                       self.wgt_slot, bank_data)
        act_wants = self.act_req.valid & act_free
        wgt_wants = self.wgt_req.valid & wgt_free
        dma_reads = dma_req.valid & ~dma_req.p.write
        dma_writes = dma_req.valid & dma_req.p.write

        dma_grants, act_grants, wgt_grants = [], [], []
        for k, (rport, wport) in enumerate(zip(read_ports, write_ports)):
            act_g, wgt_g, dma_rg = _round_robin(m, [
                act_wants & (act_bank == k),
                wgt_wants & (wgt_bank == k),
                dma_reads & (dma_bank == k),
            ], f"bank{k}_read")
            # Result writes own the write port; a DMA write takes it when no result does.
            res_g = Signal(name=f"bank{k}_result_write")
            dma_wg = Signal(name=f"bank{k}_dma_write")
            m.d.comb += [res_g.eq(self.res.valid & (res_bank == k)),
                         dma_wg.eq(dma_writes & (dma_bank == k) & ~res_g)]
            act_grants.append(act_g)
            wgt_grants.append(wgt_g)
            dma_grants += [dma_rg, dma_wg]

            # The granted accesses, straight to the block RAM or through registers.
            if self.config.registered_banks:
                access = m.d.sync
                read_addr = Signal.like(rport.addr, name=f"bank{k}_read_addr")
                read_en = Signal(name=f"bank{k}_read_en")
                write_addr = Signal.like(wport.addr, name=f"bank{k}_write_addr")
                write_data = Signal.like(wport.data, name=f"bank{k}_write_data")
                write_en = Signal.like(wport.en, name=f"bank{k}_write_en")
                m.d.comb += [rport.addr.eq(read_addr), rport.en.eq(read_en),
                             wport.addr.eq(write_addr), wport.data.eq(write_data),
                             wport.en.eq(write_en)]
                access += write_en.eq(0)
                m.d.comb += bank_words[k].eq(self._write_first(
                    m, k, read_words[k], read_addr, read_en, write_addr, write_data, write_en))
            else:
                access = m.d.comb
                read_addr, read_en = rport.addr, rport.en
                write_addr, write_data, write_en = wport.addr, wport.data, wport.en

            access += read_en.eq(act_g | wgt_g | dma_rg)
            with m.If(act_g):
                access += read_addr.eq(act_row)
            with m.Elif(wgt_g):
                access += read_addr.eq(wgt_row)
            with m.Elif(dma_rg):
                access += read_addr.eq(dma_row)

            with m.If(res_g):
                access += [
                    write_addr.eq(res_row),
                    write_data.eq(self._replicate(self.res.p.data.as_value())),
                    write_en.eq(self._lane_enables(res_lane, self.wgt_slot,
                                                   Const(-1, self.config.cols))),
                ]
            with m.Elif(dma_wg):
                access += [
                    write_addr.eq(dma_row),
                    write_data.eq(self._replicate(dma_req.p.data)),
                    write_en.eq(self._lane_enables(dma_lane, self.bus_bytes, dma_req.p.strb)),
                ]

        m.d.comb += [
            dma_req.ready.eq(Cat(*dma_grants).any()),
            self.act_req.ready.eq(Cat(*act_grants).any()),
            self.wgt_req.ready.eq(Cat(*wgt_grants).any()),
            self.res.ready.eq(1),
        ]

        # The bank words hold a read's word read_latency cycles after its request.
        latency = self.read_latency
        dma_read_bank = _delayed(m, dma_bank, "dma_read_bank", latency)
        dma_read_lane = _delayed(m, dma_lane, "dma_read_lane", latency)
        m.d.comb += self.dma.rvalid.eq(_delayed(
            m, dma_req.valid & dma_req.ready & ~dma_req.p.write, "dma_read_valid", latency))
        m.d.comb += self.dma.rdata.eq(
            bank_data[dma_read_bank].word_select(dma_read_lane, self.config.bus_width))
        return m

    def _write_first(self, m, k, word, read_addr, read_en, write_addr, write_data, write_en):
        """Bank ``k``'s registered read ``word`` with the bytes that a write to the row read
        in the same cycle wrote (``write_data`` where ``write_en``): the block RAM's read
        leaves those undefined, and the build marks its read port so (``COLLISION_X_MASK``),
        so that no logic lies between the block RAM and ``word``'s registers. The bytes are
        replaced after them, from registers three cycles behind the block RAM's inputs."""
        collides = Signal.like(write_en, name=f"bank{k}_collides")
        m.d.comb += collides.eq(Mux(read_en & (read_addr == write_addr), write_en, 0))
        collided = _delayed(m, collides, f"bank{k}_collided", 3)
        written = _delayed(m, write_data, f"bank{k}_written", 3)
        return Cat(*[Mux(collided[i], written.word_select(i, 8), word.word_select(i, 8))
                     for i in range(self.word_bytes)])

    def _replicate(self, value):
        """``value`` repeated across a bank word, so that any lane can be written."""
        return Cat(*[value] * (self.word_bytes * 8 // len(value)))

    def _lane_enables(self, lane, unit_bytes, strobes):
        """Byte enables of a bank word: ``strobes`` in lane ``lane`` of ``unit_bytes``."""
        units = self.word_bytes // unit_bytes
        padded = Cat(strobes, Const(0, unit_bytes - len(strobes)))
        return Cat(*[Mux(lane == i, padded, 0) for i in range(units)])

    def _read_response(self, m, name, req, resp, bank, lane, slot_bytes, bank_data):
        """The response buffer of a compute read port: :attr:`read_buffers` responses,
        oldest first.

        A response's word is selected from its bank :attr:`read_latency` cycles after its
        request (from the bank's word registers with ``config.registered_banks``):
        ``incoming``, with the request's tag delayed alongside. It goes straight to
        ``resp`` when no older one waits, else into ``held``: a bank's read port may serve
        another requester meanwhile, so a response not taken in its ``incoming`` cycle is
        kept.
        ``read_bank``, ``read_lane`` and ``read_tag`` matter only while ``incoming_valid``.
        """
        latency = self.read_latency
        depth = self.read_buffers
        read_bank = _delayed(m, bank, f"{name}_read_bank", latency)
        read_lane = _delayed(m, lane, f"{name}_read_lane", latency)
        read_tag = _delayed(m, Value.cast(req.p.tag), f"{name}_read_tag", latency)
        incoming_valid = _delayed(m, req.valid & req.ready, f"{name}_incoming_valid", latency)
        entry = data.StructLayout({"data": resp.p.data.shape(), "tag": resp.p.tag.shape()})
        incoming = Signal(entry, name=f"{name}_incoming")
        held = [Signal(entry, name=f"{name}_held{i}") for i in range(depth)]
        held_valid = [Signal(name=f"{name}_held{i}_valid") for i in range(depth)]
        from_bank = bank_data[read_bank].word_select(read_lane, slot_bytes * 8)
        m.d.comb += [
            incoming.data.eq(from_bank[:len(incoming.data.as_value())]),
            incoming.tag.eq(read_tag),
            resp.valid.eq(held_valid[0] | incoming_valid),
            resp.p.eq(Mux(held_valid[0], held[0], incoming)),
        ]

        # Held entries (contiguous from 0) after this cycle's pop, then the incoming
        # response appended unless it went straight out.
        # The held entries' valid bits are a thermometer code: entry ``i`` is the first
        # free one after the pop when it is the first free one (no pop) or the last valid
        # one (a pop), without a count's adder.
        pop_held = resp.valid & resp.ready & held_valid[0]
        push = incoming_valid & ~(resp.ready & ~held_valid[0])
        valid_from = [C(1), *held_valid, C(0)]     # valid_from[i + 1]: entry i is valid
        for i in range(depth):
            first_free = valid_from[i] & ~valid_from[i + 1]
            last_valid = valid_from[i + 1] & ~valid_from[i + 2]
            with m.If(push & Mux(pop_held, last_valid, first_free)):
                m.d.sync += [held[i].eq(incoming), held_valid[i].eq(1)]
            with m.Elif(pop_held):
                if i + 1 < depth:
                    m.d.sync += [held[i].eq(held[i + 1]), held_valid[i].eq(held_valid[i + 1])]
                else:
                    m.d.sync += held_valid[i].eq(0)
        # Responses waiting or on their way (held, incoming and still in the bank), counted
        # in a register: a request may go ahead while fewer than ``depth``.
        in_flight = Signal(range(depth + 1), name=f"{name}_in_flight")
        m.d.sync += in_flight.eq(in_flight + (req.valid & req.ready) - (resp.valid & resp.ready))
        return in_flight < depth
