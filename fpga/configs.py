"""What each FPGA board builds: the NPU configuration, the memory beside it and the clocks.

One :class:`BoardBuild` per board, in :data:`BOARDS`. ``fpga.build`` and ``fpga.flash``
read everything board-specific from here; the board tops (``fpga.ulx3s``,
``fpga.icebreaker``) only know how to make a clock and reach the pins.
"""

from dataclasses import dataclass

from hw.config import DEFAULT_CONFIG, NPUConfig


__all__ = ["BoardBuild", "BOARDS", "ULX3S", "ICEBREAKER"]


@dataclass(frozen=True)
class BoardBuild:
    """Parameters of one board's bitstream.

    Attributes
    ----------
    name : str
        The board's name on the command line (``--board``).
    title : str
        The board's name in messages.
    config : :class:`hw.config.NPUConfig`
        The NPU built into the bitstream.
    memory_bytes : int
        On-chip memory behind the NPU's AXI port, holding programs and tensors.
    clock_hz : int
        The core clock the PLL makes, and the frequency nextpnr must reach.
    baud : int
        The host link's UART rate.
    spram : bool
        The memory in iCE40UP single-port RAM (``fpga.board.AXI4Memory``).
    """

    name: str
    title: str
    config: NPUConfig
    memory_bytes: int
    clock_hz: int
    baud: int = 115_200
    spram: bool = False

    @property
    def divisor(self):
        """UART clocks per bit at :attr:`clock_hz`."""
        return round(self.clock_hz / self.baud)


#: Radiona ULX3S, ECP5-85F: the default 8 × 8 NPU at 100 MHz.
ULX3S = BoardBuild(
    name="ulx3s", title="ULX3S",
    config=DEFAULT_CONFIG,
    memory_bytes=128 * 1024,
    clock_hz=100_000_000,
)

#: 1BitSquared iCEBreaker, iCE40UP5K: a 2 × 2 NPU at 24 MHz. Its 8 DSPs, 5280 LUTs and
#: 30 × 512-byte block RAMs hold a small core only: the serial output stage, the range
#: checks' products by shift and add, one channel-parameter row, single-entry queues, a
#: DMA without a descriptor queue and with one burst in flight, 16-bit memory addresses,
#: and the array's sideband and the cycle counters in block RAM. The memory goes in the
#: SPRAM, whose 16-bit words are the bus's: half the DMA's, the scratchpad's and the
#: fetcher's data path of a 32-bit bus.
ICEBREAKER = BoardBuild(
    name="icebreaker", title="iCEBreaker",
    config=NPUConfig(rows=2, cols=2, scratchpad_bytes=2 * 1024, scratchpad_banks=2,
                     acc_depth=64, channel_depth=1, bus_width=16, addr_width=16,
                     queue_depth=1, serial_output=True, fetch_depth=1,
                     fetch_burst=1, dma_queue_depth=0, dma_outstanding=1, read_slices=False,
                     registered_banks=False, read_buffers=1, registered_weights=False,
                     registered_products=False, registered_accumulators=False,
                     serial_products=True, array_tag_memory=True,
                     counters_in_memory=True),
    memory_bytes=64 * 1024,
    clock_hz=24_000_000,
    spram=True,
)

BOARDS = {board.name: board for board in (ULX3S, ICEBREAKER)}
