"""Instruction fetch and decode.

:class:`InstructionFetcher` reads the program from memory through an AXI4 read channel,
in bursts of several 16-byte instructions into a prefetch FIFO, from ``program_addr``
until it has delivered an ``END``. :class:`InstructionChecker` is the decoder's legality check (opcode, token
flags, scratchpad, accumulator and channel ranges, alignment), the hardware twin of
``sw.simulator.check_instruction``.
"""

import functools
import math
import operator
from typing import NamedTuple

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from .arith import at_least, product_register, saturated
from .axi import AXI4Signature, Burst, Resp
from .config import NPUConfig
from .isa import (CHANNEL_PARAM_BYTES, ENGINE_OF, INSTRUCTION_BITS, INSTRUCTION_BYTES, Config,
                  Engine, Header, Matmul, Opcode, Sync, Transfer, field_places, slot_bytes)
from .registers import ErrorCode


__all__ = ["fetched_layout", "InstructionFetcher", "InstructionChecker", "engine_of",
           "checked_fields", "queued_bits", "to_queue", "from_queue"]


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
    The AR request leaves from registers, the cycle after the fetcher decides to make it.
    With a zero-wait memory, the first instruction is on ``insn`` ``burst * beats + 4``
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
        # The AR request leaves from registers: ``ar_valid`` and ``ar_len`` are set from
        # ``request_addr`` a cycle before it is offered, and held until it is accepted.
        ar_valid = Signal()
        ar_len = Signal.like(bus.arlen)
        ar_count = Signal.like(count)       # its instructions, for the next request's address
        m.d.comb += [
            bus.araddr.eq(request_addr),
            bus.arvalid.eq(ar_valid),
            bus.arlen.eq(ar_len),
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
                request = ~in_flight & ~ar_valid & room & ~self.halt
                m.d.comb += self.busy.eq(request | ar_valid | in_flight)
                with m.If(request & outside):
                    m.d.comb += [push.eq(1), push_data.error.eq(1)]
                    m.d.sync += request_addr.eq(request_addr + INSTRUCTION_BYTES)
                with m.Elif(request):
                    m.d.sync += [ar_valid.eq(1), ar_len.eq(count * self.beats - 1),
                                 ar_count.eq(count)]
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
                with m.If(~ar_valid & ~in_flight & (level == 0)):
                    m.next = "IDLE"
        # A request once offered stays offered until accepted, halted or not.
        with m.If(ar_valid & bus.arready):
            m.d.sync += [ar_valid.eq(0), in_flight.eq(1),
                         request_addr.eq(request_addr + ar_count * INSTRUCTION_BYTES)]
        return m


def engine_of(word):
    """The :class:`Engine` value an instruction word goes to (for a legal opcode)."""
    opcode = word[:4]
    sync = Sync(word[:Shape.cast(Sync).width])
    return Mux(opcode == Opcode.LOAD.value, Engine.LOAD.value,
           Mux(opcode == Opcode.STORE.value, Engine.STORE.value,
           Mux(opcode == Opcode.SYNC.value, sync.engine.as_value(), Engine.COMPUTE.value)))


class _Step(NamedTuple):
    """One cycle of :class:`InstructionChecker`'s serial range sums: the sum becomes
    ``source`` (none when ``None``) plus the sum so far (none when ``first``). A step of a
    product doubles the sum so far and adds ``source`` only when the multiplier's bit is
    set. ``judge`` (the previous sum's check, when it ends there) is noted first."""
    source: Value
    product: bool = False
    first: bool = False
    judge: Value = C(0)


def _product_start(steps, bits):
    """The first cycle at or after ``steps`` where a product of a ``bits``-bit multiplier
    starts: a multiple of ``2**ceil_log2(bits)``, as the cycle's low bits count its bits."""
    return -(-steps // 2**ceil_log2(bits)) * 2**ceil_log2(bits)


def _serial_steps(config):
    """Cycles of :class:`InstructionChecker`'s range sums with ``config.serial_products``,
    the longest opcode's: a transfer's product (a step per bit of ``rows``) and two
    additions, or a MATMUL's two products (a step per bit of a ``count`` within the
    accumulator's depth) with one addition each."""
    rows_bits = data.Layout.cast(Transfer)["rows"].shape.width
    count_bits = ceil_log2(config.acc_depth)
    return max(rows_bits + 2, _product_start(count_bits + 1, count_bits) + count_bits + 1)


def _sum_exceeds(a, b, bound):
    """``a + b > bound`` (unsigned, constant ``bound``) in an adder as wide as ``bound``."""
    bits = bound.bit_length()
    return a[bits:].any() | b[bits:].any() | at_least(a[:bits] + b[:bits], bound + 1)


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
    ``word`` in cycle ``t``. Stage 1 registers the address products (on ECP5 in the
    multipliers' output registers, ``hw.arith.product_register``) and the checks without
    arithmetic, stage 2 the range ends, stage 3 the code.

    With ``config.serial_products``, ``t`` is the cycle ``start`` is high. From the next
    cycle on (``start`` is registered), the checks with a product (a transfer's
    scratchpad range, a MATMUL's activation and result ranges) or two addresses (a
    CONFIG's scratchpad range) are sums built one term per cycle in one adder: a product
    by shift and add, one bit of ``rows - 1`` or ``count - 1`` per cycle from the top,
    then the addresses; the other checks are combinational. A sum is only as wide as the
    scratchpad's addresses and one more bit: one that reaches twice the scratchpad's size
    is out of range, whatever it adds up to. Only ``start``, the sum, its overflow and
    failure flags, the cycle count and the code are registered (the code from the others
    and the word, a cycle after the last sum's last term, so that no path runs from the
    word through the checks into the decoder): ``code`` is the word's check from cycle
    ``t +`` :attr:`latency` on, as long as the word holds; ``start`` restarts the check.
    """

    latency = 3

    @classmethod
    def latency_of(cls, config):
        """:attr:`latency` of the checker for ``config``, without building one."""
        return _serial_steps(config) + 2 if config.serial_products else cls.latency

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

        # Every check without a range.
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
        illegal = ~legal_opcode | bad_engine
        is_transfer = (opcode == Opcode.LOAD.value) | (opcode == Opcode.STORE.value)
        is_matmul = opcode == Opcode.MATMUL.value
        is_config = opcode == Opcode.CONFIG.value
        misaligned = Mux(is_matmul, matmul_misaligned, is_config & config_misaligned)
        transfer_nonzero = (transfer.rows != 0) & (transfer.row_bytes != 0)
        matmul_nonzero = count != 0
        out_bytes = Mux(matmul.out_int32, 4 * weight_slot, weight_slot)

        if config.serial_products:
            transfer_range, matmul_range, config_range = self._serial_ranges(
                m, transfer, matmul, cfg)
            transfer_range &= transfer_nonzero
            matmul_range &= matmul_nonzero
            domain = "sync"
        else:
            def reg(value, name):
                result = Signal(Value.cast(value).shape(), name=name)
                m.d.sync += result.eq(value)
                return result

            # Stage 1: products, partial sums and every check without a product.
            # (rows - 1) * stride as rows * stride - stride: no subtraction before a
            # multiplier.
            transfer_product = product_register(
                m, platform, transfer.sp_stride, transfer.rows,
                unsigned(len(transfer.sp_stride) + len(transfer.rows)), "transfer_product_s1")
            transfer_base = reg(transfer.sp_addr + transfer.row_bytes - transfer.sp_stride,
                                "transfer_base_s1")
            out_product = product_register(m, platform, matmul.out_stride, count,
                                           unsigned(len(matmul.out_stride) + len(count)),
                                           "out_product_s1")
            out_base = reg(matmul.out_addr + out_bytes - matmul.out_stride, "out_base_s1")
            act_product = product_register(m, platform, matmul.act_stride, count,
                                           unsigned(len(matmul.act_stride) + len(count)),
                                           "act_product_s1")
            act_base = reg(matmul.act_addr + act_slot - matmul.act_stride * act_slot,
                           "act_base_s1")
            stage1 = {
                "illegal": illegal, "bad_tokens": bad_tokens, "is_transfer": is_transfer,
                "is_matmul": is_matmul, "is_config": is_config, "misaligned": misaligned,
                "transfer_nonzero": transfer_nonzero, "matmul_nonzero": matmul_nonzero,
                "matmul_fixed": (matmul.weight_addr + config.rows * weight_slot > size) |
                                (matmul.acc_addr + count > config.acc_depth) |
                                (matmul.channel >= config.channel_depth),
                "emit": matmul.emit,
                "config_range": (cfg.channel + cfg.count > config.channel_depth) |
                                (cfg.sp_addr + cfg.count * (config.cols * CHANNEL_PARAM_BYTES) > size),
            }
            stage1 = {name: reg(value, f"{name}_s1") for name, value in stage1.items()}

            # Stage 2: the ends of the scratchpad ranges (negative only when the count is
            # zero, a case the compares ignore).
            transfer_end = reg(transfer_product + transfer_base, "transfer_end_s2")
            out_end = reg(out_product + out_base, "out_end_s2")
            act_end = reg(act_product * act_slot + act_base, "act_end_s2")
            (illegal, bad_tokens, is_transfer, is_matmul, is_config, misaligned, transfer_nonzero,
             matmul_nonzero, matmul_fixed, emit, config_range) = \
                [reg(value, f"{name}_s2") for name, value in stage1.items()]

            # Stage 3: compares and the code.
            transfer_range = transfer_nonzero & (transfer_end > size)
            matmul_range = matmul_nonzero & (matmul_fixed | (act_end > size) |
                                             (emit & (out_end > size)))
            domain = "sync"

        # The code, in priority order.
        with m.If(illegal):
            m.d[domain] += self.code.eq(ErrorCode.ILLEGAL_OPCODE)
        with m.Elif(bad_tokens):
            m.d[domain] += self.code.eq(ErrorCode.ILLEGAL_TOKEN)
        with m.Elif(misaligned):
            m.d[domain] += self.code.eq(ErrorCode.MISALIGNED)
        with m.Elif((is_transfer & transfer_range) | (is_matmul & matmul_range) |
                    (is_config & config_range)):
            m.d[domain] += self.code.eq(ErrorCode.SCRATCHPAD_RANGE)
        with m.Else():
            m.d[domain] += self.code.eq(ErrorCode.NONE)
        return m

    def _serial_ranges(self, m, transfer, matmul, cfg):
        """The range checks with ``config.serial_products``: (transfer, MATMUL, CONFIG),
        each out of range (a transfer's when it moves something, a MATMUL's when its
        count is not zero)."""
        config = self.config
        size = config.scratchpad_bytes
        act_slot, weight_slot = slot_bytes(config.rows), slot_bytes(config.cols)
        width = exact_log2(size) + 1
        total = Signal(width)       # the sum so far, unless ``over``
        over = Signal()             # the sum has reached 2 * size
        failed = Signal()           # an earlier sum of the instruction is out of range
        steps = _serial_steps(config)
        step = Signal(range(steps + 1))

        # A MATMUL's and a CONFIG's addresses and strides are multiples of their slots
        # here (a misaligned one fails its alignment check first), and so are their sums.
        def exceeds(bound, unit=1):
            # The sum, a multiple of ``unit`` (a power of two), is above ``bound``.
            low = exact_log2(unit)
            return over | at_least(total[low:], -(-(bound + 1) // unit))

        def product(n, a):
            # (n - 1) * a by Horner's rule, from the top bit of n - 1.
            return [_Step(a, product=True) for _ in range(len(n))]

        def summed(steps, judge=C(0)):
            # A new sum, after ``judge``.
            return [steps[0]._replace(first=True, judge=judge), *steps[1:]]

        def aligned(value, unit):
            # ``value``, a multiple of ``unit`` here, without the low bits (zero).
            return Cat(C(0, exact_log2(unit)), value[exact_log2(unit):])

        # A MATMUL's count within the accumulator's depth is that many bits; beyond it,
        # the accumulator's range check fails anyway.
        count = matmul.count[:ceil_log2(config.acc_depth)]
        act_sum = summed(product(count, matmul.act_stride * act_slot) +
                         [_Step(aligned(matmul.act_addr, act_slot))])
        idle = [_Step(None)] * (_product_start(len(act_sum), len(count)) - len(act_sum))
        programs = {    # opcodes: (steps, multiplier)
            (Opcode.LOAD, Opcode.STORE): (summed(
                product(transfer.rows, transfer.sp_stride) +
                [_Step(transfer.sp_addr), _Step(transfer.row_bytes)]), transfer.rows),
            (Opcode.MATMUL,): (act_sum + idle + summed(
                product(count, aligned(matmul.out_stride, weight_slot)) +
                [_Step(aligned(matmul.out_addr, weight_slot))],
                judge=exceeds(size - act_slot, act_slot)), count),
            (Opcode.CONFIG,): (summed(
                [_Step(aligned(cfg.sp_addr, weight_slot)),
                 _Step(cfg.count * (config.cols * CHANNEL_PARAM_BYTES))]),
                C(0, 0)),
        }
        assert max(len(program) for program, _ in programs.values()) == steps
        assert all(index % 2**ceil_log2(len(n)) == 0 for program, n in programs.values()
                   for index, entry in enumerate(program) if entry.product and entry.first)

        # The sources of the terms, one of them selected per cycle.
        sources = []
        for entry in sum((program for program, _ in programs.values()), []):
            if entry.source is not None and all(entry.source is not s for s in sources):
                sources.append(entry.source)
        chosen = Signal(len(sources))
        first, multiplying, judged = Signal(), Signal(), Signal()
        # ``start`` registered: the first step is the cycle after it, so that no path runs
        # from the decoder's handshake through the term selection into the sum.
        started = Signal()
        m.d.sync += started.eq(self.start)
        cycle = Mux(started, 0, step)
        opcode = self.word[:4]
        with m.Switch(cycle):
            for index in range(steps):
                with m.Case(index):
                    with m.Switch(opcode):
                        for opcodes, (program, _) in programs.items():
                            if index < len(program):
                                with m.Case(*opcodes):
                                    entry = program[index]
                                    m.d.comb += [
                                        chosen.eq(Cat(entry.source is source
                                                      for source in sources)),
                                        first.eq(entry.first), multiplying.eq(entry.product),
                                        judged.eq(entry.judge)]
        # The multiplier's bit of a product's step: bit i of n - 1 is bit i of n, flipped
        # when the bits below it are all zero, taken from the top by the cycle's low bits.
        bit = Signal()
        with m.Switch(opcode):
            for opcodes, (_, n) in programs.items():
                if len(n):
                    less = Cat(n[i] ^ ~n[:i].any() for i in reversed(range(len(n))))
                    with m.Case(*opcodes):
                        m.d.comb += bit.eq(less.bit_select(cycle[:ceil_log2(len(n))], 1))
        terms = [Mux(chosen[k] & (bit | ~multiplying), Value.cast(source), 0)
                 for k, source in enumerate(sources)]
        operand = functools.reduce(operator.or_, (term[:width] for term in terms))
        beyond = Cat(term[width:].any() for term in terms).any()
        kept = Mux(first, 0, Mux(multiplying, total << 1, total))
        added = kept + operand
        m.d.sync += [total.eq(added[:width]),
                     over.eq((over & ~first) | added[width:].any() | beyond),
                     failed.eq((failed & ~started) | judged)]
        with m.If(started):
            m.d.sync += step.eq(1)
        with m.Elif(step != steps):
            m.d.sync += step.eq(step + 1)

        matmul_fixed = at_least(matmul.weight_addr, size - config.rows * weight_slot + 1) | \
            _sum_exceeds(matmul.acc_addr, matmul.count, config.acc_depth) | \
            at_least(matmul.channel, config.channel_depth)
        out_range = Mux(matmul.out_int32, exceeds(size - 4 * weight_slot, weight_slot),
                        exceeds(size - weight_slot, weight_slot))
        config_unit = math.gcd(weight_slot, config.cols * CHANNEL_PARAM_BYTES)
        return (exceeds(size),
                matmul_fixed | failed | (matmul.emit & out_range),
                _sum_exceeds(cfg.channel, cfg.count, config.channel_depth) |
                exceeds(size, config_unit))


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
