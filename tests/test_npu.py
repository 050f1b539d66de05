"""The whole NPU in Verilator: random programs, convolutions and element-wise adds against
the NumPy NPU simulator, repeated runs, bad programs and recovery, through AXI4-Lite and an
AXI RAM with random pauses."""

from dataclasses import asdict

from hw.config import NPUConfig
from hw.npu import NPU
from verif.runner import simulate


def test_npu_programs(seed, waves):
    config = NPUConfig()
    simulate(NPU(config), name="npu", test_module="verif.tb_npu",
             testcase=["random_programs", "conv_layers", "elementwise_adds",
                       "repeated_runs_are_identical", "bad_programs_stop_with_an_error",
                       "fetch_bus_errors"],
             params={"config": asdict(config), "programs": 3}, seed=seed, waves=waves)

