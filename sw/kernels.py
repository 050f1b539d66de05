"""Lowering of quantized GEMM and convolution layers to NPU programs.

A GEMM layer is ``Y = requantize(A @ W)`` with ``A`` (M × K) in memory row-major, ``W``
(K × N) pre-tiled by :func:`pack_weights`, and per-output-channel requantization
parameters (:func:`emit_gemm`). A convolution runs either as such a GEMM on the host's
:func:`im2col`, or straight from its NHWC input (:func:`emit_conv`): the input rows a band
of output rows needs are loaded once into the scratchpad, with the zero point copied into
the padding, and each K-tile (kernel position, slot of input channels) is a MATMUL whose
activation vectors are pixels ``stride · ct`` slots apart. Both produce the
``(OH·OW) × N`` output, one pixel per row.

Scratchpad plan (``S`` = scratchpad bytes, so that each region sits in its own banks and
the DMA never competes with the array for a read port)::

    [0, S/4)          activation block, buffer 0     (bank group of the lower half)
    [S/4, S/2)        activation block, buffer 1
    [S/2, 3S/4)       weight chunks, buffers 0 and 1 (S/8 each)
    [3S/4, 15S/16)    output blocks, buffers 0 and 1 (3S/32 each)
    [15S/16, S)       channel parameters

The layer is cut into M-blocks (one activation buffer each: rows of A, or a band of
output rows) and N-groups (one output buffer each), and each (block, group) *unit* into
steps (N-tile, K-chunk). The load engine runs one step ahead of the compute engine
(program order L0, L1, C0, L2, C1, ...), the store engine writes each unit out while the
next one computes, and four kinds of tokens keep the double buffers safe. Every layer ends
with a barrier, so layers can follow each other in one program and a later layer may read
what an earlier one stored. Layers in one program may also keep the tensors between them
in the scratchpad (:class:`ResidentTensor`: NHWC, padded for the convolutions that read
it): a convolution writes its outputs into one (``ConvLayer.y_resident``) or reads its
input from one (``x_resident``, filling its padding first), an add reads and writes them
(``AddLayer.x_resident``, ``y_resident``, ``out_resident``), and each layer lays out the
plan above in the part of the scratchpad left to it (its ``window``). The compiler places
them (``sw.compiler._Compiler.plan_run``); :func:`resident_pair` places the tensor between
two convolutions at the bottom.

:func:`plan_gemm` and :func:`plan_conv` choose the block and group sizes among the
candidate tilings with the cost model (:mod:`sw.cost_model`), and the compiler chooses
between the two lowerings of a convolution the same way (:func:`preferred`).

An element-wise add of two 8-bit tensors (:class:`AddLayer`, :func:`emit_add`) runs in the
output stage's add mode (``hw.add_stage``): chunks of both operands are loaded into one
activation buffer (X in its lower half, Y in its upper half), X passes the array twice
with the diagonal weight tile ``-128 · I`` and Y once with ``I``, so that each accumulator
holds ``-256 · x' + y'``, and the last pass emits through an add-mode channel row. A vector
holds ``min(rows, cols)`` consecutive elements; loads, compute and stores overlap through
the same double buffers and tokens as above.
"""

from dataclasses import dataclass, replace

import numpy as np

from amaranth.lib import data

from hw.isa import CHANNEL_PARAM_BYTES, Engine, Opcode, Transfer, slot_bytes
from sw.asm import Program


