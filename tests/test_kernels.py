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
    return [(int(rng.integers(1, 700)), int(rng.integers(1, 300)), int(rng.integers(1, 520)))
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


def test_layers_that_cannot_fit_are_refused_by_name():
    too_long = GemmLayer(4, 256 * DEFAULT_CONFIG.rows, 8, 0, 0, 0, 0, name="node 'fc'")
    with pytest.raises(LayerError, match="node 'fc': K = 2048 exceeds 2040"):
        plan_gemm(DEFAULT_CONFIG, too_long)
    too_wide = GemmLayer(4, 8, 8 * DEFAULT_CONFIG.channel_depth + 1, 0, 0, 0, 0, name="node 'fc'")
    with pytest.raises(LayerError, match="node 'fc': N = 513 exceeds the 512 output channels"):
        plan_gemm(DEFAULT_CONFIG, too_wide)
