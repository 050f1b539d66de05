"""Assembler and disassembler of the instruction set defined in ``hw/isa.py``."""

from hw.isa import INSTRUCTION_BYTES, Opcode, decode, encode


__all__ = ["Program", "disassemble"]


class Program:
    """A list of instructions, assembled to bytes.

    >>> program = Program()
    >>> program.emit(Opcode.LOAD, mem_addr=0x1000, sp_addr=0, rows=1, row_bytes=64, push_next=1)
    """

    def __init__(self):
        self.words = []

    def emit(self, opcode, **fields):
        self.words.append(encode(opcode, **fields))
        return self

    def end(self):
        return self.emit(Opcode.END)

    def extend(self, other):
        """Append the instructions of ``other`` (a :class:`Program`)."""
        self.words += other.words
        return self

    def __len__(self):
        return len(self.words)

    def to_bytes(self):
        return b"".join(word.to_bytes(INSTRUCTION_BYTES, "little") for word in self.words)


_FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")


def disassemble(blob, base=0):
    """One line of text per instruction of ``blob`` (bytes); illegal words are shown as such."""
    lines = []
    for offset in range(0, len(blob), INSTRUCTION_BYTES):
        word = int.from_bytes(blob[offset:offset + INSTRUCTION_BYTES], "little")
        try:
            opcode, fields = decode(word)
        except ValueError as error:
            lines.append(f"{base + offset:08x}:  .word 0x{word:032x}  ; {error}")
            continue
        flags = [flag for flag in _FLAGS if fields.pop(f"header.{flag}")]
        fields.pop("header.opcode")
        text = ", ".join(f"{name}={value:#x}" if "addr" in name else f"{name}={value}"
                         for name, value in fields.items() if value)
        suffix = f"  [{' '.join(flags)}]" if flags else ""
        lines.append(f"{base + offset:08x}:  {opcode.name:<7} {text}{suffix}")
    return lines
