"""sw.kernels on the NumPy NPU simulator (no RTL): every tiling the compiler may choose
computes the GEMM or the convolution exactly."""

import numpy as np
import pytest

from hw.config import DEFAULT_CONFIG, NPUConfig
from hw.isa import INSTRUCTION_BYTES, Opcode, decode
from hw.registers import ErrorCode
from sw.asm import Program
from sw.host_ops import qlinear_add_parameters
from sw.kernels import (AddLayer, ConvLayer, GemmLayer, LayerError, candidate_add_chunks,
                        candidate_conv_plans, candidate_plans, conv_k_tiles, emit_add, emit_conv,
                        emit_gemm, pack_add_weights, param_bytes, plan_conv, plan_gemm,
                        predict_program, resident_pair, weight_bytes)
from sw.simulator import NPUSimulator, pack_add_params
from verif.golden import add_output
from verif.npu_workloads import (MemoryImage, add_workload, conv_pair_layers, direct_conv_workload,
                                 gemm_workload, residual_block_workload,
                                 resident_conv_pair_workload)
from verif.stimulus import int8_full_range


def _shapes(seed):
    rng = np.random.default_rng(seed)
    print(f"seed {seed}")
    return [(int(rng.integers(1, 600)), int(rng.integers(1, 300)), int(rng.integers(1, 520)))
            for _ in range(2)]


def _check(config, shape, plan, out_int32, seed):
    M, K, N = shape
    _run(config, gemm_workload(config, np.random.default_rng(seed), M, K, N,
                               act_flip=bool(seed % 2), out_int32=out_int32,
                               image=MemoryImage(8 << 20), plan=plan), shape, plan)


def _run(config, workload, shape, plan):
    """Run ``workload`` on the NumPy NPU simulator; every output byte as NumPy expects."""
    memory = workload.image.data.copy()
    result = NPUSimulator(config).run(memory, workload.program_addr)
    assert result.error is ErrorCode.NONE, (shape, plan, result)
    for name, wrong, total in workload.check(memory):
        assert wrong == 0, f"{name} with {plan}: {wrong} of {total} bytes wrong"


@pytest.mark.parametrize("seed", range(4))
def test_every_candidate_tiling_computes_the_gemm(seed):
    """Several M-blocks, N-groups, K-chunks and channel-parameter pieces (N > 256), int8
    and int32 outputs: each candidate plan against NumPy."""
    for index, shape in enumerate(_shapes(seed)):
        out_int32 = index == 1 and shape[2] <= 256
        layer = GemmLayer(*shape, 0, 0, 0, 0, out_int32=out_int32)
        for plan in candidate_plans(DEFAULT_CONFIG, layer):
            _check(DEFAULT_CONFIG, shape, plan, out_int32, seed)


def test_plan_covers_non_power_of_two_arrays():
    config = NPUConfig(rows=4, cols=6)
    for shape in [(37, 20, 50), (300, 9, 13)]:
        layer = GemmLayer(*shape, 0, 0, 0, 0)
        _check(config, shape, plan_gemm(config, layer), out_int32=False, seed=1)


@pytest.mark.parametrize("shape", [(20, 2300, 30), (9, 4100, 9), (10, 20, 600), (5, 2100, 530)])
def test_long_reductions_and_wide_outputs(shape):
    """K beyond one activation row (255 slots: reduced panel after panel) and N beyond the
    channel-parameter table (one GEMM per slice of output channels)."""
    M, K, N = shape
    layer = GemmLayer(M, K, N, 0, 0, 0, 0)
    if N <= DEFAULT_CONFIG.channel_depth * DEFAULT_CONFIG.cols:
        for plan in candidate_plans(DEFAULT_CONFIG, layer):
            _check(DEFAULT_CONFIG, shape, plan, out_int32=False, seed=M)
    else:
        _check(DEFAULT_CONFIG, shape, None, out_int32=bool(M % 2), seed=M)


