"""Whole-NPU workloads: memory images with programs, tensors and their NumPy answers.

Shared by the top-level testbench, ``make sim`` and the simulator tests. The expected
outputs are computed here with NumPy directly from the tensors (``verif.golden``), not by
the NPU simulator, so the simulator is checked too.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from hw.add_stage import add_mode_unsupported
from hw.isa import INSTRUCTION_BYTES
from sw.asm import Program
from sw.host_ops import qlinear_add_parameters
from sw.kernels import (AddLayer, ConvLayer, GemmLayer, a_pitch, conv_pad_bytes, emit_add,
                        emit_conv, emit_gemm, im2col, pack_add_weights, pack_conv_weights,
                        pack_depthwise_weights, pack_weights, resident_pair, emit_resident_pair,
                        resident_tensor)
from sw.simulator import pack_add_params, pack_channel_params
from verif.golden import add_output, requantize
from verif.stimulus import int8_full_range, random_channel_params


__all__ = ["MemoryImage", "Workload", "gemm_workload", "conv_workload", "direct_conv_workload",
           "conv_pair_layers", "resident_conv_pair_workload", "add_workload",
           "residual_block_workload", "random_program"]


class MemoryImage:
    """A flat memory: a uint8 array and a bump allocator."""

    def __init__(self, size=1 << 20, base=0x1000):
        self.data = np.zeros(size, np.uint8)
        self.next = base

    def place(self, blob, align=64):
        blob = np.frombuffer(np.ascontiguousarray(blob).tobytes(), np.uint8)
        addr = -(-self.next // align) * align
        if addr + len(blob) > len(self.data):
            raise MemoryError("workload does not fit the memory image")
        self.data[addr:addr + len(blob)] = blob
        self.next = addr + len(blob)
        return addr

    def reserve(self, size, align=64):
        return self.place(np.zeros(size, np.uint8), align)


@dataclass
class Workload:
    """A program in a memory image, and the output regions it must produce."""
    image: MemoryImage
    program_addr: int
    program: Program
    outputs: list = field(default_factory=list)    # (name, addr, expected uint8 bytes)
    macs: int = 0

    def check(self, memory):
        """(name, mismatching bytes, total bytes) for each output region of ``memory``."""
        return [(name, int(np.count_nonzero(memory[addr:addr + len(want)] != want)), len(want))
                for name, addr, want in self.outputs]


def _gemm_layer(config, image, rng, a, w, params, act_flip, out_int32, name):
    M, K = a.shape
    N = w.shape[1]
    # Rows padded to a_pitch with random bytes, which the NPU must ignore.
    pitch = a_pitch(config, K)
    rows = rng.integers(0, 256, size=(M, pitch)).astype(np.uint8)
    rows[:, :K] = a.astype(np.uint8 if act_flip else np.int8).view(np.uint8)
    a_addr = image.place(rows)
    weight_addr = image.place(pack_weights(config, w))
    C = config.cols
    padded = {key: np.resize(value, -(-N // C) * C) for key, value in params.items()}
    param_addr = image.place(pack_channel_params(config, padded))
    y_addr = image.reserve(M * N * (4 if out_int32 else 1))
    layer = GemmLayer(M, K, N, a_addr, weight_addr, param_addr, y_addr, act_flip, out_int32, name,
                      a_pitch=pitch)
    acc = (a.astype(np.int64) - (128 if act_flip else 0)) @ w.astype(np.int64)
    acc = acc.astype(np.int32)
    if out_int32:
        expected = acc.astype("<i4").view(np.uint8).reshape(-1)
    else:
        expected = (requantize(acc, params["bias"], params["multiplier"], params["zero_point"],
                               params["clamp_lo"], params["clamp_hi"], params["unsigned"])
                    & 0xFF).astype(np.uint8).reshape(-1)
    return layer, (name, y_addr, expected)


def _finish(config, image, program, outputs, macs):
    program.end()
    program_addr = image.place(np.frombuffer(program.to_bytes(), np.uint8), INSTRUCTION_BYTES)
    return Workload(image, program_addr, program, outputs, macs)


def gemm_workload(config, rng, M, K, N, act_flip=False, out_int32=False, image=None,
                  plan=None):
    """One requantized GEMM with full-range random data and per-channel parameters, tiled
    by ``plan`` (a ``sw.kernels.GemmPlan``; by default the compiler's choice)."""
    image = image or MemoryImage()
    a = rng.integers(0, 256, size=(M, K)) if act_flip else int8_full_range(rng, (M, K))
    w = int8_full_range(rng, (K, N))
    params = random_channel_params(rng, N)
    params["multiplier"] = (params["multiplier"] * np.float32(1 / np.sqrt(K))).astype(np.float32)
    layer, output = _gemm_layer(config, image, rng, a, w, params, act_flip, out_int32,
                                f"gemm {M}x{K}x{N}")
    program = emit_gemm(config, layer, plan=plan)
    return _finish(config, image, program, [output], M * K * N)


def conv_workload(config, rng, channels=32, out_channels=32, size=16, kernel=3, stride=1,
                  padding=1, image=None):
    """A convolution with ReLU on uint8 activations with a zero point, lowered by im2col in
    software. The expected output comes from the convolution's definition, not from im2col."""
    image = image or MemoryImage()
    x = rng.integers(0, 256, size=(channels, size, size))
    x.reshape(-1)[:2] = [0, 255]
    zero_point = int(rng.integers(0, 256))
    w = int8_full_range(rng, (out_channels, channels, kernel, kernel))
    params = random_channel_params(rng, out_channels)
    params["bias"] = rng.integers(-2**14, 2**14, size=out_channels).astype(np.int64)
    params["multiplier"] = np.exp2(rng.uniform(-14, -9, size=out_channels)).astype(np.float32)
    params["unsigned"][:] = True
    params["zero_point"] = rng.integers(0, 64, size=out_channels)
    params["clamp_lo"] = params["zero_point"].copy()
    params["clamp_hi"][:] = 255

    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding)),
                    constant_values=zero_point).astype(np.int64) - zero_point
    out_size = (size + 2 * padding - kernel) // stride + 1
    acc = np.zeros((out_size, out_size, out_channels), np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            window = padded[:, ky:ky + stride * out_size:stride, kx:kx + stride * out_size:stride]
            acc += np.einsum("chw,oc->hwo", window, w[:, :, ky, kx].astype(np.int64))
    expected = requantize(acc.reshape(-1, out_channels), params["bias"], params["multiplier"],
                          params["zero_point"], params["clamp_lo"], params["clamp_hi"], True)

    # The NPU computes sum((x - 128) w); the zero point folds into the bias.
    patches = im2col(x, (kernel, kernel), (stride, stride), (padding,) * 4, pad_value=zero_point)
    hw_params = dict(params, bias=params["bias"] + (128 - zero_point) *
                     w.reshape(out_channels, -1).sum(axis=1))
    name = f"conv{kernel}x{kernel} {channels}->{out_channels} {size}x{size}"
    layer, _ = _gemm_layer(config, image, rng, patches, w.reshape(out_channels, -1).T,
                           hw_params, True, False, name)
    program = emit_gemm(config, layer)
    output = (name, layer.y_addr, (expected & 0xFF).astype(np.uint8).reshape(-1))
    return _finish(config, image, program, [output], patches.shape[0] * w.size)


def direct_conv_workload(config, rng, H, W, C, N, kernel=(3, 3), strides=(1, 1),
                         pads=(1, 1, 1, 1), act_flip=True, out_int32=False, image=None,
                         plan=None, depthwise=False):
    """A convolution run straight from its NHWC input (``sw.kernels.emit_conv``), with
    full-range activations and weights and a random input zero point; ``depthwise``: each
    of the ``N = C`` output channels reads its own input channel. The expected output
    comes from the convolution's definition (NumPy, padding with the zero point)."""
    image = image or MemoryImage()
    x = rng.integers(0, 256, size=(C, H, W)) if act_flip else int8_full_range(rng, (C, H, W))
    zero_point = int(rng.integers(0, 256)) if act_flip else int(rng.integers(-128, 128))
    layer, values = _direct_conv(config, image, rng, x, zero_point, N, kernel, strides, pads,
                                 act_flip, out_int32, depthwise)
    out_bytes = 4 if out_int32 else 1
    layer.y_addr = image.reserve(layer.M * N * out_bytes)
    expected = values.astype("<i4").view(np.uint8).reshape(-1) if out_int32 else \
        (values & 0xFF).astype(np.uint8).reshape(-1)
    program = emit_conv(config, layer, plan=plan)
    return _finish(config, image, program, [(layer.name, layer.y_addr, expected)],
                   _conv_macs(layer))


def _conv_macs(layer):
    return layer.M * layer.N * (1 if layer.depthwise else layer.C) * layer.kernel[0] * layer.kernel[1]


def _direct_conv(config, image, rng, x, zero_point, N, kernel, strides, pads, act_flip,
                 out_int32, depthwise, params=None):
    """(:class:`ConvLayer` with its input, zero-point line, weights and channel parameters
    placed in ``image``, and its expected outputs as (OH·OW) × N integers) of a
    convolution of ``x`` (C × H × W) with random full-range weights and ``params`` (random
    by default)."""
    C, H, W = x.shape
    if depthwise:
        # ONNX's depthwise weights (C × 1 × kh × kw), and the same as a dense C × C kernel
        # for the reference below.
        N = C
        w_depthwise = int8_full_range(rng, (C, 1, *kernel))
        w = np.zeros((N, C, *kernel), np.int64)
        w[np.arange(C), np.arange(C)] = w_depthwise[:, 0]
    else:
        w = int8_full_range(rng, (N, C, *kernel))
    fan_in = (1 if depthwise else C) * kernel[0] * kernel[1]
    if params is None:
        params = random_channel_params(rng, N)
        params["multiplier"] = (params["multiplier"] * np.float32(1 / np.sqrt(fan_in))).astype(np.float32)
    pt, pl, pb, pr = pads
    padded = np.pad(x, ((0, 0), (pt, pb), (pl, pr)), constant_values=zero_point).astype(np.int64)
    layer = ConvLayer(H, W, C, N, tuple(kernel), tuple(strides), tuple(pads),
                      act_flip=act_flip, out_int32=out_int32, depthwise=depthwise,
                      name=f"conv{kernel[0]}x{kernel[1]}/{strides[0]} {C}->{N} {H}x{W}"
                      f"{' depthwise' if depthwise else ''}")
    OH, OW = layer.OH, layer.OW
    offset = 128 if act_flip else 0
    # The NPU computes sum((x - offset) w); the zero point folds into the bias.
    acc = np.zeros((OH, OW, N), np.int64)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            window = padded[:, i:i + strides[0] * OH:strides[0], j:j + strides[1] * OW:strides[1]]
            acc += np.einsum("chw,oc->hwo", window - offset, w[:, :, i, j].astype(np.int64))
    acc = acc.reshape(-1, N)
    if out_int32:
        values = acc.astype(np.int32)
    else:
        true_acc = acc + (offset - zero_point) * w.reshape(N, -1).sum(axis=1)
        values = requantize(true_acc.astype(np.int32), params["bias"], params["multiplier"],
                            params["zero_point"], params["clamp_lo"], params["clamp_hi"],
                            params["unsigned"])
    hw_params = dict(params, bias=params["bias"] + (offset - zero_point) * w.reshape(N, -1).sum(axis=1))
    dtype = np.uint8 if act_flip else np.int8
    layer.x_addr = image.place(x.transpose(1, 2, 0).astype(dtype))
    layer.pad_addr = image.place(np.full(max(conv_pad_bytes(config, layer), 1), zero_point, np.int64)
                                 .astype(dtype))
    layer.weight_addr = image.place(
        pack_depthwise_weights(config, w_depthwise) if depthwise
        else pack_conv_weights(config, w))
    padded_params = {key: np.resize(value, -(-N // config.cols) * config.cols)
                     for key, value in hw_params.items()}
    layer.param_addr = image.place(pack_channel_params(config, padded_params))
    return layer, values


def conv_pair_layers(config, first, second):
    """The two :class:`ConvLayer` (no tensors placed) of :func:`resident_conv_pair_workload`
    with ``first`` and ``second``, as ``sw.kernels.resident_pair`` returns them: for choosing
    their plans."""
    layer = ConvLayer(first["H"], first["W"], first["C"], first["N"], first["kernel"],
                      first["strides"], first["pads"])
    return resident_pair(config, layer, ConvLayer(layer.OH, layer.OW, first["N"], second["N"],
                                                  second["kernel"], second["strides"],
                                                  second["pads"]))


def resident_conv_pair_workload(config, rng, first, second, plans=(None, None), image=None):
    """Two convolutions in one program, the second reading the first's output, which stays
    in the scratchpad (``sw.kernels.resident_pair``). ``first`` and ``second`` are dicts of
    H, W, C, N, kernel, strides, pads and act_flip (the second's H, W, C follow from the
    first). The intermediate tensor has one zero point, as a quantized tensor does; the
    expected outputs come from both convolutions' definitions in NumPy. With no ``plans``
    the pair is planned as the compiler plans it (``sw.kernels.emit_resident_pair``)."""
    image = image or MemoryImage()
    flip1, flip2 = first["act_flip"], second["act_flip"]
    C, H, W = first["C"], first["H"], first["W"]
    x = rng.integers(0, 256, size=(C, H, W)) if flip1 else int8_full_range(rng, (C, H, W))
    zero_point = int(rng.integers(0, 256)) if flip1 else int(rng.integers(-128, 128))
    # The first layer's outputs are the second's inputs: one zero point, the second's type.
    N1 = first["N"]
    params = random_channel_params(rng, N1)
    qmin, qmax = (0, 255) if flip2 else (-128, 127)
    middle_zero = int(rng.integers(qmin, qmax + 1))
    fan_in = C * first["kernel"][0] * first["kernel"][1]
    params.update(unsigned=np.full(N1, flip2), zero_point=np.full(N1, middle_zero),
                  clamp_lo=np.where(rng.random(N1) < 0.5, qmin, middle_zero),
                  clamp_hi=np.full(N1, qmax),
                  multiplier=(params["multiplier"] * np.float32(1 / np.sqrt(fan_in))).astype(np.float32))
    layer1, middle = _direct_conv(config, image, rng, x, zero_point, N1, first["kernel"],
                                  first["strides"], first["pads"], flip1, False, False, params)
    x2 = middle.reshape(layer1.OH, layer1.OW, N1).transpose(2, 0, 1)
    layer2, values = _direct_conv(config, image, rng, x2, middle_zero, second["N"],
                                  second["kernel"], second["strides"], second["pads"], flip2,
                                  False, False)
    layer2.y_addr = image.reserve(layer2.M * layer2.N)
    layer1, layer2 = resident_pair(config, layer1, layer2)
    if plans == (None, None):
        program = emit_resident_pair(config, layer1, layer2)
    else:
        program = emit_conv(config, layer1, plan=plans[0])
        emit_conv(config, layer2, program, plan=plans[1])
    expected = (values & 0xFF).astype(np.uint8).reshape(-1)
    return _finish(config, image, program, [(layer2.name, layer2.y_addr, expected)],
                   _conv_macs(layer1) + _conv_macs(layer2))


def _add_layer(config, image, rng, n, unsigned, name):
    """An add of ``n`` random elements with its operands, weights and parameters placed in
    ``image``: the layer and its output region (name, address, expected bytes)."""
    dtype = np.uint8 if unsigned else np.int8
    qmin, qmax = (0, 255) if unsigned else (-128, 127)
    x, y = (int8_full_range(rng, n) + (128 if unsigned else 0) for _ in range(2))
    while True:
        scales = np.exp2(rng.uniform(-8, -4, size=3)).astype(np.float32)
        zero_points = rng.integers(qmin, qmax + 1, size=3).astype(dtype)
        ratio_x, ratio_y, fixed = qlinear_add_parameters(scales[0], zero_points[0], scales[1],
                                                         zero_points[1], scales[2], zero_points[2])
        if add_mode_unsupported(fixed, ratio_x, ratio_y) is None:
            break
    clamp = rng.integers(0, 3)
    clamp_lo = qmin if clamp == 0 else int(zero_points[2]) if clamp == 1 else \
        int(rng.integers(qmin, qmax + 1))
    clamp_hi = int(rng.integers(clamp_lo, qmax + 1)) if clamp == 2 else qmax
    layer = AddLayer(n, image.place(x.astype(dtype)), image.place(y.astype(dtype)),
                     image.place(pack_add_weights(config)),
                     image.place(pack_add_params(config, config.cols, fixed, ratio_x, ratio_y,
                                                 clamp_lo, clamp_hi, unsigned)),
                     image.reserve(n), unsigned, name)
    offset = 128 if unsigned else 0
    expected = add_output(-256 * (x - offset) + (y - offset), fixed, ratio_x, ratio_y, clamp_lo,
                          clamp_hi, unsigned)
    return layer, (layer.name, layer.out_addr, (expected & 0xFF).astype(np.uint8))


def add_workload(config, rng, n, unsigned, image=None, chunk_vectors=None):
    """An element-wise QLinearAdd of two tensors of ``n`` elements in the output stage's add
    mode (``sw.kernels.emit_add``, ``chunk_vectors`` vectors per chunk; by default the
    compiler's choice): full-range random operands (uint8 with ``unsigned``,
    else int8; both extremes in each of 16 or more elements), random per-tensor scales and
    zero points whose parameters (``sw.host_ops.qlinear_add_parameters``)
    ``hw.add_stage.add_mode_unsupported`` accepts, and a clamp that is the output type's
    range, a ReLU at the output zero point, or a random window. The expected output is
    ``verif.golden.add_output`` of the accumulators ``-256 · x' + y'`` the array forms."""
    image = image or MemoryImage()
    layer, output = _add_layer(config, image, rng, n, unsigned,
                               f"add {n} {'uint8' if unsigned else 'int8'}")
    return _finish(config, image, emit_add(config, layer, chunk_vectors=chunk_vectors),
                   [output], 0)


def _quantized_params(rng, N, unsigned, zero_point, fan_in):
    """Random channel parameters whose outputs are one quantized tensor: ``unsigned`` (uint8,
    else int8) with ``zero_point``, some channels clamped at it (a ReLU); biases and
    multipliers that spread full-range products of ``fan_in`` terms over a few dozen
    levels, so that few outputs saturate and a layer after it sees every error."""
    qmin, qmax = (0, 255) if unsigned else (-128, 127)
    spread = 40 / (5000 * np.sqrt(fan_in)) * rng.uniform(0.5, 2, size=N)
    return {"bias": rng.integers(-2**12, 2**12, size=N).astype(np.int64),
            "multiplier": spread.astype(np.float32),
            "zero_point": np.full(N, zero_point, np.int64), "unsigned": np.full(N, unsigned),
            "clamp_lo": np.where(rng.random(N) < 0.5, qmin, zero_point).astype(np.int64),
            "clamp_hi": np.full(N, qmax, np.int64)}


def residual_block_workload(config, rng, H, W, C, N, unsigned, image=None):
    """A residual block in one program with every tensor between its layers kept in the
    scratchpad, as the compiler plans a run (``sw.compiler._Compiler.plan_run``): a 3 × 3
    convolution of the input (``C`` channels, from memory) writes ``t`` into the
    scratchpad, padded by one pixel on each side; a 1 × 1 convolution reads ``t`` there
    (its own padding is none: it reads from inside the padded layout) and writes ``u`` in
    the same layout; the add mode adds ``t`` and ``u`` over the whole layout (padding too)
    into ``t``'s place; a 3 × 3 convolution fills that tensor's padding again, reads it
    and stores its ``N`` channels. The activations are uint8 with ``unsigned``, else int8;
    every tensor has its own zero point and scale. The expected output comes from the
    layers' definitions in NumPy."""
    image = image or MemoryImage()
    dtype = np.uint8 if unsigned else np.int8
    qmin, qmax = (0, 255) if unsigned else (-128, 127)
    offset = 128 if unsigned else 0
    x = rng.integers(qmin, qmax + 1, size=(C, H, W))
    zero_x, zero_t, zero_u = (int(z) for z in rng.integers(qmin, qmax + 1, size=3))
    conv1, t = _direct_conv(config, image, rng, x, zero_x, N, (3, 3), (1, 1), (1, 1, 1, 1),
                            unsigned, False, False, _quantized_params(rng, N, unsigned, zero_t, 9 * C))
    t = t.reshape(H, W, N)
    conv2, u = _direct_conv(config, image, rng, t.transpose(2, 0, 1), zero_t, N, (1, 1), (1, 1),
                            (0, 0, 0, 0), unsigned, False, False,
                            _quantized_params(rng, N, unsigned, zero_u, N))
    u = u.reshape(H, W, N)
    while True:
        # The sum's scale at least the operands': few sums saturate, so that the next
        # layer sees every error.
        scales = np.exp2(rng.uniform(-8, -4, size=3)).astype(np.float32)
        scales[2] = np.float32(max(scales[:2]) * rng.uniform(1, 2))
        zero_v = int(rng.integers(qmin, qmax + 1))
        ratio_x, ratio_y, fixed = qlinear_add_parameters(
            scales[0], dtype(zero_t), scales[1], dtype(zero_u), scales[2], dtype(zero_v))
        if add_mode_unsupported(fixed, ratio_x, ratio_y) is None:
            break
    clamp_lo = zero_v if rng.integers(2) else qmin
    v = add_output(-256 * (t - offset) + (u - offset), fixed, ratio_x, ratio_y, clamp_lo, qmax,
                   unsigned)
    conv3, out = _direct_conv(config, image, rng, v.transpose(2, 0, 1), zero_v, N, (3, 3),
                              (1, 1), (1, 1, 1, 1), unsigned, False, False,
                              _quantized_params(rng, N, unsigned, zero_u, 9 * N))

    # t at the bottom, u above it, the layers' buffers in the rest.
    S = config.scratchpad_bytes
    t_tensor = resident_tensor(config, 0, H, W, N, (1, 1, 1, 1))
    u_tensor = replace(t_tensor, addr=-(-t_tensor.size // 64) * 64)
    base = -(-(u_tensor.addr + u_tensor.size) // 1024) * 1024
    window = (base, (S - base) // 1024 * 1024)
    conv1 = replace(conv1, y_resident=t_tensor, window=window)
    conv2 = replace(conv2, x_resident=t_tensor, y_resident=u_tensor, window=window)
    conv2.pad_addr = image.place(np.full(conv_pad_bytes(config, conv2), zero_t).astype(dtype))
    add = AddLayer(t_tensor.size, weight_addr=image.place(pack_add_weights(config)),
                   param_addr=image.place(pack_add_params(config, config.cols, fixed, ratio_x,
                                                          ratio_y, clamp_lo, qmax, unsigned)),
                   unsigned=unsigned, name="residual add", x_resident=t_tensor,
                   y_resident=u_tensor, out_resident=t_tensor, window=window)
    conv3 = replace(conv3, x_resident=t_tensor, window=window)
    conv3.pad_addr = image.place(np.full(conv_pad_bytes(config, conv3), zero_v).astype(dtype))
    conv3.y_addr = image.reserve(H * W * N)
    program = emit_conv(config, conv1)
    emit_conv(config, conv2, program)
    emit_add(config, add, program)
    emit_conv(config, conv3, program)
    expected = (out & 0xFF).astype(np.uint8).reshape(-1)
    return _finish(config, image, program, [("residual block", conv3.y_addr, expected)],
                   sum(_conv_macs(layer) for layer in (conv1, conv2, conv3)))


def random_program(config, rng, layers=3, scale=1.0):
    """Several random GEMM layers and, with ``config.elementwise_add``, element-wise adds
    back to back in one program.

    ``scale`` shrinks the largest shapes drawn (each dimension's upper bound, not its
    lower bound of 1), for arrays much smaller than 8 x 8, which need many more cycles
    and instructions per MAC. The memory image (4 MiB) is no larger than the NPU's address
    space: a program that does not fit it is drawn again with one layer fewer."""
    try:
        return _random_program(config, rng, layers, scale)
    except MemoryError:
        if layers == 1:
            raise
        return random_program(config, rng, layers - 1, scale)


def _random_program(config, rng, layers, scale):
    image = MemoryImage(size=min(4 << 20, 2**config.addr_width))
    program = Program()
    outputs = []
    macs = 0

    def dimension(high):
        return int(rng.integers(1, max(2, round(high * scale))))

    for index in range(layers):
        kind = rng.integers(0, 4 if config.elementwise_add else 3)
        if kind == 3:
            layer, output = _add_layer(config, image, rng, dimension(3000), bool(rng.integers(0, 2)),
                                       f"layer {index}")
            emit_add(config, layer, program)
            outputs.append(output)
            continue
        if kind == 0:
            M, K, N = dimension(70), dimension(70), dimension(70)
            a = int8_full_range(rng, (M, K))
            flip = False
        else:
            M, K, N = dimension(120), dimension(200), dimension(40)
            a = rng.integers(0, 256, size=(M, K))
            flip = True
        w = int8_full_range(rng, (K, N))
        params = random_channel_params(rng, N)
        params["multiplier"] = (params["multiplier"] * np.float32(1 / np.sqrt(K))).astype(np.float32)
        out_int32 = bool(rng.random() < 0.2) and config.cols & (config.cols - 1) == 0
        layer, output = _gemm_layer(config, image, rng, a, w, params, flip, out_int32,
                                    f"layer {index}")
        emit_gemm(config, layer, program)
        outputs.append(output)
        macs += M * K * N
    return _finish(config, image, program, outputs, macs)
