"""Scratchpad SRAM controller in Verilator against the NumPy byte-array model."""

import pytest

from amaranth.hdl import unsigned

from fpga.configs import ICEBREAKER
from hw.config import NPUConfig
from hw.scratchpad import Scratchpad
from verif.runner import simulate


CONFIGS = {
    # The default build: 8x8 array, 64-bit bus, 64 KiB in 4 banks; every width is 8 bytes.
    "8x8_bus64": NPUConfig(),
    # 32-bit DMA words and 4-byte weight and result rows are half-words of the 8-byte
    # bank word (lane selection and byte enables), in 8 banks of 1 KiB.
    "8x4_bus32": NPUConfig(rows=8, cols=4, bus_width=32, scratchpad_bytes=8 * 1024,
                           scratchpad_banks=8),
    # The iCEBreaker's: 2-byte words in 2 banks of 1 KiB, read in one cycle (no bank word
    # registers), one response buffered per read port (a request every other cycle).
    "icebreaker": ICEBREAKER.config,
}


@pytest.mark.parametrize("name", CONFIGS)
def test_scratchpad(name, seed, waves):
    config = CONFIGS[name]
    params = {"rows": config.rows, "cols": config.cols, "bus_width": config.bus_width,
              "scratchpad_bytes": config.scratchpad_bytes, "banks": config.scratchpad_banks,
              "registered_banks": config.registered_banks, "read_buffers": config.read_buffers,
              "tag_bits": 6, "beats": 1000}
    simulate(Scratchpad(config, tag_shape=unsigned(params["tag_bits"])), name=f"scratchpad_{name}",
             test_module="verif.tb_scratchpad", params=params, seed=seed, waves=waves)
