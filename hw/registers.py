"""The host register map, defined once.

The AXI4-Lite register file (``hw/host_registers.py``) decodes it, the runtime
(``sw/driver.py``) addresses registers and fields by the names here, and
``docs/registers.md`` is generated from it (``python -m hw.registers``).

All registers are 32 bits wide, at 4-byte aligned offsets.
"""

from dataclasses import dataclass

from amaranth.lib import enum
from amaranth.utils import exact_log2

from .config import NPUConfig
from .isa import INSTRUCTION_BYTES


__all__ = ["Field", "Register", "REGISTERS", "BY_NAME", "COUNTERS", "ErrorCode", "NPU_MAGIC",
           "NPU_VERSION", "config_words", "registers_markdown"]

#: ``ID`` register: "NPU1" in ASCII.
NPU_MAGIC = 0x3155504E
#: ``VERSION``: major << 16 | minor.
NPU_VERSION = 0x0001_0000


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    width: int
    access: str          # "r": read-only; "rw": read/write; "w1p": write 1 to pulse;
                         # "w1c": read, write 1 to clear
    doc: str


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    doc: str
    fields: tuple

    def field(self, name):
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(f"register {self.name} has no field {name}")


#: Bits of an instruction's address below its alignment: 0 in PROGRAM_ADDR.
_PROGRAM_LOW = exact_log2(INSTRUCTION_BYTES)


def _value(name, doc, access="r"):
    return (Field(name, 0, 32, access, doc),)


class ErrorCode(enum.Enum, shape=8):
    """Values of ``STATUS.error_code``: why the NPU stopped. 0 means no error."""
    NONE = 0
    ILLEGAL_OPCODE = 1        # an opcode that is not in the instruction set
    ILLEGAL_TOKEN = 2         # a token flag naming an engine that does not exist
    SCRATCHPAD_RANGE = 3      # a scratchpad, accumulator or channel address out of range
    DEADLOCK = 4              # every engine waits for a token that can never arrive
    BUS_ERROR_FETCH = 5       # SLVERR or DECERR while fetching an instruction
    BUS_ERROR_DMA = 6         # SLVERR or DECERR on a LOAD or STORE
    MISALIGNED = 7            # a MATMUL or CONFIG address that is not a multiple of its slot


REGISTERS = (
    Register("ID", 0x00, "Identifies the device: always 0x3155504E (\"NPU1\").",
             _value("magic", "NPU_MAGIC")),
    Register("VERSION", 0x04, "Register-map version: major << 16 | minor.",
             _value("version", "NPU_VERSION")),
    Register("CONFIG_ID", 0x08, "CRC-32 of the build's configuration (NPUConfig.config_id); "
             "a program compiled for another configuration is refused.",
             _value("config_id", "configuration identifier")),
    Register("CONFIG_ARRAY", 0x0C, "Array shape.", (
        Field("rows", 0, 8, "r", "systolic array rows (K per tile)"),
        Field("cols", 8, 8, "r", "systolic array columns (N per tile)"),
        Field("bus_bytes", 16, 8, "r", "AXI4 data width in bytes"))),
    Register("CONFIG_SRAM", 0x10, "On-chip memory sizes.", (
        Field("scratchpad_kib", 0, 16, "r", "scratchpad size in KiB"),
        Field("acc_depth", 16, 16, "r", "accumulator rows"))),
    Register("CONFIG_CHANNELS", 0x14, "Channel-parameter table size.", (
        Field("channel_depth", 0, 16, "r", "rows of the channel-parameter table"),
        Field("scratchpad_banks", 16, 8, "r", "scratchpad banks"))),
    Register("CONTROL", 0x20, "Control.", (
        Field("start", 0, 1, "w1p", "write 1 to start the program at PROGRAM_ADDR"),
        Field("soft_reset", 1, 1, "w1p", "write 1 to stop and reset every engine, clear "
              "STATUS and the counters; registers other than STATUS keep their values"),
        Field("irq_enable", 2, 1, "rw", "raise the interrupt output on done or error"))),
    Register("STATUS", 0x24, "Status.", (
        Field("idle", 0, 1, "r", "no program is running and no soft reset is in progress"),
        Field("busy", 1, 1, "r", "a program is running"),
        Field("done", 2, 1, "w1c", "the program reached END and every engine finished; "
              "raises the interrupt"),
        Field("error", 3, 1, "w1c", "the NPU stopped on an error; raises the interrupt"),
        Field("error_code", 8, 8, "r", "ErrorCode of the error (0: none)"))),
    Register("ERROR_ADDR", 0x28, "Address of the faulting instruction in memory.",
             _value("address", "instruction address")),
    Register("PROGRAM_ADDR", 0x30, "Address of the program's first instruction, a multiple of "
             f"{INSTRUCTION_BYTES}: bits {_PROGRAM_LOW - 1}..0 read as 0 and ignore writes.",
             (Field("address", _PROGRAM_LOW, 32 - _PROGRAM_LOW, "rw",
                    f"program address, bits 31..{_PROGRAM_LOW}"),)),
    Register("CYCLES", 0x40, "Cycles from start to done or error.",
             _value("count", "cycles")),
    Register("MAC_CYCLES", 0x44, "Cycles in which an activation vector entered the array "
             "(useful MACs = MAC_CYCLES × rows × cols at most).",
             _value("count", "cycles")),
    Register("DMA_READ_BYTES", 0x48, "Bytes read from memory by LOAD (instruction fetch "
             "excluded), counted as the DMA writes them into the scratchpad.",
             _value("count", "bytes")),
    Register("DMA_WRITE_BYTES", 0x4C, "Bytes written to memory by STORE, counted as they "
             "leave on the W channel (WSTRB).", _value("count", "bytes")),
    Register("LOAD_STALL_CYCLES", 0x50, "Cycles the load engine had an instruction but "
             "waited for a token or the DMA.", _value("count", "cycles")),
    Register("COMPUTE_STALL_CYCLES", 0x54, "Cycles the compute engine had an instruction but "
             "waited for a token, operands or the output.", _value("count", "cycles")),
    Register("STORE_STALL_CYCLES", 0x58, "Cycles the store engine had an instruction but "
             "waited for a token or the DMA.", _value("count", "cycles")),
    Register("FETCH_STALL_CYCLES", 0x5C, "Cycles the fetcher held a decoded instruction "
             "whose engine queue was full.", _value("count", "cycles")),
)

