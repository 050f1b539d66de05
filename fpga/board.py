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
from amaranth.lib import io, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from hw.axi import AXI4Signature, Resp
from hw.config import NPUConfig
from hw.npu import NPU
from hw.uart_bridge import MemoryBusSignature, UartBridge


__all__ = ["AXI4Memory", "ICE40SPRAM", "BoardDesign", "DEFAULT_MEMORY_BYTES", "connect_pins"]


DEFAULT_MEMORY_BYTES = 256 * 1024


class AXI4Memory(wiring.Component):
    """Single-port on-chip memory (``lib.memory.Memory``) behind an AXI4 subordinate and a
    byte-wide port.

    One address per cycle, so the memory maps to single-port block RAM or SPRAM. One AXI
    transaction (a read or a write burst) is served at a time, one beat per cycle; the
    byte port is served between transactions, before waiting AXI requests.

    In block RAM, the memory is split into up to :attr:`MAX_BANKS` banks by its top
    address bits, and a read goes through four registers: the request's (with each
    bank's enables), the block RAM's own, the bank's word register beside it, then the
    bank multiplexer's. Read beats (with their ID) wait in a FIFO of
    :attr:`R_FIFO_DEPTH`, so the read data reaches ``RDATA`` from a register and a large
    memory spread over the device costs latency, not clock frequency; the next
    transaction starts as soon as a read burst's last beat is fetched.

    Parameters
    ----------
    data_width : int
        AXI data width (the memory's word width).
    memory_bytes : int
        Size, a power of two and a multiple of ``data_width // 8``.
    addr_width : int
        AXI address width, at least ``log2(memory_bytes)``.
    spram : bool
        Build the memory from iCE40UP single-port RAMs (``SB_SPRAM256KA``, 16 K × 16 bits
        each, see :class:`ICE40SPRAM`) instead of ``lib.memory.Memory``, which Yosys does
        not map to them. One read register, and R beats straight from the memory (the
        small build has no room for the FIFO). The AXI and byte-port behaviour is the same.

    Members
    -------
    axi : ``In(AXI4Signature(data_width=data_width, addr_width=addr_width, id_width=1))``
        INCR bursts of the full data width (``AxSIZE`` = log2 bytes per beat; the NPU
        issues no others), unaligned first beats through ``WSTRB``. A beat outside the
        memory reads as zero with ``DECERR`` and is not written; a write burst with such
        a beat ends with ``BRESP`` = ``DECERR``.
    host : ``In(MemoryBusSignature())``
        Addresses wrap at ``memory_bytes``.

    Timing
    ------
    ``AWREADY`` and ``ARREADY`` come from registers: each request waits in a register of
    its own until its transaction starts, a cycle after its handshake at the earliest.
    Read bursts: the first ``R`` beat 3 cycles after the ``AR`` handshake in SPRAM, 8 in
    block RAM (:attr:`read_latency` cycles from a read to its data, plus the FIFO), then
    one beat per cycle while ``RREADY`` is high. Write bursts: ``WREADY`` from the second
    cycle after the ``AW`` handshake; ``BVALID`` the cycle after the last beat. A byte request is seen from a
    register: with no AXI transaction in progress, a write is accepted 2 cycles after it
    is offered and a read :attr:`read_latency` ``+ 1`` cycles after, its data on
    ``host.rdata`` the cycle after it is accepted.
    """

    #: Block RAM banks at most (each with its own output register).
    MAX_BANKS = 8
    #: R beats buffered in block RAM: the reads in flight while ``RREADY`` is low (more
    #: than :attr:`read_latency` + 1, so that a burst streams one beat per cycle).
    R_FIFO_DEPTH = 7

    def __init__(self, data_width, memory_bytes, *, addr_width=32, spram=False):
        self.data_width = data_width
        self.spram = spram
        self.word_bytes = data_width // 8
        if memory_bytes < self.word_bytes or memory_bytes & (memory_bytes - 1):
            raise ValueError(f"memory_bytes must be a power of two of at least "
                             f"{self.word_bytes}, not {memory_bytes}")
        if memory_bytes > 2**addr_width:
            raise ValueError(f"a memory of {memory_bytes} bytes needs addresses of more than "
                             f"{addr_width} bits")
        self.memory_bytes = memory_bytes
        self.addr_width = addr_width
        self.read_latency = 1 if spram else 5
        super().__init__({
            "axi": In(AXI4Signature(data_width=data_width, addr_width=addr_width, id_width=1)),
            "host": In(MemoryBusSignature()),
        })

    @classmethod
    def block_ram_banks(cls, data_width, memory_bytes):
        """Block RAM banks (``bank0``, ``bank1``, ...) of a memory without ``spram``: one per
        512 words, :attr:`MAX_BANKS` at most."""
        return max(1, min(cls.MAX_BANKS, memory_bytes // (data_width // 8) // 512))

    def _block_ram(self, m, depth, address, read_en, write_en, write_data):
        """Banks of block RAM with registered inputs and outputs: the word read at
        ``address`` in cycle ``t`` is returned, from a register, in cycle ``t + 5``. A
        request is registered, with each bank's enables decoded, before it reaches the
        block RAMs, which are spread over the device; each bank's word is registered twice
        as it leaves its block RAM (an ECP5 block RAM's output comes 5.6 ns after the
        clock: the first register can sit beside it), then the bank multiplexer's output."""
        banks = self.block_ram_banks(self.data_width, self.memory_bytes)
        bank_depth = depth // banks
        row_bits = exact_log2(bank_depth)
        bank = address[row_bits:]
        row = Signal(row_bits)
        row_data = Signal(self.data_width)
        m.d.sync += [row.eq(address[:row_bits]), row_data.eq(write_data)]
        read_bank = Signal(range(banks))
        m.d.sync += read_bank.eq(bank)
        word_bank = Signal(range(banks))
        selected_bank = Signal(range(banks))
        near_bank = Signal(range(banks))
        m.d.sync += [near_bank.eq(read_bank), word_bank.eq(near_bank),
                     selected_bank.eq(word_bank)]
        outputs = []
        for k in range(banks):
            memory = Memory(shape=self.data_width, depth=bank_depth, init=[])
            m.submodules[f"bank{k}"] = memory
            write = memory.write_port(granularity=8)
            read = memory.read_port(domain="sync")
            selected = bank == k if banks > 1 else C(1)
            bank_read = Signal(name=f"bank{k}_read")
            bank_write = Signal(self.word_bytes, name=f"bank{k}_write")
            m.d.sync += [bank_read.eq(read_en & selected),
                         bank_write.eq(Mux(selected, write_en, 0))]
            m.d.comb += [write.addr.eq(row), read.addr.eq(row), read.en.eq(bank_read),
                         write.data.eq(row_data), write.en.eq(bank_write)]
            near = Signal(self.data_width, name=f"bank{k}_near", reset_less=True)
            word = Signal(self.data_width, name=f"bank{k}_word", reset_less=True)
            m.d.sync += [near.eq(read.data), word.eq(near)]
            outputs.append(word)
        registered = Signal(self.data_width)
        m.d.sync += registered.eq(Array(outputs)[selected_bank])
        return registered

    def elaborate(self, platform):
        m = Module()
        axi, port = self.axi, self.host
        offset_bits = exact_log2(self.word_bytes)
        depth = self.memory_bytes // self.word_bytes
        index_bits = ceil_log2(depth)
        address = Signal(index_bits)
        read_en = Signal()
        write_en = Signal(self.word_bytes)
        write_data = Signal(self.data_width)
        if self.spram:
            read_data = Signal(self.data_width)
            m.submodules.memory = memory = ICE40SPRAM(self.data_width, depth)
            m.d.comb += [memory.addr.eq(address), memory.ren.eq(read_en),
                         read_data.eq(memory.rdata), memory.wen.eq(write_en),
                         memory.wdata.eq(write_data)]
        else:
            read_data = self._block_ram(m, depth, address, read_en, write_en, write_data)

        def outside(word):
            return word[index_bits:] != 0

        word = Signal(self.addr_width - offset_bits)    # index of the next beat of the burst
        beats = Signal(9)                       # read beats still to fetch
        error = Signal()                        # a past W beat was outside
        txn_id = Signal(1)
        lane = Signal(range(self.word_bytes))
        m.d.comb += [
            port.rdata.eq(read_data.word_select(lane, 8)),
            axi.bid.eq(txn_id),
            axi.bresp.eq(Mux(error, Resp.DECERR, Resp.OKAY)),
        ]

        fetch = Signal()
        if self.spram:
            # One beat on R at a time: the next is fetched as this one is taken. The SPRAM
            # holds the word it read until its next read, so the beat waits there, with its
            # ``outside`` and ``last`` registered as it is fetched.
            rvalid = Signal()
            beat_outside = Signal()
            beat_last = Signal()
            with m.If(fetch):
                m.d.sync += [beat_outside.eq(outside(word)), beat_last.eq(beats == 1)]
            m.d.comb += [
                axi.rid.eq(txn_id),
                axi.rdata.eq(Mux(beat_outside, 0, read_data)),
                axi.rresp.eq(Mux(beat_outside, Resp.DECERR, Resp.OKAY)),
                axi.rlast.eq(beat_last),
                axi.rvalid.eq(rvalid),
            ]
            room = ~rvalid | axi.rready
            with m.If(room):
                m.d.sync += rvalid.eq(fetch)
        else:
            # Each fetched beat's ``outside`` and ``last`` travel beside its read.
            beat_valid, beat_outside, beat_last, beat_id = fetch, outside(word), beats == 1, txn_id
            for i in range(self.read_latency):
                beat_valid, beat_outside, beat_last, beat_id = [
                    self._delay(m, value, f"{name}_d{i}")
                    for name, value in (("beat_valid", beat_valid),
                                        ("beat_outside", beat_outside),
                                        ("beat_last", beat_last), ("beat_id", beat_id))]
            beat_data = Mux(beat_outside, 0, read_data)
            beat_resp = Mux(beat_outside, Resp.DECERR, Resp.OKAY)
            m.submodules.r_fifo = r_fifo = SyncFIFOBuffered(
                width=self.data_width + 4, depth=self.R_FIFO_DEPTH)
            in_flight = Signal(range(self.read_latency + 1))
            m.d.sync += in_flight.eq(in_flight + fetch - beat_valid)
            m.d.comb += [
                r_fifo.w_en.eq(beat_valid),
                r_fifo.w_data.eq(Cat(beat_data, beat_resp, beat_last, beat_id)),
                Cat(axi.rdata, axi.rresp, axi.rlast, axi.rid).eq(r_fifo.r_data),
                axi.rvalid.eq(r_fifo.r_rdy),
                r_fifo.r_en.eq(axi.rready),
            ]
            room = (r_fifo.level + in_flight) < self.R_FIFO_DEPTH

        # A byte request is served from the cycle after it is seen waiting, so that no path
        # runs from the host port's request into the choice between it and the AXI port.
        # Whether it writes is taken from a register too (the host holds its request), so
        # that the port's ``ready`` depends on registers only.
        host_waiting = Signal()
        host_writes = Signal()
        m.d.sync += [host_waiting.eq(port.valid & ~port.ready), host_writes.eq(port.write)]
        # AW and AR requests wait in a register each (``AxREADY`` from registers only), from
        # which a transaction starts; a request is taken in the cycle its register frees.
        aw_full, aw_word, aw_id = Signal(), Signal.like(word), Signal.like(txn_id)
        ar_full, ar_word, ar_id = Signal(), Signal.like(word), Signal.like(txn_id)
        ar_beats = Signal.like(beats)
        take_aw, take_ar = Signal(), Signal()
        m.d.comb += [axi.awready.eq(~aw_full | take_aw), axi.arready.eq(~ar_full | take_ar)]
        with m.If(axi.awvalid & axi.awready):
            m.d.sync += [aw_full.eq(1), aw_word.eq(axi.awaddr[offset_bits:]),
                         aw_id.eq(axi.awid)]
        with m.Elif(take_aw):
            m.d.sync += aw_full.eq(0)
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += [ar_full.eq(1), ar_word.eq(axi.araddr[offset_bits:]),
                         ar_id.eq(axi.arid), ar_beats.eq(axi.arlen + 1)]
        with m.Elif(take_ar):
            m.d.sync += ar_full.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(host_waiting):
                    m.next = "HOST"
                with m.Elif(aw_full):
                    m.d.comb += take_aw.eq(1)
                    m.d.sync += [word.eq(aw_word), txn_id.eq(aw_id), error.eq(0)]
                    m.next = "WRITE"
                with m.Elif(ar_full):
                    m.d.comb += take_ar.eq(1)
                    m.d.sync += [word.eq(ar_word), txn_id.eq(ar_id), beats.eq(ar_beats)]
                    m.next = "READ"
            with m.State("HOST"):
                with m.If(host_writes):
                    m.d.comb += [port.ready.eq(1), address.eq(port.addr[offset_bits:]),
                                 write_en.eq(1 << port.addr[:offset_bits]),
                                 write_data.eq(port.wdata.replicate(self.word_bytes))]
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += [read_en.eq(1), address.eq(port.addr[offset_bits:])]
                    m.d.sync += lane.eq(port.addr[:offset_bits])
                    if self.read_latency == 1:
                        m.d.comb += port.ready.eq(1)
                        m.next = "IDLE"
                    else:
                        m.next = "HOST_READ_0"
            # The byte read's data leaves the pipeline the cycle after it is accepted.
            for i in range(self.read_latency - 1):
                with m.State(f"HOST_READ_{i}"):
                    if i == self.read_latency - 2:
                        m.d.comb += port.ready.eq(1)
                        m.next = "IDLE"
                    else:
                        m.next = f"HOST_READ_{i + 1}"
            with m.State("WRITE"):
                m.d.comb += [axi.wready.eq(1), address.eq(word), write_data.eq(axi.wdata)]
                with m.If(axi.wvalid):
                    m.d.sync += word.eq(word + 1)
                    with m.If(outside(word)):
                        m.d.sync += error.eq(1)
                    with m.Else():
                        m.d.comb += write_en.eq(axi.wstrb)
                    with m.If(axi.wlast):
                        m.next = "RESPOND"
            with m.State("RESPOND"):
                m.d.comb += axi.bvalid.eq(1)
                with m.If(axi.bready):
                    m.next = "IDLE"
            with m.State("READ"):
                m.d.comb += [fetch.eq(room & (beats != 0)), address.eq(word),
                             read_en.eq(fetch)]
                with m.If(fetch):
                    m.d.sync += [word.eq(word + 1), beats.eq(beats - 1)]
                if self.spram:
                    with m.If(axi.rvalid & axi.rready & axi.rlast):
                        m.next = "IDLE"
                else:
                    # The next transaction may start while the FIFO drains: each beat
                    # carries its ID.
                    with m.If(fetch & (beats == 1)):
                        m.next = "IDLE"
        return m

    @staticmethod
    def _delay(m, value, name):
        delayed = Signal(Value.cast(value).shape(), name=name)
        m.d.sync += delayed.eq(value)
        return delayed


class ICE40SPRAM(wiring.Component):
    """A single-port memory of ``depth`` words of ``data_width`` bits built from iCE40UP
    ``SB_SPRAM256KA`` blocks (16 K × 16 bits): ``data_width / 16`` side by side per 16 K
    words. Outside an iCE40 build (simulation) a ``lib.memory.Memory`` stands in.

    A write takes the cycle: a read requested in the same cycle returns nothing defined.

    Members
    -------
    addr : ``In(range(depth))``
    wdata : ``In(data_width)``
        The word written where ``wen`` is set.
    wen : ``In(data_width // 8)``
        Byte write enables.
    ren : ``In(1)``
        Read ``addr`` (when no byte is written).
    rdata : ``Out(data_width)``
        The word read, the cycle after ``ren``; held while ``ren`` is low.
    """

    WORDS = 16 * 1024

    def __init__(self, data_width, depth):
        if data_width % 16:
            raise ValueError(f"data_width must be a multiple of 16, not {data_width}")
        self.data_width = data_width
        self.depth = depth
        if depth > self.WORDS and depth % self.WORDS:
            raise ValueError(f"depth must be at most {self.WORDS} or a multiple of it, not {depth}")
        self.banks = max(1, depth // self.WORDS)
        super().__init__({
            "addr": In(range(depth)),
            "wdata": In(data_width),
            "wen": In(data_width // 8),
            "ren": In(1),
            "rdata": Out(data_width),
        })

    def elaborate(self, platform):
        m = Module()
        columns = self.data_width // 16
        write = self.wen.any()
        bank_bits = ceil_log2(self.banks)
        bank = self.addr[ceil_log2(self.WORDS):][:bank_bits] if bank_bits else C(0, 1)
        read_bank = Signal.like(bank)
        with m.If(self.ren & ~write):
            m.d.sync += read_bank.eq(bank)
        outputs = []
        for b in range(self.banks):
            select = (bank == b) & (self.ren | write)
            words = []
            for c in range(columns):
                mask = Cat(self.wen[2 * c].replicate(2), self.wen[2 * c + 1].replicate(2))
                data_out = Signal(16, name=f"bank{b}_column{c}")
                _spram_block(m, f"spram{b}_{c}", platform, Cat(self.addr, C(0, 14))[:14],
                             self.wdata[16 * c:16 * (c + 1)], mask, write, select, data_out)
                words.append(data_out)
            outputs.append(Cat(*words))
        m.d.comb += self.rdata.eq(Array(outputs)[read_bank] if self.banks > 1 else outputs[0])
        return m


def _spram_block(m, name, platform, address, data_in, mask, write, select, data_out):
    """One ``SB_SPRAM256KA`` (or, without a platform, its behaviour: a read when selected
    and not writing, nibble write enables)."""
    if platform is not None:
        m.submodules[name] = Instance(
            "SB_SPRAM256KA",
            i_ADDRESS=address, i_DATAIN=data_in, i_MASKWREN=mask, i_WREN=write,
            i_CHIPSELECT=select, i_CLOCK=ClockSignal("sync"), i_STANDBY=0, i_SLEEP=0,
            i_POWEROFF=1, o_DATAOUT=data_out)
        return
    memory = Memory(shape=16, depth=2 ** len(address), init=[])
    m.submodules[name] = memory
    write_port = memory.write_port(granularity=4)
    read_port = memory.read_port(domain="sync")
    m.d.comb += [
        write_port.addr.eq(address), write_port.data.eq(data_in),
        write_port.en.eq(Mux(select & write, mask, 0)),
        read_port.addr.eq(address), read_port.en.eq(select & ~write),
        data_out.eq(read_port.data),
    ]


class BoardDesign(wiring.Component):
    """The NPU with ``memory_bytes`` of on-chip memory and a UART host link.

    Parameters
    ----------
    config : :class:`hw.config.NPUConfig`
    memory_bytes : int
        On-chip memory, a power of two (256 KiB by default).
    divisor : int
        Clock cycles per UART bit: ``round(clock_hz / baud)``.
    spram : bool
        The memory in iCE40UP SPRAM (see :class:`AXI4Memory`).

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

    def __init__(self, config=NPUConfig(), memory_bytes=DEFAULT_MEMORY_BYTES, divisor=217, *,
                 spram=False):
        self.config = config
        self.memory_bytes = memory_bytes
        self.divisor = divisor
        self.spram = spram
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = UartBridge(self.divisor)
        m.submodules.npu = npu = NPU(self.config)
        m.submodules.memory = memory = AXI4Memory(self.config.bus_width, self.memory_bytes,
                                                  addr_width=self.config.addr_width,
                                                  spram=self.spram)
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


def connect_pins(m, platform, design, led):
    """Connect ``design``'s ``uart_rx`` and ``uart_tx`` to the board's first UART, and its
    ``irq`` (when it has one) to the LED resource ``led``, through I/O buffers."""
    uart = platform.request("uart", 0, dir="-")
    m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
    m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
    m.d.comb += [design.uart_rx.eq(rx.i), tx.o.eq(design.uart_tx)]
    if hasattr(design, "irq"):
        m.submodules.irq_led = irq_led = io.Buffer("o", platform.request(led, 0, dir="-"))
        m.d.comb += irq_led.o.eq(design.irq)
