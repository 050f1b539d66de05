"""Output stage: bias, requantization, zero point, saturation and fused activation.

Each lane turns one int32 accumulator into one 8-bit output with onnxruntime's
arithmetic (MLAS ``MlasRequantizeOutput``), bit for bit::

    x = wrap_int32(acc + bias)
    y = round_half_even(float32(float32(x) * multiplier))
    q = clamp(y + zero_point, max(clamp_lo, qmin), min(clamp_hi, qmax))

where ``qmin, qmax`` is ``0, 255`` for uint8 outputs and ``-128, 127`` for int8, and
``[clamp_lo, clamp_hi]`` is the fused activation in the quantized domain (ReLU, ReLU6 or
any clip). ``verif.golden.requantize`` states the same in NumPy.

The hardware has no floating-point unit; it reproduces each float32 rounding with
integers:

1. ``x`` becomes ``F · 2^e`` with a 24-bit significand ``F``, rounded to nearest even
   when ``|x| >= 2^24`` (the int32 → float32 conversion);
2. the multiplier's significand ``M`` (with its hidden bit) multiplies ``F`` exactly:
   a 48-bit product;
3. the product rounds to 24 significant bits, to nearest even (the float32 multiply);
4. the result shifts to an integer, rounding half to even.

The multiplier is given as float32 bits and must be finite; zero and subnormal
multipliers give ``y = 0``, as in float32 arithmetic.

Members
-------
inp : ``In(stream.Signature(OutputStageInput))``
    ``acc``: ``lanes`` int32 accumulators; ``params``: one :data:`channel_params` per
    lane; ``tag``: carried unchanged.
out : ``Out(stream.Signature(OutputStageOutput))``
    ``q``: ``lanes`` 8-bit outputs (two's complement for int8); ``acc``: the unmodified
    accumulators, for integer-output operators; ``tag``.

Latency
-------
:attr:`latency` (19) cycles from an accepted ``inp`` beat to its ``out`` beat: a pipeline
of :attr:`stages` (17) registers without enables (and, but for the beats' valid and last
bits, without reset, so that a reset reaches few of its flip-flops), then a FIFO.
``inp.ready`` is high while the output FIFOs (:attr:`fifo_depth` beats) have room for one
more beat besides those in flight, so the pipeline never stalls; with ``out.ready`` high it accepts a beat every
cycle. ``inp.ready`` depends only on registers, and is high while fewer than
:attr:`capacity` beats are inside. The parameters a lane needs only at its
end (zero point, clamp bounds, output type), and the multiplier's decoded significand and
exponent, needed at the multiply, wait in delay lines, memories written every cycle (LUT
RAM on FPGAs), when they would cross :data:`DELAY_LINE_MIN` or more registers. The
significand product's operands and its four partial products are registered at the
multipliers (``hw.arith.registered_product``), and the partial products once more in the
fabric before their sum.

Smaller configurations
----------------------
``OutputStage(lanes, units=u, stages=n)`` computes with ``u`` lane circuits (a divisor of
``lanes``) instead of one per lane: a beat's lanes go through them in ``lanes / u``
groups on consecutive cycles, and ``inp.ready`` rises with the last group, so it
accepts a beat every ``lanes / u`` cycles. Its pipeline has ``n`` registers (1 to 17)
spread over the 17 steps above, with :attr:`latency` ``n + 2`` from the beat's
handshake. The results are the same bit for bit.
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arith import delay_line, registered_product
from .isa import CHANNEL_PARAM_BYTES


__all__ = ["channel_params", "channel_param_write_layout", "output_layout",
           "output_stage_signature", "SATURATED", "rounds_up", "round_half_even",
           "output_type_range", "clamp_bounds", "clamped", "OutputStage"]


#: Per-output-channel parameters of the output stage.
channel_params = data.StructLayout({
    "bias":            signed(32),
    "multiplier":      unsigned(32),   # IEEE 754 float32 bits
    "zero_point":      signed(16),
    "clamp_lo":        signed(16),
    "clamp_hi":        signed(16),
    "unsigned_output": unsigned(1),
    "add_mode":        unsigned(1),    # flags bit 1: the fields hold hw.add_stage's
})


def channel_param_write_layout(lanes, channel_depth):
    """One byte of a row of the channel-parameter table: byte ``byte`` of each of ``lanes``
    channels' :data:`hw.isa.CHANNEL_PARAM_BYTES`-byte records (``data``), in the order they
    sit in memory (``sw.simulator.CHANNEL_PARAM_DTYPE``), for table row ``index``. The
    bits of a record's first 14 bytes and its flags are those of :data:`channel_params`."""
    return data.StructLayout({
        "index": unsigned(ceil_log2(channel_depth)),
        "byte":  unsigned(ceil_log2(CHANNEL_PARAM_BYTES)),
        "data":  data.ArrayLayout(unsigned(8), lanes),
    })


