"""NumPy golden models of the compute core: the semantics the RTL must equal bit for bit."""

import numpy as np

__all__ = ["tile_gemm", "requantize", "quantized_multiplier"]


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