__all__ = ["GemmLayer", "ConvLayer", "GemmPlan", "LayerError", "pack_weights",
           "pack_conv_weights", "pack_depthwise_weights", "im2col", "a_pitch", "weight_bytes",
           "param_bytes", "conv_pad_bytes",
           "conv_k_tiles", "candidate_plans", "plan_gemm", "emit_gemm", "candidate_conv_plans",
           "plan_conv", "emit_conv", "resident_pair", "emit_resident_pair", "ResidentTensor",
           "resident_tensor", "tiles_fill_slots",
           "preferred", "predict_program", "CYCLE_TOLERANCE", "LOWERING_TOLERANCE", "AddLayer",
           "pack_add_weights", "candidate_add_chunks", "plan_add", "emit_add", "predict_layer"]


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
    ``wide``: a convolution (:func:`emit_conv`) streams this many output rows of a band in
    one MATMUL per K-tile (see :func:`_wide_rows`); 0: a MATMUL per output row.
    ``resident``: all the layer's weights are loaded once, into both weight buffers, and
    stay there for every M-block (see :func:`resident_variants`); otherwise each step
    loads its chunk of weights, so every M-block loads them again.
    """
    k_tiles: int
    n_tiles: int
    block_rows: int
    group_tiles: int
    chunk_tiles: int
    panel_tiles: int
    wide: int = 0
    resident: bool = False


def a_pitch(config, K):
    """Bytes between rows of A in memory that let one LOAD move a whole M-block: ``K``
    padded to whole activation slots of the array's rows (padding bytes are ignored)."""
    return -(-K // config.rows) * slot_bytes(config.rows)


def weight_bytes(config, k_tiles, N):
    """Bytes of ``N`` output channels' weights, ``k_tiles`` K-tiles each, as
    :func:`pack_weights` (and :func:`pack_conv_weights`) lay them out."""
    return -(-N // config.cols) * k_tiles * config.rows * slot_bytes(config.cols)


def param_bytes(config, N):
    """Bytes of :func:`sw.simulator.pack_channel_params` for ``N`` output channels."""
    return -(-N // config.cols) * CHANNEL_PARAM_BYTES * slot_bytes(config.cols)


@dataclass(frozen=True)
class ResidentTensor:
    """An NHWC tensor kept in the scratchpad at ``addr`` as a convolution reads its input:
    ``padded_rows`` rows of ``line`` bytes, each pixel ``pixel`` bytes (its channels in
    whole activation slots), the image from padded row ``top`` and column ``left``."""
    addr: int
    line: int
    pixel: int
    top: int
    left: int
    padded_rows: int

    @property
    def size(self):
        return self.padded_rows * self.line

    def pixel_addr(self, y, x):
        """Scratchpad address of image pixel (``y``, ``x``)."""
        return self.addr + (self.top + y) * self.line + (self.left + x) * self.pixel

    def pads(self, height, width):
        """(top, left, bottom, right) padding around an image of ``height × width`` pixels."""
        return (self.top, self.left, self.padded_rows - self.top - height,
                self.line // self.pixel - self.left - width)


def tiles_fill_slots(config):
    """Whether an output tile fills exactly one activation slot (a square power-of-two
    array), which keeping tensors in the scratchpad between layers needs."""
    return config.rows == config.cols == slot_bytes(config.rows)


def resident_tensor(config, addr, height, width, channels, pads):
    """The :class:`ResidentTensor` at ``addr`` of an NHWC image of ``height × width``
    pixels of ``channels``, padded by ``pads`` (top, left, bottom, right); each pixel's
    channels in whole activation slots."""
    pixel = -(-channels // config.rows) * slot_bytes(config.rows)
    top, left, bottom, right = pads
    return ResidentTensor(addr, (width + left + right) * pixel, pixel, top, left,
                          height + top + bottom)


def _window(config, layer):
    """(base, bytes) of the part of the scratchpad ``layer`` plans its buffers in."""
    return getattr(layer, "window", None) or (0, config.scratchpad_bytes)


def _limits(config, layer):
    """(k_tiles, n_tiles, largest block_rows, panel_tiles) of ``layer``;
    :class:`LayerError` if it cannot run at all."""
    R, C = config.rows, config.cols
    _, S = _window(config, layer)
    act_slot, weight_slot = slot_bytes(R), slot_bytes(C)
    k_tiles, n_tiles = -(-layer.K // R), -(-layer.N // C)
    # An activation row holds at most 255 slots (the MATMUL's act_stride).
    panel_tiles = min(k_tiles, 255, (S // 4) // act_slot)
    _check_outputs(config, layer)
    out_slot = weight_slot * (4 if layer.out_int32 else 1)
    max_rows = min(layer.M, config.acc_depth, 4095, (S // 4) // (panel_tiles * act_slot),
                   (3 * S // 32) // out_slot)
    if max_rows < 1 or (S // 8) // (R * weight_slot) < 1 or \
            S // 16 < CHANNEL_PARAM_BYTES * weight_slot:
        raise LayerError(f"{layer.name}: a {layer.M}x{layer.K}x{layer.N} GEMM does not fit "
                         f"the {S}-byte scratchpad even when tiled")
    _check_outputs(config, layer)
    return k_tiles, n_tiles, max_rows, panel_tiles


def _check_outputs(config, layer):
    """:class:`LayerError` if ``layer``'s outputs cannot be produced: int32 outputs on
    columns that are not a power of two, or more output channels than the
    channel-parameter table holds."""
    C = config.cols
    if layer.out_int32 and slot_bytes(C) != C:
        raise LayerError(f"{layer.name}: int32 outputs need a power-of-two column count")
    if -(-layer.N // C) > config.channel_depth:
        raise LayerError(f"{layer.name}: N = {layer.N} exceeds the {config.channel_depth * C} "
                         f"output channels the channel-parameter table holds")


def _block_counts(fewest, most):
    """How many M-blocks (or bands) the candidate tilings cut a layer into: as few as the
    buffers allow, and more (smaller blocks overlap their loads, compute and stores
    better), at most ``most``."""
    return [b for b in sorted({fewest, fewest + 1, 2 * fewest, 4 * fewest}) if b <= most]


def _group_widths(config, layer, n_tiles, buffer_rows):
    """N-tiles per output group in the candidate tilings: as many as the output buffer
    holds for ``buffer_rows`` rows, and half as many."""
    out_slot = slot_bytes(config.cols) * (4 if layer.out_int32 else 1)
    widest = min(n_tiles, (3 * _window(config, layer)[1] // 32) // (buffer_rows * out_slot))
    return sorted({widest, -(-widest // 2)})


#: Bits of a LOAD's ``row_bytes``: resident weights come in one row.
_ROW_BYTES_WIDTH = data.Layout.cast(Transfer)["row_bytes"].shape.width


def resident_variants(config, layer, plans):
    """``plans`` and, for each that cuts ``layer`` into several M-blocks and whose weights
    fit both weight buffers (and one LOAD row), the same tiling with the weights resident:
    each weight byte is read once instead of once per M-block, but the first block waits
    for all of them."""
    most = min(_window(config, layer)[1] // 4, (1 << _ROW_BYTES_WIDTH) - 1)
    out = []
    for plan in plans:
        out.append(plan)
        if layer.M > plan.block_rows and weight_bytes(config, plan.k_tiles, layer.N) <= most:
            out.append(replace(plan, resident=True))
    return out


def candidate_plans(config, layer):
    """The tilings :func:`plan_gemm` chooses from: M cut into as few blocks as the
    activation buffer allows, and into more (smaller blocks overlap their loads, compute and
    stores better); N-groups as wide as the output buffer allows, and half as wide."""
    R, C = config.rows, config.cols
    _, S = _window(config, layer)
    k_tiles, n_tiles, max_rows, panel_tiles = _limits(config, layer)
    chunk_tiles = min(panel_tiles, (S // 8) // (R * slot_bytes(C)))
    plans = []
    for blocks in _block_counts(-(-layer.M // max_rows), layer.M):
        rows = -(-layer.M // blocks)
        for group in _group_widths(config, layer, n_tiles, rows):
            plan = GemmPlan(k_tiles, n_tiles, rows, group, chunk_tiles, panel_tiles)
            if plan not in plans:
                plans.append(plan)
    return resident_variants(config, layer, plans)


#: Instructions beyond which :func:`plan_gemm` tries no smaller M-blocks.
LONG_PROGRAM = 20_000


def plan_gemm(config, layer):
    """The :func:`preferred` tiling of ``layer`` by the predictions of :mod:`sw.cost_model`;
    raises :class:`LayerError` if the layer cannot fit."""
    return _best_plan(config, layer, candidate_plans, emit_gemm)[0]


#: A tiling at most this much slower than the fastest is preferred when it moves fewer DRAM
#: bytes: the cycle model sees one NPU with its memory to itself, not the energy and the
#: shared bandwidth that off-chip traffic costs on a board.
CYCLE_TOLERANCE = 0.03
#: The same, for the choice between a convolution's two lowerings (:func:`emit_conv` and a
#: GEMM on im2col), whose DRAM bytes differ several-fold rather than by a few percent (and
#: im2col's matrix is also written by the host). ResNet-8's stage-3 first convolution
#: (16 × 16 × 32 to 64 channels, stride 2) runs straight from its input in 12.9% more
#: cycles than on im2col (predicted; 11.5% in the RTL), with 46% fewer DRAM bytes: with
#: this tolerance the whole network moves 8.5% fewer bytes for 1.1% more cycles (at 10%
#: that layer took im2col). The compiler also applies it to a network's convolutions
#: together (``sw.compiler`` ``network_lowerings``), and to a pair of convolutions kept in
#: the scratchpad against the two run apart.
LOWERING_TOLERANCE = 0.15


def preferred(predictions, tolerance=CYCLE_TOLERANCE):
    """Index of the preferred of ``predictions`` (:class:`sw.cost_model.Prediction`): the
    fewest DRAM bytes among those within ``tolerance`` of the fewest cycles."""
    fastest = min(p.cycles for p in predictions)
    return min((p.dma_read_bytes + p.dma_write_bytes, p.cycles, i)
               for i, p in enumerate(predictions)
               if p.cycles <= fastest * (1 + tolerance))[2]


def predict_program(config, program, add=False):
    """:func:`sw.cost_model.predict` of ``program`` with its END, remembered for the
    program's instructions (a compilation predicts some programs more than once)."""
    from sw.cost_model import predict

    words = program.words[:-1] if program.words[-1:] == _END else program.words
    key = (config, tuple(words), repr(add))
    if key not in _predicted:
        if len(_predicted) > 4096:
            _predicted.clear()
        _predicted[key] = predict(config, Program().extend(program).end(), add)
    return _predicted[key]


#: Predictions already made, by configuration, instructions and adds.
_predicted = {}
#: The words of an ``END``, which a program's key leaves out.
_END = Program().end().words


#: Plans already chosen, by configuration and layer shape (addresses and names aside).
_chosen = {}


def _shape_key(config, layer):
    """The key of ``layer`` in :data:`_chosen`: its fields but its memory addresses and name."""
    addresses = ("a_addr", "x_addr", "y_addr", "pad_addr", "weight_addr", "param_addr", "out_addr")
    return (config, repr(replace(layer, name="", **{f: 0 for f in addresses if hasattr(layer, f)})))


def _best_plan(config, layer, candidates, emit):
    """(plan, :class:`sw.cost_model.Prediction`) of the :func:`preferred` of
    ``candidates(config, layer)``, each emitted by ``emit(config, layer, plan=plan)``.
    The choice is remembered for the layer's shape: where its tensors live hardly changes
    the predictions."""
    key = _shape_key(config, layer)
    if key in _chosen:
        return _chosen[key]
    tried = []
    fewest_rows = None
    for plan in candidates(config, layer):
        if fewest_rows is not None and plan.block_rows < fewest_rows:
            continue
        program = emit(config, layer, plan=plan)
        tried.append((plan, predict_program(config, program)))
        if len(program) > LONG_PROGRAM:
            # A large, compute-bound layer: smaller blocks would only add weight traffic,
            # and predicting them takes seconds.
            fewest_rows = plan.block_rows
    _chosen[key] = tried[preferred([p for _, p in tried])]
    return _chosen[key]


def _transfer(opcode, mem_addr, sp_addr, rows, row_bytes, mem_stride, sp_stride):
    """A LOAD/STORE; rows that are contiguous on both sides become one long row (fewer,
    longer bursts)."""
    if rows > 1 and mem_stride == row_bytes == sp_stride and rows * row_bytes < 1 << 16:
        rows, row_bytes, mem_stride, sp_stride = 1, rows * row_bytes, 0, 0
    return dict(opcode=opcode, mem_addr=mem_addr, sp_addr=sp_addr, rows=rows,
                row_bytes=row_bytes, mem_stride=mem_stride, sp_stride=sp_stride)


@dataclass
class ConvLayer:
    """One 2-D convolution computed straight from its input, without im2col.

    ``x_addr``: the input, ``H × W × C`` bytes (int8, or uint8 with ``act_flip``), pixel
    after pixel, each with its ``C`` channels (NHWC). ``pad_addr``: :func:`conv_pad_bytes`
    bytes of the input's zero point, copied into the padding. ``weight_addr``:
    :func:`pack_conv_weights` bytes. ``param_addr``, ``y_addr``, ``out_int32`` and
    ``y_pitch`` as in :class:`GemmLayer`; the output is the ``(OH·OW) × N`` matrix, one
    output pixel per row (NHWC). ``pads`` is (top, left, bottom, right), as ONNX gives them.
    ``depthwise``: output channel ``n`` reads input channel ``n`` only (``N == C``, ONNX
    ``group == C``); its weight tiles are diagonal, one per kernel position.

    In a program of several layers the input may already be in the scratchpad
    (``x_resident``, a :class:`ResidentTensor` padded at least as the layer pads it; the
    layer fills all of its padding from ``pad_addr`` and reads it instead of ``x_addr``),
    and the outputs may stay there (``y_resident``, instead of ``y_addr``). The layer then
    runs in ``window`` (scratchpad base, bytes) instead of the whole scratchpad.
    """
    H: int
    W: int
    C: int
    N: int
    kernel: tuple = (1, 1)
    strides: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)
    x_addr: int = 0
    pad_addr: int = 0
    weight_addr: int = 0
    param_addr: int = 0
    y_addr: int = 0
    act_flip: bool = False
    out_int32: bool = False
    name: str = "conv"
    y_pitch: int = 0
    depthwise: bool = False
    x_resident: "ResidentTensor" = None
    y_resident: "ResidentTensor" = None
    window: tuple = None

    @property
    def OH(self):
        return (self.H + self.pads[0] + self.pads[2] - self.kernel[0]) // self.strides[0] + 1

    @property
    def OW(self):
        return (self.W + self.pads[1] + self.pads[3] - self.kernel[1]) // self.strides[1] + 1

    @property
    def M(self):
        return self.OH * self.OW

    @property
    def padded_width(self):
        return self.W + self.pads[1] + self.pads[3]


def _pixel_bytes(config, layer):
    """Scratchpad bytes of one input pixel: its channels in whole activation slots."""
    return -(-layer.C // config.rows) * slot_bytes(config.rows)


def conv_k_tiles(config, layer):
    """K-tiles of ``layer`` per N-tile: one per kernel position and slot of input channels
    (depthwise: the one slot of the N-tile's own channels)."""
    slots = 1 if layer.depthwise else -(-layer.C // config.rows)
    return layer.kernel[0] * layer.kernel[1] * slots


def pack_conv_weights(config, w):
    """``w`` (N × C × kh × kw int8, as ONNX orders it) tiled for :func:`emit_conv`: K-tile
    ``(i · kw + j) · ct + t`` holds input channels ``t·rows …`` of kernel position (i, j)."""
    N, C, kh, kw = w.shape
    R = config.rows
    ct = -(-C // R)
    k = np.zeros((kh, kw, ct * R, N), np.int8)
    k[:, :, :C, :] = np.asarray(w).transpose(2, 3, 1, 0)
    return pack_weights(config, k.reshape(-1, N))


def pack_depthwise_weights(config, w):
    """``w`` (C × 1 × kh × kw int8, ONNX's depthwise weights) tiled for :func:`emit_conv`:
    per N-tile, one diagonal tile per kernel position (row ``r`` of the tile, input channel
    ``r`` of the N-tile's slot, feeds column ``r`` only)."""
    C, _, kh, kw = w.shape
    R = config.rows
    k = np.zeros((kh, kw, R, C), np.int8)
    channels = np.arange(C)
    k[:, :, channels % R, channels] = np.asarray(w)[:, 0].transpose(1, 2, 0)
    return pack_weights(config, k.reshape(-1, C))


def conv_pad_bytes(config, layer):
    """Bytes of the zero-point line at ``pad_addr``: one padded row of input pixels (of the
    resident input's layout, whose padding the layer fills)."""
    X = layer.x_resident
    if X is not None:
        return X.line if any(X.pads(layer.H, layer.W)) else 0
    return layer.padded_width * _pixel_bytes(config, layer) if any(layer.pads) else 0


class _ConvOperand:
    """The activations of a :class:`ConvLayer`: an M-block is a band of whole output rows,
    and its activation buffer holds the padded input rows the band reads, each pixel's
    channels in ``ct`` slots. Each K-tile (kernel position, channel slot) is one MATMUL
    per output row, whose ``OW`` vectors are ``stride · ct`` slots apart, or one MATMUL per
    ``wide`` output rows (see :func:`_wide_rows`; with a stride ``s`` > 1, the input is
    split into ``s × s`` phases, :meth:`load_phases`)."""

    def __init__(self, config, layer, wide):
        self.config, self.layer = config, layer
        self.slot = slot_bytes(config.rows)
        self.ct = -(-layer.C // config.rows)
        self.pixel = self.ct * self.slot
        X = layer.x_resident
        self.line = X.line if X is not None else layer.padded_width * self.pixel
        self.wide = wide
        self.phase_line = _phase_width(layer) * self.pixel
        self.resident = X is not None

    def phase(self, a, b, n, buffer):
        """Scratchpad address of phase (a, b) of a band of ``n`` output rows computed wide."""
        s = self.layer.strides[0]
        return buffer + (a * s + b) * _phase_rows(self.layer, n) * self.phase_line

    def band(self, m0, rows):
        """(first output row, output rows, padded input rows) of the block."""
        L = self.layer
        n = rows // L.OW
        return m0 // L.OW, n, (n - 1) * L.strides[0] + L.kernel[0]

    def buffer(self, m0, default):
        """Scratchpad address of the padded input rows of the band from output row ``m0``:
        ``default`` (an activation buffer), or within the resident input."""
        L, X = self.layer, self.layer.x_resident
        if X is None:
            return default
        pt, pl = L.pads[:2]
        origin = X.addr + (X.top - pt) * X.line + (X.left - pl) * X.pixel
        return origin + self.band(m0, 0)[0] * L.strides[0] * X.line

    def load(self, m0, rows, p0, pn, buffer):
        L, X = self.layer, self.layer.x_resident
        if X is not None:
            # Only the tensor's padding (at least the layer's own): the image is already
            # there (the first band loads it once).
            return self.fill(X.addr, 0, X.padded_rows, image=False, pads=X.pads(L.H, L.W))
        if self.wide and L.strides[0] > 1:
            return self.load_phases(m0, rows, buffer)
        o0, _, in_rows = self.band(m0, rows)
        return self.fill(buffer, o0 * L.strides[0], in_rows)

    def fill(self, buffer, top, in_rows, image=True, pads=None):
        """LOADs of padded input rows ``top`` to ``top + in_rows`` into ``buffer``: the
        padding (``pads``, by default the layer's) from the zero-point line, and with
        ``image`` the image's pixels."""
        L, line, pixel = self.layer, self.line, self.pixel
        pt, pl, _, pr = pads or L.pads
        first, last = max(top, pt), min(top + in_rows, pt + L.H)
        out = []

        def pad(sp_addr, count, row_bytes):
            if count > 0 and row_bytes > 0:
                out.append(dict(opcode=Opcode.LOAD, mem_addr=L.pad_addr, sp_addr=sp_addr,
                                rows=count, row_bytes=row_bytes, mem_stride=0, sp_stride=line))

        pad(buffer, first - top, line)                                  # rows above
        pad(buffer + (last - top) * line, top + in_rows - last, line)   # rows below
        if last > first:
            b0, count = first - top, last - first
            data = buffer + b0 * line + pl * pixel
            right = data + L.W * pixel
            pad(buffer + b0 * line, 1, pl * pixel)
            # The right padding of a row and the left padding of the next are contiguous.
            pad(right, count - 1, (pl + pr) * pixel)
            pad(right + (count - 1) * line, 1, pr * pixel)
            x_row = L.x_addr + (first - pt) * L.W * L.C
            if image and L.C == pixel:
                out.append(_transfer(Opcode.LOAD, x_row, data, count, L.W * L.C, L.W * L.C, line))
            elif image:
                for y in range(count):
                    out.append(_transfer(Opcode.LOAD, x_row + y * L.W * L.C, data + y * line,
                                         L.W, L.C, L.C, pixel))
        return out

    def load_phases(self, m0, rows, buffer):
        """The band's padded input rows split into ``s × s`` phases for a wide stride-``s``
        convolution: phase (a, b) holds padded pixel (a + s·y, b + s·x) at (y, x), so that
        each kernel position reads one phase with stride 1."""
        L, pixel, phase_line = self.layer, self.pixel, self.phase_line
        s, (pt, pl, _, _) = L.strides[0], L.pads
        o0, n, _ = self.band(m0, rows)
        width = _phase_width(L)
        padded_rows = L.H + L.pads[0] + L.pads[2]
        out = []

        def pad(sp_addr, count, row_bytes, sp_stride=phase_line):
            if count > 0 and row_bytes > 0:
                out.append(dict(opcode=Opcode.LOAD, mem_addr=L.pad_addr, sp_addr=sp_addr,
                                rows=count, row_bytes=row_bytes, mem_stride=0,
                                sp_stride=sp_stride))

        for a in range(min(s, L.kernel[0])):      # phases no kernel position reads stay empty
            # Padded rows top + a + s·y: those of the image, and padding above and below.
            ys = [y for y in range(_phase_rows(L, n)) if o0 * s + a + s * y < padded_rows]
            image = [y for y in ys if pt <= o0 * s + a + s * y < pt + L.H]
            for b in range(min(s, L.kernel[1])):
                phase = self.phase(a, b, n, buffer)
                above = image[0] if image else len(ys)
                pad(phase, above, width * pixel)
                below = image[-1] + 1 if image else len(ys)
                pad(phase + below * phase_line, len(ys) - below, width * pixel)
                if not image:
                    continue
                # Phase columns x: padded column b + s·x, image column b + s·x − pl.
                left = max(0, -(-(pl - b) // s))
                right = min(width, -(-(pl + L.W - b) // s))
                edge = min(width, -(-(L.padded_width - b) // s))
                pad(phase + image[0] * phase_line, len(image), left * pixel)
                pad(phase + image[0] * phase_line + right * pixel, len(image),
                    (edge - right) * pixel)
                for y in image:
                    h = o0 * s + a + s * y - pt
                    out.append(_transfer(
                        Opcode.LOAD, L.x_addr + (h * L.W + b + s * left - pl) * L.C,
                        phase + y * phase_line + left * pixel, right - left, L.C, s * L.C,
                        pixel))
        return out

    def vectors(self, kt, rows, p0, pn, buffer, n_tile):
        L = self.layer
        sh, sw = L.strides
        if L.depthwise:
            (i, j), t = divmod(kt, L.kernel[1]), n_tile
        else:
            i, rest = divmod(kt, L.kernel[1] * self.ct)
            j, t = divmod(rest, self.ct)
        _, n, _ = self.band(0, rows)
        if self.wide:
            width = _phase_width(L)
            base = self.phase(i % sh, j % sh, n, buffer) + \
                (i // sh) * self.phase_line + (j // sh) * self.pixel + t * self.slot
            return [(base + r * self.phase_line, self.ct, _wide_rows(L, min(self.wide, n - r)),
                     r * width) for r in range(0, n, self.wide)]
        base = buffer + i * self.line + j * self.pixel + t * self.slot
        return [(base + r * sh * self.line, sw * self.ct, L.OW, r * L.OW) for r in range(n)]

    def resident_output(self, m0, row, n_tile):
        """(out_addr, out_stride) of a MATMUL whose results start at output-buffer row
        ``row`` of the band from output pixel ``m0``, into the resident output: N-tile
        ``n_tile`` fills activation slot ``n_tile`` of each pixel (the array is square)."""
        L, Y = self.layer, self.layer.y_resident
        per_row = _phase_width(L) if self.wide else L.OW
        return (Y.pixel_addr(m0 // L.OW + row // per_row, 0) + n_tile * self.slot, Y.pixel)

    def pieces(self, rows):
        L = self.layer
        _, n, _ = self.band(0, rows)
        width = _phase_width(L)
        if not self.wide or width == L.OW:
            return [(0, 0, rows)]
        return [(r * width, r * L.OW, L.OW) for r in range(n)]


def _phase_width(layer):
    """Pixels per row of a wide convolution's input in the scratchpad: the padded width
    with stride 1, a phase's width (``OW`` plus the kernel's reach) with stride ``s``."""
    return layer.OW + (layer.kernel[1] - 1) // layer.strides[1]


def _phase_rows(layer, n):
    """Rows of each phase (with stride 1, the one padded input) of ``n`` output rows
    computed wide."""
    return n + (layer.kernel[0] - 1) // layer.strides[0]


def _wide_rows(layer, n):
    """Output-buffer rows of ``n`` output rows computed *wide*: one MATMUL per K-tile
    streams their (phase) input rows end to end, so each output row but the last is
    followed by ``(kw − 1) // stride`` vectors whose results are never stored."""
    return (n - 1) * _phase_width(layer) + layer.OW


def _conv_limits(config, layer, wide):
    """(k_tiles, n_tiles, most output rows per band, chunk_tiles) of ``layer`` run by
    :func:`emit_conv`, ``wide`` or not; :class:`LayerError` if it cannot run that way."""
    R, C = config.rows, config.cols
    _, S = _window(config, layer)
    weight_slot = slot_bytes(C)
    L = layer
    pixel = _pixel_bytes(config, L)
    line = L.padded_width * pixel
    k_tiles, n_tiles = conv_k_tiles(config, L), -(-L.N // C)
    out_slot = weight_slot * (4 if L.out_int32 else 1)
    _check_outputs(config, L)
    if L.OH < 1 or L.OW < 1:
        raise LayerError(f"{L.name}: the kernel is larger than the padded input")
    if L.depthwise and (R != C or L.N != L.C):
        raise LayerError(f"{L.name}: a depthwise convolution runs directly only with N = C "
                         f"on a square array")
    if L.strides[1] * pixel // slot_bytes(R) > 255 or line >= 1 << 16 or L.W * L.C >= 1 << 16 \
            or L.W >= 1 << 12 or L.H >= 1 << 12:
        raise LayerError(f"{L.name}: a row of {L.W} pixels of {L.C} channels exceeds one transfer")
    buffer_rows = min(config.acc_depth, (3 * S // 32) // out_slot, 4095)
    if wide:
        width, s = _phase_width(L), L.strides[0]
        band_rows = (buffer_rows - L.OW) // width + 1 if buffer_rows >= L.OW else 0
        input_rows = (S // 4) // (s * s * width * pixel) - (L.kernel[0] - 1) // s
    else:
        band_rows = buffer_rows // L.OW
        input_rows = ((S // 4) // line - L.kernel[0]) // L.strides[0] + 1
    if L.x_resident is not None:
        input_rows = L.OH                           # the whole input is in the scratchpad
    rows = min(L.OH, band_rows, input_rows)
    chunk_tiles = min(k_tiles, (S // 8) // (R * weight_slot))
    if rows < 1 or chunk_tiles < 1 or S // 16 < CHANNEL_PARAM_BYTES * weight_slot:
        raise LayerError(f"{L.name}: an output row of the {L.H}x{L.W}x{L.C} -> {L.N} "
                         f"convolution does not fit the {S}-byte scratchpad")
    return k_tiles, n_tiles, rows, chunk_tiles


def _can_be_wide(layer):
    """Whether ``layer`` may run wide: with equal strides; from a resident input only with
    stride 1 (its phases would need loads) and rows padded as the layer pads them; into a
    resident output only when each row's
    unstored results fall in that tensor's padding (its padded rows as wide as the rows
    computed wide), which the next convolution then fills."""
    X, Y = layer.x_resident, layer.y_resident
    return layer.strides[0] == layer.strides[1] and \
        (X is None or (layer.strides[0] == 1 and X.line == layer.padded_width * X.pixel)) and \
        (Y is None or _phase_width(layer) * Y.pixel == Y.line)


def resident_pair(config, first, second):
    """``first`` and ``second`` (:class:`ConvLayer`, ``second`` reading what ``first``
    writes) with the tensor between them kept in the scratchpad: at its bottom, padded as
    ``second`` reads its input, while both plan their buffers in the rest (from the next
    eighth of the scratchpad up). :class:`LayerError` if they cannot: the tensor must fit
    half the scratchpad, ``first`` must write 8-bit outputs of at most the
    channel-parameter table's channels, and the array must be square (an output tile then
    fills one activation slot)."""
    R, C = config.rows, config.cols
    S = config.scratchpad_bytes
    if not tiles_fill_slots(config):
        raise LayerError(f"{second.name}: keeping its input in the scratchpad needs a square "
                         f"power-of-two array")
    if (second.H, second.W, second.C) != (first.OH, first.OW, first.N) or first.out_int32 \
            or first.depthwise or second.depthwise or first.N > config.channel_depth * C:
        raise LayerError(f"{second.name}: its input cannot stay in the scratchpad")
    tensor = resident_tensor(config, 0, second.H, second.W, second.C, second.pads)
    if tensor.size > S // 2:
        raise LayerError(f"{second.name}: its {tensor.size}-byte padded input exceeds half "
                         f"the {S}-byte scratchpad")
    base = -(-tensor.size // (S // 8)) * (S // 8)
    window = (base, S - base)
    return (replace(first, y_resident=tensor, window=window),
            replace(second, x_resident=tensor, window=window))


def emit_resident_pair(config, first, second, program=None):
    """Append ``first`` and ``second`` (as :func:`resident_pair` returns them) to
    ``program``; return it. The second runs with its :func:`plan_conv` plan; the first's
    plan is the :func:`preferred` by the two layers' predictions together, not the first's
    alone (a plan a few percent slower on the first layer alone may be as fast on the pair
    and read its weights fewer times)."""
    program = Program() if program is None else program
    after = predict_program(config, emit_conv(config, second))
    tried = [(plan, predict_program(config, emit_conv(config, first, plan=plan)))
             for plan in candidate_conv_plans(config, first)]
    emit_conv(config, first, program, plan=tried[preferred([p + after for _, p in tried])][0])
    return emit_conv(config, second, program)


def candidate_conv_plans(config, layer):
    """The tilings :func:`plan_conv` chooses from: a MATMUL per output row, or wide (per
    band or per pair of rows; equal strides only); bands of output rows as tall as the
    buffers allow, and shorter; N-groups as wide as the output buffer allows, and half."""
    plans = []
    error = None
    for wide in (False, True) if _can_be_wide(layer) else (False,):
        try:
            k_tiles, n_tiles, max_rows, chunk_tiles = _conv_limits(config, layer, wide)
        except LayerError as refused:
            error = refused
            continue
        for bands in _block_counts(-(-layer.OH // max_rows), layer.OH):
            band = -(-layer.OH // bands)
            rows = band * layer.OW
            buffer_rows = _wide_rows(layer, band) if wide else rows
            for group in _group_widths(config, layer, n_tiles, buffer_rows):
                # Wide: the whole band in one MATMUL, or in pairs of rows (less waste).
                for per_matmul in sorted({band, min(band, 2)}) if wide else (0,):
                    plan = GemmPlan(k_tiles, n_tiles, rows, group, chunk_tiles, k_tiles,
                                    per_matmul)
                    if plan not in plans:
                        plans.append(plan)
    if not plans:
        raise error
    return resident_variants(config, layer, plans)


def plan_conv(config, layer):
    """(plan, prediction) of ``layer`` run by :func:`emit_conv`, as :func:`plan_gemm`
    chooses; raises :class:`LayerError` if it cannot run that way."""
    return _best_plan(config, layer, candidate_conv_plans, emit_conv)


def emit_conv(config, layer, program=None, plan=None):
    """Append the instructions of ``layer`` (a :class:`ConvLayer`) and a closing barrier to
    ``program``; return it. ``plan`` as for :func:`emit_gemm`."""
    program = Program() if program is None else program
    if layer.depthwise and layer.N > config.channel_depth * config.cols:
        raise LayerError(f"{layer.name}: a depthwise convolution of {layer.N} channels exceeds "
                         f"the {config.channel_depth * config.cols} the channel-parameter table holds")
    slices = _slices(config, layer, conv_k_tiles(config, layer))
    assert plan is None or len(slices) == 1
    for part in slices:
        part_plan = plan or plan_conv(config, part)[0]
        _emit_tiled(config, part, _ConvOperand(config, part, part_plan.wide), part_plan, program)
    return program


def _slices(config, layer, k_tiles):
    """``layer`` cut into slices of the output channels the channel-parameter table holds
    (one layer if it holds them all)."""
    C = config.cols
    slice_n = config.channel_depth * C
    if layer.N <= slice_n:
        return [layer]
    out_bytes = 4 if layer.out_int32 else 1
    return [replace(layer, N=min(slice_n, layer.N - n0),
                    weight_addr=layer.weight_addr + weight_bytes(config, k_tiles, n0),
                    param_addr=layer.param_addr + param_bytes(config, n0),
                    y_addr=layer.y_addr + n0 * out_bytes,
                    y_pitch=layer.y_pitch or layer.N * out_bytes)
            for n0 in range(0, layer.N, slice_n)]


def predict_layer(config, layer):
    """The :func:`predict_program` of ``layer`` (a :class:`GemmLayer` or :class:`ConvLayer`)
    emitted alone with its chosen plan: that plan's remembered prediction when the layer is
    one slice, without emitting it again."""
    conv = isinstance(layer, ConvLayer)
    emit = emit_conv if conv else emit_gemm
    k_tiles = conv_k_tiles(config, layer) if conv else -(-layer.K // config.rows)
    if len(_slices(config, layer, k_tiles)) == 1:
        return _best_plan(config, layer, candidate_conv_plans if conv else candidate_plans,
                          emit)[1]
    return predict_program(config, emit(config, layer))


def emit_gemm(config, layer, program=None, plan=None):
    """Append ``layer``'s instructions (and a closing barrier) to ``program``; return it.
    ``plan``: a :class:`GemmPlan` (by default :func:`plan_gemm`'s choice). A layer with
    more output channels than the channel-parameter table holds becomes one GEMM per slice
    of them, each planned on its own (``plan`` must then be None)."""
    program = Program() if program is None else program
    slices = _slices(config, layer, -(-layer.K // config.rows))
    assert plan is None or len(slices) == 1
    for part in slices:
        _emit_tiled(config, part, _MatrixOperand(config, part), plan or plan_gemm(config, part),
                    program)
    return program


class _MatrixOperand:
    """The activations of a :class:`GemmLayer`: an M-block of rows of A, one K-panel of
    them, per activation buffer; a MATMUL per K-tile streams the whole block."""

    resident = False

    def __init__(self, config, layer):
        self.config, self.layer = config, layer
        self.slot = slot_bytes(config.rows)

    @staticmethod
    def buffer(m0, default):
        return default

    def load(self, m0, rows, p0, pn, buffer):
        R, layer = self.config.rows, self.layer
        pitch = layer.a_pitch or layer.K
        k_first = p0 * R
        return [_transfer(Opcode.LOAD, layer.a_addr + m0 * pitch + k_first, buffer, rows,
                          min(layer.K, (p0 + pn) * R) - k_first, pitch, pn * self.slot)]

    def vectors(self, kt, rows, p0, pn, buffer, n_tile):
        """(act_addr, act_stride, count, first output-buffer row) of each MATMUL of K-tile
        ``kt`` of N-tile ``n_tile``; the accumulator rows are the output-buffer rows."""
        return [(buffer + (kt - p0) * self.slot, pn, rows, 0)]

    def pieces(self, rows):
        """(output-buffer row, row of the block, rows) of each run of the block's outputs."""
        return [(0, 0, rows)]


def _emit_tiled(config, layer, operand, plan, program):
    """The schedule shared by GEMMs and convolutions: ``operand`` says how an M-block of
    activations is loaded and which vectors each K-tile's MATMULs stream."""
    R, C = config.rows, config.cols
    base, S = _window(config, layer)
    weight_slot = slot_bytes(C)
    act_buffers = [base, base + S // 4]
    weight_buffers = [base + S // 2, base + S // 2 + S // 8]
    out_buffers = [base + 3 * S // 4, base + 3 * S // 4 + 3 * S // 32]
    param_buffer = base + 15 * S // 16
    out_bytes = 4 if layer.out_int32 else 1
    y_pitch = layer.y_pitch or layer.N * out_bytes
    resident_output = getattr(layer, "y_resident", None) is not None

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

    # A step that loads something (its A, or its chunk of weights when they are not
    # resident) hands the compute engine a token; the compute engine hands it back after
    # the last step before the next such load, which frees that load's buffers. A resident
    # input loads (its padding) with the first step only.
    loads_a = [s == 0 or (not operand.resident and a_loads[s] != a_loads[s - 1])
               for s in range(len(steps))]
    fresh = [s for s in range(len(steps)) if loads_a[s] or not plan.resident]
    load_index = {s: i for i, s in enumerate(fresh)}
    last_of_load = {s - 1 for s in fresh[1:]} | {len(steps) - 1}
    tile_bytes = R * weight_slot

    def act_buffer(s):
        return operand.buffer(blocks[units[steps[s][0]][0]][0], act_buffers[a_loads[s] % 2])

    def loads(i):
        s = fresh[i]
        u, n, (p0, pn), (k0, kn) = steps[s]
        m0, rows = blocks[units[u][0]]
        out = []
        if loads_a[s]:
            out += operand.load(m0, rows, p0, pn, act_buffer(s))
        if not plan.resident:
            out.append(dict(opcode=Opcode.LOAD,
                            mem_addr=layer.weight_addr + (n * plan.k_tiles + k0) * tile_bytes,
                            sp_addr=weight_buffers[s % 2], rows=1, row_bytes=kn * tile_bytes))
        elif s == 0:
            out.append(dict(opcode=Opcode.LOAD, mem_addr=layer.weight_addr,
                            sp_addr=weight_buffers[0], rows=1,
                            row_bytes=plan.n_tiles * plan.k_tiles * tile_bytes))
        if i >= 2:
            out[0]["pop_next"] = 1
        out[-1]["push_next"] = 1
        return out

    def weight_addr(s, kt):
        _, n, _, (k0, _) = steps[s]
        if plan.resident:
            return weight_buffers[0] + (n * plan.k_tiles + kt) * tile_bytes
        return weight_buffers[s % 2] + (kt - k0) * tile_bytes

    def computes(s):
        u, n, (p0, pn), (k0, kn) = steps[s]
        b, g = units[u]
        m0, rows = blocks[b]
        first_emit = n == groups[g][0]
        last_of_unit = s == len(steps) - 1 or steps[s + 1][0] != u
        out_stride = len(groups[g]) * weight_slot * out_bytes
        out = []
        for kt in range(k0, k0 + kn):
            emit = kt == plan.k_tiles - 1
            for act_addr, act_stride, count, row in operand.vectors(
                    kt, rows, p0, pn, act_buffer(s), n):
                if resident_output:
                    out_addr, stride = operand.resident_output(m0, row, n)
                else:
                    out_addr = out_buffers[u % 2] + row * out_stride + \
                        (n - groups[g][0]) * weight_slot * out_bytes
                    stride = out_stride
                insn = dict(opcode=Opcode.MATMUL, weight_addr=weight_addr(s, kt),
                            act_addr=act_addr, act_stride=act_stride, count=count, acc_addr=row,
                            accumulate=int(kt > 0), emit=int(emit), act_flip=int(layer.act_flip),
                            channel=n, out_addr=out_addr, out_stride=stride,
                            out_int32=int(layer.out_int32))
                if emit and first_emit and u >= 2 and not any(i.get("emit") for i in out):
                    insn["pop_next"] = 1
                out.append(insn)
        out[0]["pop_prev"] = int(s in load_index)
        out[-1]["push_prev"] = int(s in last_of_load)
        if last_of_unit:
            out[-1]["push_next"] = 1
        return out

    def stores(u):
        if resident_output:
            return _passing_store()
        b, g = units[u]
        m0, rows = blocks[b]
        group = groups[g]
        sp_stride = len(group) * weight_slot * out_bytes
        out = []
        for sp_row, m, count in operand.pieces(rows):
            y_row = layer.y_addr + (m0 + m) * y_pitch
            sp = out_buffers[u % 2] + sp_row * sp_stride
            if weight_slot == C:
                n0 = group[0] * C
                out.append(_transfer(Opcode.STORE, y_row + n0 * out_bytes, sp, count,
                                     (min(layer.N, (group[-1] + 1) * C) - n0) * out_bytes,
                                     y_pitch, sp_stride))
            else:
                out += [_transfer(Opcode.STORE, y_row + n * C, sp + i * weight_slot, count,
                                  min(C, layer.N - n * C), y_pitch, sp_stride)
                        for i, n in enumerate(group)]
        out[0]["pop_prev"] = 1
        out[-1]["push_prev"] = 1
        return out

    # Prologue: channel parameters, through the parameter buffer in as many pieces as needed.
    tile_param_bytes = CHANNEL_PARAM_BYTES * weight_slot
    per_piece = (S // 16) // tile_param_bytes
    pieces = range(0, plan.n_tiles, per_piece)
    for n0 in pieces:
        count = min(per_piece, plan.n_tiles - n0)
        _append(program, [
            dict(opcode=Opcode.LOAD, mem_addr=layer.param_addr + n0 * tile_param_bytes,
                 sp_addr=param_buffer, rows=1, row_bytes=count * tile_param_bytes,
                 push_next=1, pop_next=int(n0 > 0)),
            dict(opcode=Opcode.CONFIG, sp_addr=param_buffer, channel=n0, count=count,
                 pop_prev=1, push_prev=int(n0 + per_piece < plan.n_tiles))])
    _append(program, loads(0))
    for s in range(len(steps)):
        if s in load_index and load_index[s] + 1 < len(fresh):
            _append(program, loads(load_index[s] + 1))
        _append(program, computes(s))
        u = steps[s][0]
        if s == len(steps) - 1 or steps[s + 1][0] != u:
            _append(program, stores(u))

    _barrier(program, min(2, len(units)), min(2, len(fresh)))
    return program


def _passing_store():
    """The store of results that stay in the scratchpad: nothing to store, but the store
    engine's ``SYNC`` passes the tokens a store would."""
    return [dict(opcode=Opcode.SYNC, engine=Engine.STORE, pop_prev=1, push_prev=1)]


def _append(program, instructions):
    """Emit ``instructions`` (dicts of an opcode and its fields) into ``program``."""
    for insn in instructions:
        insn = dict(insn)
        program.emit(insn.pop("opcode"), **insn)


def _barrier(program, stores, releases):
    """The end of a layer: consume every token still outstanding (the store engine's for
    the last ``stores`` stores, the compute engine's ``releases`` of buffers the load
    engine did not wait for), then let the load engine go on only once the stores of this
    layer have completed."""
    for i in range(stores):
        program.emit(Opcode.SYNC, engine=Engine.COMPUTE, pop_next=1, push_prev=int(i == stores - 1))
    for _ in range(releases + 1):
        program.emit(Opcode.SYNC, engine=Engine.LOAD, pop_next=1)


@dataclass
class AddLayer:
    """An element-wise add of two 8-bit tensors of ``n`` elements in the output stage's add
    mode (``hw.add_stage``).

    ``x_addr`` and ``y_addr``: the operands X and Y (int8, or uint8 with ``unsigned``),
    ``n`` contiguous bytes each. ``weight_addr``: :func:`pack_add_weights` bytes.
    ``param_addr``: one channel-parameter row in the add mode
    (:func:`sw.simulator.pack_add_params` of ``cols`` channels). ``out_addr``: the ``n``
    results, of the operands' type.

    In a program of several layers the operands may already be in the scratchpad
    (``x_resident`` and ``y_resident``, both or neither), and the results may stay there
    (``out_resident``): :class:`ResidentTensor` s of one layout, whose ``n`` bytes (padding
    included) are added as they lie. The layer then runs in ``window`` (scratchpad base,
    bytes) instead of the whole scratchpad.
    """
    n: int
    x_addr: int = 0
    y_addr: int = 0
    weight_addr: int = 0
    param_addr: int = 0
    out_addr: int = 0
    unsigned: bool = False
    name: str = "add"
    x_resident: ResidentTensor = None
    y_resident: ResidentTensor = None
    out_resident: ResidentTensor = None
    window: tuple = None


def pack_add_weights(config):
    """The weight tiles of :func:`emit_add`, as :func:`pack_weights` lays them out: the
    diagonal ``-128 · I`` (for X), then ``I`` (for Y)."""
    diagonal = np.eye(config.rows, config.cols, dtype=np.int64)
    return pack_weights(config, np.concatenate([-128 * diagonal, diagonal]).astype(np.int8))


def _add_lanes(config):
    """Elements per activation vector of an add: a diagonal tile passes ``min(rows, cols)``."""
    return min(config.rows, config.cols)


def _add_limits(config, layer):
    """The most vectors per chunk of ``layer``; :class:`LayerError` if it cannot run."""
    _, S = _window(config, layer)
    weight_slot = slot_bytes(config.cols)
    if not config.elementwise_add:
        raise LayerError(f"{layer.name}: the configuration has no add mode (elementwise_add)")
    if layer.n < 1:
        raise LayerError(f"{layer.name}: an add of no elements")
    resident = [t for t in (layer.x_resident, layer.y_resident, layer.out_resident) if t]
    if resident and not (tiles_fill_slots(config) and all(t.size == layer.n for t in resident)
                         and (layer.x_resident is None) == (layer.y_resident is None)):
        raise LayerError(f"{layer.name}: its tensors cannot stay in the scratchpad")
    # A chunk of X and one of Y fill an activation buffer; its results one output buffer.
    most = min(config.acc_depth, 4095,
               (S // 8) // slot_bytes(config.rows) if layer.x_resident is None else 4095,
               (3 * S // 32) // weight_slot if layer.out_resident is None else 4095)
    if most < 1 or 2 * config.rows * weight_slot > S // 4 or \
            S // 16 < CHANNEL_PARAM_BYTES * weight_slot:
        raise LayerError(f"{layer.name}: an add does not fit the {S}-byte scratchpad")
    return most


def candidate_add_chunks(config, layer):
    """The vectors per chunk :func:`plan_add` chooses from: chunks as large as the buffers
    allow, and smaller (they overlap their loads, compute and stores better)."""
    most = _add_limits(config, layer)
    vectors = -(-layer.n // _add_lanes(config))
    return sorted({-(-vectors // count) for count in _block_counts(-(-vectors // most), vectors)},
                  reverse=True)


def plan_add(config, layer):
    """Vectors per chunk of ``layer``: the :func:`preferred` of :func:`candidate_add_chunks`
    by the predictions of :mod:`sw.cost_model`, remembered for the configuration and the
    layer's shape (its ``n``, where its tensors are kept and its window); raises :class:`LayerError` if the add cannot run."""
    key = _shape_key(config, layer)
    if key not in _chosen:
        chunks = candidate_add_chunks(config, layer)
        predictions = [predict_program(config, emit_add(config, layer, chunk_vectors=chunk), add=True)
                       for chunk in chunks]
        _chosen[key] = chunks[preferred(predictions)]
    return _chosen[key]


def _vector_transfers(opcode, mem_addr, sp_addr, count, lanes, slot):
    """LOAD/STORE of ``count`` contiguous bytes of memory as vectors of ``lanes`` bytes,
    ``slot`` bytes apart in the scratchpad (the last vector may be shorter)."""
    if lanes == slot and count < 1 << 16:
        return [_transfer(opcode, mem_addr, sp_addr, 1, count, 0, 0)]
    full, rest = divmod(count, lanes)
    out = [_transfer(opcode, mem_addr, sp_addr, full, lanes, lanes, slot)] if full else []
    if rest:
        out.append(_transfer(opcode, mem_addr + full * lanes, sp_addr + full * slot, 1, rest,
                             0, 0))
    return out


def emit_add(config, layer, program=None, chunk_vectors=None):
    """Append the instructions of ``layer`` (an :class:`AddLayer`) and a closing barrier to
    ``program``; return it. ``chunk_vectors``: vectors per chunk (by default
    :func:`plan_add`'s choice).

    The prologue loads the channel row and the two weight tiles and CONFIGs the row (table
    row 0). Chunk ``c`` is loaded into activation buffer ``c % 2`` while chunk ``c - 1``
    computes, X and Y each with a token of its own: the two passes of X (with ``-128 · I``)
    need only X, the pass of Y (with ``I``, emitting into output buffer ``c % 2``) waits for
    Y, then hands the buffer back to the load engine and the results to the store engine,
    whose store frees the output buffer for chunk ``c + 2``. Resident operands are read
    where they are, with no loads; resident results are written where they belong, and
    the store engine only passes the tokens on (a ``SYNC``)."""
    program = Program() if program is None else program
    chunk = chunk_vectors or plan_add(config, layer)
    R = config.rows
    base, S = _window(config, layer)
    lanes = _add_lanes(config)
    act_slot, weight_slot = slot_bytes(R), slot_bytes(config.cols)
    act_buffers = [base, base + S // 4]         # X at the buffer, Y S/8 above it
    weight_buffer = base + S // 2               # -128 · I, then I
    tile_bytes = R * weight_slot
    out_buffers = [base + 3 * S // 4, base + 3 * S // 4 + 3 * S // 32]
    param_buffer = base + 15 * S // 16
    chunks = [(e0, min(chunk * lanes, layer.n - e0)) for e0 in range(0, layer.n, chunk * lanes)]
    X, Y, Out = layer.x_resident, layer.y_resident, layer.out_resident
    loaded = X is None                          # operands come through the activation buffers

    def loads(c):
        e0, count = chunks[c]
        out = []
        for mem_addr, half in ((layer.x_addr, 0), (layer.y_addr, S // 8)):
            out += _vector_transfers(Opcode.LOAD, mem_addr + e0, act_buffers[c % 2] + half,
                                     count, lanes, act_slot)
            out[-1]["push_next"] = 1
        if c >= 2:
            out[0]["pop_next"] = 1
        return out

    def computes(c):
        e0 = chunks[c][0]
        x, y = (act_buffers[c % 2], act_buffers[c % 2] + S // 8) if loaded else \
            (X.addr + e0, Y.addr + e0)
        passes = [(x, weight_buffer), (x, weight_buffer), (y, weight_buffer + tile_bytes)]
        out = [dict(opcode=Opcode.MATMUL, weight_addr=weight_addr, act_addr=act_addr,
                    act_stride=1, count=-(-chunks[c][1] // lanes), acc_addr=0,
                    accumulate=int(i > 0), act_flip=int(layer.unsigned))
               for i, (act_addr, weight_addr) in enumerate(passes)]
        out[0]["pop_prev"] = int(loaded)
        out[-1].update(emit=1, channel=0, out_stride=weight_slot,
                       out_addr=out_buffers[c % 2] if Out is None else Out.addr + e0,
                       pop_prev=int(loaded), pop_next=int(c >= 2), push_prev=int(loaded),
                       push_next=1)
        return out

    def stores(c):
        if Out is not None:
            return _passing_store()
        e0, count = chunks[c]
        out = _vector_transfers(Opcode.STORE, layer.out_addr + e0, out_buffers[c % 2], count,
                                lanes, weight_slot)
        out[0]["pop_prev"] = 1
        out[-1]["push_prev"] = 1
        return out

    _append(program, [
        dict(opcode=Opcode.LOAD, mem_addr=layer.param_addr, sp_addr=param_buffer, rows=1,
             row_bytes=CHANNEL_PARAM_BYTES * weight_slot),
        dict(opcode=Opcode.LOAD, mem_addr=layer.weight_addr, sp_addr=weight_buffer, rows=1,
             row_bytes=2 * tile_bytes, push_next=1),
        dict(opcode=Opcode.CONFIG, sp_addr=param_buffer, channel=0, count=1, pop_prev=1)])
    if loaded:
        _append(program, loads(0))
    for c in range(len(chunks)):
        if loaded and c + 1 < len(chunks):
            _append(program, loads(c + 1))
        _append(program, computes(c))
        _append(program, stores(c))
    _barrier(program, min(2, len(chunks)), min(2, len(chunks)) if loaded else 0)
    return program
