"""Quantized ONNX operators that run on the host, bit-exact with onnxruntime's CPU execution provider.

Every function takes NumPy arrays in ONNX layout (NCHW) and reproduces, step by step in float32,
the arithmetic of the onnxruntime x86-64 kernel (MLAS) that executes the operator, including
its operation order, fused multiply-adds and rounding. The docstrings name the onnxruntime source
each model follows and state the exact semantics; tests/test_host_ops.py proves them against
onnxruntime bit for bit.

Rounding conventions used below:
- "RNE" is round-half-to-even (x86 `cvtps2dq` under the default MXCSR, and `std::nearbyintf`).
- "cvtps" is the x86 float->int32 conversion: RNE, and any NaN or out-of-int32-range value becomes
  INT32_MIN (the "integer indefinite" value), which then saturates to the type's minimum.
"""

import itertools

import numpy as np

_F32 = np.float32
_INT32_MIN = -(2**31)


def _limits(dtype):
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _check_8bit(dtype):
    if np.dtype(dtype) not in (np.dtype(np.uint8), np.dtype(np.int8)):
        raise TypeError(f"expected uint8 or int8, got {np.dtype(dtype)}")


def _scalar(value, dtype=None):
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"expected a scalar or one-element tensor, got shape {array.shape}")
    return array.reshape(()).astype(dtype) if dtype is not None else array.reshape(())


def _cvtps_epi32(values):
    """x86 cvtps2dq on float32: RNE; NaN and values outside int32 give INT32_MIN. Returns int64."""
    rounded = np.rint(values.astype(_F32))
    in_range = (rounded >= _F32(-(2.0**31))) & (rounded < _F32(2.0**31))
    return np.where(in_range, rounded, _F32(_INT32_MIN)).astype(np.int64)


def _saturate(values, dtype):
    low, high = _limits(dtype)
    return np.clip(values, low, high).astype(dtype)


def _fma_f32(a, b, c):
    """Single-rounding float32 fused multiply-add a*b+c (as the x86 `vfmadd` instructions).

    The product of two float32 values is exact in float64; the float64 sum s and its exact error
    (TwoSum) decide the float32 rounding, including ties: a float64 sum can land exactly on a float32
    midpoint only when the true value is on the side the error term points to.
    """
    product = np.asarray(a, np.float64) * np.asarray(b, np.float64)
    addend = np.asarray(c, np.float64)
    total = product + addend
    addend_part = total - product
    error = (product - (total - addend_part)) + (addend - addend_part)
    nearest = total.astype(_F32)
    nearest64 = nearest.astype(np.float64)
    neighbour = np.nextafter(nearest, np.where(total > nearest64, _F32(np.inf), _F32(-np.inf)).astype(_F32))
    midpoint = (nearest64 + neighbour.astype(np.float64)) / 2
    true_value_beyond_tie = (total == midpoint) & (total != nearest64) & (
        np.sign(error) == np.sign(neighbour.astype(np.float64) - nearest64))
    return np.where(true_value_beyond_tie, neighbour, nearest).astype(_F32)


def _per_axis(param, ndim, axis):
    """Reshape a per-tensor (size 1) or per-axis (1-D) parameter to broadcast along `axis`."""
    param = np.asarray(param)
    if param.size == 1:
        return param.reshape(())
    if param.ndim != 1:
        raise ValueError(f"per-axis parameters must be 1-D, got shape {param.shape}")
    shape = [1] * ndim
    shape[axis] = param.size
    return param.reshape(shape)


