"""sw.kernels on the NumPy NPU simulator (no RTL): every tiling the compiler may choose
computes the GEMM exactly."""

import numpy as np
import pytest

from hw.config import DEFAULT_CONFIG, NPUConfig
from hw.registers import ErrorCode
from sw.kernels import GemmLayer, LayerError, candidate_plans, plan_gemm
from sw.simulator import NPUSimulator
from verif.npu_workloads import MemoryImage, gemm_workload


def _shapes(seed):
    rng = np.random.default_rng(seed)
    print(f"seed {seed}")
    return [(int(rng.integers(1, 600)), int(rng.integers(1, 300)), int(rng.integers(1, 520)))
            for _ in range(2)]


def _check(config, shape, plan, out_int32, seed):
    M, K, N = shape
    workload = gemm_workload(config, np.random.default_rng(seed), M, K, N,
                             act_flip=bool(seed % 2), out_int32=out_int32,
                             image=MemoryImage(8 << 20), plan=plan)
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
