"""Lowering of quantized GEMM and convolution layers to NPU programs.

A layer is ``Y = requantize(A @ W)`` with ``A`` (M × K) in memory row-major, ``W`` (K × N)
pre-tiled by :func:`pack_weights`, and per-output-channel requantization parameters.
Convolutions become GEMMs through :func:`im2col`.

Scratchpad plan (``S`` = scratchpad bytes, so that each region sits in its own banks and
the DMA never competes with the array for a read port)::

    [0, S/4)          activation block, buffer 0     (bank group of the lower half)
    [S/4, S/2)        activation block, buffer 1
    [S/2, 3S/4)       weight chunks, buffers 0 and 1 (S/8 each)
    [3S/4, 15S/16)    output blocks, buffers 0 and 1 (3S/32 each)
    [15S/16, S)       channel parameters

The layer is cut into steps (M-block, N-tile, K-chunk). The load engine runs one step
ahead of the compute engine (program order L0, L1, C0, L2, C1, ...), the store engine
writes each M-block out while the next one computes, and four kinds of tokens keep the
double buffers safe. Every layer ends with a barrier, so layers can follow each other in
one program and a later layer may read what an earlier one stored.
"""

from dataclasses import dataclass

import numpy as np

from hw.isa import CHANNEL_PARAM_BYTES, Engine, Opcode, slot_bytes
from sw.asm import Program


__all__ = ["GemmLayer", "LayerError", "pack_weights", "im2col", "emit_gemm", "plan_gemm"]


class LayerError(ValueError):
    """A layer the configuration cannot run (the message says which limit)."""


@dataclass
class GemmLayer:
    """One GEMM layer and where its tensors live in memory.

    ``a_addr``: M × K activations (int8, or uint8 with ``act_flip``), row-major.
    ``weight_addr``: :func:`pack_weights` bytes. ``param_addr``: :func:`pack_channel_params`
    bytes. ``y_addr``: M × N outputs (8-bit, or little-endian int32 with ``out_int32``),
    row-major.
    """
    M: int
    K: int
    N: int
    a_addr: int
    weight_addr: int
    param_addr: int
    y_addr: int
    act_flip: bool = False
    out_int32: bool = False
    name: str = "gemm"


