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
   ``x`` or a zero or subnormal multiplier gives ``y = 0`` in the next cycle;
2. the magnitude shifts left until its top bit is set (one cycle per leading zero), then
   rounds to a 24-bit significand ``F``, to nearest even (the int32 → float32 conversion),
   one bit lower so that a carry out stays in the register, and shifts left once more if
   there is none;
3. ``F`` times the multiplier's significand, by shift and add: one bit of the multiplier,
   lowest first, read from the table per cycle (24 cycles), adds ``F`` to the top bits of
   the register as it shifts right; its top 32 bits hold the product's, and a sticky bit
   whether any bit below them is set;
4. the 48-bit product rounds to 24 significant bits, to nearest even (the float32
   multiply), through step 2's normalisation and rounding; a value of at most 2^-1
   gives 0;
5. the significand shifts right, one bit per cycle, until its integer part is the
   register's top 24 bits (or at once from 2^22 on, which saturates), keeping a guard
   and a sticky bit, as the right shifts of steps 2 to 4 do;
6. the flags byte gives the output type; one adder then rounds the value half to even,
   applies its sign and adds the zero point, and the result is clamped, a bound per
   cycle: raised to the output type's minimum and to the lower bound, then lowered to
   the type's maximum and to the upper bound, each bound as its second byte is read.

A lane takes 16 to :attr:`lane_cycles` cycles, about 60 on random data.

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

from .isa import CHANNEL_PARAM_BYTES
from .output_stage import (SATURATED, channel_param_write_layout, output_layout,
                           output_type_range, rounds_up)


__all__ = ["SerialOutputStage"]


