"""DMA engine in Verilator against cocotbext-axi's AxiRam and a NumPy model."""

import pytest

from hw.config import NPUConfig
from verif.dma_harness import DMAHarness
from verif.runner import simulate


#: Random descriptors per data width; 3 widths give the regression's 500+.
DESCRIPTORS = 170


@pytest.mark.parametrize("bus_width", [32, 64, 128])
def test_dma(bus_width, seed, waves):
    config = NPUConfig(bus_width=bus_width, scratchpad_bytes=64 * 1024)
    simulate(DMAHarness(config), name=f"dma_{bus_width}", test_module="verif.tb_dma",
             params={"bus_width": bus_width, "scratchpad_bytes": config.scratchpad_bytes,
                     "mem_bytes": 512 * 1024, "descriptors": DESCRIPTORS},
             seed=seed, waves=waves)
