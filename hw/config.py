"""The NPU's build configuration: one object from which every parameter flows.

Hardware components take the values they need from an :class:`NPUConfig`; the software
stack (compiler, simulator, runtime) reads the same object, so a program compiled for a
configuration carries its :meth:`NPUConfig.config_id` and is refused elsewhere.
"""

from dataclasses import asdict, dataclass, replace
import zlib


__all__ = ["NPUConfig", "DEFAULT_CONFIG"]


@dataclass(frozen=True)
class NPUConfig:
    """Parameters of one NPU build.

    Attributes
    ----------
    rows : int
        Rows of the systolic array: the reduction (K) depth of one weight tile.
    cols : int
        Columns of the systolic array: output channels (N) produced per tile.
    scratchpad_bytes : int
        On-chip SRAM for activations and weights, in bytes.
    scratchpad_banks : int
        Number of independently addressed scratchpad banks.
    acc_depth : int
        Rows of int32 accumulator storage; each row holds ``cols`` accumulators.
    channel_depth : int
        Output channels whose output-stage parameters (bias, multiplier, zero point,
        clamp) can be held at once, in units of ``cols`` channels.
    bus_width : int
        AXI4 data width of the memory port, in bits: 16 to 256. It is also the width of
        the DMA's data path and of the scratchpad's DMA port.
    addr_width : int
        AXI4 address width, in bits, 12 to 32: the memory the NPU reaches is
        ``[0, 2**addr_width)``. An instruction fetched from beyond it, or a LOAD or STORE
        reaching beyond it, stops the NPU with a bus error, as a memory that answers
        ``DECERR`` there would.
    queue_depth : int
        Instructions each engine's queue holds.
    output_lanes : int
        Lanes of the output stage (a divisor of ``cols``; 0: one per column). With fewer
        lanes than columns a result row takes ``cols / output_lanes`` cycles in it.
    output_stages : int
        Pipeline registers of the output stage, 1 to 17: fewer for a slower clock.
    serial_output : bool
        The output stage computes one bit per cycle, one lane after the other
        (``hw.serial_output_stage``), without DSP blocks or FIFOs and in well under half
        the logic of one pipelined lane, at about 60 cycles per output; ``output_lanes``
        and ``output_stages`` are then unused.
    elementwise_add : bool
        The output stage's add mode (``hw.add_stage``): element-wise QLinearAdd of two
        8-bit tensors packed in the accumulators by the array, for a channel row whose
        records have flags bit 1 set. Needs the pipelined output stage with one lane per
        column and a channel table of more than one row; without it, flags bit 1 is
        ignored and the compiler runs adds on the host. Off by default: on the ULX3S it
        places at an estimated 46 MHz, below the board's 50 MHz (see the README).
    add_circuits : int
        Lane circuits of the add mode (a divisor of ``cols``), each computing one lane a
        cycle: an add's result row takes ``cols / add_circuits`` cycles.
    fetch_depth : int
        Instructions the fetcher's prefetch FIFO holds. With 1, nothing is read ahead: the
        decoder checks the fetcher's one instruction in place, in a block RAM row (no
        register holds it), and the next is read once it is dispatched.
    fetch_burst : int
        Instructions per fetch burst (at most ``fetch_depth``).
    dma_queue_depth : int
        Descriptors the DMA's queue holds (0: none, the DMA takes each descriptor from the
        transfer engine that offers it).
    dma_outstanding : int
        Bursts the DMA keeps in flight at most; also the depth of its internal buffers.
    read_slices : bool
        Register slices on the compute engine's scratchpad read requests (for timing).
    registered_banks : bool
        Each scratchpad bank's granted accesses are registered before its block RAM, and
        its read word after it (for timing): scratchpad reads take three cycles. Without,
        one, and each compute read port buffers two responses instead of four.
    registered_weights : bool
        The systolic array writes an accepted weight row into its PEs a cycle later, from
        registers (for timing): the weight registers' enables do not depend on the weight
        stream's handshake.
    registered_products : bool
        The systolic array registers each PE's product once more before its sum (for
        timing: no path from a multiplier through an adder), and selects each weight
        from its bank a cycle early, into a register (no logic before a multiplier): its
        latency is a cycle longer.
    read_buffers : int
        Responses each compute read port of the scratchpad buffers: 0 for its read
        latency + 1, which lets it take a request every cycle; fewer cost logic cells
        less and take that many requests per read latency + 1 cycles (see
        ``hw.scratchpad``).
    registered_accumulators : bool
        The accumulators' read-modify-write takes four cycles, the row read registered
        next to its block RAM, the sum written from registers, and the sum forwarded to a
        result on the same row one to three cycles behind (for timing). Without, two: the
        sum is formed from the block RAM's output, and an activation on the accumulator
        row of the one before it, in the cycle after it, waits one cycle.
    serial_products : bool
        The products of the range checks (decoder, DMA) by shift and add over several
        cycles instead of multipliers, for devices with few DSP blocks.
    array_tag_memory : bool
        Each vector's sideband (accumulator row, channel, result address) crosses the
        systolic array's ``rows + cols + 1`` cycles in a memory (a block RAM) instead of a
        chain of registers, for devices with few logic cells.
    counters_in_memory : bool
        The eight counters (``hw.registers.COUNTERS``) are kept in a block RAM
        (``hw.counters.CounterFile``) instead of registers, for devices with few logic
        cells; reading one over AXI4-Lite then takes two more cycles.
    """

    rows: int = 8
    cols: int = 8
    scratchpad_bytes: int = 64 * 1024
    scratchpad_banks: int = 4
    acc_depth: int = 512
    channel_depth: int = 64
    bus_width: int = 64
    addr_width: int = 32
    queue_depth: int = 8
    output_lanes: int = 0
    output_stages: int = 17
    serial_output: bool = False
    elementwise_add: bool = False
    add_circuits: int = 2
    fetch_depth: int = 32
    fetch_burst: int = 8
    dma_queue_depth: int = 4
    dma_outstanding: int = 8
    read_slices: bool = True
    registered_banks: bool = True
    read_buffers: int = 0
    registered_weights: bool = True
    registered_products: bool = True
    registered_accumulators: bool = True
    serial_products: bool = False
    array_tag_memory: bool = False
    counters_in_memory: bool = False

    def __post_init__(self):
        for name in ("rows", "cols", "acc_depth", "channel_depth", "scratchpad_banks"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"NPUConfig.{name} must be positive, not {value}")
        if not 12 <= self.addr_width <= 32:
            raise ValueError(f"NPUConfig.addr_width must be 12 to 32, not {self.addr_width}")
        if self.bus_width not in (16, 32, 64, 128, 256):
            raise ValueError(f"NPUConfig.bus_width must be 16, 32, 64, 128 or 256, not "
                             f"{self.bus_width}")
        if self.output_lanes < 0 or self.cols % self.output_stage_lanes:
            raise ValueError(f"NPUConfig.output_lanes must divide cols ({self.cols}), "
                             f"not {self.output_lanes}")
        if not 1 <= self.output_stages <= 17:
            raise ValueError(f"NPUConfig.output_stages must be 1 to 17, not {self.output_stages}")
        if self.elementwise_add and (self.serial_output or self.output_stage_lanes != self.cols
                                     or self.channel_depth == 1):
            raise ValueError("NPUConfig.elementwise_add needs the pipelined output stage with one "
                             "lane per column (serial_output off, output_lanes 0) and "
                             "channel_depth > 1")
        if self.add_circuits < 1 or self.cols % self.add_circuits:
            raise ValueError(f"NPUConfig.add_circuits must divide cols ({self.cols}), "
                             f"not {self.add_circuits}")
        if self.read_buffers < 0:
            raise ValueError(f"NPUConfig.read_buffers must be 0 or more, not "
                             f"{self.read_buffers}")
        if self.dma_queue_depth < 0:
            raise ValueError(f"NPUConfig.dma_queue_depth must be 0 or more, not "
                             f"{self.dma_queue_depth}")
        for name in ("queue_depth", "fetch_burst", "dma_outstanding"):
            if getattr(self, name) < 1:
                raise ValueError(f"NPUConfig.{name} must be positive, not {getattr(self, name)}")
        if self.fetch_depth < self.fetch_burst:
            raise ValueError(f"NPUConfig.fetch_depth must be at least fetch_burst "
                             f"({self.fetch_burst}), not {self.fetch_depth}")

    @property
    def output_stage_lanes(self):
        """Lanes of the output stage."""
        return self.output_lanes or self.cols

    @property
    def macs_per_cycle(self):
        return self.rows * self.cols

    def config_id(self):
        """A 32-bit identifier of this configuration (CRC-32 of its parameters)."""
        text = ",".join(f"{key}={value}" for key, value in sorted(asdict(self).items()))
        return zlib.crc32(text.encode())

    def with_(self, **changes):
        return replace(self, **changes)


DEFAULT_CONFIG = NPUConfig()