BY_NAME = {register.name: register for register in REGISTERS}

#: The counters, which ``NPUConfig.counters_in_memory`` keeps in a block RAM
#: (``hw.counters.CounterFile``): of cycles, and of bytes moved, a bus word at most per
#: cycle.
COUNTERS = ("CYCLES", "MAC_CYCLES", "DMA_READ_BYTES", "DMA_WRITE_BYTES", "LOAD_STALL_CYCLES",
            "COMPUTE_STALL_CYCLES", "STORE_STALL_CYCLES", "FETCH_STALL_CYCLES")


def config_words(config: NPUConfig):
    """The values of the read-only configuration registers for ``config``."""
    return {
        "ID": NPU_MAGIC,
        "VERSION": NPU_VERSION,
        "CONFIG_ID": config.config_id(),
        "CONFIG_ARRAY": config.rows | config.cols << 8 | (config.bus_width // 8) << 16,
        "CONFIG_SRAM": (config.scratchpad_bytes // 1024) | config.acc_depth << 16,
        "CONFIG_CHANNELS": config.channel_depth | config.scratchpad_banks << 16,
    }


def registers_markdown():
    lines = ["# Host registers", "",
             "Generated by `python -m hw.registers` from `hw/registers.py`; do not edit by hand.",
             "", "AXI4-Lite, 32-bit registers. Access: `r` read-only, `rw` read/write, `w1p` "
             "write 1 to pulse (reads 0), `w1c` write 1 to clear.", "",
             "| offset | register | description |", "| --- | --- | --- |"]
    for register in REGISTERS:
        lines.append(f"| 0x{register.address:02X} | `{register.name}` | {register.doc} |")
    lines.append("")
    for register in REGISTERS:
        lines += [f"## `{register.name}` (0x{register.address:02X})", "", register.doc, "",
                  "| bits | field | access | description |", "| --- | --- | --- | --- |"]
        for field in register.fields:
            bits = f"{field.offset + field.width - 1}..{field.offset}" if field.width > 1 \
                else f"{field.offset}"
            lines.append(f"| {bits} | `{field.name}` | {field.access} | {field.doc} |")
        lines.append("")
    lines += ["## Error codes", "", "| code | name |", "| --- | --- |"]
    for code in ErrorCode:
        lines.append(f"| {code.value} | `{code.name}` |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "docs" / "registers.md"
    path.write_text(registers_markdown())
    print(f"wrote {path}")
