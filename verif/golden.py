"""NumPy golden models of the compute core: the semantics the RTL must equal bit for bit."""

import numpy as np

__all__ = ["tile_gemm", "requantize", "quantized_multiplier", "add_output"]


def tile_gemm(a, w, acc=None):
    """One pass of the array: ``acc + a @ w`` with int8 operands and int32 wrap-around."""
    product = a.astype(np.int64) @ w.astype(np.int64)
    if acc is not None:
        product = product + acc
    return product.astype(np.int64).astype(np.int32)


def quantized_multiplier(input_scale, weight_scale, output_scale):
    """The requantization multiplier as onnxruntime computes it: in float32, left to right."""
    return (np.float32(input_scale) * np.float32(weight_scale)) / np.float32(output_scale)


def requantize(acc, bias, multiplier, zero_point, clamp_lo=-128, clamp_hi=255, unsigned=False):
    """onnxruntime's requantization (MLAS ``MlasRequantizeOutput``), per output channel.

    ``acc + bias`` wraps in int32; the int32 → float32 conversion and the float32 product
    each round to nearest even; the product rounds half-to-even to an integer; the zero
    point is added; the result saturates to the output type and to the activation's clamp
    range ``[clamp_lo, clamp_hi]`` (ReLU, ReLU6 or any clip, in the quantized domain).
    All arguments broadcast along the last (channel) axis.
    """
    x = (np.asarray(acc, np.int64) + np.asarray(bias, np.int64)).astype(np.int32)
    y = np.rint(x.astype(np.float32) * np.asarray(multiplier, np.float32))
    y = np.clip(y, -2.0**31, 2.0**31).astype(np.int64) + np.asarray(zero_point, np.int64)
    unsigned = np.asarray(unsigned, bool)
    qmin, qmax = np.where(unsigned, 0, -128), np.where(unsigned, 255, 127)
    lo = np.maximum(np.asarray(clamp_lo, np.int64), qmin)
    hi = np.minimum(np.asarray(clamp_hi, np.int64), qmax)
    return np.minimum(np.maximum(y, lo), hi)


def _float32_parts(value):
    """``(n, e)`` with ``value == n * 2**e`` exactly, for a finite float32 ``value``."""
    bits = int(np.asarray(value, np.float32).view(np.uint32))
    exponent, fraction = (bits >> 23) & 0xFF, bits & 0x7F_FFFF
    n, e = (fraction, -149) if exponent == 0 else (fraction | 1 << 23, exponent - 150)
    return (-n if bits >> 31 else n), e


def _round_to_float32(n, e):
    """``n * 2**e`` rounded to 24 significant bits, to nearest even: ``(n', e')``. No
    exponent limits: the float32 rounding of a value in the normal range."""
    magnitude = abs(n)
    drop = magnitude.bit_length() - 24
    if drop > 0:
        magnitude, rest = divmod(magnitude, 1 << drop)
        half = 1 << (drop - 1)
        magnitude += rest > half or (rest == half and magnitude & 1)
        e += drop
    return (-magnitude if n < 0 else magnitude), e


def _fma(x, ratio, addend):
    """float32 ``fma(x, ratio, addend)`` for an integer ``x``: the exact ``x * ratio +
    addend`` (both ``(n, e)`` pairs) rounded once."""
    (rn, re), (an, ae) = ratio, addend
    e = min(re, ae)
    return _round_to_float32((x * rn << (re - e)) + (an << (ae - e)), e)


def _rint(n, e):
    """``n * 2**e`` rounded to an integer, half to even."""
    if e >= 0:
        return n << e
    quotient, rest = divmod(n, 1 << -e)
    half = 1 << (-e - 1)
    return quotient + (rest > half or (rest == half and quotient & 1))


def add_output(acc, fixed, ratio_x, ratio_y, clamp_lo, clamp_hi, unsigned):
    """The output stage's add mode: onnxruntime's QLinearAdd of two 8-bit operands packed in
    one accumulator as ``acc = -256 * x' + y'``, where ``x'`` and ``y'`` are the int8 values
    the array saw (uint8 operands enter as ``v - 128``)::

        x, y = x' + 128 * unsigned, y' + 128 * unsigned
        t = fma(y, ratio_y, fixed)           (float32, rounded once)
        v = fma(x, ratio_x, t)
        q = clamp(round_half_even(v), max(clamp_lo, qmin), min(clamp_hi, qmax))

    with ``ratio_x = scale_x / scale_out``, ``ratio_y = scale_y / scale_out`` and ``fixed =
    zero_out - fma(ratio_x, zero_x, ratio_y * zero_y)``, all float32 (``sw.host_ops.qlinear_add``).
    Exact integer arithmetic, element by element, with float32's 24-bit significand and no
    exponent limits. Parameters broadcast along the last (channel) axis.
    """
    acc = np.asarray(acc, np.int64)
    shape = acc.shape
    params = np.broadcast_arrays(acc, *(np.asarray(p) for p in (fixed, ratio_x, ratio_y,
                                                                   clamp_lo, clamp_hi, unsigned)))[1:]
    out = np.empty(shape, np.int64)
    for index in np.ndindex(shape):
        a = int(acc[index])
        fixed_, ratio_x_, ratio_y_, lo, hi, u = (p[index] for p in params)
        y_low = ((a & 0xFF) ^ 0x80) - 0x80
        x_low = ((((y_low - a) >> 8) & 0xFF) ^ 0x80) - 0x80
        offset = 128 * bool(u)
        t = _fma(y_low + offset, _float32_parts(ratio_y_), _float32_parts(fixed_))
        v = _fma(x_low + offset, _float32_parts(ratio_x_), t)
        qmin, qmax = (0, 255) if u else (-128, 127)
        out[index] = min(max(_rint(*v), max(int(lo), qmin)), min(int(hi), qmax))
    return out