def test_layers_that_cannot_run_are_refused_by_name():
    layer = GemmLayer(4, 8, 8, 0, 0, 0, 0, out_int32=True, name="node 'fc'")
    with pytest.raises(LayerError, match="node 'fc': int32 outputs need a power-of-two column"):
        plan_gemm(NPUConfig(rows=4, cols=6), layer)


def _conv_shapes(seed):
    """Random convolutions: kernels 1 to 4 (not square), strides 1 and 2, uneven padding,
    channel counts that do and do not fill the array's rows."""
    rng = np.random.default_rng(seed)
    print(f"seed {seed}")
    shapes = []
    for _ in range(2):
        kernel = tuple(int(k) for k in rng.integers(1, 5, size=2))
        strides = tuple(int(s) for s in rng.integers(1, 3, size=2))
        pads = tuple(int(p) for p in rng.integers(0, 3, size=4))
        H, W = (int(v) for v in rng.integers(max(kernel), 20, size=2))
        C, N = int(rng.choice([3, 8, 12, 16, 40])), int(rng.integers(1, 40))
        shapes.append(dict(H=H, W=W, C=C, N=N, kernel=kernel, strides=strides, pads=pads))
    return shapes


@pytest.mark.parametrize("seed", range(4))
def test_every_candidate_conv_tiling_computes_the_convolution(seed):
    """Convolutions run straight from their NHWC input (emit_conv), with uint8 and int8
    activations, int8 and int32 outputs: each candidate plan (bands, N-groups, a MATMUL
    per output row or one per band) against the convolution's definition in NumPy."""
    for index, shape in enumerate(_conv_shapes(seed)):
        flip, out_int32 = bool(index % 2 == seed % 2), index == 1
        layer = ConvLayer(**shape, out_int32=out_int32)
        for plan in candidate_conv_plans(DEFAULT_CONFIG, layer):
            _check_conv(DEFAULT_CONFIG, shape, plan, flip, out_int32, seed)


def _check_conv(config, shape, plan, act_flip, out_int32, seed):
    _run(config, direct_conv_workload(config, np.random.default_rng(seed), **shape,
                                      act_flip=act_flip, out_int32=out_int32,
                                      image=MemoryImage(4 << 20), plan=plan), shape, plan)


@pytest.mark.parametrize("seed", range(2))
def test_every_candidate_depthwise_tiling_computes_the_convolution(seed):
    """Depthwise convolutions (diagonal weight tiles, an N-tile reading its own channel
    slot), stride 1 and 2, channel counts that do and do not fill the array."""
    rng = np.random.default_rng(seed)
    print(f"seed {seed}")
    for strides, C in [((1, 1), int(rng.integers(9, 40))), ((2, 2), 16)]:
        shape = dict(H=int(rng.integers(3, 14)), W=int(rng.integers(3, 14)), C=C, N=C,
                     kernel=(3, 3), strides=strides, pads=(1, 1, 1, 1))
        layer = ConvLayer(**shape, depthwise=True)
        for plan in candidate_conv_plans(DEFAULT_CONFIG, layer):
            _check_conv(DEFAULT_CONFIG, dict(shape, depthwise=True), plan, bool(seed), False, seed)


def test_wide_conv_outputs_beyond_the_channel_table_and_other_arrays():
    """A convolution with more output channels than the channel-parameter table holds
    (one emit_conv per slice), and one on a 4 x 6 array (slots wider than the rows)."""
    _check_conv(DEFAULT_CONFIG, dict(H=3, W=5, C=8, N=530), None, True, False, 3)
    _check_conv(NPUConfig(rows=4, cols=6), dict(H=9, W=6, C=7, N=13, kernel=(3, 3),
                                               pads=(1, 1, 1, 1)), None, False, False, 4)