def output_layout(lanes, tag_shape):
    """An output stage's result beat: ``q``, and the input's ``acc`` and ``tag``."""
    return data.StructLayout({
        "q":   data.ArrayLayout(unsigned(8), lanes),
        "acc": data.ArrayLayout(signed(32), lanes),
        "tag": tag_shape,
    })


def output_stage_signature(lanes, tag_shape):
    """The signature of an output stage of ``lanes`` lanes (see the members above)."""
    return wiring.Signature({
        "inp": In(stream.Signature(data.StructLayout({
            "acc":    data.ArrayLayout(signed(32), lanes),
            "params": data.ArrayLayout(channel_params, lanes),
            "tag":    tag_shape,
        }))),
        "out": Out(stream.Signature(output_layout(lanes, tag_shape))),
    })


#: A magnitude beyond this saturates every output type and clamp bound (16-bit zero
#: points and bounds).
SATURATED = 1 << 17


def rounds_up(kept_lsb, guard, sticky):
    """Whether a value rounds up to nearest even: ``kept_lsb``, the lowest bit kept,
    ``guard``, the first bit below it, and ``sticky``, whether any further one is set."""
    return guard & (sticky | kept_lsb)


def round_half_even(kept, guard, sticky):
    """``kept`` rounded to nearest even by the bits below it (see :func:`rounds_up`). One
    bit wider than ``kept``."""
    return (kept + rounds_up(kept[0], guard, sticky))[:len(kept) + 1]


def output_type_range(unsigned_output):
    """``(qmin, qmax)`` of the 8-bit output type: uint8's, or int8's."""
    return Mux(unsigned_output, 0, -128), Mux(unsigned_output, 255, 127)


def clamp_bounds(unsigned_output, clamp_lo, clamp_hi):
    """The output's range: the activation's clamp within the output type's."""
    qmin, qmax = output_type_range(unsigned_output)
    return Mux(clamp_lo > qmin, clamp_lo, qmin), Mux(clamp_hi < qmax, clamp_hi, qmax)


def clamped(value, lo, hi):
    """The 8-bit output: ``value`` clamped to ``[lo, hi]`` (``min(max(value, lo), hi)``),
    its three compares side by side rather than one after the other."""
    return Mux(value < lo, Mux(lo > hi, hi, lo), Mux(value > hi, hi, value))[:8]


def _as_signed(value):
    """``value`` (unsigned) as a signed value of one more bit."""
    return Cat(value, Const(0, 1)).as_signed()


#: Steps of the computation below, each registered in the default 17-stage pipeline.
LOGICAL_STAGES = 17

#: The parameters a lane uses only at its end (logical stage 16), carried alongside.
CARRIED = ("zero_point", "clamp_lo", "clamp_hi", "unsigned_output")
carried_params = data.StructLayout({name: channel_params.members[name] for name in CARRIED})

#: From this many cycles on, the carried parameters and the decoded multiplier wait in a
#: memory (LUT RAM on FPGAs) rather than in a chain of registers.
DELAY_LINE_MIN = 5


def _shift_right_parts(value, amount, width):
    """``value >> amount`` truncated to ``width`` bits, and whether rounding it half to even
    adds one; ``amount`` >= 1 (a Value). Guard and sticky bits, so no wide compare."""
    truncated = (value >> amount)[:width]
    guard = (value >> (amount - 1)[:len(amount)])[0]
    below_guard = Cat(amount > i + 1 if i + 2 < 1 << len(amount) else Const(0)
                      for i in range(len(value)))
    sticky = (value & below_guard).any()
    return truncated, guard & (sticky | truncated[0])


