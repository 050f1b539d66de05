"""Random stimulus with the edges that matter: full-range int8, large accumulators,
rounding ties, saturation and every clamp edge."""

import numpy as np

__all__ = ["int8_full_range", "random_multipliers", "random_channel_params",
           "edge_accumulators", "tie_cases", "near_tie_cases", "channel_param_fields",
           "channel_param_record", "golden_requantize", "float32_rounding_edges",
           "product_rounding_edges", "product_guard_edges",
           "random_add_params", "add_operands", "add_tie_cases"]


def int8_full_range(rng, shape):
    """Uniform int8 with -128 and 127 forced into every array of 16 or more values."""
    values = rng.integers(-128, 128, size=shape, dtype=np.int64)
    flat = values.reshape(-1)
    if flat.size >= 16:
        picks = rng.choice(flat.size, size=4, replace=False)
        flat[picks] = [-128, 127, -128, 127]
    return values


def random_multipliers(rng, n):
    """float32 multipliers: log-uniform over realistic scales, with exact powers of two
    (which make ties) and the occasional zero, subnormal or > 1 value."""
    m = np.exp2(rng.uniform(-24, 2, size=n)).astype(np.float32)
    kind = rng.integers(0, 10, size=n)
    m = np.where(kind == 0, np.exp2(-rng.integers(0, 20, size=n)).astype(np.float32), m)
    m = np.where(kind == 1, rng.choice(np.float32([0.0, 1e-40, 2.0**-126, 3.0, 1.0]), size=n), m)
    return m.astype(np.float32)


def random_channel_params(rng, n):
    """Per-channel output-stage parameters as a dict of arrays (the golden model's arguments)."""
    unsigned = rng.integers(0, 2, size=n).astype(bool)
    zero_point = np.where(unsigned, rng.integers(0, 256, size=n), rng.integers(-128, 128, size=n))
    qmin = np.where(unsigned, 0, -128)
    qmax = np.where(unsigned, 255, 127)
    clamp = rng.integers(0, 5, size=n)
    # 0: none; 1: ReLU; 2: ReLU6-like window; 3: random clip; 4: clip past the type range.
    lo = np.select([clamp == 1, clamp == 2, clamp == 3, clamp == 4],
                   [zero_point, zero_point, rng.integers(-128, 256, size=n), np.full(n, -300)], qmin)
    hi = np.select([clamp == 2, clamp == 3, clamp == 4],
                   [np.minimum(zero_point + rng.integers(0, 64, size=n), qmax),
                    rng.integers(-128, 256, size=n), np.full(n, 300)], qmax)
    hi = np.where(clamp == 3, np.maximum(lo, hi), hi)
    bias = np.where(rng.random(n) < 0.8, rng.integers(-2**16, 2**16, size=n),
                    rng.integers(-2**31, 2**31, size=n))
    return {
        "bias": bias.astype(np.int64),
        "multiplier": random_multipliers(rng, n),
        "zero_point": zero_point.astype(np.int64),
        "clamp_lo": lo.astype(np.int64),
        "clamp_hi": hi.astype(np.int64),
        "unsigned": unsigned,
    }


def edge_accumulators(rng, n):
    """int32 accumulators concentrated where float32 conversion and rounding are subtle."""
    kind = rng.integers(0, 5, size=n)
    uniform = rng.integers(-2**31, 2**31, size=n)
    near_pow2 = (np.int64(1) << rng.integers(0, 31, size=n)) + rng.integers(-3, 4, size=n)
    near_pow2 = near_pow2 * rng.choice([-1, 1], size=n)
    extremes = rng.choice(np.array([-2**31, 2**31 - 1, 0, 1, -1, 2**24, 2**24 + 1, -2**24 - 1,
                                    2**25 + 2, 2**25 + 6, 2**31 - 64, -2**31 + 64]), size=n)
    small = rng.integers(-4096, 4096, size=n)
    medium = rng.integers(-2**20, 2**20, size=n)
    acc = np.select([kind == 0, kind == 1, kind == 2, kind == 3], [uniform, near_pow2, extremes, small],
                    medium)
    return np.clip(acc, -2**31, 2**31 - 1).astype(np.int64)


def tie_cases(rng, n):
    """(accumulator, multiplier) pairs whose exact product is an integer plus one half."""
    k = rng.integers(1, 12, size=n)
    half_odd = rng.integers(-200, 200, size=n) * 2 + 1
    acc = half_odd * (np.int64(1) << (k - 1))
    multiplier = np.exp2(-k.astype(np.float64)).astype(np.float32)
    return acc, multiplier


