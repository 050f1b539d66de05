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

The layer is cut into M-blocks (one activation buffer each) and N-groups (one output
buffer each), and each (block, group) *unit* into steps (N-tile, K-chunk). The load engine
runs one step ahead of the compute engine (program order L0, L1, C0, L2, C1, ...), the
store engine writes each unit out while the next one computes, and four kinds of tokens
keep the double buffers safe. Every layer ends with a barrier, so layers can follow each
other in one program and a later layer may read what an earlier one stored.

:func:`plan_gemm` chooses the block and group sizes among :func:`candidate_plans` with the
cost model (:mod:`sw.cost_model`): the tiling with the fewest predicted cycles wins.
"""

from dataclasses import dataclass, replace

import numpy as np

from hw.isa import CHANNEL_PARAM_BYTES, Engine, Opcode, slot_bytes
from sw.asm import Program


__all__ = ["GemmLayer", "GemmPlan", "LayerError", "pack_weights", "im2col", "a_pitch",
           "param_bytes", "candidate_plans", "plan_gemm", "emit_gemm"]


class LayerError(ValueError):
    """A layer the configuration cannot run (the message says which limit)."""


@dataclass
class GemmLayer:
    """One GEMM layer and where its tensors live in memory.

    ``a_addr``: M × K activations (int8, or uint8 with ``act_flip``), row-major, rows
``a_pitch`` bytes apart (0: ``K``; :func:`a_pitch` makes each M-block one transfer).
    Rows of Y are ``y_pitch`` bytes apart (0: ``N`` outputs).
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
    a_pitch: int = 0
    y_pitch: int = 0


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


@dataclass(frozen=True)
class GemmPlan:
    """How :func:`emit_gemm` tiles a layer.

    ``block_rows``: rows of A per M-block (one activation buffer); ``group_tiles``: N-tiles
    per output group (one output buffer, stored as one 2-D STORE); ``chunk_tiles``: K-tiles
    of weights per LOAD (one weight buffer); ``panel_tiles``: K-tiles of A per activation
    buffer (a longer K is reduced panel after panel, A reloaded for each N-tile).
    """
    k_tiles: int
    n_tiles: int
    block_rows: int
    group_tiles: int
    chunk_tiles: int
    panel_tiles: int


