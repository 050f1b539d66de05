"""Instruction fetch and decode.

:class:`InstructionFetcher` reads the program from memory through an AXI4 read channel,
in bursts of several 16-byte instructions into a prefetch FIFO, from ``program_addr``
until it has delivered an ``END``. :class:`InstructionChecker` is the decoder's legality check (opcode, token
flags, scratchpad, accumulator and channel ranges, alignment), the hardware twin of
``sw.simulator.check_instruction``.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from .arith import saturated, saturating_product
from .axi import AXI4Signature, Burst, Resp
from .config import NPUConfig
from .isa import (CHANNEL_PARAM_BYTES, ENGINE_OF, INSTRUCTION_BITS, INSTRUCTION_BYTES, Config,
                  Engine, Header, Matmul, Opcode, Sync, Transfer, field_places, slot_bytes)
from .registers import ErrorCode


__all__ = ["fetched_layout", "InstructionFetcher", "InstructionChecker", "engine_of",
           "SERIAL_STEPS", "checked_fields", "queued_bits", "to_queue", "from_queue"]


#: Cycles of the checker's products with ``config.serial_products``: one per bit of the
#: 12-bit ``rows`` and ``count`` fields.
SERIAL_STEPS = max(data.Layout.cast(Transfer)["rows"].shape.width,
                   data.Layout.cast(Matmul)["count"].shape.width)

def fetched_layout(config):
    """An instruction with its address (``config.addr_width`` bits), as the fetcher
    delivers it and the engines' queues hold it."""
    return data.StructLayout({
        "word": unsigned(INSTRUCTION_BITS),
        "addr": unsigned(config.addr_width),
    })


