"""Serial output stage: the output stage's arithmetic, one bit per cycle, for small FPGAs.

:class:`SerialOutputStage` computes the outputs of :class:`hw.output_stage.OutputStage`
bit for bit (onnxruntime's requantization, see that module), but with one narrow
datapath that each lane's value goes through in turn, shifting one bit per cycle instead
of through barrel shifters, a leading-one detector and a 24 × 24 multiplier, and without
FIFOs. It keeps its own table of channel parameters in a memory (a block RAM) and reads
each lane's record from it a byte at a time while it computes, so that the parameters
take no logic cells per lane.

For one lane of a beat, with the record of the beat's ``channel`` row:

1. ``x = acc + bias`` (int32 wrap-around), a byte per cycle, as the bias bytes are read;
   then ``|x|`` through the same byte adder as the multiplier's bytes are read; a zero
   ``x`` or a zero or subnormal multiplier gives ``y = 0`` at once;
2. the magnitude shifts left until its top bit is set (one cycle per leading zero), then
   rounds to a 24-bit significand ``F``, to nearest even (the int32 → float32 conversion);
3. ``F`` times the multiplier's significand, by shift and add (24 cycles,
   ``hw.arith.serial_product``);
4. the 48-bit product rounds to 24 significant bits, to nearest even (the float32
   multiply), through step 2's normalisation and rounding again (its top 32 bits, and
   whether any bit below them is set); a value of 2^23 or more saturates, one below
   2^-2 gives 0;
5. the significand shifts right, one bit per cycle, to the binary point, keeping a guard
   and a sticky bit;
6. the flags byte gives the output type; one adder then rounds the value half to even,
   applies its sign and adds the zero point, and the result is clamped to the lower and
   the upper bound, each as its two bytes are read.

A lane takes 15 to :attr:`lane_cycles` cycles, about 60 on random data.

Parameters
----------
lanes : int
    Outputs per beat.
channel_depth : int
    Rows of the channel-parameter table.
tag_shape : shape
    Of the ``tag`` carried from ``inp`` to ``out``.

Members
-------
params : ``In(stream.Signature(channel_param_write_layout(lanes, channel_depth)))``
    Table writes: byte ``byte`` (of :data:`hw.isa.CHANNEL_PARAM_BYTES`, in the record's
    memory order, ``sw.simulator.CHANNEL_PARAM_DTYPE``) of each lane's record of row
    ``index``. Always ready. A row must not be written while a beat that uses it is
    waiting or in the stage.
inp : ``In(stream.Signature(...))``
    ``acc``: ``lanes`` int32 accumulators; ``channel``: the table row of their
    parameters; ``tag``. The beat must hold still until accepted; it is read while its
    lanes are computed.
out : ``Out(stream.Signature(...))``
    As :class:`hw.output_stage.OutputStage`'s: ``q``, and ``acc`` and ``tag`` of the held
    input.

Timing
------
``out.valid`` rises once every lane of the ``inp`` beat is computed: at most
:attr:`latency` cycles after the beat's ``valid``. ``inp.ready`` is ``out.ready`` in the
cycle ``out.valid`` is high, so the beat is accepted as its result is delivered;
``inp.ready`` is therefore not high in advance (:attr:`always_ready` is false). The table
is read one cycle after its address, one byte of the record per cycle.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arith import serial_product
from .isa import CHANNEL_PARAM_BYTES
from .output_stage import (SATURATED, channel_param_write_layout, output_layout,
                           output_type_range, round_half_even, rounds_up)


__all__ = ["SerialOutputStage"]


class SerialOutputStage(wiring.Component):
    #: Cycles of one lane at most: the bias and multiplier bytes, 31 left shifts and the
    #: rounding, the product, one left shift and the rounding, 25 right shifts and the
    #: check that ends them, the flags, the zero point's and the bounds' bytes.
    lane_cycles = 8 + 32 + 25 + 2 + 26 + 1 + 6
    #: The output stage does not take a beat in every cycle.
    always_ready = False

    @classmethod
    def latency_of(cls, lanes):
        """:attr:`latency` of a stage of ``lanes`` lanes, without building one."""
        return lanes * cls.lane_cycles + 1

    def __init__(self, lanes=8, channel_depth=1, tag_shape=unsigned(1)):
        self.lanes = lanes
        self.channel_depth = channel_depth
        self.tag_shape = tag_shape
        self.latency = self.latency_of(lanes)
        super().__init__({
            "params": In(stream.Signature(channel_param_write_layout(lanes, channel_depth))),
            "inp": In(stream.Signature(data.StructLayout({
                "acc":     data.ArrayLayout(signed(32), lanes),
                "channel": unsigned(ceil_log2(channel_depth)),
                "tag":     tag_shape,
            }))),
            "out": Out(stream.Signature(output_layout(lanes, tag_shape))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.param_bytes = param_bytes = Memory(
            shape=unsigned(8 * self.lanes), depth=CHANNEL_PARAM_BYTES * self.channel_depth,
            init=[])
        table_write = param_bytes.write_port()
        table_read = param_bytes.read_port()
        m.d.comb += [
            self.params.ready.eq(1),
            table_write.addr.eq(Cat(self.params.p.byte, self.params.p.index)),
            table_write.data.eq(self.params.p.data),
            table_write.en.eq(self.params.valid),
        ]

        lane = Signal(range(self.lanes))
        acc = Array(self.inp.p.acc)[lane]
        # ``step`` is the record byte on the table's read port: the address of each cycle
        # is the byte the next one reads, ``step`` unless a state moves on.
        step = Signal(range(CHANNEL_PARAM_BYTES))
        step_next = Signal.like(step)
        m.d.comb += [step_next.eq(step), table_read.addr.eq(Cat(step_next, self.inp.p.channel))]
        m.d.sync += step.eq(step_next)
        byte = table_read.data.word_select(lane, 8)
        results = Signal(8 * self.lanes)

        # From the product on, the value is ``work * 2^exponent``, rounded half to even
        # with ``guard`` and ``sticky`` when the result is made: with x = F * 2^(8 - s)
        # after ``s`` left shifts and the multiplier sig * 2^(exp - 150), the rounded
        # product is (F * sig / 2^24) * 2^(exp - 118 - s), so ``exponent`` starts at
        # exp - 118 and follows the shifts and the roundings' carries.
        work = Signal(32)
        exponent = Signal(signed(10))
        sign = Signal()
        guard = Signal()
        sticky = Signal()
        carry = Signal()
        low_byte = Signal(8)
        unsigned_output = Signal()
        # The multiplier's significand, its implicit one set once its bytes are read.
        multiplier = Signal(24)

        # Steps 2 and 4's rounding to 24 bits, read when the top bit of ``work`` is set:
        # of |x| (``multiplied`` low), then of the product's top 32 bits, ``sticky``
        # holding whether any of its 16 bits below them is set.
        converted = round_half_even(work[8:], work[7], work[:7].any() | sticky)
        significand = Mux(converted[24], 1 << 23, converted[:24])
        rounded_exponent = exponent + converted[24]
        multiplied = Signal()
        start_product = Signal()
        product, product_done = serial_product(m, multiplier, significand, start_product,
                                               "significand")
        # Step 6, in one adder: the zero point plus the magnitude ``work`` (below 2^24)
        # rounded half to even and capped at SATURATED, with its sign: ``zp + (m ^ s) +
        # (r ^ s)`` is ``zp + m + r`` or ``zp - (m + r)``. A magnitude of 2^17 - 1 rounded
        # up is SATURATED itself, so only one of 2^17 or more is capped.
        field = Cat(low_byte, byte).as_signed()
        saturates = work[17:24].any()
        magnitude = Mux(saturates, SATURATED, work[:17])
        round_up = rounds_up(work[0], guard, sticky) & ~saturates
        signed_magnitude = (Cat(magnitude, Const(0, 3)) ^ sign.replicate(21)).as_signed()
        value = work[:21].as_signed()
        # The lower bound (step 11) is max(field, qmin), the upper one (step 13)
        # min(field, qmax); ``value`` then takes the bound when below or above it. The
        # two steps share one subtraction for each of these compares.
        upper_step = step[2]
        qmin, qmax = output_type_range(unsigned_output)
        type_bound = Mux(upper_step, qmax, qmin)
        beyond_type = field - type_bound
        bound = Mux(Mux(upper_step, (beyond_type > 0), beyond_type[-1]), type_bound, field)
        beyond = value - bound
        clamped = Mux(Mux(upper_step, beyond > 0, beyond[-1]), bound, value)

        m.d.comb += [
            self.out.p.q.eq(results),
            self.out.p.acc.eq(self.inp.p.acc),
            self.out.p.tag.eq(self.inp.p.tag),
        ]

        with m.FSM() as fsm:
            # One byte adder: acc + bias in BIAS, then |x| in MULTIPLIER (the bytes of x
            # through it again, inverted with a carry in when x is negative).
            biasing = fsm.ongoing("BIAS")
            total = (Mux(biasing, acc.word_select(step[:2], 8), work[:8] ^ sign.replicate(8))
                     + Mux(biasing, byte, 0) + carry)
            with m.State("START"):
                m.d.comb += step_next.eq(0)
                with m.If(self.inp.valid):
                    m.next = "BIAS"
            with m.State("BIAS"):
                # Bytes 0 to 3: x = acc + bias, lowest byte first, into the top of ``work``;
                # x's sign is the carry into its magnitude.
                m.d.sync += [work.eq(Cat(work[8:], total[:8])),
                             carry.eq(Mux(step == 3, total[7], total[8]))]
                m.d.comb += step_next.eq(step + 1)
                with m.If(step == 3):
                    m.d.sync += sign.eq(total[7])
                    m.next = "MULTIPLIER"
            with m.State("MULTIPLIER"):
                # Bytes 4 to 7: the float32 multiplier, while |x| replaces x in ``work``.
                m.d.sync += [work.eq(Cat(work[8:], total[:8])), carry.eq(total[8])]
                m.d.comb += step_next.eq(step + 1)
                with m.If(step != 7):
                    m.d.sync += multiplier.eq(Cat(multiplier[8:], byte))
                with m.Else():
                    mult_exp = Cat(multiplier[23], byte[:7])
                    m.d.sync += [
                        multiplier[23].eq(1),
                        sign.eq(sign ^ byte[7]),
                        exponent.eq(Cat(mult_exp, Const(0, 1)).as_signed() - 118),
                        guard.eq(0),
                        sticky.eq(0),
                        multiplied.eq(0),
                        carry.eq(0),
                    ]
                    with m.If(((work[8:] == 0) & (total[:8] == 0)) | (mult_exp == 0)):
                        m.d.sync += work.eq(0)
                        m.d.comb += step_next.eq(14)
                        m.next = "FLAGS"
                    with m.Else():
                        m.next = "NORMALISE"
            with m.State("NORMALISE"):
                with m.If(~work[31]):
                    m.d.sync += [work.eq(work << 1), exponent.eq(exponent - 1)]
                with m.Elif(~multiplied):
                    m.d.sync += exponent.eq(rounded_exponent)
                    m.d.comb += start_product.eq(1)
                    m.next = "MULTIPLY"
                with m.Else():
                    m.d.sync += [work.eq(significand), exponent.eq(rounded_exponent),
                                 sticky.eq(0)]
                    with m.If(rounded_exponent >= 0):
                        m.d.sync += work.eq(SATURATED)
                        m.d.comb += step_next.eq(14)
                        m.next = "FLAGS"
                    with m.Elif(rounded_exponent < -25):
                        m.d.sync += work.eq(0)
                        m.d.comb += step_next.eq(14)
                        m.next = "FLAGS"
                    with m.Else():
                        m.next = "SHIFT"
            with m.State("MULTIPLY"):
                # The product is at least 2^46: normalised again by one left shift at most.
                with m.If(product_done):
                    m.d.sync += [work.eq(product[16:]), sticky.eq(product[:16].any()),
                                 multiplied.eq(1)]
                    m.next = "NORMALISE"
            with m.State("SHIFT"):
                with m.If(exponent == 0):
                    m.d.comb += step_next.eq(14)
                    m.next = "FLAGS"
                with m.Else():
                    m.d.sync += [work.eq(work >> 1), guard.eq(work[0]), sticky.eq(sticky | guard),
                                 exponent.eq(exponent + 1)]
            with m.State("FLAGS"):
                # Byte 14: bit 0 is the output's signedness.
                m.d.sync += unsigned_output.eq(byte[0])
                m.d.comb += step_next.eq(8)
                m.next = "BOUNDS"
            with m.State("BOUNDS"):
                # Bytes 8 to 13: the zero point, the lower and the upper bound, 16 bits
                # each, low byte first; each applies as its high byte is read.
                m.d.sync += low_byte.eq(byte)
                m.d.comb += step_next.eq(step + 1)
                with m.Switch(step):
                    with m.Case(9):
                        m.d.sync += work.eq(field + signed_magnitude + (round_up ^ sign))
                    with m.Case(11):
                        m.d.sync += work.eq(clamped)
                    with m.Case(13):
                        m.d.sync += results.word_select(lane, 8).eq(clamped[:8])
                        with m.If(lane == self.lanes - 1):
                            m.next = "DONE"
                        with m.Else():
                            m.d.sync += lane.eq(lane + 1)
                            m.d.comb += step_next.eq(0)
                            m.next = "BIAS"
            with m.State("DONE"):
                m.d.comb += [self.out.valid.eq(1), self.inp.ready.eq(self.out.ready)]
                with m.If(self.out.ready):
                    m.d.sync += lane.eq(0)
                    m.next = "START"
        return m