def near_tie_cases(rng, n):
    """(accumulator, multiplier) pairs whose exact product is an even integer plus one half
    plus ``2^-j``, ``j`` from 2 to 20 in turn, in both signs: ties but for one bit, at
    each place below the half, that rounds them up to the odd integer above."""
    j = 2 + np.arange(n) % 19
    y = 2 * rng.integers(0, np.minimum(100, 2.0 ** (23 - j))) + 0.5 + np.exp2(-j.astype(float))
    shift = rng.integers(0, 8, size=n)
    acc = rng.choice([-1, 1], size=n) << shift
    multiplier = np.float32(y * np.exp2(-shift.astype(float)))
    assert (multiplier.astype(np.float64) * (1 << shift) == y).all()
    return acc.astype(np.int64), multiplier


def channel_param_fields(params, index):
    """Channel ``index`` of a :func:`random_channel_params` dict, as the fields of
    ``hw.output_stage.channel_params`` (the multiplier as float32 bits)."""
    return {
        "bias": int(params["bias"][index]),
        "multiplier": int(np.float32(params["multiplier"][index]).view(np.uint32)),
        "zero_point": int(params["zero_point"][index]),
        "clamp_lo": int(params["clamp_lo"][index]),
        "clamp_hi": int(params["clamp_hi"][index]),
        "unsigned_output": int(params["unsigned"][index]),
        "add_mode": 0,
    }


def channel_param_record(params, index, reserved=0):
    """Channel ``index`` of a :func:`random_channel_params` dict as the 16 bytes CONFIG
    reads from the scratchpad (``sw.simulator.CHANNEL_PARAM_DTYPE``); ``reserved`` fills
    the flags' high byte, which the hardware ignores."""
    from sw.simulator import channel_param_records
    record = channel_param_records({key: np.asarray(value)[index:index + 1]
                                    for key, value in params.items()})
    record["flags"] |= (reserved & 0xFF) << 8
    return [int(b) for b in record.view(np.uint8)]


def golden_requantize(acc, params):
    """``verif.golden.requantize`` with a :func:`random_channel_params` dict."""
    from .golden import requantize
    return requantize(acc, params["bias"], params["multiplier"], params["zero_point"],
                      params["clamp_lo"], params["clamp_hi"], params["unsigned"])


def float32_rounding_edges():
    """(accumulator, multiplier) pairs where only float32 semantics give the right answer:
    accumulators whose int32 -> float32 conversion rounds, with power-of-two multipliers
    that bring them near 0.5, and exact half-integer products (ties) of both signs."""
    cases = []
    for k in (24, 25, 26):
        for target in (2**24 + 1, 2**24 + 3, 2**25 + 2, 2**25 + 6, 2**26 + 4, 2**26 + 12):
            cases += [(target, k), (-target, k)]
    for k in range(1, 12):
        for n in (0, 1, 2, 3, 50, 51, -1, -2, -51):
            cases.append(((2 * n + 1) * 2 ** (k - 1), k))
    acc = np.array([t for t, _ in cases], np.int64)
    multiplier = np.exp2(-np.array([k for _, k in cases], np.float64)).astype(np.float32)
    return acc, multiplier