def a_pitch(config, K):
    """Bytes between rows of A in memory that let one LOAD move a whole M-block: ``K``
    padded to whole activation slots of the array's rows (padding bytes are ignored)."""
    return -(-K // config.rows) * slot_bytes(config.rows)


def param_bytes(config, N):
    """Bytes of :func:`sw.simulator.pack_channel_params` for ``N`` output channels."""
    return -(-N // config.cols) * CHANNEL_PARAM_BYTES * slot_bytes(config.cols)


def _limits(config, layer):
    """(k_tiles, n_tiles, largest block_rows, panel_tiles) of ``layer``;
    :class:`LayerError` if it cannot run at all."""
    R, C = config.rows, config.cols
    S = config.scratchpad_bytes
    act_slot, weight_slot = slot_bytes(R), slot_bytes(C)
    k_tiles, n_tiles = -(-layer.K // R), -(-layer.N // C)
    # An activation row holds at most 255 slots (the MATMUL's act_stride).
    panel_tiles = min(k_tiles, 255, (S // 4) // act_slot)
    if layer.out_int32 and weight_slot != C:
        raise LayerError(f"{layer.name}: int32 outputs need a power-of-two column count")
    out_slot = weight_slot * (4 if layer.out_int32 else 1)
    max_rows = min(layer.M, config.acc_depth, 4095, (S // 4) // (panel_tiles * act_slot),
                   (3 * S // 32) // out_slot)
    if max_rows < 1 or (S // 8) // (R * weight_slot) < 1 or \
            S // 16 < CHANNEL_PARAM_BYTES * weight_slot:
        raise LayerError(f"{layer.name}: a {layer.M}x{layer.K}x{layer.N} GEMM does not fit "
                         f"the {S}-byte scratchpad even when tiled")
    if n_tiles > config.channel_depth:
        raise LayerError(f"{layer.name}: N = {layer.N} exceeds the {config.channel_depth * C} "
                         f"output channels the channel-parameter table holds")
    return k_tiles, n_tiles, max_rows, panel_tiles


def candidate_plans(config, layer):
    """The tilings :func:`plan_gemm` chooses from: M cut into as few blocks as the
    activation buffer allows, and into more (smaller blocks overlap their loads, compute and
    stores better); N-groups as wide as the output buffer allows, and half as wide."""
    R, C = config.rows, config.cols
    S = config.scratchpad_bytes
    k_tiles, n_tiles, max_rows, panel_tiles = _limits(config, layer)
    out_slot = slot_bytes(C) * (4 if layer.out_int32 else 1)
    chunk_tiles = min(panel_tiles, (S // 8) // (R * slot_bytes(C)))
    fewest = -(-layer.M // max_rows)
    plans = []
    for blocks in sorted({fewest, fewest + 1, 2 * fewest, 4 * fewest}):
        if blocks > layer.M:
            continue
        rows = -(-layer.M // blocks)
        widest = min(n_tiles, (3 * S // 32) // (rows * out_slot))
        for group in sorted({widest, -(-widest // 2)}):
            plan = GemmPlan(k_tiles, n_tiles, rows, group, chunk_tiles, panel_tiles)
            if plan not in plans:
                plans.append(plan)
    return plans


#: Instructions beyond which :func:`plan_gemm` tries no smaller M-blocks.
LONG_PROGRAM = 20_000


def plan_gemm(config, layer):
    """The tiling of ``layer`` with the fewest cycles predicted by :mod:`sw.cost_model`
    (ties: fewer DRAM bytes); raises :class:`LayerError` if the layer cannot fit."""
    from sw.cost_model import predict

    best = None
    fewest_rows = None
    for plan in candidate_plans(config, layer):
        if fewest_rows is not None and plan.block_rows < fewest_rows:
            continue
        program = emit_gemm(config, layer, plan=plan)
        program.end()
        p = predict(config, program)
        key = (p.cycles, p.dma_read_bytes + p.dma_write_bytes)
        if best is None or key < best[0]:
            best = key, plan
        if len(program) > LONG_PROGRAM:
            # A large, compute-bound layer: smaller blocks would only add weight traffic,
            # and predicting them takes seconds.
            fewest_rows = plan.block_rows
    return best[1]


def _transfer(opcode, mem_addr, sp_addr, rows, row_bytes, mem_stride, sp_stride):
    """A LOAD/STORE; rows that are contiguous on both sides become one long row (fewer,
    longer bursts)."""
    if rows > 1 and mem_stride == row_bytes == sp_stride and rows * row_bytes < 1 << 16:
        rows, row_bytes, mem_stride, sp_stride = 1, rows * row_bytes, 0, 0
    return dict(opcode=opcode, mem_addr=mem_addr, sp_addr=sp_addr, rows=rows,
                row_bytes=row_bytes, mem_stride=mem_stride, sp_stride=sp_stride)


def emit_gemm(config, layer, program=None, plan=None):
    """Append ``layer``'s instructions (and a closing barrier) to ``program``; return it.
    ``plan``: a :class:`GemmPlan` (by default :func:`plan_gemm`'s choice). A layer with
    more output channels than the channel-parameter table holds becomes one GEMM per slice
    of them, each planned on its own (``plan`` must then be None)."""
    program = Program() if program is None else program
    R, C = config.rows, config.cols
    slice_n = config.channel_depth * C
    if layer.N > slice_n:
        # More output channels than the channel table holds: one GEMM per slice of them.
        assert plan is None
        out_bytes = 4 if layer.out_int32 else 1
        for n0 in range(0, layer.N, slice_n):
            emit_gemm(config, replace(
                layer, N=min(slice_n, layer.N - n0),
                weight_addr=layer.weight_addr + n0 // C * -(-layer.K // R) * R * slot_bytes(C),
                param_addr=layer.param_addr + param_bytes(config, n0),
                y_addr=layer.y_addr + n0 * out_bytes,
                y_pitch=layer.y_pitch or layer.N * out_bytes), program)
        return program
    plan = plan or plan_gemm(config, layer)
    S = config.scratchpad_bytes
    act_slot, weight_slot = slot_bytes(R), slot_bytes(C)
    act_buffers = [0, S // 4]
    weight_buffers = [S // 2, S // 2 + S // 8]
    out_buffers = [3 * S // 4, 3 * S // 4 + 3 * S // 32]
    param_buffer = 15 * S // 16
    out_bytes = 4 if layer.out_int32 else 1
    pitch = layer.a_pitch or layer.K
    y_pitch = layer.y_pitch or layer.N * out_bytes

    blocks = [(m0, min(plan.block_rows, layer.M - m0)) for m0 in range(0, layer.M, plan.block_rows)]
    groups = [range(n0, min(n0 + plan.group_tiles, plan.n_tiles))
              for n0 in range(0, plan.n_tiles, plan.group_tiles)]
    panels = [(p0, min(plan.panel_tiles, plan.k_tiles - p0))
              for p0 in range(0, plan.k_tiles, plan.panel_tiles)]
    units = [(b, g) for b in range(len(blocks)) for g in range(len(groups))]
    steps = [(u, n, panel, (k0, min(plan.chunk_tiles, panel[0] + panel[1] - k0)))
             for u, (b, g) in enumerate(units) for n in groups[g] for panel in panels
             for k0 in range(panel[0], panel[0] + panel[1], plan.chunk_tiles)]
    # A is loaded for each M-block, or, when K takes several panels, for each panel of
    # each N-tile; loads alternate between the two activation buffers.
    a_loads = []                        # per step: the index of the A load it reads
    loaded = -1
    for s, (u, n, panel, _) in enumerate(steps):
        previous = steps[s - 1] if s else None
        if previous is None or units[previous[0]][0] != units[u][0] or \
                (len(panels) > 1 and (previous[1], previous[2]) != (n, panel)):
            loaded += 1
        a_loads.append(loaded)

    def loads(s):
        u, n, (p0, pn), (k0, kn) = steps[s]
        m0, rows = blocks[units[u][0]]
        out = []
        if s == 0 or a_loads[s] != a_loads[s - 1]:
            k_first = p0 * R
            out.append(_transfer(Opcode.LOAD, layer.a_addr + m0 * pitch + k_first,
                                 act_buffers[a_loads[s] % 2], rows,
                                 min(layer.K, (p0 + pn) * R) - k_first, pitch, pn * act_slot))
        out.append(dict(opcode=Opcode.LOAD,
                        mem_addr=layer.weight_addr + (n * plan.k_tiles + k0) * R * weight_slot,
                        sp_addr=weight_buffers[s % 2], rows=1, row_bytes=kn * R * weight_slot))
        if s >= 2:
            out[0]["pop_next"] = 1
        out[-1]["push_next"] = 1
        return out

    def computes(s):
        u, n, (p0, pn), (k0, kn) = steps[s]
        b, g = units[u]
        rows = blocks[b][1]
        first_emit = n == groups[g][0]
        last_of_unit = s == len(steps) - 1 or steps[s + 1][0] != u
        out = []
        for kt in range(k0, k0 + kn):
            emit = kt == plan.k_tiles - 1
            insn = dict(opcode=Opcode.MATMUL,
                        weight_addr=weight_buffers[s % 2] + (kt - k0) * R * weight_slot,
                        act_addr=act_buffers[a_loads[s] % 2] + (kt - p0) * act_slot,
                        act_stride=pn,
                        count=rows, acc_addr=0, accumulate=int(kt > 0), emit=int(emit),
                        act_flip=int(layer.act_flip), channel=n,
                        out_addr=out_buffers[u % 2] + (n - groups[g][0]) * weight_slot * out_bytes,
                        out_stride=len(groups[g]) * weight_slot * out_bytes,
                        out_int32=int(layer.out_int32))
            if emit and first_emit and u >= 2:
                insn["pop_next"] = 1
            out.append(insn)
        out[0]["pop_prev"] = 1
        out[-1]["push_prev"] = 1
        if last_of_unit:
            out[-1]["push_next"] = 1
        return out

    def stores(u):
        b, g = units[u]
        m0, rows = blocks[b]
        group = groups[g]
        sp_stride = len(group) * weight_slot * out_bytes
        y_row = layer.y_addr + m0 * y_pitch
        if weight_slot == C:
            n0 = group[0] * C
            out = [_transfer(Opcode.STORE, y_row + n0 * out_bytes, out_buffers[u % 2], rows,
                             (min(layer.N, (group[-1] + 1) * C) - n0) * out_bytes,
                             y_pitch, sp_stride)]
        else:
            out = [_transfer(Opcode.STORE, y_row + n * C, out_buffers[u % 2] + i * weight_slot,
                             rows, min(C, layer.N - n * C), y_pitch, sp_stride)
                   for i, n in enumerate(group)]
        out[0]["pop_prev"] = 1
        out[-1]["push_prev"] = 1
        return out

    def add(instructions):
        for insn in instructions:
            insn = dict(insn)
            program.emit(insn.pop("opcode"), **insn)

    # Prologue: channel parameters, through the parameter buffer in as many pieces as needed.
    tile_param_bytes = CHANNEL_PARAM_BYTES * weight_slot
    per_piece = (S // 16) // tile_param_bytes
    pieces = range(0, plan.n_tiles, per_piece)
    for n0 in pieces:
        count = min(per_piece, plan.n_tiles - n0)
        add([dict(opcode=Opcode.LOAD, mem_addr=layer.param_addr + n0 * tile_param_bytes,
                  sp_addr=param_buffer, rows=1, row_bytes=count * tile_param_bytes,
                  push_next=1, pop_next=int(n0 > 0)),
             dict(opcode=Opcode.CONFIG, sp_addr=param_buffer, channel=n0, count=count,
                  pop_prev=1, push_prev=int(n0 + per_piece < plan.n_tiles))])
    add(loads(0))
    for s in range(len(steps)):
        if s + 1 < len(steps):
            add(loads(s + 1))
        add(computes(s))
        u = steps[s][0]
        if s == len(steps) - 1 or steps[s + 1][0] != u:
            add(stores(u))

    # Barrier: consume every token still outstanding, then let the load engine go on only
    # once the stores of this layer have completed.
    leftover_stores = min(2, len(units))
    for i in range(leftover_stores):
        program.emit(Opcode.SYNC, engine=Engine.COMPUTE, pop_next=1,
                     push_prev=int(i == leftover_stores - 1))
    for _ in range(min(2, len(steps)) + 1):
        program.emit(Opcode.SYNC, engine=Engine.LOAD, pop_next=1)
    return program
