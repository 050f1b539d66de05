"""Fast tests of sw.cost_model (no RTL): exact DRAM bytes, sane and monotone cycles."""

import numpy as np
import pytest

from hw.config import DEFAULT_CONFIG
from sw.cost_model import predict
from sw.simulator import NPUSimulator
from verif.npu_workloads import MemoryImage, gemm_workload


def _workload(shape, seed=0):
    M, K, N = shape
    return gemm_workload(DEFAULT_CONFIG, np.random.default_rng(seed), M, K, N,
                         image=MemoryImage(4 << 20))


@pytest.mark.parametrize("seed", range(6))
def test_dram_bytes_equal_the_simulator(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(1, 160, size=3))
    workload = _workload(shape, seed)
    prediction = predict(DEFAULT_CONFIG, workload.program)
    result = NPUSimulator(DEFAULT_CONFIG).run(workload.image.data.copy(), workload.program_addr)
    assert (prediction.dma_read_bytes, prediction.dma_write_bytes) == \
        (result.dma_read_bytes, result.dma_write_bytes), shape
    assert prediction.mac_cycles == result.mac_cycles


def test_cycles_are_sane():
    """At least the array's and the fetcher's own cycles, at most all work serialised."""
    for shape in [(1, 64, 64), (16, 128, 64), (64, 64, 64), (100, 70, 30)]:
        p = predict(DEFAULT_CONFIG, _workload(shape).program)
        assert max(p.mac_cycles, p.fetch_cycles) <= p.cycles, shape
        assert p.cycles <= 2 * (p.mac_cycles + p.fetch_cycles + p.dma_cycles) + 1000, shape


def test_cycles_grow_with_every_dimension():
    base = predict(DEFAULT_CONFIG, _workload((64, 64, 64)).program).cycles
    for shape in [(128, 64, 64), (64, 128, 64), (64, 64, 128)]:
        assert predict(DEFAULT_CONFIG, _workload(shape).program).cycles > base, shape