class OutputStage(wiring.Component):
    @staticmethod
    def latency_of(stages):
        """:attr:`latency` of a stage with ``stages`` pipeline registers, without building one."""
        return stages + 2

    #: Pipeline registers between ``inp`` and the output FIFO (the default; see ``stages``).
    stages = 17
    #: Cycles from an accepted ``inp`` beat to its ``out`` beat, output FIFO included.
    latency = latency_of(stages)
    #: Beats the output FIFOs hold: every beat in the pipeline has its place reserved.
    fifo_depth = 1 << ceil_log2(latency + 4)

    def __init__(self, lanes=8, tag_shape=unsigned(1), *, units=None, stages=17):
        if units is None:
            units = lanes
        if units < 1 or lanes % units:
            raise ValueError(f"units must divide lanes ({lanes}), not {units}")
        if not 1 <= stages <= LOGICAL_STAGES:
            raise ValueError(f"stages must be 1 to {LOGICAL_STAGES}, not {stages}")
        self.lanes = lanes
        self.units = units
        self.groups = lanes // units
        self.tag_shape = tag_shape
        if stages != type(self).stages:
            self.stages = stages
            self.latency = self.latency_of(stages)
            self.fifo_depth = 1 << ceil_log2(self.latency + 4)
        # Logical stages (1 to 17) whose results are registered: evenly spread, the
        # last one (the output register) always.
        self.registered = {round(LOGICAL_STAGES * (i + 1) / stages) for i in range(stages)}
        super().__init__(output_stage_signature(lanes, tag_shape))

    @property
    def always_ready(self):
        """``inp.ready`` is high whenever fewer than :attr:`capacity` beats are inside:
        with one lane circuit per lane."""
        return self.groups == 1

    @property
    def capacity(self):
        """Beats ``inp`` takes beyond those ``out`` has delivered: with one lane circuit per
        lane, ``inp.ready`` is high while fewer are inside, so a producer counting them
        need not wait for it."""
        return self.fifo_depth

    def elaborate(self, platform):
        m = Module()
        sideband = data.StructLayout({
            "acc": data.ArrayLayout(signed(32), self.lanes),
            "tag": self.tag_shape,
        })
        # The accumulators and tag wait in their FIFO while the lanes compute; a beat is
        # accepted only when that FIFO has room, which also reserves its place in the
        # FIFO of results (never fuller than the first), so the pipeline never stalls.
        m.submodules.sideband_fifo = sideband_fifo = fifo.SyncFIFOBuffered(
            width=Shape.cast(sideband).width, depth=self.fifo_depth)
        m.submodules.result_fifo = result_fifo = fifo.SyncFIFOBuffered(
            width=8 * self.lanes, depth=self.fifo_depth)
        accept = Signal()
        if self.groups == 1:
            enter = accept
            group_last = C(1, 1)
            lanes_in = [(self.inp.p.acc[lane], self.inp.p.params[lane])
                        for lane in range(self.lanes)]
            m.d.comb += self.inp.ready.eq(sideband_fifo.w_rdy)
        else:
            # One group of ``units`` lanes enters per cycle; the beat is accepted with its
            # last group. The sideband FIFO's room, checked at the first group, lasts
            # until then: nothing else writes it.
            group = Signal(range(self.groups))
            enter = Signal()
            group_last = group == self.groups - 1
            m.d.comb += [enter.eq(self.inp.valid & sideband_fifo.w_rdy),
                         self.inp.ready.eq(sideband_fifo.w_rdy & group_last)]
            with m.If(enter):
                m.d.sync += group.eq(Mux(group_last, 0, group + 1))
            lanes_in = []
            for unit in range(self.units):
                acc = Array(self.inp.p.acc[g * self.units + unit] for g in range(self.groups))
                params = Array(self.inp.p.params[g * self.units + unit]
                               for g in range(self.groups))
                lanes_in.append((acc[group], params[group]))
        m.d.comb += [
            accept.eq(self.inp.valid & self.inp.ready),
            sideband_fifo.w_en.eq(accept),
            sideband_fifo.w_data.eq(Cat(self.inp.p.acc, self.inp.p.tag)),
        ]

        def stage(value, name, logical, *, reset_less=True):
            """The register of logical stage ``logical``, or ``value`` itself when that
            stage is not registered. Only the beats' valid and last bits are reset."""
            if logical not in self.registered:
                return value
            reg = Signal(Value.cast(value).shape(), name=name, reset_less=reset_less)
            m.d.sync += reg.eq(value)
            return reg

        valid, last = enter, group_last
        for i in range(self.stages):
            valid = stage(valid, f"valid_s{i + 1}", LOGICAL_STAGES, reset_less=False)
            if self.groups > 1:
                last = stage(last, f"last_s{i + 1}", LOGICAL_STAGES, reset_less=False)
        q = [self._lane(m, platform, stage, acc, params, unit)
             for unit, (acc, params) in enumerate(lanes_in)]
        if self.groups == 1:
            m.d.comb += [result_fifo.w_en.eq(valid), result_fifo.w_data.eq(Cat(*q))]
        else:
            # The earlier groups' outputs wait here for the last one.
            earlier = Signal(8 * (self.lanes - self.units), reset_less=True)
            with m.If(valid & ~last):
                m.d.sync += earlier.eq(Cat(earlier[8 * self.units:], *q))
            m.d.comb += [result_fifo.w_en.eq(valid & last),
                         result_fifo.w_data.eq(Cat(earlier, *q))]

        head = Signal(sideband)
        m.d.comb += [
            head.eq(sideband_fifo.r_data),
            self.out.valid.eq(result_fifo.r_rdy),
            self.out.p.q.eq(result_fifo.r_data),
            self.out.p.acc.eq(head.acc),
            self.out.p.tag.eq(head.tag),
            result_fifo.r_en.eq(self.out.ready),
            sideband_fifo.r_en.eq(self.out.valid & self.out.ready),
        ]
        return m

    def _lane(self, m, platform, stage, acc, params, lane):
        step = [1]                  # the logical stage being built

        def s(value, name):
            return stage(value, f"l{lane}_{name}", step[0])

        def at(logical):
            step[0] = logical

        def ready_at(value, logical, name):
            """``value``, entering stage 1, as the logical stages before ``logical`` would
            have registered it: in a delay line of as many cycles when they are
            :data:`DELAY_LINE_MIN` or more, else in their registers."""
            delay = len(self.registered & set(range(1, logical)))
            if delay >= DELAY_LINE_MIN:
                return delay_line(m, value, delay, f"l{lane}_{name}_line")
            for n in range(1, logical):
                value = stage(value, f"l{lane}_{name}_{n}", n)
            return value

        # Stage 1: bias add (int32 wrap-around) and multiplier decode.
        x = s((acc + params.bias)[:32].as_signed(), "x")
        mult_exp = params.multiplier[23:31]
        mult_sig = Mux(mult_exp == 0, 0, Cat(params.multiplier[:23], 1))
        # The multiplier's significand and exponent are needed at stage 7.
        multiplier = ready_at(Cat(mult_sig, mult_exp), 7, "multiplier")
        mult_sig, mult_exp = multiplier[:24], multiplier[24:]
        sign = s(params.multiplier[31], "mult_sign")
        # The carried parameters are needed at stage 16.
        packed = Signal(carried_params, name=f"l{lane}_carried")
        m.d.comb += [packed[n].eq(params[n]) for n in CARRIED]
        carried = data.View(carried_params, ready_at(packed.as_value(), 16, "carried"))

        def forward(n):
            """The sign, one stage on."""
            nonlocal sign
            sign = s(sign, f"sign_{n}")

        at(2)
        # Stage 2: magnitude of x; stage 3: its bit length.
        negative = x < 0
        magnitude = s(Mux(negative, -x, x)[:32], "magnitude")
        sign = s(sign ^ negative, "sign_2")
        length_c = Signal(range(33), name=f"l{lane}_length_c")
        for bit in range(32):
            with m.If(magnitude[bit]):
                m.d.comb += length_c.eq(bit + 1)
        at(3)
        length = s(length_c, "length")
        magnitude = s(magnitude, "magnitude_3")
        forward(3)

        at(4)
        # Stages 4-6: int32 -> float32: x = sig * 2^exp with a 24-bit significand, rounded
        # to nearest even when the magnitude needs more than 24 bits. Stage 4: the shifts.
        small = s(length <= 24, "small")
        up_shift = s(Mux(length <= 24, 24 - length, 0)[:5], "up_shift")
        down_shift = s(Mux(length <= 24, 1, length - 24)[:4], "down_shift")
        length = s(length, "length_4")
        magnitude = s(magnitude, "magnitude_4")
        forward(4)
        at(5)
        # Stage 5: shifted significands and the rounding bit.
        sig_small = s((magnitude << up_shift)[:24], "sig_small")
        truncated, round_up = _shift_right_parts(magnitude, down_shift, 25)
        truncated, round_up = s(truncated, "truncated_5"), s(round_up, "round_up_5")
        small, down_shift, length = s(small, "small_5"), s(down_shift, "down_shift_5"), \
            s(length, "length_5")
        forward(5)
        at(6)
        # Stage 6: the rounded significand and the exponent.
        sig_rounded = (truncated + round_up)[:25]
        carry_out = sig_rounded[24]
        sig = Mux(small, sig_small, Mux(carry_out, 1 << 23, sig_rounded[:24]))
        exp = Mux(small, _as_signed(length) - 24, down_shift + carry_out)
        x_sig = s(sig, "x_sig")
        x_exp = s(exp.as_signed()[:7].as_signed(), "x_exp")
        forward(6)

        at(7)
        # Stages 7-10: exact 24 x 24 significand product, as four products of the 18-bit
        # multipliers and their sum. With stages 7 and 8 registered, each product is
        # registered with its operands (``hw.arith.registered_product``: an ECP5 multiplier
        # with its input registers at stage 7, loaded from stage 6's registers, and its
        # output registers at stage 8); stage 9 registers the products again, wherever
        # placement puts that register between the multiplier and the sum (stage 10), so
        # that no path runs from a multiplier through logic. Otherwise one product, which
        # synthesis splits for the device's multipliers, at stage 7.
        multipliers = {7, 8} <= self.registered
        if multipliers:
            x_parts = [x_sig[:18], x_sig[18:]]
            m_parts = [mult_sig[:18], mult_sig[18:24]]
            parts = {
                f"{x_name}{m_name}": registered_product(
                    m, platform, (s(x_part, f"x_{x_name}_7"), x_part),
                    (s(m_part, f"m_{m_name}_7"), m_part),
                    unsigned(len(x_part) + len(m_part)), f"l{lane}_p_{x_name}{m_name}")
                for x_name, x_part in zip("lh", x_parts)
                for m_name, m_part in zip("lh", m_parts)}
        else:
            whole = s(x_sig * mult_sig, "whole_7")
        # value = product * 2^(x_exp + mult_exp - 127 - 23)
        exp4 = s((x_exp + _as_signed(mult_exp) - 150)[:10].as_signed(), "exp_7")
        forward(7)
        at(8)
        if not multipliers:
            whole = s(whole, "whole_8")
        exp4 = s(exp4, "exp_8")
        forward(8)
        at(9)
        if multipliers:
            parts = {name: s(part, f"p_{name}_9") for name, part in parts.items()}
        else:
            whole = s(whole, "whole_9")
        exp4 = s(exp4, "exp_9")
        forward(9)
        at(10)
        if multipliers:
            # ``p_ll`` fills bits 0-35 and ``p_hh << 36`` starts above it: two carry chains.
            assert len(parts["ll"]) == 36
            full = Cat(parts["ll"], parts["hh"]) + ((parts["lh"] + parts["hl"]) << 18)
        else:
            full = whole
        product = s(full[:48], "product")
        exp4 = s(exp4, "exp_10")
        forward(10)

        at(11)
        # Stage 11: round the product to 24 significant bits (the float32 multiply).
        wide = product[47]
        truncated = Mux(wide, product[24:48], product[23:48])
        guard = Mux(wide, product[23], product[22])
        sticky = Mux(wide, product[:23].any(), product[:22].any())
        q_sig = s(round_half_even(truncated, guard, sticky), "q_sig")
        q_exp = s((exp4 + Mux(wide, 24, 23))[:10].as_signed(), "q_exp")
        forward(11)

        at(12)
        # Stages 12-14: to an integer, rounding half to even. |q_sig| <= 2^24, so a right
        # shift of 25 or more gives 0; left shifts beyond 8 exceed any clamp range.
        # Stage 12: the shifts.
        left = s(q_exp >= 0, "left")
        left_amount = s(Mux(q_exp > 8, 8, q_exp)[:4], "left_amount")
        right_amount = s(Mux(q_exp >= 0, 1, Mux(q_exp < -25, 25, -q_exp))[:5], "right_amount")
        vanishes = s(q_exp < -24, "vanishes")
        q_sig = s(q_sig, "q_sig_12")
        forward(12)
        at(13)
        # Stage 13: both shifts and the rounding bit.
        shifted_left = s((q_sig << left_amount)[:34], "shifted_left")
        truncated, round_up = _shift_right_parts(q_sig, right_amount, 25)
        truncated, round_up = s(truncated, "truncated_13"), s(round_up, "round_up_13")
        left, vanishes = s(left, "left_13"), s(vanishes, "vanishes_13")
        forward(13)
        at(14)
        # Stage 14: the integer; stage 15: capped.
        shifted_right = Mux(vanishes, 0, truncated + round_up)
        integer = s(Mux(left, shifted_left, shifted_right), "integer")
        forward(14)
        at(15)
        capped = s(Mux(integer > SATURATED, SATURATED, integer)[:18], "capped")
        forward(15)

        at(16)
        # Stage 16: sign, zero point and the clamp bounds; stage 17: saturation and
        # activation clamp.
        value = s(Mux(sign, -_as_signed(capped), _as_signed(capped)) + carried.zero_point,
                  "value")
        lo, hi = clamp_bounds(carried.unsigned_output, carried.clamp_lo, carried.clamp_hi)
        lo, hi = s(lo, "lo"), s(hi, "hi")
        at(17)
        return s(clamped(value, lo, hi), "q")