def product_rounding_edges(rng, n):
    """(accumulator, multiplier) pairs whose float32 product rounds up only because of
    bits far below its rounding bit, onto an integer plus one half plus 2^-16: with that
    rounding the output is the odd integer above, without it (a tie, to even) the even
    integer below. The exact product of the significands is ``S * 2^24 + 2^23 + r`` (or
    half that, one bit narrower), ``S`` even and ``0 < r < 2^16``; found by search."""
    acc, multiplier = [], []
    while len(acc) < n:
        half = int(rng.integers(64, 128)) * 2       # the even integer below
        kept = (2 * half + 1) << 15                 # S: 24 bits, the output's half at 2^15
        top = int(rng.choice([47, 46]))             # the product's top bit
        target = kept << (top - 23) | 1 << (top - 24)
        m_sig = int(rng.integers(2**23, 2**24))
        a = -(-(target + 1) // m_sig)
        if not 0 < a * m_sig - target < 2**16 or a >= 2**24:
            continue
        m = np.float32(m_sig * 2.0 ** (7 - top))
        assert np.float32(a) * m == np.float32((kept + 1) * 2.0 ** -16)
        sign = int(rng.choice([-1, 1]))
        acc.append(sign * a)
        multiplier.append(m)
    return np.array(acc, np.int64), np.array(multiplier, np.float32)


def product_guard_edges(rng, n):
    """As :func:`product_rounding_edges` with ``r = 2^15`` (and the top bit 47): the only
    set bit of the product below its rounding bit is its 16th, just below its top 32.
    The product is then ``2^15 * q`` with ``q`` odd; its significands are found by
    factoring ``q``."""
    acc, multiplier = [], []
    while len(acc) < n:
        half = int(rng.integers(64, 128)) * 2
        kept = (2 * half + 1) << 15
        q = kept << 9 | 1 << 8 | 1
        pairs = []
        for d in range(1, 1 << 16, 2):
            if q % d:
                continue
            for factor in (d, q // d):
                if not 9 <= factor.bit_length() <= 24:
                    continue
                m_sig = factor << (24 - factor.bit_length())
                if (q << 15) // m_sig < 2**24:
                    pairs.append(((q << 15) // m_sig, m_sig))
        if not pairs:
            continue
        a, m_sig = pairs[rng.integers(len(pairs))]
        m = np.float32(m_sig * 2.0 ** -40)
        assert np.float32(a) * m == np.float32((kept + 1) * 2.0 ** -16)
        sign = int(rng.choice([-1, 1]))
        acc.append(sign * a)
        multiplier.append(m)
    return np.array(acc, np.int64), np.array(multiplier, np.float32)


def random_add_params(rng, n):
    """Per-channel parameters of the output stage's add mode (``verif.golden.add_output``)
    that ``hw.add_stage.add_mode_unsupported`` accepts: realistic scale ratios and offsets,
    power-of-two ratios with half-integer offsets (exact ties), ratios and offsets as far
    apart as the frame allows, negative ratios, and zero offsets; clamps from none to a
    ReLU or a random window, in the output type."""
    from hw.add_stage import MAX_FIXED_SHIFT, MAX_PRODUCT_SHIFT, add_mode_unsupported
    f32 = np.float32
    params = {key: np.zeros(n, dtype) for key, dtype in (
        ("fixed", f32), ("ratio_x", f32), ("ratio_y", f32), ("clamp_lo", np.int64),
        ("clamp_hi", np.int64), ("unsigned", bool))}
    for i in range(n):
        while True:
            kind = rng.integers(0, 5)
            if kind == 0:
                ratio_x, ratio_y = np.exp2(rng.uniform(-4, 3, size=2))
                fixed = rng.uniform(-400, 400)
            elif kind == 1:
                ratio_x, ratio_y = np.exp2(-rng.integers(0, 8, size=2).astype(float))
                fixed = rng.integers(-1024, 1024) / 4
            elif kind == 2:
                ratio_x = np.exp2(rng.uniform(-4, 2))
                ratio_y = ratio_x * np.exp2(rng.choice([-1, 1]) * rng.uniform(0, MAX_PRODUCT_SHIFT))
                fixed = ratio_x * np.exp2(rng.uniform(-MAX_FIXED_SHIFT, 4)) * rng.choice([-1, 1])
            elif kind == 3:
                ratio_x, ratio_y = -np.exp2(rng.uniform(-4, 3, size=2))
                fixed = rng.uniform(-100, 100)
            else:
                ratio_x, ratio_y = np.exp2(rng.uniform(-4, 3, size=2))
                fixed = 0.0
            values = f32(fixed), f32(ratio_x), f32(ratio_y)
            if add_mode_unsupported(*values) is None:
                break
        params["fixed"][i], params["ratio_x"][i], params["ratio_y"][i] = values
        unsigned = bool(rng.integers(0, 2))
        qmin, qmax = (0, 255) if unsigned else (-128, 127)
        clamp = rng.integers(0, 3)
        lo = qmin if clamp == 0 else int(rng.integers(qmin, qmax + 1))
        hi = qmax if clamp != 2 else int(rng.integers(lo, qmax + 1))
        params["clamp_lo"][i], params["clamp_hi"][i], params["unsigned"][i] = lo, hi, unsigned
    return params


def add_operands(rng, n):
    """``n`` accumulators ``-256 * x' + y'`` of full-range int8 ``x'`` and ``y'`` (as the
    array packs an add's operands)."""
    x, y = int8_full_range(rng, n), int8_full_range(rng, n)
    return -256 * x + y


def add_tie_cases(rng, n):
    """(accumulators, :func:`random_add_params`-style parameters) whose exact sums lie
    halfway between two float32 values, and whose result decides the output: one operand
    is 1 and the other 0, the ratio ``0.5 - 2^(k-24)`` and the offset an integer ``h`` of
    bit length ``k + 1``, so that the fused multiply-add ``h + 0.5 - 2^(k-24)`` rounds
    (to even) to ``h + 0.5``, and that to an even integer. Half the cases in the first
    multiply-add (``y``), half in the second (``x``); both signs."""
    params = random_add_params(rng, n)
    accs = np.zeros(n, np.int64)
    for i in range(n):
        h = int(rng.integers(1, 128))
        k = h.bit_length() - 1
        sign = rng.choice([-1, 1])
        ratio = np.float32(sign * (0.5 - 2.0**(k - 24)))
        in_x = bool(rng.integers(0, 2))
        offset = 128 * bool(params["unsigned"][i])
        x, y = (1, 0) if in_x else (0, 1)
        accs[i] = -256 * (x - offset) + (y - offset)
        params["fixed"][i] = np.float32(sign * h)
        params["ratio_x"][i] = ratio if in_x else np.float32(0.75)
        params["ratio_y"][i] = np.float32(0.75) if in_x else ratio
        params["clamp_lo"][i], params["clamp_hi"][i] = (0, 255) if params["unsigned"][i] else (-128, 127)
    return accs, params
