"""Add stage: the output stage's add mode, onnxruntime's QLinearAdd in integers.

An element-wise add ``x + y`` of two 8-bit tensors runs through the array as MATMULs with
diagonal weights: ``x`` twice with ``-128 · I``, then ``y`` with ``I``, so that each
accumulator holds ``-256 · x' + y'``, where ``x'`` and ``y'`` are the int8 values the
array saw (uint8 enters as ``v - 128``). A channel record with flags bit 1 set holds,
instead of the requantization's fields (16 little-endian bytes, see ``hw.isa.Config``)::

    bytes 0-3   fixed    float32   zero_out - fma(ratio_x, zero_x, ratio_y * zero_y)
    bytes 4-7   ratio_x  float32   scale_x / scale_out
    bytes 8-11  ratio_y  float32   scale_y / scale_out
    byte 12     clamp_lo           in the output type
    byte 13     clamp_hi           in the output type
    bytes 14-15 flags              bit 0: unsigned (operands and output), bit 1: add mode

and the lane computes, as onnxruntime's AVX2 kernel does in float32 with one rounding per
fused multiply-add (``verif.golden.add_output``)::

    x, y = x' + 128 · unsigned, y' + 128 · unsigned
    t = fma(y, ratio_y, fixed)
    v = fma(x, ratio_x, t)
    q = clamp(round_half_even(v), clamp_lo, clamp_hi)

:class:`AddStage` sits in front of the output stage, for the beats of add-mode rows (the
matrix unit sends the others straight on). It computes ``v`` exactly in
integers: ``v = V · 2^(k + m - 150)`` with an integer ``|V| <= 2^24``, and hands the
output stage a requantization whose result is ``q``: accumulator ``V``, bias 0,
multiplier ``2^(k + m - 150)`` (exact: a power of two), zero point 0 and the clamp bytes
as bounds. Lanes of an add-mode beat whose own record has no add mode pass unchanged.

The arithmetic: the three float32 fields are ``±S · 2^(E - 150)`` with 24-bit
significands ``S``. With ``m`` the least exponent ``E`` of the non-zero fields, each term
is an integer in units of ``2^(m - 150)``: ``y · S_y << (E_y - m)``, ``S_c << (E_c - m)``
and ``x · S_x << (E_x - m)``, in a :data:`FRAME_BITS`-bit frame. A sum's float32 rounding
keeps its 24 leading bits, to nearest even, by adding ``2^(k-1) - 1`` plus bit ``k`` and
clearing the ``k`` bits below, where ``k`` is its bit length less 24; the result is again
an integer of the frame. :func:`add_mode_unsupported` states the parameters for which
this is exact (the compiler runs other adds on the host).

An add beat arrives at most once every three array passes (``x`` twice, then ``y``), so
the stage computes with ``circuits`` lane circuits, each taking one lane a cycle: a beat
takes :attr:`steps` (``lanes / circuits``) cycles, circuit ``c`` computing lanes
``s · circuits + c`` in step ``s``. Beats wait in a FIFO of ``depth`` accumulator rows
(LUT RAM); the records are held once, in a register loaded with every beat.

Members
-------
inp : ``In(stream.Signature(layout))``
    ``acc``: ``lanes`` int32 accumulators; ``params``: one
    :data:`hw.output_stage.channel_params` per lane; ``tag``. Every beat of the matrix
    unit: the stage takes those with a record in the add mode, and drops the others (the
    output stage takes them straight). ``ready`` is always high: its producer sends at
    most ``depth`` beats that have not left ``out`` (the matrix unit's credits), and every
    beat in the stage has the same ``params`` (an emitting MATMUL's beats share one
    channel row, and the next waits for them).
out : ``Out(stream.Signature(layout))``
    The same layout, for the output stage. Nothing stops it, and ``ready`` is not looked
    at: its consumer must take every beat (the output stage).

Latency
-------
:attr:`latency` cycles from a beat into an idle stage to its ``out`` beat; one beat every
:attr:`steps` cycles. A lane circuit is a pipeline of :attr:`circuit_latency` registers.
"""

import numpy as np

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .arith import delay_line
from .output_stage import channel_params


__all__ = ["FRAME_BITS", "MAX_PRODUCT_SHIFT", "MAX_FIXED_SHIFT", "add_mode_unsupported",
           "add_stage_layout", "AddStage"]


#: Bits of the signed integer sums (``|sum| < 2^49``).
FRAME_BITS = 51
#: Greatest ``E_x - m`` and ``E_y - m``: ``x · S_x < 2^32`` moves up at most this far.
MAX_PRODUCT_SHIFT = 15
#: Greatest ``E_c - m``: ``S_c < 2^24`` moves up at most this far.
MAX_FIXED_SHIFT = 23
#: Significand bits of a float32.
SIGNIFICAND_BITS = 24