def test_direct_conv_moves_each_input_byte_about_once():
    """A 3x3 convolution's DRAM reads are its input and weights (each band reloads two
    halo rows and the weights, plus the padding), not the nine-fold im2col matrix."""
    config = DEFAULT_CONFIG
    layer = ConvLayer(32, 32, 16, 16, (3, 3), (1, 1), (1, 1, 1, 1))
    program = emit_conv(config, layer)
    prediction = predict_program(config, program)
    inputs, weights, im2col_matrix = 32 * 32 * 16, 16 * 9 * 16, 32 * 32 * 144
    assert prediction.dma_read_bytes < 2 * (inputs + weights)
    assert prediction.dma_read_bytes < im2col_matrix / 4
    assert prediction.dma_write_bytes == 32 * 32 * 16


def test_convs_that_cannot_run_directly_are_refused_by_name():
    layer = ConvLayer(4, 5000, 8, 8, (3, 3), name="node 'wide'")
    with pytest.raises(LayerError, match="node 'wide': a row of 5000 pixels"):
        plan_conv(DEFAULT_CONFIG, layer)


def _weight_bytes_read(program, layer, total):
    """Bytes the LOADs of ``program`` read from ``layer``'s ``total`` weight bytes."""
    read = 0
    for word in program.words:
        opcode, f = decode(word)
        if opcode is Opcode.LOAD and layer.weight_addr <= f["mem_addr"] < layer.weight_addr + total:
            read += f["rows"] * f["row_bytes"]
    return read


@pytest.mark.parametrize("layer", [
    ConvLayer(32, 32, 16, 16, (3, 3), (1, 1), (1, 1, 1, 1), weight_addr=1 << 20),
    GemmLayer(900, 100, 40, 0, 1 << 20, 0, 0)], ids=["conv", "gemm"])