def quantize_linear(x, scale, zero_point=None, axis=1):
    """ONNX QuantizeLinear, float32 -> uint8/int8 (the zero point's dtype; uint8 when it is None).

    Per tensor (scalar `scale`/`zero_point`) or per axis (1-D `scale`/`zero_point` along `axis`).
    onnxruntime: onnxruntime/core/mlas/lib/quantize.cpp (MlasQuantizeLinearKernel, SSE2) and
    intrinsics/avx512/quantize_avx512f.cpp (same operations, 16 lanes), called once per channel
    block for per-axis quantization. Per element, in float32:

        v = x / scale                                   (IEEE division, not multiplication by 1/scale)
        v = v > lo ? v : lo,  lo = min - zero_point      (`maxps`: a NaN v becomes lo)
        v = v < hi ? v : hi,  hi = max - zero_point      (`minps`)
        q = RNE(v) + zero_point

    So NaN quantizes to the type's minimum, +-inf saturate.
    """
    dtype = np.dtype(np.uint8) if zero_point is None else np.asarray(zero_point).dtype
    _check_8bit(dtype)
    x = np.asarray(x, _F32)
    axis = axis % max(x.ndim, 1)
    scale = _per_axis(np.asarray(scale, _F32), x.ndim, axis)
    zero = (np.zeros_like(scale, np.int64) if zero_point is None
            else _per_axis(zero_point, x.ndim, axis).astype(np.int64))
    low, high = _limits(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = x / scale
    lower = (low - zero).astype(_F32)
    upper = (high - zero).astype(_F32)
    scaled = np.where(scaled > lower, scaled, lower)
    scaled = np.where(scaled < upper, scaled, upper)
    return (np.rint(scaled).astype(np.int64) + zero).astype(dtype)


def dequantize_linear(q, scale, zero_point=None, axis=1):
    """ONNX DequantizeLinear, uint8/int8 -> float32: float32(int32(q) - zero_point) * scale.

    Per tensor or per axis like quantize_linear. onnxruntime: onnxruntime/core/mlas/lib/dequantize.cpp
    (the integer difference is exact; one float32 multiplication rounds).
    """
    q = np.asarray(q)
    _check_8bit(q.dtype)
    axis = axis % max(q.ndim, 1)
    scale = _per_axis(np.asarray(scale, _F32), q.ndim, axis)
    zero = 0 if zero_point is None else _per_axis(zero_point, q.ndim, axis).astype(np.int32)
    return (q.astype(np.int32) - zero).astype(_F32) * scale


def qlinear_add_swaps(a_shape, b_shape):
    """Whether onnxruntime's QLinearAdd streams ``b`` as its X operand (and ``a`` as Y): its
    InputBroadcaster treats input 0 as "scalar" when it does not advance along the innermost
    non-unit output axis (or when the output has one element)."""
    out_shape = np.broadcast_shapes(a_shape, b_shape)
    aligned = (1,) * (len(out_shape) - len(a_shape)) + tuple(a_shape)
    for out_dim, a_dim in zip(reversed(out_shape), reversed(aligned)):
        if out_dim != 1:
            return a_dim == 1
    return True


def qlinear_add_parameters(a_scale, a_zero_point, b_scale, b_zero_point, y_scale, y_zero_point):
    """The float32 ``(ratio_x, ratio_y, fixed)`` of :func:`qlinear_add` with ``a`` as X and
    ``b`` as Y (per-tensor parameters), as onnxruntime computes them::

        ratio_x = sX / sY_out,  ratio_y = sY / sY_out
        fixed = float(zp_out) - fma(ratio_x, float(zpX), ratio_y * float(zpY))
    """
    out_scale = _scalar(y_scale, _F32)
    ratio_x = _F32(_scalar(a_scale, _F32) / out_scale)
    ratio_y = _F32(_scalar(b_scale, _F32) / out_scale)
    x_zero, y_zero, out_zero = (_F32(_scalar(zero).astype(np.int64))
                                for zero in (a_zero_point, b_zero_point, y_zero_point))
    fixed = _F32(out_zero - _fma_f32(ratio_x, x_zero, _F32(ratio_y * y_zero)))
    return ratio_x, ratio_y, fixed


def qlinear_add(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    """com.microsoft QLinearAdd on uint8 or int8, with NumPy (multidirectional) broadcasting.

    onnxruntime: onnxruntime/contrib_ops/cpu/quantization/qlinear_binary_op.cc and the AVX2 kernel
    onnxruntime/core/mlas/lib/intrinsics/avx2/qladd_avx2.cpp (MlasQLinearAddKernelAvx2Helper),
    compiled with FMA contraction. The operand that is streamed (X) is `a`, unless `a` is constant
    along the innermost broadcast axis (see qlinear_add_swaps), in which case onnxruntime swaps
    the operands and X is `b`; Y is the other operand. All in float32, `fma` rounding once:

        rX = sX / sY_out,  rY = sY / sY_out
        fixed = float(zp_out) - fma(rX, float(zpX), rY * float(zpY))
        v = fma(float(X), rX, fma(float(Y), rY, fixed))       (raw X and Y, zero points are in `fixed`)
        out = saturate(cvtps(v))

    cvtps maps values beyond int32 (huge scale ratios) and NaN to the type's minimum, not maximum.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    _check_8bit(a.dtype)
    if b.dtype != a.dtype:
        raise TypeError("a and b must have the same dtype")
    operands = [(a, a_scale, a_zero_point), (b, b_scale, b_zero_point)]
    if qlinear_add_swaps(a.shape, b.shape):
        operands.reverse()
    (x, x_scale, x_zero), (y, y_in_scale, y_in_zero) = operands
    ratio_x, ratio_y, fixed = qlinear_add_parameters(x_scale, x_zero, y_in_scale, y_in_zero,
                                                     y_scale, y_zero_point)
    x_full, y_full = np.broadcast_arrays(x.astype(_F32), y.astype(_F32))
    value = _fma_f32(x_full, ratio_x, _fma_f32(y_full, ratio_y, fixed))
    return _saturate(_cvtps_epi32(value), a.dtype)


def _pool_output_size(size, kernel, stride, pad_head, pad_tail, dilation, ceil_mode):
    """onnxruntime PoolAttributes::ComputeOutputSize (onnxruntime/core/providers/cpu/nn/pool_attributes.h):
    the quotient is taken in float; in ceil mode a last window starting at or beyond
    size + pad_head is dropped."""
    span = _F32(size + pad_head + pad_tail - dilation * (kernel - 1) - 1) / _F32(stride) + _F32(1)
    if not ceil_mode:
        return int(span)
    out = int(np.ceil(span))
    if (out - 1) * stride >= size + pad_head:
        out -= 1
    return out


def _pool_geometry(spatial_shape, kernel_shape, strides, pads, dilations, ceil_mode):
    rank = len(spatial_shape)
    if len(kernel_shape) != rank:
        raise ValueError(f"kernel_shape {kernel_shape} does not match {rank} spatial dimensions")
    strides = list(strides) if strides is not None else [1] * rank
    pads = list(pads) if pads is not None else [0] * (2 * rank)
    dilations = list(dilations) if dilations is not None else [1] * rank
    for dim in range(rank):
        if not (pads[dim] < kernel_shape[dim] and pads[dim + rank] < kernel_shape[dim]):
            raise ValueError("Pad should be smaller than kernel.")
    out_shape = [_pool_output_size(spatial_shape[d], kernel_shape[d], strides[d], pads[d], pads[d + rank],
                                   dilations[d], ceil_mode) for d in range(rank)]
    if min(out_shape) < 0:
        raise ValueError("Calculated output dimension is negative.")
    return strides, pads[:rank], dilations, out_shape


def _padded(x, pad_heads, out_shape, kernel_shape, strides, dilations, fill):
    """Place x (N, C, *spatial) in an array filled with `fill` that covers every window position."""
    spatial = x.shape[2:]
    extents = [max(head + size, (out - 1) * stride + (kernel - 1) * dilation + 1)
               for head, size, out, kernel, stride, dilation
               in zip(pad_heads, spatial, out_shape, kernel_shape, strides, dilations)]
    padded = np.full(x.shape[:2] + tuple(extents), fill, dtype=x.dtype)
    padded[(slice(None), slice(None)) + tuple(slice(h, h + s) for h, s in zip(pad_heads, spatial))] = x
    return padded


def _window_views(padded, out_shape, kernel_shape, strides, dilations):
    """Yield, in row-major kernel order, the strided view of every kernel offset."""
    for offset in itertools.product(*(range(k) for k in kernel_shape)):
        yield padded[(slice(None), slice(None)) + tuple(
            slice(o * d, o * d + (n - 1) * s + 1, s)
            for o, d, n, s in zip(offset, dilations, out_shape, strides))]


def max_pool(x, kernel_shape, strides=None, pads=None, dilations=None, ceil_mode=0):
    """ONNX MaxPool (opset 12+) on uint8/int8, 1-3 spatial dimensions, NCHW.

    onnxruntime: MaxPool{1,2,3}DTask in onnxruntime/core/providers/cpu/nn/pool_functors.h. Each output
    is the maximum of the in-bounds input elements of its (dilated) window; padding never takes
    part. A window with no in-bounds element (possible only in ceil mode) yields the type's minimum.
    `pads` is [head_1..head_n, tail_1..tail_n]; the output size follows _pool_output_size.
    """
    x = np.asarray(x)
    _check_8bit(x.dtype)
    strides, heads, dilations, out_shape = _pool_geometry(x.shape[2:], kernel_shape, strides, pads, dilations,
                                                          ceil_mode)
    low, _ = _limits(x.dtype)
    padded = _padded(x, heads, out_shape, kernel_shape, strides, dilations, low)
    result = np.full(x.shape[:2] + tuple(out_shape), low, dtype=x.dtype)
    for view in _window_views(padded, out_shape, kernel_shape, strides, dilations):
        np.maximum(result, view, out=result)
    return result


def _quantize_value(y, y_scale, y_zero_point, dtype):
    """quantize_value in qlinear_pool.cc: clamp(int32(nearbyintf(y / y_scale + y_zero_point))).
    The int32 conversion is x86 `cvttss2si` after rounding, so NaN and huge values become INT32_MIN."""
    value = np.rint(_F32(y) / y_scale + _F32(y_zero_point))
    in_range = (value >= _F32(-(2.0**31))) & (value < _F32(2.0**31))
    return _saturate(np.where(in_range, value, _F32(_INT32_MIN)).astype(np.int64), dtype)


def _window_counts(spatial_shape, out_shape, kernel_shape, strides, heads):
    """(hend - hstart) * (wend - wstart) ... with onnxruntime's clipping to [0, size), unclamped below 0."""
    counts = np.ones((), np.int64)
    for size, out, kernel, stride, head in zip(spatial_shape, out_shape, kernel_shape, strides, heads):
        start = np.arange(out) * stride - head
        count = np.minimum(start + kernel, size) - np.maximum(start, 0)
        counts = np.multiply.outer(counts, count)
    return counts


def qlinear_global_average_pool(x, x_scale, x_zero_point, y_scale, y_zero_point):
    """com.microsoft QLinearGlobalAveragePool, NCHW (channels_last=0), uint8 or int8.

    onnxruntime: onnxruntime/contrib_ops/cpu/quantization/qlinear_global_average_pool.cc and
    onnxruntime/core/mlas/lib/qlgavgpool.cpp (MlasQLinearGlobalAveragePoolNchw) with the
    requantization of onnxruntime/core/mlas/lib/quantize.cpp (MlasRequantizeOutput). With
    n = number of spatial elements, per channel:

        acc = sum(int(x)) - x_zero_point * n                      (exact integer)
        s = x_scale / (y_scale * float(n))                        (float32)
        v = float(acc) * s, clamped to [min - y_zp, max - y_zp] (maxps/minps)
        y = RNE(v) + y_zp

    onnxruntime rejects n >= 2**24 and s outside [2**-32, 256) ("parameter out of computation range");
    this function raises ValueError for the same inputs. Output shape is (N, C, 1, ...).
    """
    x = np.asarray(x)
    _check_8bit(x.dtype)
    if x.ndim < 3:
        raise ValueError("Input dimension cannot be less than 3.")
    image_size = int(np.prod(x.shape[2:]))
    x_zero = int(_scalar(x_zero_point))
    y_zero = int(_scalar(y_zero_point))
    if image_size >= 0x1000000:
        raise ValueError("QLinearGlobalAveragePool ImageSize too large")
    scale = _F32(_scalar(x_scale, _F32) / (_scalar(y_scale, _F32) * _F32(image_size)))
    if not (_F32(2.0**-32) <= scale < _F32(256.0)):
        raise ValueError("QLinearGlobalAveragePool parameter out of computation range")
    flat = x.reshape(x.shape[0], x.shape[1], image_size).astype(np.int64)
    acc = (flat.sum(axis=2) - x_zero * image_size).astype(np.int32)
    low, high = _limits(x.dtype)
    value = acc.astype(_F32) * scale
    value = np.where(value > _F32(low - y_zero), value, _F32(low - y_zero))
    value = np.where(value < _F32(high - y_zero), value, _F32(high - y_zero))
    result = (np.rint(value).astype(np.int64) + y_zero).astype(x.dtype)
    return result.reshape(x.shape[:2] + (1,) * (x.ndim - 2))


def qlinear_average_pool(x, x_scale, x_zero_point, y_scale, y_zero_point, kernel_shape, strides=None, pads=None,
                         count_include_pad=0, ceil_mode=0):
    """com.microsoft QLinearAveragePool, NCHW (channels_last=0), uint8 or int8, 1-3 spatial dimensions.

    onnxruntime: onnxruntime/contrib_ops/cpu/quantization/qlinear_pool.cc (QLinearPool{1,2,3}DTask).

    - If kernel_shape equals the spatial shape and all pads are 0, onnxruntime runs the integer
      global-average-pool kernel instead: the result is qlinear_global_average_pool (whatever
      strides, ceil_mode and count_include_pad say).
    - Otherwise every input is dequantized to float32 x_scale * float(int(x) - x_zero_point); each
      window sums its in-bounds values in float32, one at a time in row-major order (h, then w,
      then d), starting from 0.0f; the sum is divided (float32) by the kernel size
      (count_include_pad=1, always the full kernel product, even for windows reaching past the
      padding in ceil mode) or by the product over axes of (min(start + k, size) - max(start, 0))
      (count_include_pad=0); then y = clamp(int32(nearbyintf(avg / y_scale + y_zero_point))).
      An empty window (ceil mode) divides 0 by 0 (NaN) and gives the type's minimum.
    Dilations are not supported by onnxruntime's kernel and are not accepted here.
    """
    x = np.asarray(x)
    _check_8bit(x.dtype)
    kernel_shape = list(kernel_shape)
    spatial = x.shape[2:]
    pads_list = list(pads) if pads is not None else [0] * (2 * len(kernel_shape))
    if list(spatial) == kernel_shape and not any(pads_list):
        return qlinear_global_average_pool(x, x_scale, x_zero_point, y_scale, y_zero_point)
    strides, heads, dilations, out_shape = _pool_geometry(spatial, kernel_shape, strides, pads_list, None, ceil_mode)
    values = dequantize_linear(x, _scalar(x_scale, _F32), _scalar(x_zero_point))
    padded = _padded(values, heads, out_shape, kernel_shape, strides, dilations, _F32(0))
    total = np.zeros(x.shape[:2] + tuple(out_shape), _F32)
    for view in _window_views(padded, out_shape, kernel_shape, strides, dilations):
        total += view
    if count_include_pad:
        divisor = _F32(np.prod(kernel_shape))
    else:
        divisor = _window_counts(spatial, out_shape, kernel_shape, strides, heads).astype(_F32)
    with np.errstate(invalid="ignore", divide="ignore"):
        average = total / divisor
    return _quantize_value(average, _scalar(y_scale, _F32), int(_scalar(y_zero_point)), x.dtype)


def relu_quantized(q, zero_point):
    """Relu on a quantized tensor: max(q, zero_point), which is what DequantizeLinear -> Relu ->
    QuantizeLinear with the same scale and zero point computes in onnxruntime."""
    q = np.asarray(q)
    _check_8bit(q.dtype)
    return np.maximum(q, _scalar(zero_point).astype(q.dtype))