def _fields(value):
    bits = int(np.asarray(value, np.float32).view(np.uint32))
    return (bits >> 23) & 0xFF, bits & 0x7F_FFFF


def add_mode_unsupported(fixed, ratio_x, ratio_y):
    """Why the add mode cannot compute an add with these float32 parameters exactly, as a
    phrase, or ``None`` when it can: ``ratio_x`` and ``ratio_y`` normal, ``fixed`` zero or
    normal, their exponents within :data:`MAX_PRODUCT_SHIFT` / :data:`MAX_FIXED_SHIFT` of
    the least one, and every result within int32 (beyond, onnxruntime's conversion gives
    the type's minimum)."""
    fields = {"ratio_x": _fields(ratio_x), "ratio_y": _fields(ratio_y), "fixed": _fields(fixed)}
    for name, (exponent, fraction) in fields.items():
        if exponent == 0xFF:
            return f"{name} is not finite"
        if exponent == 0 and (fraction or name != "fixed"):
            return f"{name} is {'zero' if not fraction else 'subnormal'}"
    least = min(exponent for exponent, fraction in fields.values() if exponent)
    for name, limit in (("ratio_x", MAX_PRODUCT_SHIFT), ("ratio_y", MAX_PRODUCT_SHIFT),
                        ("fixed", MAX_FIXED_SHIFT)):
        exponent = fields[name][0]
        if exponent and exponent - least > limit:
            return f"{name} is more than 2^{limit} times the least of ratio_x, ratio_y and fixed"
    if not 24 <= least <= 251:
        return "the least of ratio_x, ratio_y and fixed is out of range"
    bound = 255 * (abs(float(ratio_x)) + abs(float(ratio_y))) + abs(float(fixed))
    if bound >= 2.0**30:
        return "results may exceed int32"
    return None


def add_stage_layout(lanes, tag_shape):
    """The beat :class:`AddStage` takes and gives (the output stage's input)."""
    return data.StructLayout({
        "acc":    data.ArrayLayout(signed(32), lanes),
        "params": data.ArrayLayout(channel_params, lanes),
        "tag":    tag_shape,
    })


