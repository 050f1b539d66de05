"""Serial output stage: the output stage's arithmetic, one bit per cycle, for small FPGAs.

:class:`SerialOutputStage` has the interface of :class:`hw.output_stage.OutputStage` and
computes the same outputs bit for bit (onnxruntime's requantization, see that module),
but with one narrow datapath that each lane's value goes through in turn, shifting one
bit per cycle instead of through barrel shifters, a leading-one detector and a 24 × 24
multiplier, and without FIFOs: on an iCE40, 765 LUT4 and 143 flip-flops and no DSP block,
where one pipelined lane with 5 registers takes 1,228 LUT4, 428 flip-flops, two FIFOs and
4 DSP blocks.

For one lane:

1. ``x = acc + bias`` (int32 wrap-around) and its magnitude, in one cycle; a zero ``x``
   or a zero or subnormal multiplier gives ``y = 0`` at once;
2. the magnitude shifts left until its top bit is set (one cycle per leading zero), then
   rounds to a 24-bit significand ``F``, to nearest even (the int32 → float32 conversion);
3. ``F`` times the multiplier's significand, by shift and add (24 cycles,
   ``hw.arith.serial_product``);
4. the 48-bit product rounds to 24 significant bits, to nearest even (the float32
   multiply), in one cycle; a value of 2^23 or more saturates, one below 2^-2 gives 0;
5. the significand shifts right, one bit per cycle, to the binary point, keeping a guard
   and a sticky bit;
6. one cycle rounds half to even, applies the sign and zero point and clamps.

A lane takes 4 to :attr:`lane_cycles` cycles, about 45 on random data.

Members
-------
inp : ``In(stream.Signature(OutputStageInput))``
    As :class:`hw.output_stage.OutputStage`. The beat must hold still until accepted;
    it is read while its lanes are computed.
out : ``Out(stream.Signature(OutputStageOutput))``
    As :class:`hw.output_stage.OutputStage`; ``acc`` and ``tag`` are the held input's.

Timing
------
``out.valid`` rises once every lane of the ``inp`` beat is computed: at most
:attr:`latency` cycles after the beat's ``valid``. ``inp.ready`` is ``out.ready`` in the
cycle ``out.valid`` is high, so the beat is accepted as its result is delivered;
``inp.ready`` is therefore not high in advance (:attr:`always_ready` is false).
"""

from amaranth import *
from amaranth.lib import wiring

from .arith import serial_product
from .output_stage import (SATURATED, clamp_bounds, clamped, output_stage_signature,
                           round_half_even)


__all__ = ["SerialOutputStage"]


class SerialOutputStage(wiring.Component):
    #: Cycles of one lane at most: the load, 31 left shifts and the rounding, the product
    #: and its rounding, 25 right shifts and the check that ends them, the final cycle.
    lane_cycles = 1 + 32 + 25 + 26 + 1
    #: The output stage does not take a beat in every cycle.
    always_ready = False

    @classmethod
    def latency_of(cls, lanes):
        """:attr:`latency` of a stage of ``lanes`` lanes, without building one."""
        return lanes * cls.lane_cycles + 1

    def __init__(self, lanes=8, tag_shape=unsigned(1)):
        self.lanes = lanes
        self.tag_shape = tag_shape
        self.latency = self.latency_of(lanes)
        super().__init__(output_stage_signature(lanes, tag_shape))

    def elaborate(self, platform):
        m = Module()
        lane = Signal(range(self.lanes))
        params = Array(self.inp.p.params)[lane]
        acc = Array(self.inp.p.acc)[lane]
        results = Signal(8 * self.lanes)

        mult_exp = params.multiplier[23:31]
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

        significand = Signal(24)
        start_product = Signal()
        product, product_done = serial_product(
            m, significand, Cat(params.multiplier[:23], 1), start_product, "significand")

        # Step 2's rounding to 24 bits, read when the top bit of ``work`` is set.
        converted = round_half_even(work[8:], work[7], work[:7].any())
        # Step 4: the product normalised to bit 47, then rounded to 24 bits.
        narrow = ~product[47]
        normalised = Mux(narrow, product << 1, product)[:48]
        rounded = round_half_even(normalised[24:], normalised[23], normalised[:23].any())
        product_exponent = exponent - narrow + rounded[24]
        # Step 6.
        # ``work`` is below 2^24 here.
        magnitude = round_half_even(work[:24], guard, sticky)
        capped = Mux(magnitude >= SATURATED, SATURATED, magnitude)[:18]
        signed_capped = Cat(capped, Const(0, 1)).as_signed()
        value = Mux(sign, -signed_capped, signed_capped) + params.zero_point
        q = clamped(value, *clamp_bounds(params.unsigned_output, params.clamp_lo,
                                         params.clamp_hi))

        m.d.comb += [
            self.out.p.q.eq(results),
            self.out.p.acc.eq(self.inp.p.acc),
            self.out.p.tag.eq(self.inp.p.tag),
        ]

        with m.FSM():
            with m.State("LOAD"):
                x = (acc + params.bias)[:32].as_signed()
                m.d.sync += [
                    work.eq(Mux(x < 0, -x, x)),
                    sign.eq((x < 0) ^ params.multiplier[31]),
                    exponent.eq(Cat(mult_exp, Const(0, 1)).as_signed() - 118),
                    guard.eq(0),
                    sticky.eq(0),
                ]
                with m.If(self.inp.valid):
                    with m.If((x == 0) | (mult_exp == 0)):
                        m.d.sync += work.eq(0)
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "NORMALISE"
            with m.State("NORMALISE"):
                with m.If(work[31]):
                    m.d.sync += [significand.eq(Mux(converted[24], 1 << 23, converted[:24])),
                                 exponent.eq(exponent + converted[24])]
                    m.d.comb += start_product.eq(1)
                    m.next = "MULTIPLY"
                with m.Else():
                    m.d.sync += [work.eq(work << 1), exponent.eq(exponent - 1)]
            with m.State("MULTIPLY"):
                with m.If(product_done):
                    m.d.sync += [work.eq(Mux(rounded[24], 1 << 23, rounded[:24])),
                                 exponent.eq(product_exponent)]
                    with m.If(product_exponent >= 0):
                        m.d.sync += work.eq(SATURATED)
                        m.next = "FINISH"
                    with m.Elif(product_exponent < -25):
                        m.d.sync += work.eq(0)
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "SHIFT"
            with m.State("SHIFT"):
                with m.If(exponent == 0):
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += [work.eq(work >> 1), guard.eq(work[0]), sticky.eq(sticky | guard),
                                 exponent.eq(exponent + 1)]
            with m.State("FINISH"):
                m.d.sync += results.word_select(lane, 8).eq(q)
                with m.If(lane == self.lanes - 1):
                    m.next = "DONE"
                with m.Else():
                    m.d.sync += lane.eq(lane + 1)
                    m.next = "LOAD"
            with m.State("DONE"):
                m.d.comb += [self.out.valid.eq(1), self.inp.ready.eq(self.out.ready)]
                with m.If(self.out.ready):
                    m.d.sync += lane.eq(0)
                    m.next = "LOAD"
        return m
