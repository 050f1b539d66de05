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
             testcase=["random_programs", "conv_layers", "repeated_runs_are_identical",
                       "bad_programs_stop_with_an_error", "fetch_bus_errors"],
             params={"config": asdict(config), "programs": 3}, seed=seed, waves=waves)


def test_npu_add_mode(seed, waves):
    """The output stage's add mode (``hw.add_stage``, two circuits for four lanes) in a
    4 x 4 NPU: adds over many chunks, and random programs of GEMMs and adds back to back."""
    config = NPUConfig(rows=4, cols=4, scratchpad_bytes=16 * 1024, elementwise_add=True)
    simulate(NPU(config), name=f"npu_{config.config_id():08x}", test_module="verif.tb_npu",
             testcase=["elementwise_adds", "random_programs"],
             # A quarter of the default NPU's MACs per cycle: shapes drawn up to 0.6 times
             # as large.
             params={"config": asdict(config), "programs": 2, "scale": 0.6},
             seed=seed, waves=waves)