class AddStage(wiring.Component):
    #: Registers of a lane circuit.
    circuit_latency = 14

    def __init__(self, lanes=8, circuits=2, depth=32, tag_shape=unsigned(1)):
        if lanes % circuits:
            raise ValueError(f"AddStage: circuits ({circuits}) must divide lanes ({lanes})")
        self.lanes = lanes
        self.circuits = circuits
        self.depth = depth
        self.tag_shape = tag_shape
        layout = add_stage_layout(lanes, tag_shape)
        super().__init__({
            "inp": In(stream.Signature(layout)),
            "out": Out(stream.Signature(layout)),
        })

    @classmethod
    def timing(cls, lanes, circuits):
        """(:attr:`steps`, :attr:`latency`) of a stage of ``lanes`` lanes and ``circuits``
        circuits, without building one."""
        steps = lanes // circuits
        # The input register (1), the FIFO (2), the lane selection (1), the circuit and
        # the beat's other steps.
        return steps, 4 + cls.circuit_latency + steps - 1

    @property
    def steps(self):
        """Cycles per beat: lanes per circuit."""
        return self.timing(self.lanes, self.circuits)[0]

    @property
    def latency(self):
        """Cycles from a beat into the idle stage to its ``out`` beat."""
        return self.timing(self.lanes, self.circuits)[1]

    def elaborate(self, platform):
        m = Module()
        lanes, circuits, steps = self.lanes, self.circuits, self.steps
        queued = data.StructLayout({"acc": data.ArrayLayout(signed(32), lanes),
                                    "tag": self.tag_shape})
        m.submodules.beats = beats = SyncFIFOBuffered(width=queued.size, depth=self.depth)
        params = Signal(data.ArrayLayout(channel_params, lanes))
        # Every beat is registered, and queued if a record has the add mode: the records
        # (a block RAM's output in the matrix unit) reach no enable before a register.
        arrived, arrived_valid = Signal(queued), Signal()
        m.d.comb += self.inp.ready.eq(1)
        m.d.sync += [arrived_valid.eq(self.inp.valid), arrived.acc.eq(self.inp.p.acc),
                     arrived.tag.eq(self.inp.p.tag)]
        with m.If(self.inp.valid):
            m.d.sync += params.eq(self.inp.p.params)
        adding = Cat(params[lane].add_mode for lane in range(lanes)).any()
        m.d.comb += [beats.w_en.eq(arrived_valid & adding), beats.w_data.eq(arrived)]

        # Step ``step`` of the FIFO's head beat goes to the circuits.
        head = Signal(queued)
        m.d.comb += head.eq(beats.r_data)
        step = Signal(range(steps))
        last = step == steps - 1
        m.d.comb += beats.r_en.eq(last)
        with m.If(beats.r_rdy):
            m.d.sync += step.eq(Mux(last, 0, step + 1))
        context = data.StructLayout({"step": range(steps), "tag": self.tag_shape})
        issued = Signal(context)
        m.d.sync += [issued.step.eq(step), issued.tag.eq(head.tag)]
        # The context at the circuits' outputs: the valid bit through registers (reset),
        # the rest through a delay line.
        done_valid = beats.r_rdy
        for n in range(self.circuit_latency + 1):
            stage_valid = Signal(name=f"valid_s{n}")
            m.d.sync += stage_valid.eq(done_valid)
            done_valid = stage_valid
        done = Signal(context)
        m.d.comb += done.eq(delay_line(m, issued.as_value(), self.circuit_latency, "context_line"))

        results = []
        for c in range(circuits):
            lane_of = [s * circuits + c for s in range(steps)]
            acc, record = Signal(signed(32), name=f"c{c}_acc"), Signal(channel_params, name=f"c{c}_params")
            m.d.sync += [acc.eq(Array(head.acc[lane] for lane in lane_of)[step]),
                         record.eq(Array(params[lane] for lane in lane_of)[step])]
            value, exponent = self._lane(m, acc, record, c)
            raw = delay_line(m, Cat(acc, record.add_mode), self.circuit_latency, f"c{c}_raw_line")
            result = Signal(signed(32), name=f"c{c}_result")
            m.d.comb += result.eq(Mux(raw[32], value, raw[:32]))
            results.append((result, exponent))

        # The results of the beat's earlier steps wait; its last step's go straight out.
        held = [(Signal(signed(32), name=f"held{lane}_acc"), Signal(8, name=f"held{lane}_exponent"))
                for lane in range(lanes - circuits)]
        for s in range(steps - 1):
            with m.If(done_valid & (done.step == s)):
                for c, (result, exponent) in enumerate(results):
                    acc, held_exponent = held[s * circuits + c]
                    m.d.sync += [acc.eq(result), held_exponent.eq(exponent)]
        lane_results = held + results
        m.d.comb += [self.out.valid.eq(done_valid & (done.step == steps - 1)),
                     self.out.p.tag.eq(done.tag)]
        for lane in range(lanes):
            record, out = params[lane], self.out.p.params[lane]
            value, exponent = lane_results[lane]
            m.d.comb += self.out.p.acc[lane].eq(value)
            lo, hi = record.clamp_hi[:8], record.clamp_hi[8:]
            with m.If(record.add_mode):
                m.d.comb += [
                    out.multiplier.eq(Cat(Const(0, 23), exponent, Const(0, 1))),
                    out.clamp_lo.eq(Mux(record.unsigned_output, lo, lo.as_signed())),
                    out.clamp_hi.eq(Mux(record.unsigned_output, hi, hi.as_signed())),
                    out.unsigned_output.eq(record.unsigned_output),
                ]
            with m.Else():
                m.d.comb += out.eq(record)
        return m

    def _lane(self, m, acc, params, lane):
        """A lane circuit's result, :attr:`circuit_latency` cycles after ``acc`` and
        ``params``: the accumulator ``±V`` and the biased exponent ``k + m - 23`` of the
        multiplier ``2^(k + m - 150)``."""
        W = FRAME_BITS

        def reg(value, name):
            register = Signal(Value.cast(value).shape(), name=f"c{lane}_{name}")
            m.d.sync += register.eq(value)
            return register

        def decode(bits):
            exponent = bits[23:31]
            return bits[31], exponent, Mux(exponent == 0, 0, Cat(bits[:23], 1))

        def bit_length(magnitude, name):
            length = Signal(range(len(magnitude) + 1), name=f"c{lane}_{name}")
            for bit in range(len(magnitude)):
                with m.If(magnitude[bit]):
                    m.d.comb += length.eq(bit + 1)
            return length

        def rounded(magnitude, length):
            """``magnitude`` rounded to its 24 leading bits, half to even, in place; and
            the number of bits cleared below them."""
            drop = Mux(length > SIGNIFICAND_BITS, (length - SIGNIFICAND_BITS)[:6], 0)
            below = Cat(drop > i for i in range(W))
            kept_lsb = (magnitude & Cat(drop == i for i in range(W))).any() & (drop != 0)
            return ((magnitude + (below >> 1) + kept_lsb)[:W] & ~below), drop

        def magnitude_of(value):
            return value < 0, Mux(value < 0, -value, value)[:W]

        # Stage 1: the operands out of the accumulator, the fields decoded, the least exponent.
        offset = Mux(params.unsigned_output, 128, 0)
        y_low = acc[:8].as_signed()
        x_low = (y_low - acc)[8:16].as_signed()
        x = reg(x_low + offset, "x")
        y = reg(y_low + offset, "y")
        fields = {"x": params.multiplier, "y": Cat(params.zero_point, params.clamp_lo),
                  "c": params.bias}
        decoded = {}
        for name, bits in fields.items():
            sign, exponent, significand = decode(bits)
            decoded[name] = (reg(sign, f"sign_{name}"), reg(exponent, f"exp_{name}"),
                             reg(significand, f"sig_{name}"))
        nonzero = [Mux(bits[23:31] == 0, 0xFF, bits[23:31]) for bits in fields.values()]
        least_xy = Mux(nonzero[0] < nonzero[1], nonzero[0], nonzero[1])
        least = reg(Mux(least_xy < nonzero[2], least_xy, nonzero[2]), "least")

        # Stage 2: the products and the shifts into the frame.
        (sign_x, exp_x, sig_x), (sign_y, exp_y, sig_y), (sign_c, exp_c, sig_c) = \
            decoded["x"], decoded["y"], decoded["c"]
        product_x = reg(x * sig_x, "product_x")
        product_y = reg(y * sig_y, "product_y")
        shift_x = reg((exp_x - least)[:4], "shift_x")
        shift_y = reg((exp_y - least)[:4], "shift_y")
        shift_c = reg((exp_c - least)[:5], "shift_c")
        sig_c = reg(sig_c, "sig_c_2")
        signs = [reg(sign, f"{name}_2") for name, sign in
                 (("sign_x", sign_x), ("sign_y", sign_y), ("sign_c", sign_c))]
        least = reg(least, "least_2")

        # Stage 3: the terms in the frame; stage 4: signed.
        moved = [reg((value << shift)[:W].as_signed(), f"moved_{name}") for value, shift, name in
                 ((product_x, shift_x, "x"), (product_y, shift_y, "y"), (sig_c, shift_c, "c"))]
        signs = [reg(sign, f"{name}_3") for name, sign in zip(("sign_x", "sign_y", "sign_c"), signs)]
        least = reg(least, "least_3")
        term_x, term_y, term_c = (reg(Mux(sign, -value, value)[:W].as_signed(), f"term_{name}")
                                  for value, sign, name in zip(moved, signs, "xyc"))
        least = reg(least, "least_4")

        def later(term_x, least, stage):
            return reg(term_x, f"term_x_{stage}"), reg(least, f"least_{stage}")

        # Stage 5: t's exact sum; stage 6: as sign and magnitude; stage 7: its bit length;
        # stage 8: rounded; stage 9: t.
        t_sum = reg((term_y + term_c)[:W].as_signed(), "t_sum")
        term_x, least = later(term_x, least, 5)
        negative, magnitude = magnitude_of(t_sum)
        negative, magnitude = reg(negative, "t_negative"), reg(magnitude, "t_magnitude")
        term_x, least = later(term_x, least, 6)
        length = reg(bit_length(magnitude, "t_length_c"), "t_length")
        negative, magnitude = reg(negative, "t_negative_7"), reg(magnitude, "t_magnitude_7")
        term_x, least = later(term_x, least, 7)
        t_magnitude, _ = rounded(magnitude, length)
        negative, t_magnitude = reg(negative, "t_negative_8"), reg(t_magnitude, "t_rounded")
        term_x, least = later(term_x, least, 8)
        t = reg(Mux(negative, -t_magnitude, t_magnitude)[:W].as_signed(), "t")
        term_x, least = later(term_x, least, 9)

        # Stage 10: v's exact sum; stage 11: as sign and magnitude; stage 12: its bit
        # length; stage 13: v rounded in place; stage 14: v's significand and the
        # multiplier's exponent.
        v_sum = reg((term_x + t)[:W].as_signed(), "v_sum")
        least = reg(least, "least_10")
        negative, magnitude = magnitude_of(v_sum)
        negative, magnitude = reg(negative, "v_negative"), reg(magnitude, "v_magnitude")
        least = reg(least, "least_11")
        length = reg(bit_length(magnitude, "v_length_c"), "v_length")
        negative, magnitude = reg(negative, "v_negative_12"), reg(magnitude, "v_magnitude_12")
        least = reg(least, "least_12")
        v_magnitude, drop = rounded(magnitude, length)
        v_magnitude, drop = reg(v_magnitude, "v_rounded"), reg(drop, "v_drop")
        negative, least = reg(negative, "v_negative_13"), reg(least, "least_13")
        significand = (v_magnitude >> drop)[:SIGNIFICAND_BITS + 1]
        value = reg(Mux(negative, -significand, significand)[:32].as_signed(), "value")
        exponent = reg((drop + least - 23)[:8], "exponent")
        return value, exponent