def pack_weights(config, w):
    """``w`` (K × N int8) tiled for the array: [N-tile][K padded to rows][weight slot]."""
    K, N = w.shape
    R, C = config.rows, config.cols
    kt, nt = -(-K // R), -(-N // C)
    slot = slot_bytes(C)
    tiled = np.zeros((nt, kt * R, slot), np.int8)
    padded = np.zeros((kt * R, nt * C), np.int8)
    padded[:K, :N] = w
    for n in range(nt):
        tiled[n, :, :C] = padded[:, n * C:(n + 1) * C]
    return tiled.view(np.uint8).reshape(-1)


def im2col(x, kernel, strides=(1, 1), pads=(0, 0, 0, 0), pad_value=0):
    """``x`` (C × H × W) → (OH·OW) × (C·kh·kw) patches, in the order of
    ``weights.reshape(OC, C·kh·kw)``. ``pads`` is (top, left, bottom, right), as ONNX gives
    them; padding takes ``pad_value`` (the zero point)."""
    C, H, W = x.shape
    kh, kw = kernel
    sh, sw = strides
    pt, pl, pb, pr = pads
    padded = np.full((C, H + pt + pb, W + pl + pr), pad_value, x.dtype)
    padded[:, pt:pt + H, pl:pl + W] = x
    OH = (H + pt + pb - kh) // sh + 1
    OW = (W + pl + pr - kw) // sw + 1
    cols = np.empty((OH, OW, C, kh, kw), x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            cols[:, :, :, ky, kx] = padded[:, ky:ky + sh * OH:sh,
                                           kx:kx + sw * OW:sw].transpose(1, 2, 0)
    return cols.reshape(OH * OW, C * kh * kw)


@dataclass
class GemmPlan:
    k_tiles: int
    n_tiles: int
    block_rows: int
    chunk_tiles: int
    out_row_bytes: int
    param_bytes: int


def plan_gemm(config, layer):
    """Block sizes for ``layer`` on ``config``; raises :class:`LayerError` if it cannot fit."""
    R, C = config.rows, config.cols
    S = config.scratchpad_bytes
    act_slot, weight_slot = slot_bytes(R), slot_bytes(C)
    k_tiles, n_tiles = -(-layer.K // R), -(-layer.N // C)
    if k_tiles > 255:
        raise LayerError(f"{layer.name}: K = {layer.K} exceeds {255 * R}, the longest "
                         f"reduction one activation row can hold")
    if layer.out_int32 and weight_slot != C:
        raise LayerError(f"{layer.name}: int32 outputs need a power-of-two column count")
    out_row_bytes = n_tiles * weight_slot * (4 if layer.out_int32 else 1)
    block_rows = min(layer.M, config.acc_depth, 4095, (S // 4) // (k_tiles * act_slot),
                     (3 * S // 32) // out_row_bytes)
    chunk_tiles = min(k_tiles, (S // 8) // (R * weight_slot))
    param_bytes = n_tiles * CHANNEL_PARAM_BYTES * weight_slot
    if block_rows < 1 or chunk_tiles < 1:
        raise LayerError(f"{layer.name}: a {layer.M}x{layer.K}x{layer.N} GEMM does not fit "
                         f"the {S // 1024} KiB scratchpad even when tiled")
    if n_tiles > config.channel_depth or param_bytes > S // 16:
        raise LayerError(f"{layer.name}: N = {layer.N} exceeds the {config.channel_depth * C} "
                         f"output channels the channel-parameter table holds")
    return GemmPlan(k_tiles, n_tiles, block_rows, chunk_tiles, out_row_bytes, param_bytes)


def emit_gemm(config, layer, program=None):
    """Append ``layer``'s instructions (and a closing barrier) to ``program``; return it."""
    program = Program() if program is None else program
    plan = plan_gemm(config, layer)
    R, C = config.rows, config.cols
    S = config.scratchpad_bytes
    act_slot, weight_slot = slot_bytes(R), slot_bytes(C)
    act_buffers = [0, S // 4]
    weight_buffers = [S // 2, S // 2 + S // 8]
    out_buffers = [3 * S // 4, 3 * S // 4 + 3 * S // 32]
    param_buffer = 15 * S // 16
    out_bytes = 4 if layer.out_int32 else 1

    blocks = [(m0, min(plan.block_rows, layer.M - m0)) for m0 in range(0, layer.M, plan.block_rows)]
    chunks = [(k0, min(plan.chunk_tiles, plan.k_tiles - k0))
              for k0 in range(0, plan.k_tiles, plan.chunk_tiles)]
    steps = [(b, n, chunk) for b in range(len(blocks)) for n in range(plan.n_tiles)
             for chunk in chunks]

    def loads(s):
        b, n, (k0, kn) = steps[s]
        m0, rows = blocks[b]
        first_of_block = s == 0 or steps[s - 1][0] != b
        out = []
        if first_of_block:
            out.append(dict(opcode=Opcode.LOAD, mem_addr=layer.a_addr + m0 * layer.K,
                            sp_addr=act_buffers[b % 2], rows=rows, row_bytes=layer.K,
                            mem_stride=layer.K, sp_stride=plan.k_tiles * act_slot))
        out.append(dict(opcode=Opcode.LOAD,
                        mem_addr=layer.weight_addr + (n * plan.k_tiles + k0) * R * weight_slot,
                        sp_addr=weight_buffers[s % 2], rows=1, row_bytes=kn * R * weight_slot))
        if s >= 2:
            out[0]["pop_next"] = 1
        out[-1]["push_next"] = 1
        return out

    def computes(s):
        b, n, (k0, kn) = steps[s]
        m0, rows = blocks[b]
        last_of_block = s == len(steps) - 1 or steps[s + 1][0] != b
        out = []
        for kt in range(k0, k0 + kn):
            emit = kt == plan.k_tiles - 1
            insn = dict(opcode=Opcode.MATMUL,
                        weight_addr=weight_buffers[s % 2] + (kt - k0) * R * weight_slot,
                        act_addr=act_buffers[b % 2] + kt * act_slot, act_stride=plan.k_tiles,
                        count=rows, acc_addr=0, accumulate=int(kt > 0), emit=int(emit),
                        act_flip=int(layer.act_flip), channel=n,
                        out_addr=out_buffers[b % 2] + n * weight_slot * out_bytes,
                        out_stride=plan.out_row_bytes, out_int32=int(layer.out_int32))
            if emit and n == 0 and b >= 2:
                insn["pop_next"] = 1
            out.append(insn)
        out[0]["pop_prev"] = 1
        out[-1]["push_prev"] = 1
        if last_of_block:
            out[-1]["push_next"] = 1
        return out

    def stores(b):
        m0, rows = blocks[b]
        if weight_slot == C:
            out = [dict(opcode=Opcode.STORE, mem_addr=layer.y_addr + m0 * layer.N * out_bytes,
                        sp_addr=out_buffers[b % 2], rows=rows, row_bytes=layer.N * out_bytes,
                        mem_stride=layer.N * out_bytes, sp_stride=plan.out_row_bytes)]
        else:
            out = [dict(opcode=Opcode.STORE, mem_addr=layer.y_addr + m0 * layer.N + n * C,
                        sp_addr=out_buffers[b % 2] + n * weight_slot, rows=rows,
                        row_bytes=min(C, layer.N - n * C), mem_stride=layer.N,
                        sp_stride=plan.out_row_bytes) for n in range(plan.n_tiles)]
        out[0]["pop_prev"] = 1
        out[-1]["push_prev"] = 1
        return out

    def add(instructions):
        for insn in instructions:
            insn = dict(insn)
            program.emit(insn.pop("opcode"), **insn)

    # Prologue: channel parameters.
    add([dict(opcode=Opcode.LOAD, mem_addr=layer.param_addr, sp_addr=param_buffer, rows=1,
              row_bytes=plan.param_bytes, push_next=1),
         dict(opcode=Opcode.CONFIG, sp_addr=param_buffer, channel=0, count=plan.n_tiles,
              pop_prev=1)])
    add(loads(0))
    for s in range(len(steps)):
        if s + 1 < len(steps):
            add(loads(s + 1))
        add(computes(s))
        b = steps[s][0]
        if s == len(steps) - 1 or steps[s + 1][0] != b:
            add(stores(b))

    # Barrier: consume every token still outstanding, then let the load engine go on only
    # once the stores of this layer have completed.
    leftover_stores = min(2, len(blocks))
    for i in range(leftover_stores):
        program.emit(Opcode.SYNC, engine=Engine.COMPUTE, pop_next=1,
                     push_prev=int(i == leftover_stores - 1))
    for _ in range(min(2, len(steps)) + 1):
        program.emit(Opcode.SYNC, engine=Engine.LOAD, pop_next=1)
    return program
