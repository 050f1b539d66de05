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
        AXI4 data width of the memory port, in bits.
    addr_width : int
        AXI4 address width, in bits.
    queue_depth : int
        Instructions each engine's queue holds.
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

    def __post_init__(self):
        for name in ("rows", "cols", "acc_depth", "channel_depth", "scratchpad_banks"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"NPUConfig.{name} must be positive, not {value}")
        if self.bus_width not in (32, 64, 128, 256):
            raise ValueError(f"NPUConfig.bus_width must be 32, 64, 128 or 256, not {self.bus_width}")

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
