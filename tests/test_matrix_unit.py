"""Systolic array + accumulators + output stage in Verilator against the NumPy golden models."""

import pytest

from hw.config import NPUConfig
from hw.matrix_unit import MatrixUnit
from verif.runner import simulate

# Three shapes: the default; three rows, the fewest with which an array whose weight rows
# are written a cycle late selects its weights a cycle early (``registered_products``,
# ``hw.systolic_array``); and a smaller non-square one with the small devices' options:
# its array carries the sideband in a memory (``array_tag_memory``), and its accumulators
# are read and written without a register between (``registered_accumulators`` off), its
# weight rows go into the array without one (``registered_weights`` off), and its products
# go into the partial sums without one (``registered_products`` off).
# ~700 weight tiles each.
SHAPES = [(8, 8, False), (3, 6, False), (4, 8, True)]


@pytest.mark.parametrize("rows,cols,tag_memory", SHAPES,
                         ids=[f"{r}x{c}" + ("_small_device_options" if t else "")
                              for r, c, t in SHAPES])
def test_matrix_unit_gemm_tiles(rows, cols, tag_memory, seed, waves):
    fields = dict(rows=rows, cols=cols, acc_depth=64, channel_depth=16,
                  array_tag_memory=tag_memory, registered_accumulators=not tag_memory,
                  registered_weights=not tag_memory, registered_products=not tag_memory)
    simulate(MatrixUnit(NPUConfig(**fields)), name=f"matrix_unit_{rows}x{cols}",
             test_module="verif.tb_matrix_unit",
             testcase=["random_gemm_tiles", "back_to_back_accumulation", "random_accumulator_rows",
                       "deep_accumulation", "extreme_tile_sums", "results_held_back"],
             params={"config": fields, "tiles": 700},
             seed=seed, waves=waves)
