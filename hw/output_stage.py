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
:attr:`latency` (7) cycles from ``inp`` to ``out``. The stage is a pipeline that accepts
a beat every cycle; when ``out`` is stalled, the whole pipeline holds.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["channel_params", "OutputStage"]


#: Per-output-channel parameters of the output stage.
channel_params = data.StructLayout({
    "bias":            signed(32),
    "multiplier":      unsigned(32),   # IEEE 754 float32 bits
    "zero_point":      signed(16),
    "clamp_lo":        signed(16),
    "clamp_hi":        signed(16),
    "unsigned_output": unsigned(1),
})


def _as_signed(value):
    """``value`` (unsigned) as a signed value of one more bit."""
    return Cat(value, Const(0, 1)).as_signed()


def _round_shift_right(value, amount, width):
    """``value >> amount`` rounded half to even; ``amount`` >= 1 (a Value)."""
    truncated = (value >> amount)[:width]
    mask = ((Const(1, width + 1) << amount) - 1)[:width]
    half = (Const(1, width + 1) << (amount - 1)[:len(amount)])[:width]
    remainder = value & mask
    round_up = (remainder > half) | ((remainder == half) & truncated[0])
    return truncated + round_up


class OutputStage(wiring.Component):
    latency = 7

    def __init__(self, lanes=8, tag_shape=unsigned(1)):
        self.lanes = lanes
        self.tag_shape = tag_shape
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout({
                "acc":    data.ArrayLayout(signed(32), lanes),
                "params": data.ArrayLayout(channel_params, lanes),
                "tag":    tag_shape,
            }))),
            "out": Out(stream.Signature(data.StructLayout({
                "q":   data.ArrayLayout(unsigned(8), lanes),
                "acc": data.ArrayLayout(signed(32), lanes),
                "tag": tag_shape,
            }))),
        })

    def elaborate(self, platform):
        m = Module()

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.out.valid | self.out.ready),
            self.inp.ready.eq(advance),
        ]

        def stage(value, name):
            """One pipeline register, held while the output is stalled."""
            reg = Signal.like(value, name=name) if isinstance(value, Signal) \
                else Signal(Value.cast(value).shape(), name=name)
            with m.If(advance):
                m.d.sync += reg.eq(value)
            return reg

        # Sideband through all stages.
        valid, tag, acc = self.inp.valid, self.inp.p.tag, self.inp.p.acc
        for i in range(self.latency):
            valid = stage(valid, f"valid_s{i + 1}")
            tag = stage(tag, f"tag_s{i + 1}")
            acc = stage(acc, f"acc_s{i + 1}")
        m.d.comb += [self.out.valid.eq(valid), self.out.p.tag.eq(tag), self.out.p.acc.eq(acc)]

        for lane in range(self.lanes):
            m.d.comb += self.out.p.q[lane].eq(
                self._lane(m, stage, self.inp.p.acc[lane], self.inp.p.params[lane], lane))
        return m

    def _lane(self, m, stage, acc, params, lane):
        def s(value, name):
            return stage(value, f"l{lane}_{name}")

        # Stage 1: bias add (int32 wrap-around) and multiplier decode.
        x = s((acc + params.bias)[:32].as_signed(), "x")
        mult_exp = params.multiplier[23:31]
        mult_sig = s(Mux(mult_exp == 0, 0, Cat(params.multiplier[:23], 1)), "mult_sig")
        mult_exp = s(mult_exp, "mult_exp")
        sign = s(params.multiplier[31], "mult_sign")
        carried = [params.zero_point, params.clamp_lo, params.clamp_hi, params.unsigned_output]
        carried = [s(v, f"p{i}_1") for i, v in enumerate(carried)]

        # Stage 2: magnitude and bit length of x.
        negative = x < 0
        magnitude_c = Mux(negative, -x, x)[:32]
        length = Signal(range(33), name=f"l{lane}_length_c")
        for bit in range(32):
            with m.If(magnitude_c[bit]):
                m.d.comb += length.eq(bit + 1)
        magnitude = s(magnitude_c, "magnitude")
        length = s(length, "length")
        sign = s(sign ^ negative, "sign2")
        mult_sig, mult_exp = s(mult_sig, "mult_sig2"), s(mult_exp, "mult_exp2")
        carried = [s(v, f"p{i}_2") for i, v in enumerate(carried)]

        # Stage 3: int32 -> float32: x = sig * 2^exp with a 24-bit significand, rounded
        # to nearest even when the magnitude needs more than 24 bits.
        small = length <= 24
        up_shift = Mux(small, 24 - length, 0)[:5]
        down_shift = Mux(small, 1, length - 24)[:4]
        sig_small = (magnitude << up_shift)[:24]
        sig_rounded = _round_shift_right(magnitude, down_shift, 25)[:25]
        carry = sig_rounded[24]
        sig = Mux(small, sig_small, Mux(carry, 1 << 23, sig_rounded[:24]))
        exp = Mux(small, _as_signed(length) - 24, down_shift + carry)
        x_sig = s(sig, "x_sig")
        x_exp = s(exp.as_signed()[:7].as_signed(), "x_exp")
        sign, mult_sig, mult_exp = s(sign, "sign3"), s(mult_sig, "mult_sig3"), s(mult_exp, "mult_exp3")
        carried = [s(v, f"p{i}_3") for i, v in enumerate(carried)]

        # Stage 4: exact 24 x 24 significand product.
        product = s(x_sig * mult_sig, "product")
        # value = product * 2^(x_exp + mult_exp - 127 - 23)
        exp4 = s((x_exp + _as_signed(mult_exp) - 150)[:10].as_signed(), "exp4")
        sign = s(sign, "sign4")
        carried = [s(v, f"p{i}_4") for i, v in enumerate(carried)]

        # Stage 5: round the product to 24 significant bits (the float32 multiply).
        wide = product[47]
        drop = Mux(wide, 24, 23)
        q_sig = s(_round_shift_right(product, drop, 48)[:25], "q_sig")
        q_exp = s((exp4 + drop)[:10].as_signed(), "q_exp")
        sign = s(sign, "sign5")
        carried = [s(v, f"p{i}_5") for i, v in enumerate(carried)]

        # Stage 6: to an integer, rounding half to even. |q_sig| <= 2^24, so a right
        # shift of 25 or more gives 0; left shifts beyond 8 exceed any clamp range.
        left = q_exp >= 0
        left_amount = Mux(q_exp > 8, 8, q_exp)[:4]
        right_amount = Mux(left, 1, Mux(q_exp < -25, 25, -q_exp))[:5]
        shifted_left = (q_sig << left_amount)[:34]
        shifted_right = Mux(q_exp < -24, 0, _round_shift_right(q_sig, right_amount, 25))
        integer = Mux(left, shifted_left, shifted_right)
        limit = 1 << 17
        capped = s(Mux(integer > limit, limit, integer)[:18], "capped")
        sign = s(sign, "sign6")
        carried = [s(v, f"p{i}_6") for i, v in enumerate(carried)]

        # Stage 7: sign, zero point, saturation and activation clamp.
        zero_point, clamp_lo, clamp_hi, unsigned_output = carried
        value = Mux(sign, -_as_signed(capped), _as_signed(capped)) + zero_point
        qmin = Mux(unsigned_output, 0, -128)
        qmax = Mux(unsigned_output, 255, 127)
        lo = Mux(clamp_lo > qmin, clamp_lo, qmin)
        hi = Mux(clamp_hi < qmax, clamp_hi, qmax)
        clamped_lo = Mux(value < lo, lo, value)
        clamped = Mux(clamped_lo > hi, hi, clamped_lo)
        return s(clamped[:8], "q")
