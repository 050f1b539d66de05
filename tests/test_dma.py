"""DMA engine in Verilator against cocotbext-axi's AxiRam and a NumPy model."""

import pytest

from fpga.configs import ICEBREAKER
from hw.config import NPUConfig
from verif.dma_harness import DMAHarness
from verif.runner import simulate


#: Random descriptors per data width; 3 widths give the regression's 500+.
DESCRIPTORS = 170


@pytest.mark.parametrize("bus_width", [16, 64, 128])
def test_dma(bus_width, seed, waves):
    """At 16 bits, the DMA the iCEBreaker builds: no descriptor queue, one burst in flight,
    range checks by shift and add; at 64 and 128 bits, the default queue and bursts."""
    config = NPUConfig(bus_width=bus_width, scratchpad_bytes=64 * 1024)
    dma_args = {}
    if bus_width == ICEBREAKER.config.bus_width:
        small = ICEBREAKER.config
        config = config.with_(serial_products=small.serial_products)
        dma_args = dict(queue_depth=small.dma_queue_depth, max_outstanding=small.dma_outstanding)
    simulate(DMAHarness(config, **dma_args), name=f"dma_{bus_width}", test_module="verif.tb_dma",
             params={"bus_width": bus_width, "scratchpad_bytes": config.scratchpad_bytes,
                     "mem_bytes": 512 * 1024, "descriptors": DESCRIPTORS, **dma_args},
             seed=seed, waves=waves)