class InstructionFetcher(wiring.Component):
    """Fetches instructions over AXI4, in order, until ``END``, ahead of the decoder.

    Instructions are read in INCR bursts of up to ``burst`` instructions (never across a
    4 KiB boundary) into a prefetch FIFO of ``depth`` instructions. A burst is requested
    whenever none is in flight and the FIFO has room for a whole one, so the decoder finds
    instructions waiting while the DMA's long bursts hold the shared read channel. Reads
    past the ``END`` are discarded with their errors: a bus error is reported only when
    the instruction it hit reaches the head of the FIFO. An instruction at or above
    ``2**addr_width`` is not read: it enters the FIFO as a bus error. With ``depth`` 1
    the FIFO's one entry is a block RAM row (``instruction``), which each bus beat writes
    its slice of: no register holds the instruction.

    Members
    -------
    bus : ``Out(AXI4Signature(...))``
        Only the read channels are used (ID 0); the write channels stay idle.
    start : ``In(1)``
        Pulse: begin fetching at ``program_addr``.
    program_addr : ``In(32)``
        A multiple of 16.
    halt : ``In(1)``
        Stop: deliver nothing more, let the burst in flight (if any) complete, empty the FIFO.
    insn : ``Out(stream.Signature(fetched_layout(config)))``
        Each instruction with its address.
    bus_error : ``Out(1)``
        Held high after an ``SLVERR``/``DECERR`` on an instruction that reached the head of
        the FIFO, with ``bus_error_addr``, until the next ``start``; fetching stops.
    busy : ``Out(1)``
        A burst is in flight or about to be requested, or the fetcher is stopping.

    Timing
    ------
    With a zero-wait memory, the first instruction is on ``insn`` ``burst * beats + 3``
    cycles after ``start`` (``beats = 16 / bus bytes``; one more with ``depth`` 1, whose
    block RAM row is read in the cycle after its last write); after that the FIFO delivers one
    instruction per cycle while the memory keeps up (one burst of ``burst * beats`` beats
    per ``burst`` instructions).
    """

    def __init__(self, config=NPUConfig(), burst=8, depth=32):
        assert config.bus_width <= INSTRUCTION_BITS and depth >= burst >= 1
        self.config = config
        self.bus_bytes = config.bus_width // 8
        self.beats = INSTRUCTION_BYTES // self.bus_bytes
        self.burst = burst
        self.depth = depth
        super().__init__({
            "bus": Out(AXI4Signature(data_width=config.bus_width, addr_width=config.addr_width)),
            "start": In(1),
            "program_addr": In(32),
            "halt": In(1),
            "insn": Out(stream.Signature(fetched_layout(config))),
            "bus_error": Out(1),
            "bus_error_addr": Out(32),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        entry = data.StructLayout({"word": unsigned(INSTRUCTION_BITS), "error": unsigned(1)})
        push, push_data, pop = Signal(), Signal(entry), Signal()
        if self.depth > 1:
            m.submodules.prefetch = prefetch = SyncFIFOBuffered(width=entry.size, depth=self.depth)
            m.d.comb += [prefetch.w_en.eq(push), prefetch.w_data.eq(push_data),
                         prefetch.r_en.eq(pop)]
            head, head_valid, level = entry(prefetch.r_data), prefetch.r_rdy, prefetch.level
        else:
            # One entry, a block RAM row that each beat writes its slice of: empty while its
            # burst (of one instruction) is in flight, valid from the second cycle after its
            # last beat, when the row read in the cycle after that write comes out.
            head, head_valid, written = Signal(entry), Signal(), Signal()
            level = head_valid | written
            slice_bits = min(self.config.bus_width, INSTRUCTION_BITS)
            m.submodules.instruction = instruction = Memory(
                shape=unsigned(INSTRUCTION_BITS), depth=1, init=[],
                attrs={"ram_style": "block"})
            slice_write = instruction.write_port(granularity=slice_bits)
            m.d.comb += [slice_write.data.eq(push_data.word),
                         head.word.eq(instruction.read_port().data)]
            m.d.sync += written.eq(push)
            with m.If(push):
                m.d.sync += head.error.eq(push_data.error)
            with m.If(written):
                m.d.sync += head_valid.eq(1)
            with m.Elif(pop):
                m.d.sync += head_valid.eq(0)

        # Addresses are ``addr_width`` bits and one more, set beyond the address space,
        # where the fetcher never goes more than its FIFO's depth. An error's full 32-bit
        # address is the program's start when the program starts beyond it (latched at
        # ``start``), else the head's.
        aw = self.config.addr_width
        addr_bits = min(32, aw + 1)
        request_addr = Signal(addr_bits)    # next instruction to request
        head_addr = Signal(addr_bits)       # instruction at the head of the FIFO
        starts_beyond = Signal()
        in_flight = Signal()
        beat = Signal(range(self.beats))
        failed = Signal()                   # an error beat in the instruction being assembled

        # Instructions left before the 4 KiB boundary, and in this burst.
        to_boundary = Signal(9)
        m.d.comb += to_boundary.eq(256 - request_addr[4:12])
        count = Signal(range(self.burst + 1))
        m.d.comb += count.eq(Mux(to_boundary < self.burst, to_boundary, self.burst))
        room = level <= self.depth - self.burst
        outside = request_addr[aw:].any()   # beyond the address space: not read
        m.d.comb += [
            bus.araddr.eq(request_addr),
            bus.arlen.eq(count * self.beats - 1),
            bus.arsize.eq(exact_log2(self.bus_bytes)),
            bus.arburst.eq(Burst.INCR),
            bus.arcache.eq(0b0011),
            bus.rready.eq(1),
            self.insn.p.word.eq(head.word),
            self.insn.p.addr.eq(head_addr),
        ]

        # Beats into instructions, into the FIFO: shifted into ``word`` (all but the last),
        # or written in place (each beat into its slice of the block RAM row).
        error = (bus.rresp == Resp.SLVERR) | (bus.rresp == Resp.DECERR)
        beat_in = bus.rvalid & in_flight
        if self.beats == 1:
            assembled = bus.rdata[:INSTRUCTION_BITS]
        elif self.depth > 1:
            word = Signal(INSTRUCTION_BITS - self.config.bus_width)
            assembled = Cat(word, bus.rdata)
            with m.If(beat_in):
                m.d.sync += word.eq(assembled[self.config.bus_width:])
        else:
            assembled = bus.rdata.replicate(self.beats)
        with m.If(beat_in):
            if self.depth == 1:
                m.d.comb += slice_write.en.eq(1 << beat)
            m.d.sync += [beat.eq(Mux(beat == self.beats - 1, 0, beat + 1)),
                         failed.eq((failed | error) & (beat != self.beats - 1))]
            with m.If(bus.rlast):
                m.d.sync += in_flight.eq(0)
        m.d.comb += [push_data.eq(Cat(assembled, failed | error)),
                     push.eq(beat_in & (beat == self.beats - 1))]

        with m.If(self.start):
            m.d.sync += [self.bus_error.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    beyond = self.program_addr[aw:].any()
                    start_addr = Cat(self.program_addr[:aw], beyond)
                    m.d.sync += [request_addr.eq(start_addr), head_addr.eq(start_addr),
                                 starts_beyond.eq(beyond), beat.eq(0), failed.eq(0),
                                 self.bus_error_addr.eq(self.program_addr)]
                    m.next = "RUN"
            with m.State("RUN"):
                request = ~in_flight & room & ~self.halt
                m.d.comb += [bus.arvalid.eq(request & ~outside),
                             self.busy.eq(request | in_flight)]
                with m.If(request & outside):
                    m.d.comb += [push.eq(1), push_data.error.eq(1)]
                    m.d.sync += request_addr.eq(request_addr + INSTRUCTION_BYTES)
                with m.Elif(request & bus.arready):
                    m.d.sync += [in_flight.eq(1),
                                 request_addr.eq(request_addr + count * INSTRUCTION_BYTES)]
                m.d.comb += self.insn.valid.eq(head_valid & ~head.error & ~self.halt)
                with m.If(self.halt):
                    m.next = "STOP"
                with m.Elif(head_valid & head.error):
                    m.d.sync += self.bus_error.eq(1)
                    with m.If(~starts_beyond):
                        m.d.sync += self.bus_error_addr.eq(head_addr)
                    m.next = "STOP"
                with m.Elif(self.insn.valid & self.insn.ready):
                    m.d.comb += pop.eq(1)
                    m.d.sync += head_addr.eq(head_addr + INSTRUCTION_BYTES)
                    with m.If(head.word[:4] == Opcode.END.value):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.comb += [self.busy.eq(1), pop.eq(1)]
                with m.If(~in_flight & (level == 0)):
                    m.next = "IDLE"
        return m


def engine_of(word):
    """The :class:`Engine` value an instruction word goes to (for a legal opcode)."""
    opcode = word[:4]
    sync = Sync(word[:Shape.cast(Sync).width])
    return Mux(opcode == Opcode.LOAD.value, Engine.LOAD.value,
           Mux(opcode == Opcode.STORE.value, Engine.STORE.value,
           Mux(opcode == Opcode.SYNC.value, sync.engine.as_value(), Engine.COMPUTE.value)))


class InstructionChecker(wiring.Component):
    """The decoder's legality check (opcode, token flags, scratchpad, accumulator and
    channel ranges, alignment), the hardware twin of ``sw.simulator.check_instruction``,
    mirroring it rule for rule.

    Members
    -------
    word : ``In(INSTRUCTION_BITS)``
        The instruction.
    code : ``Out(ErrorCode)``
        Its :class:`ErrorCode` (``NONE`` when legal).

    start : ``In(1)``
        With ``config.serial_products``: high in the first cycle of a new ``word``, which
        then holds still for :attr:`latency` cycles. Unused otherwise.

    Timing
    ------
    A free-running pipeline: ``code`` in cycle ``t +`` :attr:`latency` is the check of
    ``word`` in cycle ``t``. Stage 1 registers the address products (multipliers with
    registered inputs and outputs) and the checks without arithmetic, stage 2 the range
    ends, stage 3 the code. With ``config.serial_products`` the products take
    :data:`SERIAL_STEPS` more cycles (shift and add, from ``start``), and the range
    arithmetic saturates at twice the scratchpad's size, beyond which every end is out of
    range, so it is only as wide as the scratchpad's addresses; a transfer's range and a
    MATMUL's result range then share one product and one end. As the word holds still,
    only the products and the code are registered: ``code`` is the word's check from cycle
    ``t +`` :attr:`latency` on, as long as the word holds.
    """

    latency = 3

    @classmethod
    def latency_of(cls, config):
        """:attr:`latency` of the checker for ``config``, without building one."""
        return cls.latency + (SERIAL_STEPS if config.serial_products else 0)

    def __init__(self, config=NPUConfig()):
        self.config = config
        self.latency = self.latency_of(config)
        super().__init__({
            "word": In(INSTRUCTION_BITS),
            "start": In(1),
            "code": Out(ErrorCode),
        })

    def elaborate(self, platform):
        m = Module()
        config = self.config
        word = self.word
        size = config.scratchpad_bytes
        act_slot, weight_slot = slot_bytes(config.rows), slot_bytes(config.cols)
        header = Header(word[:8])
        transfer = Transfer(word[:Shape.cast(Transfer).width])
        matmul = Matmul(word[:Shape.cast(Matmul).width])
        cfg = Config(word[:Shape.cast(Config).width])
        opcode = word[:4]

        def reg(value, name):
            if config.serial_products:
                # The word holds still until the code is taken: only the code is registered.
                return Value.cast(value)
            result = Signal(Value.cast(value).shape(), name=name)
            m.d.sync += result.eq(value)
            return result

        # Stage 1: products, partial sums and every check without a product.
        legal_opcode = Cat(opcode == op.value for op in Opcode).any()
        engine = engine_of(word)
        is_end = opcode == Opcode.END.value
        flags = Cat(header.pop_prev, header.pop_next, header.push_prev, header.push_next)
        bad_tokens = Mux(is_end, flags.any(),
                         ((engine == Engine.LOAD.value) & (header.pop_prev | header.push_prev)) |
                         ((engine == Engine.STORE.value) & (header.pop_next | header.push_next)))
        bad_engine = (opcode == Opcode.SYNC.value) & (word[8:10] == 3)
        matmul_misaligned = ((matmul.weight_addr % weight_slot) != 0) | \
            ((matmul.act_addr % act_slot) != 0) | ((matmul.out_addr % weight_slot) != 0) | \
            ((matmul.out_stride % weight_slot) != 0)
        config_misaligned = (cfg.sp_addr % weight_slot) != 0
        count = matmul.count

        illegal = reg(~legal_opcode | bad_engine, "illegal_s1")
        bad_tokens = reg(bad_tokens, "bad_tokens_s1")
        is_transfer = reg((opcode == Opcode.LOAD.value) | (opcode == Opcode.STORE.value),
                          "is_transfer_s1")
        is_matmul = reg(opcode == Opcode.MATMUL.value, "is_matmul_s1")
        is_config = reg(opcode == Opcode.CONFIG.value, "is_config_s1")
        misaligned = reg(Mux(opcode == Opcode.MATMUL.value, matmul_misaligned,
                             (opcode == Opcode.CONFIG.value) & config_misaligned), "misaligned_s1")
        transfer_nonzero = reg((transfer.rows != 0) & (transfer.row_bytes != 0), "transfer_nonzero_s1")
        out_bytes = Mux(matmul.out_int32, 4 * weight_slot, weight_slot)
        if config.serial_products:
            # Products of the rows (or count) less one, and operands clamped at twice the
            # scratchpad's size: every end at or above that is out of range, so the
            # arithmetic is only as wide as the scratchpad's addresses.
            limit = 2 * size

            def product(a, b, name):
                value, _ = saturating_product(m, saturated(a, limit), (b - 1)[:len(b)],
                                              self.start, limit, name)
                return value
            # A transfer's range and a MATMUL's result range share one product and one
            # end: an instruction is one or the other.
            transfer_op = (opcode == Opcode.LOAD.value) | (opcode == Opcode.STORE.value)
            transfer_product = out_product = product(
                Mux(transfer_op, transfer.sp_stride, matmul.out_stride),
                Mux(transfer_op, transfer.rows, count), "strided_product_s1")
            transfer_base = out_base = reg(
                Mux(transfer_op,
                    saturated(transfer.sp_addr, limit) + saturated(transfer.row_bytes, limit),
                    saturated(matmul.out_addr, limit) + out_bytes), "strided_base_s1")
            act_product = product(matmul.act_stride, count, "act_product_s1")
            act_base = reg(saturated(matmul.act_addr, limit) + act_slot, "act_base_s1")
        else:
            def product(a, b, name):
                return reg(a * b, name)
            # (rows - 1) * stride as rows * stride - stride: no subtraction before a
            # multiplier.
            transfer_product = product(transfer.sp_stride, transfer.rows, "transfer_product_s1")
            transfer_base = reg(transfer.sp_addr + transfer.row_bytes - transfer.sp_stride,
                                "transfer_base_s1")
            out_product = product(matmul.out_stride, count, "out_product_s1")
            out_base = reg(matmul.out_addr + out_bytes - matmul.out_stride, "out_base_s1")
            act_product = product(matmul.act_stride, count, "act_product_s1")
            act_base = reg(matmul.act_addr + act_slot - matmul.act_stride * act_slot,
                           "act_base_s1")
        matmul_nonzero = reg(count != 0, "matmul_nonzero_s1")
        matmul_fixed = reg(
            (matmul.weight_addr + config.rows * weight_slot > size) |
            (matmul.acc_addr + count > config.acc_depth) |
            (matmul.channel >= config.channel_depth), "matmul_fixed_s1")
        emit = reg(matmul.emit, "emit_s1")
        config_range = reg((cfg.channel + cfg.count > config.channel_depth) |
                           (cfg.sp_addr + cfg.count * (config.cols * CHANNEL_PARAM_BYTES) > size),
                           "config_range_s1")

        # Stage 2: the ends of the scratchpad ranges (negative only when the count is
        # zero, a case the compares ignore).
        def end(product, base, name):
            return reg(product + base, name)
        transfer_end = end(transfer_product, transfer_base, "transfer_end_s2")
        if config.serial_products:
            out_end = transfer_end
        else:
            out_end = end(out_product, out_base, "out_end_s2")
        act_end = end(act_product * act_slot, act_base, "act_end_s2")
        stage1 = {"illegal": illegal, "bad_tokens": bad_tokens, "is_transfer": is_transfer,
                  "is_matmul": is_matmul, "is_config": is_config, "misaligned": misaligned,
                  "transfer_nonzero": transfer_nonzero, "matmul_nonzero": matmul_nonzero,
                  "matmul_fixed": matmul_fixed, "emit": emit, "config_range": config_range}
        (illegal, bad_tokens, is_transfer, is_matmul, is_config, misaligned, transfer_nonzero,
         matmul_nonzero, matmul_fixed, emit, config_range) = \
            [reg(value, f"{name}_s2") for name, value in stage1.items()]

        # Stage 3: compares and the code, in priority order.
        transfer_range = transfer_nonzero & (transfer_end > size)
        matmul_range = matmul_nonzero & (matmul_fixed | (act_end > size) | (emit & (out_end > size)))
        with m.If(illegal):
            m.d.sync += self.code.eq(ErrorCode.ILLEGAL_OPCODE)
        with m.Elif(bad_tokens):
            m.d.sync += self.code.eq(ErrorCode.ILLEGAL_TOKEN)
        with m.Elif(misaligned):
            m.d.sync += self.code.eq(ErrorCode.MISALIGNED)
        with m.Elif((is_transfer & transfer_range) | (is_matmul & matmul_range) |
                    (is_config & config_range)):
            m.d.sync += self.code.eq(ErrorCode.SCRATCHPAD_RANGE)
        with m.Else():
            m.d.sync += self.code.eq(ErrorCode.NONE)
        return m


def checked_fields(config, opcode):
    """The bits of each field of ``opcode`` that its engine may find set and uses, once the
    decoder's check has passed it: ``{field: (low, high)}``, bits ``low .. high - 1`` of the
    field's value; the header is whole, and a field not named is unused.

    A value the check bounds keeps only the bits its bound needs, and an aligned one loses
    its low bits, which the check requires to be zero. A field that the instruction's other
    fields make unused may lose bits it has: addresses and strides of a transfer that moves
    nothing (``rows`` or ``row_bytes`` 0), or of a ``MATMUL`` with ``count`` 0, strides when
    there is one row or one vector, the result's address and stride of a ``MATMUL`` that
    does not emit, the scratchpad address of a ``CONFIG`` of no rows, and ``SYNC``'s engine.
    The memory address and stride of a transfer are those saturated at
    ``2**config.addr_width`` (see :func:`to_queue`), as the DMA's range check takes them.
    """
    sp_bits = exact_log2(config.scratchpad_bytes)
    act_slot_bits = exact_log2(slot_bytes(config.rows))
    weight_slot_bits = exact_log2(slot_bytes(config.cols))
    mem_bits = min(32, config.addr_width + 1)
    places = field_places(opcode)

    def kept(name, low, high):
        return name, (low, min(high, places[name][1]))
    if opcode in (Opcode.LOAD, Opcode.STORE):
        fields = [
            kept("mem_addr", 0, mem_bits), kept("mem_stride", 0, mem_bits),
            kept("sp_addr", 0, sp_bits),              # below the scratchpad's end
            kept("sp_stride", 0, sp_bits),            # likewise, with rows > 1
            kept("row_bytes", 0, sp_bits + 1),        # at most the scratchpad's size
            kept("rows", 0, places["rows"][1]),       # any number, with a stride of 0
        ]
    elif opcode is Opcode.MATMUL:
        fields = [
            kept("weight_addr", weight_slot_bits, sp_bits),
            kept("act_addr", act_slot_bits, sp_bits),
            kept("act_stride", 0, sp_bits - act_slot_bits),
            kept("count", 0, ceil_log2(config.acc_depth + 1)),
            kept("acc_addr", 0, ceil_log2(config.acc_depth)),
            kept("out_addr", weight_slot_bits, sp_bits),
            kept("out_stride", weight_slot_bits, sp_bits),
            kept("channel", 0, ceil_log2(config.channel_depth)),
            *(kept(flag, 0, 1) for flag in ("accumulate", "emit", "act_flip", "out_int32")),
        ]
    elif opcode is Opcode.CONFIG:
        fields = [
            kept("sp_addr", weight_slot_bits, sp_bits),
            kept("channel", 0, ceil_log2(config.channel_depth + 1)),
            kept("count", 0, ceil_log2(config.channel_depth + 1)),
        ]
    else:
        fields = []
    return dict(fields)


def queued_bits(config, engine):
    """The bits of an instruction word that ``engine``'s queue holds: the header and the
    :func:`checked_fields` of every opcode the engine executes (``SYNC`` has no other)."""
    bits = set(range(Shape.cast(Header).width))
    for opcode in Opcode:
        if ENGINE_OF.get(opcode) is not engine:
            continue
        places = field_places(opcode)
        for name, (low, high) in checked_fields(config, opcode).items():
            offset = places[name][0]
            bits.update(range(offset + low, offset + high))
    return sorted(bits)


def _runs(bits):
    """``bits`` (sorted) as ``(start, stop)`` runs of consecutive bits."""
    runs = []
    for bit in bits:
        if runs and runs[-1][1] == bit:
            runs[-1][1] = bit + 1
        else:
            runs.append([bit, bit + 1])
    return runs


def to_queue(config, engine, insn):
    """A checked instruction (:func:`fetched_layout`) as ``engine``'s queue holds it: its
    :func:`queued_bits`, then its address. A transfer's memory address and stride are
    saturated at ``2**config.addr_width`` first."""
    word = insn.word
    if engine in (Engine.LOAD, Engine.STORE):
        pieces, end = [], 0
        for name in ("mem_addr", "mem_stride"):
            offset, width = field_places(Opcode.LOAD)[name]
            pieces += [word[end:offset],
                       saturated(word[offset:offset + width], 2**config.addr_width)[:width]]
            end = offset + width
        word = Cat(*pieces, word[end:])
    return Cat(*(word[start:stop] for start, stop in _runs(queued_bits(config, engine))),
               insn.addr)


def from_queue(config, engine, entry):
    """The instruction (:func:`fetched_layout`) of an entry of ``engine``'s queue, with
    zeros in the bits the queue does not hold."""
    pieces, end, held = [], 0, 0
    for start, stop in _runs(queued_bits(config, engine)):
        pieces += [C(0, start - end), entry[held:held + stop - start]]
        end, held = stop, held + stop - start
    return Cat(*pieces, C(0, INSTRUCTION_BITS - end), entry[held:])