class SerialOutputStage(wiring.Component):
    #: Cycles of one lane at most: the bias and multiplier bytes, the zero check, 31 left
    #: shifts and the rounding, one left shift and the product's start, the product, one
    #: left shift and the rounding, 23 right shifts and the check that ends them, the
    #: flags, the zero point's and the bounds' bytes.
    lane_cycles = 8 + 1 + 32 + 2 + 24 + 2 + 24 + 1 + 6
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
        # The outputs of the lanes before the last, the first lowest; the last one's stays
        # in ``work``.
        results = Signal(8 * (self.lanes - 1))

        # From the product on, the value is ``work * 2^(exponent - 254)``: ``work[8:]`` its
        # integer part once ``exponent`` is 246, ``work[:8]``, ``guard`` and ``sticky``
        # (whether any bit below ``guard`` is set) the rest. Before, ``work`` is |x| times
        # 2 to the power of its shifts (-1 for each left shift, +1 for each right one),
        # which ``exponent`` counts from exp + 128 (no adder): with F = ``work[8:]`` as the
        # product starts and the multiplier sig * 2^(exp - 150), y = F * sig *
        # 2^(shifts + exp - 142), and ``work`` receives the product's top 32 bits,
        # F * sig / 2^16.
        work = Signal(32)
        exponent = Signal(9)
        sign = Signal()
        guard = Signal()
        sticky = Signal()
        carry = Signal()
        low_byte = Signal(8)
        unsigned_output = Signal()
        # The multiplier exponent's low bit, read with the byte before its others.
        exponent_low = Signal()
        # F, without its leading one, for the product, and the bit of the table's byte
        # that the product reads (the multiplier's significand, lowest bit first).
        significand = Signal(23)
        bit_index = Signal(3)
        # Whether a byte of |x| read so far is not zero.
        nonzero = Signal()
        # Where NORMALISE is: whether its value is rounded, and whether it is the product.
        rounded = Signal()
        multiplied = Signal()

        # One adder for the right shifts, the product's steps and the roundings: the top
        # 24 bits plus ``addend`` and ``carry_in``, one bit lower.
        addend = Signal(24)
        carry_in = Signal()
        shifted_sum = work[8:] + addend + carry_in
        shifted = Cat(work[1:8], shifted_sum)
        # Whether ``work[8:]`` rounds up to nearest even: at the roundings to 24 bits, and
        # for the final integer.
        round_up = rounds_up(work[8], work[7], work[:7].any() | guard | sticky)

        # Step 6: one adder adds the zero point to the magnitude ``work[8:]`` rounded half
        # to even and capped at SATURATED, with its sign: ``zp + (m ^ s) + (r ^ s)`` is
        # ``zp + m + r`` or ``zp - (m + r)``. A magnitude of 2^17 - 1 rounded up is
        # SATURATED itself, so only one of 2^17 or more is capped.
        field = Cat(low_byte, byte).as_signed()
        saturates = work[25:].any()
        magnitude = Mux(saturates, SATURATED, work[8:25])
        signed_magnitude = (Cat(magnitude, Const(0, 1)) ^ sign.replicate(19)).as_signed()
        value = work[:19].as_signed()
        # Then the value is clamped, one bound a step: raised to qmin (step 10) and to the
        # lower bound (11), lowered to qmax (12) and to the upper bound (13), as
        # ``max(value, max(lo, qmin))`` then ``min(., min(hi, qmax))``: one subtraction,
        # the bound taken when ``value`` is below a lower one, or not below an upper one.
        upper_step = step[2]
        qmin, qmax = output_type_range(unsigned_output)
        bound = Mux(step[0], field, Mux(upper_step, qmax, qmin))
        clamped = Mux((value - bound)[-1] ^ upper_step, bound, value)

        m.d.comb += [
            self.out.p.q.eq(Cat(results, work[:8])),
            self.out.p.acc.eq(self.inp.p.acc),
            self.out.p.tag.eq(self.inp.p.tag),
        ]

        with m.FSM() as fsm:
            # One byte adder: acc + bias in BIAS, then |x| in MULTIPLIER (the bytes of x
            # through it again, inverted with a carry in when x is negative).
            biasing = fsm.ongoing("BIAS")
            total = (Mux(biasing, acc.word_select(step[:2], 8), work[:8] ^ sign.replicate(8))
                     + Mux(biasing, byte, 0) + carry)
            # The exponent counts down with each left shift, up with each right one.
            exponent_step = exponent + Mux(fsm.ongoing("NORMALISE") & ~work[31], -1, 1)
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
                    m.d.sync += [sign.eq(total[7]), nonzero.eq(0)]
                    m.next = "MULTIPLIER"
            with m.State("MULTIPLIER"):
                # Bytes 4 to 7: the float32 multiplier's sign and exponent, while |x|
                # replaces x in ``work``.
                m.d.sync += [work.eq(Cat(work[8:], total[:8])), carry.eq(total[8]),
                             exponent_low.eq(byte[7])]
                m.d.comb += step_next.eq(step + 1)
                m.d.sync += nonzero.eq(nonzero | total[:8].any())
                with m.If(step == 7):
                    mult_exp = Cat(exponent_low, byte[:7])
                    m.d.sync += [
                        sign.eq(sign ^ byte[7]),
                        exponent.eq(mult_exp + 128),
                        guard.eq(0),
                        sticky.eq(0),
                        rounded.eq(0),
                        multiplied.eq(0),
                        carry.eq(0),
                    ]
                    m.next = "ZERO_CHECK"
            with m.State("ZERO_CHECK"):
                # y = 0 for a zero x, or a zero or subnormal multiplier (its exponent field
                # zero: ``exponent`` 128), decided from registers.
                with m.If(~nonzero | (exponent == 128)):
                    m.d.sync += work.eq(0)
                    m.d.comb += step_next.eq(14)
                    m.next = "FLAGS"
                with m.Else():
                    m.next = "NORMALISE"
            with m.State("NORMALISE"):
                # Steps 2 and 4: the value shifts left until its top bit is set, then rounds
                # to 24 bits, one bit lower (a carry out of the rounding stays in the top
                # bit); |x| then shifts left again if it did not carry.
                with m.If(~work[31]):
                    m.d.sync += [work.eq(work << 1), exponent.eq(exponent_step)]
                with m.Elif(~rounded):
                    m.d.comb += carry_in.eq(round_up)
                    m.d.sync += [work.eq(Cat(Const(0, 7), shifted_sum)),
                                 exponent.eq(exponent_step),
                                 guard.eq(0), sticky.eq(0), rounded.eq(1)]
                    with m.If(multiplied):
                        # With the exponent at 222 or less, y is at most 2^31 * 2^-32,
                        # which rounds to 0.
                        with m.If(exponent < 222):
                            m.d.sync += work.eq(0)
                            m.d.comb += step_next.eq(14)
                            m.next = "FLAGS"
                        with m.Else():
                            m.next = "SHIFT"
                with m.Else():
                    m.d.sync += [significand.eq(work[8:31]), work.eq(0), rounded.eq(0)]
                    m.d.comb += step_next.eq(4)
                    m.next = "MULTIPLY"
            with m.State("MULTIPLY"):
                # Step 3: F times the multiplier's significand, lowest bit first, the
                # product's low bits shifting out through ``guard`` into ``sticky``.
                last_bit = (step == 6) & (bit_index == 7)
                with m.If(last_bit | byte.bit_select(bit_index, 1)):
                    m.d.comb += addend.eq(Cat(significand, 1))
                m.d.sync += [work.eq(shifted), guard.eq(work[0]), sticky.eq(sticky | guard),
                             bit_index.eq(bit_index + 1)]
                with m.If(bit_index == 7):
                    m.d.comb += step_next.eq(step + 1)
                with m.If(last_bit):
                    m.d.sync += multiplied.eq(1)
                    m.next = "NORMALISE"
            with m.State("SHIFT"):
                # Step 5: right shifts until the integer part is ``work[8:]``.
                with m.If(exponent >= 246):
                    m.d.comb += step_next.eq(14)
                    m.next = "FLAGS"
                with m.Else():
                    m.d.sync += [work.eq(shifted), guard.eq(work[0]), sticky.eq(sticky | guard),
                                 exponent.eq(exponent_step)]
            with m.State("FLAGS"):
                # Byte 14: bit 0 is the output's signedness.
                m.d.sync += unsigned_output.eq(byte[0])
                m.d.comb += step_next.eq(8)
                m.next = "BOUNDS"
            with m.State("BOUNDS"):
                # Bytes 8 to 13: the zero point, the lower and the upper bound, 16 bits
                # each, low byte first.
                m.d.sync += low_byte.eq(byte)
                m.d.comb += step_next.eq(step + 1)
                with m.Switch(step):
                    with m.Case(9):
                        m.d.sync += work[:19].eq(field + signed_magnitude + (round_up ^ sign))
                    with m.Case(10, 11, 12, 13):
                        m.d.sync += work[:19].eq(clamped)
                with m.If(step == 13):
                    with m.If(lane == self.lanes - 1):
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += [results.eq(Cat(results[8:], clamped[:8])), lane.eq(lane + 1)]
                        m.d.comb += step_next.eq(0)
                        m.next = "BIAS"
            with m.State("DONE"):
                m.d.comb += [self.out.valid.eq(1), self.inp.ready.eq(self.out.ready)]
                with m.If(self.out.ready):
                    m.d.sync += lane.eq(0)
                    m.next = "START"
        return m