def test_resident_weights_are_read_once(layer):
    """A tiling with resident weights reads each weight byte once however many M-blocks it
    has; the others read them once per M-block; the compiler keeps them resident here."""
    config = DEFAULT_CONFIG
    conv = isinstance(layer, ConvLayer)
    total = weight_bytes(config, conv_k_tiles(config, layer) if conv else -(-layer.K // config.rows),
                         layer.N)
    plans = (candidate_conv_plans if conv else candidate_plans)(config, layer)
    assert any(plan.resident for plan in plans)
    for plan in plans:
        program = (emit_conv if conv else emit_gemm)(config, layer, plan=plan)
        blocks = -(-layer.M // plan.block_rows)
        assert _weight_bytes_read(program, layer, total) == total * (1 if plan.resident else blocks)
    chosen = (plan_conv(config, layer)[0] if conv else plan_gemm(config, layer))
    assert chosen.resident and chosen.block_rows < layer.M


def test_resident_weights_come_in_one_load_row():
    """With a 512 KiB scratchpad the weight buffers hold 128 KiB, but a LOAD row at most
    65,535 bytes: 64,000 bytes of weights may stay resident, 70,656 may not."""
    config = NPUConfig(scratchpad_bytes=512 << 10)
    for K, resident in [(1000, True), (1100, False)]:
        layer = GemmLayer(4096, K, 64, 0, 0, 0, 0)
        assert weight_bytes(config, -(-K // config.rows), 64) == 64 * 8 * -(-K // 8)
        assert any(plan.resident for plan in candidate_plans(config, layer)) == resident


def _pair_shapes(seed):
    """Two random convolutions in a row: kernels 1 to 3 (not square), the first with stride
    1 or 2, uneven padding, channel counts that do and do not fill the array's rows, uint8
    and int8 activations on either side."""
    rng = np.random.default_rng(seed)
    print(f"seed {seed}")
    kernel, stride = tuple(int(k) for k in rng.integers(1, 4, size=2)), int(rng.integers(1, 3))
    first = dict(H=int(rng.integers(4, 16)), W=int(rng.integers(4, 16)),
                 C=int(rng.choice([3, 8, 12, 16])), N=int(rng.choice([5, 8, 12, 16, 24])),
                 kernel=kernel, strides=(stride, stride),
                 pads=tuple(int(p) for p in rng.integers(0, 2, size=4)),
                 act_flip=bool(rng.integers(2)))
    second = dict(N=int(rng.integers(1, 30)), kernel=tuple(int(k) for k in rng.integers(1, 4, size=2)),
                  strides=(1, 1), pads=tuple(int(p) for p in rng.integers(0, 2, size=4)),
                  act_flip=bool(rng.integers(2)))
    return first, second, conv_pair_layers(DEFAULT_CONFIG, first, second)


@pytest.mark.parametrize("seed", range(4))
def test_two_convolutions_keep_the_tensor_between_them_in_the_scratchpad(seed):
    """The first convolution writes its outputs into the scratchpad as the second reads its
    input (sw.kernels.resident_pair): every candidate plan of each (a MATMUL per output row,
    or wide, whose unstored results fall in the tensor's padding) against both
    convolutions' definitions in NumPy, and the pair as the compiler plans it; only the
    second's outputs are stored."""
    first, second, (producer, consumer) = _pair_shapes(seed)
    plans = [(None, None)] + \
        [(plan, None) for plan in candidate_conv_plans(DEFAULT_CONFIG, producer)] + \
        [(None, plan) for plan in candidate_conv_plans(DEFAULT_CONFIG, consumer)]
    for index, pair in enumerate(plans):
        workload = resident_conv_pair_workload(DEFAULT_CONFIG, np.random.default_rng(seed + index),
                                               first, second, pair, MemoryImage(4 << 20))
        _run(DEFAULT_CONFIG, workload, (first, second), pair)
        stored = predict_program(DEFAULT_CONFIG, workload.program).dma_write_bytes
        assert stored == consumer.M * consumer.N, (pair, stored)


def test_a_tensor_kept_between_convolutions_must_fit_half_the_scratchpad():
    first = ConvLayer(64, 64, 8, 16, (3, 3), (1, 1), (1, 1, 1, 1), name="node 'a'")
    second = ConvLayer(64, 64, 16, 16, (3, 3), (1, 1), (1, 1, 1, 1), name="node 'b'")
    with pytest.raises(LayerError, match="node 'b': its 69696-byte padded input exceeds half"):
        resident_pair(DEFAULT_CONFIG, first, second)
    with pytest.raises(LayerError, match="node 'b': keeping its input in the scratchpad needs"):
        resident_pair(NPUConfig(rows=4, cols=6), first, second)


#: The default configuration with the output stage's add mode.
ADD_MODE = DEFAULT_CONFIG.with_(elementwise_add=True)


@pytest.mark.parametrize("config", [ADD_MODE, NPUConfig(rows=4, cols=6, elementwise_add=True)],
                         ids=["8x8", "4x6"])
def test_add_computes_the_add_mode(config, seed):
    """emit_add on int8 and uint8 operands (full range, random zero points and clamps,
    verif.npu_workloads.add_workload) against verif.golden.add_output: one element,
    lengths that end in a partial vector, and one of three or more chunks with each
    candidate chunk size (the last chunk partial). On 4 x 6 a vector is 4 of the 6 lanes,
    loaded and stored with 2-D strides."""
    rng = np.random.default_rng(seed)
    lanes = min(config.rows, config.cols)
    for unsigned in (False, True):
        for n in (1, 8 * lanes + 3, int(rng.integers(2, 700))):
            _run(config, add_workload(config, rng, n, unsigned), n, None)
        n = 1100 * lanes + int(rng.integers(1, lanes))
        chunks = candidate_add_chunks(config, AddLayer(n))
        assert -(-n // (chunks[0] * lanes)) >= 3, chunks
        for chunk in chunks:
            _run(config, add_workload(config, rng, n, unsigned, chunk_vectors=chunk), n, chunk)


def test_add_moves_each_byte_once_and_overlaps_transfers_and_compute():
    """Each operand and result byte crosses the DMA once (plus the weight tiles and the
    channel row), and the predicted cycles stay within a fifth of the busiest of the DMA
    and the compute (two passes of X through the array, then Y's pass at the add stage's
    pace): loads, compute and stores overlap."""
    config, n = ADD_MODE, 16384
    program = emit_add(config, AddLayer(n))
    predicted = predict_program(config, program, add=True)
    constants = weight_bytes(config, 2, config.cols) + param_bytes(config, config.cols)
    assert (predicted.dma_read_bytes, predicted.dma_write_bytes) == (2 * n + constants, n)
    assert predicted.mac_cycles == 3 * n // config.cols
    compute = (2 + config.cols // config.add_circuits) * n // config.cols
    assert predicted.cycles < 1.2 * max(predicted.dma_cycles, compute), predicted


def test_an_add_follows_a_gemm_in_one_program_and_reads_its_output(seed):
    """A GEMM, then an add of its int8 output (as X) and full-range Y, in one program: the
    add's tokens follow the GEMM's closing barrier (no deadlock, no token of one layer
    taken by the other) and it reads what the GEMM stored."""
    config, rng = ADD_MODE, np.random.default_rng(seed)
    image = MemoryImage()
    gemm = gemm_workload(config, rng, 30, 40, 20, image=image)
    ((_, gemm_out, x),), n = gemm.outputs, 30 * 20
    y = int8_full_range(rng, n)
    ratio_x, ratio_y, fixed = qlinear_add_parameters(np.float32(0.02), np.int8(3), np.float32(0.03),
                                                     np.int8(-5), np.float32(0.025), np.int8(7))
    layer = AddLayer(n, gemm_out, image.place(y.astype(np.int8)),
                     image.place(pack_add_weights(config)),
                     image.place(pack_add_params(config, config.cols, fixed, ratio_x, ratio_y,
                                                 -128, 127, False)), image.reserve(n))
    program = Program()
    program.words = gemm.program.words[:-1]
    emit_add(config, layer, program).end()
    address = image.place(np.frombuffer(program.to_bytes(), np.uint8), INSTRUCTION_BYTES)
    memory = image.data.copy()
    assert NPUSimulator(config).run(memory, address).error is ErrorCode.NONE
    expected = add_output(-256 * x.view(np.int8).astype(np.int64) + y, fixed, ratio_x, ratio_y,
                          -128, 127, False)
    np.testing.assert_array_equal(memory[gemm_out:gemm_out + n], x)
    np.testing.assert_array_equal(memory[layer.out_addr:layer.out_addr + n].view(np.int8), expected)


@pytest.mark.parametrize("config", [ADD_MODE, NPUConfig(rows=4, cols=4, elementwise_add=True)],
                         ids=["8x8", "4x4"])
def test_a_residual_block_keeps_its_tensors_in_the_scratchpad(config, seed):
    """Convolutions and an add in one program, every tensor between them in the
    scratchpad (verif.npu_workloads.residual_block_workload): a 1 x 1 convolution reads a
    tensor padded for a 3 x 3 one from inside its padding, the add runs over two padded
    tensors and writes over one of them, and the next convolution fills the padding the
    add overwrote. Against the layers' definitions in NumPy; only the last layer's output
    and the first layer's input, weights and parameters cross the DMA."""
    rng = np.random.default_rng(seed)
    for unsigned in (False, True):
        H, W, C, N = (int(v) for v in rng.integers(3, 12, size=4))
        workload = residual_block_workload(config, rng, H, W, C, N, unsigned)
        _run(config, workload, (H, W, C, N), None)
        predicted = predict_program(config, workload.program, add=True)
        assert predicted.dma_write_bytes == H * W * N, predicted


def test_adds_that_cannot_run_are_refused_by_name():
    with pytest.raises(LayerError, match="node 'sum': the configuration has no add mode"):
        emit_add(DEFAULT_CONFIG, AddLayer(16, name="node 'sum'"))
    with pytest.raises(LayerError, match="node 'sum': an add of no elements"):
        emit_add(ADD_MODE, AddLayer(0, name="node 'sum'"))
