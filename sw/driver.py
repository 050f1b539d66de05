"""Host driver of the NPU: one driver over interchangeable transports.

A transport moves register and memory accesses: the cocotb testbench (AXI4-Lite master and
AXI RAM models) in simulation, the UART bridge on a board. The driver itself only knows the
register map (``hw/registers.py``).
"""

from dataclasses import dataclass, field

from hw.config import NPUConfig
from hw.registers import BY_NAME, NPU_MAGIC, ErrorCode, config_words


__all__ = ["NPUDriver", "RunStatus", "COUNTERS"]

COUNTERS = ("CYCLES", "MAC_CYCLES", "DMA_READ_BYTES", "DMA_WRITE_BYTES", "LOAD_STALL_CYCLES",
            "COMPUTE_STALL_CYCLES", "STORE_STALL_CYCLES", "FETCH_STALL_CYCLES")


@dataclass
class RunStatus:
    done: bool
    error: ErrorCode
    error_addr: int
    counters: dict = field(default_factory=dict)

    def __str__(self):
        if self.error is not ErrorCode.NONE:
            return f"error {self.error.name} at instruction 0x{self.error_addr:08x}"
        return "done" if self.done else "not finished"


class NPUDriver:
    """Register-level control of one NPU through ``transport``.

    ``transport`` provides ``async read_register(address)``, ``async write_register(address,
    value)`` and ``async wait_for_interrupt(timeout)`` (True when the interrupt rose).
    """

    def __init__(self, transport):
        self.transport = transport

    async def read(self, name):
        return await self.transport.read_register(BY_NAME[name].address)

    async def write(self, name, value):
        await self.transport.write_register(BY_NAME[name].address, value)

    @staticmethod
    def field(register, name, value):
        f = BY_NAME[register].field(name)
        return (value >> f.offset) & ((1 << f.width) - 1)

    @staticmethod
    def bits(register, **fields):
        value = 0
        for name, field_value in fields.items():
            f = BY_NAME[register].field(name)
            value |= (int(field_value) & ((1 << f.width) - 1)) << f.offset
        return value

    async def check_config(self, config: NPUConfig):
        """Raise RuntimeError unless the device is an NPU built with ``config``."""
        magic = await self.read("ID")
        if magic != NPU_MAGIC:
            raise RuntimeError(f"no NPU found: ID register reads 0x{magic:08x}")
        found = await self.read("CONFIG_ID")
        if found != config.config_id():
            words = {name: await self.read(name) for name in config_words(config)}
            raise RuntimeError(f"the NPU was built for configuration 0x{found:08x} "
                               f"({words}), not 0x{config.config_id():08x} ({config})")

    async def start(self, program_addr):
        await self.write("PROGRAM_ADDR", program_addr)
        await self.write("CONTROL", self.bits("CONTROL", start=1, irq_enable=1))

    async def status(self):
        status = await self.read("STATUS")
        counters = {name.lower(): await self.read(name) for name in COUNTERS}
        return RunStatus(done=bool(self.field("STATUS", "done", status)),
                         error=ErrorCode(self.field("STATUS", "error_code", status)),
                         error_addr=await self.read("ERROR_ADDR"), counters=counters)

    async def run(self, program_addr, timeout):
        """Run the program at ``program_addr``; wait for the interrupt; return its status.

        Raises TimeoutError if neither done nor an error arrives within ``timeout`` (in
        the transport's unit). The done and error flags are cleared afterwards.
        """
        await self.start(program_addr)
        if not await self.transport.wait_for_interrupt(timeout):
            raise TimeoutError(f"the NPU raised no interrupt within {timeout}")
        result = await self.status()
        await self.write("STATUS", self.bits("STATUS", done=1, error=1))
        return result

    async def soft_reset(self, polls=1000):
        """Stop the NPU (it lets its AXI transactions finish first) and wait until it is
        idle again; RuntimeError if it is not within ``polls`` status reads."""
        await self.write("CONTROL", self.bits("CONTROL", soft_reset=1))
        for _ in range(polls):
            if self.field("STATUS", "idle", await self.read("STATUS")):
                return
        raise RuntimeError(f"the NPU is not idle {polls} status reads after a soft reset")
