"""The whole NPU in the iCEBreaker's small configuration (``fpga.configs.ICEBREAKER``: one
serial output stage, single-entry queues, serial range-check
products, no read slices) in Verilator: the random programs, bad programs and fetch bus
errors of ``tests/test_npu.py`` against the NumPy NPU simulator (not its convolution
layers, which need a larger scratchpad than 2 KiB)."""

from dataclasses import asdict

from fpga.configs import ICEBREAKER
from hw.npu import NPU
from verif.runner import simulate


def test_small_npu_programs(seed, waves):
    config = ICEBREAKER.config
    simulate(NPU(config), name=f"npu_{config.config_id():08x}", test_module="verif.tb_npu",
             # Repeated runs are checked on the default NPU (tests/test_npu.py) only.
             testcase=["random_programs", "bad_programs_stop_with_an_error",
                       "fetch_bus_errors", "beyond_the_address_space",
                       "load_offered_while_a_store_is_walked"],
             # 16 times fewer MACs per cycle than the default NPU and one instruction per
             # 16 cycles at best: shapes drawn up to 0.4 times as large (at most about
             # 60,000 MACs a layer instead of 960,000).
             params={"config": asdict(config), "programs": 3, "scale": 0.4,
                     "timeout": 20_000_000},
             seed=seed, waves=waves)
