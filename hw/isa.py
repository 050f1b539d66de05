"""The NPU's instruction set, defined once.

The Amaranth decoder (``hw/controller.py``), the software assembler and disassembler
(``sw/asm.py``), the NumPy NPU simulator (``sw/simulator.py``) and ``docs/isa.md``
(``python -m hw.isa``) all derive from the layouts below.

Every instruction is 128 bits (16 bytes, little-endian in memory). Bits 0..7 are a
common header: the opcode and four dependency-token flags. Three engines execute them,
decoupled as in VTA: the **load** engine (``LOAD``), the **compute** engine (``MATMUL``,
``CONFIG``) and the **store** engine (``STORE``), in a pipeline load → compute → store.
An engine's *previous* engine is the one before it in that pipeline, its *next* engine
the one after it. Four token counters join neighbours: load→compute, compute→load,
compute→store and store→compute.

* ``pop_prev`` / ``pop_next``: before executing, wait for a token from the previous /
  next engine and consume it;
* ``push_prev`` / ``push_next``: after executing, send a token to the previous / next
  engine.

A flag naming an engine that does not exist (``pop_prev`` on the load engine,
``push_next`` on the store engine, ...) is an illegal instruction. ``SYNC`` executes
nothing on the engine it names, so it only moves tokens. ``END`` ends the program: the
NPU is done once every engine has finished everything before it.
"""

from amaranth import unsigned
from amaranth.lib import data, enum


__all__ = ["slot_bytes", "INSTRUCTION_BITS", "INSTRUCTION_BYTES", "Opcode", "Engine", "Header", "Transfer",
           "Matmul", "Config", "Sync", "End", "LAYOUTS", "ENGINE_OF", "CHANNEL_PARAM_BYTES",
           "encode", "decode", "field_places", "isa_markdown"]


INSTRUCTION_BITS = 128
INSTRUCTION_BYTES = INSTRUCTION_BITS // 8

#: Bytes of one output channel's parameters (see :class:`Config`).
CHANNEL_PARAM_BYTES = 16


def slot_bytes(lanes):
    """Bytes of one vector slot in the scratchpad: ``lanes`` rounded up to a power of two."""
    return 1 << (lanes - 1).bit_length()


class Opcode(enum.Enum, shape=4):
    LOAD = 1
    STORE = 2
    MATMUL = 3
    CONFIG = 4
    SYNC = 5
    END = 6


class Engine(enum.Enum, shape=2):
    LOAD = 0
    COMPUTE = 1
    STORE = 2


class Header(data.Struct):
    opcode: Opcode
    pop_prev: unsigned(1)
    pop_next: unsigned(1)
    push_prev: unsigned(1)
    push_next: unsigned(1)


class Transfer(data.Struct):
    """LOAD (memory → scratchpad) and STORE (scratchpad → memory): a 2-D DMA of ``rows``
    rows of ``row_bytes`` bytes; row ``r`` is at ``mem_addr + r * mem_stride`` in memory
    and ``sp_addr + r * sp_stride`` in the scratchpad. Any byte alignment."""
    header: Header
    mem_addr: unsigned(32)
    sp_addr: unsigned(20)
    rows: unsigned(12)
    row_bytes: unsigned(16)
    mem_stride: unsigned(24)
    sp_stride: unsigned(16)


class Matmul(data.Struct):
    """One weight tile through the array.

    Vectors sit in *slots*: ``rows`` or ``cols`` bytes rounded up to a power of two (the
    activation and weight slot). The ``rows × cols`` int8 weight tile is at
    ``weight_addr`` (row ``k`` at ``weight_addr + k * weight_slot``). ``count`` activation
    vectors of ``rows`` int8 start at ``act_addr``, ``act_stride`` slots apart (vector
    ``m`` at ``act_addr + m * act_stride * act_slot``); ``act_flip`` flips their top bit (uint8 ``a`` enters as ``a − 128``). Vector ``m`` adds into
    accumulator row ``acc_addr + m`` (``accumulate`` = 0 overwrites it). With ``emit``,
    the sums pass through the output stage with channel-parameter row ``channel`` and
    row ``m`` of the result is written at ``out_addr + m * out_stride``: ``cols`` bytes,
    or, when ``out_int32`` is set, the ``cols`` accumulators as little-endian int32 in four
    weight slots: slot ``s`` holds bytes ``s * cols .. s * cols + cols − 1`` of that
    ``4 * cols``-byte row. ``weight_addr`` and ``out_addr`` must be multiples of the weight
    slot, ``act_addr`` of the activation slot and ``out_stride`` of the weight slot. The
    accumulator is not written on an ``emit``. ``count`` = 0 does nothing. An emitting
    MATMUL must not write results over activation vectors it has not read yet: the
    hardware may write a result row before it reads the later vectors, as soon as the
    output stage has it, while the simulator reads every vector first. The compiler never
    emits such a MATMUL; neither the decoder nor the simulator refuses one, and its
    results are undefined."""
    header: Header
    weight_addr: unsigned(20)
    act_addr: unsigned(20)
    act_stride: unsigned(8)
    count: unsigned(12)
    acc_addr: unsigned(12)
    out_addr: unsigned(20)
    out_stride: unsigned(16)
    channel: unsigned(8)
    accumulate: unsigned(1)
    emit: unsigned(1)
    act_flip: unsigned(1)
    out_int32: unsigned(1)


class Config(data.Struct):
    """Load ``count`` rows of the output stage's channel-parameter table, starting at row
    ``channel``, from the scratchpad at ``sp_addr``. A row holds ``cols`` channels; each
    channel's record is 16 little-endian bytes: bias (int32), multiplier (float32 bits),
    zero point (int16), clamp low (int16), clamp high (int16), flags (uint16: bit 0,
    unsigned output; bit 1, add mode: with ``NPUConfig.elementwise_add`` the record then
    holds an element-wise QLinearAdd's float32 offset and two scale ratios and 8-bit clamp
    bounds instead, see ``hw/add_stage.py``). The records are stored transposed, one byte of every channel per
    weight slot: byte ``s`` of channel ``c`` of table row ``r`` is at
    ``sp_addr + (16 * r + s) * weight_slot + c``."""
    header: Header
    sp_addr: unsigned(20)
    channel: unsigned(8)
    count: unsigned(8)


class Sync(data.Struct):
    """Move tokens only, on ``engine``."""
    header: Header
    engine: Engine


class End(data.Struct):
    """The end of the program."""
    header: Header


LAYOUTS = {
    Opcode.LOAD: Transfer, Opcode.STORE: Transfer, Opcode.MATMUL: Matmul,
    Opcode.CONFIG: Config, Opcode.SYNC: Sync, Opcode.END: End,
}

ENGINE_OF = {
    Opcode.LOAD: Engine.LOAD, Opcode.STORE: Engine.STORE, Opcode.MATMUL: Engine.COMPUTE,
    Opcode.CONFIG: Engine.COMPUTE,
}

for _layout in LAYOUTS.values():
    assert data.Layout.cast(_layout).size <= INSTRUCTION_BITS, _layout


def _fields(layout, prefix=""):
    """(dotted name, offset, width) of every leaf field of ``layout``."""
    for name, field in data.Layout.cast(layout):
        if isinstance(field.shape, type) and issubclass(field.shape, data.Struct):
            for sub, offset, width in _fields(field.shape):
                yield f"{prefix}{name}.{sub}", field.offset + offset, width
        else:
            yield f"{prefix}{name}", field.offset, field.width


#: The opcode of each value, and {dotted name: (offset, width)} of its layout. The
#: compiler encodes and the cost model decodes hundreds of thousands of instructions per
#: network, so neither goes through ``Opcode(value)`` nor hashes an enum member.
_OPCODE_OF = {opcode.value: opcode for opcode in Opcode}
_FIELD_TABLES = {opcode.value: {name: (offset, width)
                                for name, offset, width in _fields(LAYOUTS[opcode])}
                 for opcode in Opcode}
_FLAG_FIELDS = tuple((flag, f"header.{flag}")
                     for flag in ("pop_prev", "pop_next", "push_prev", "push_next"))


def encode(opcode, **fields):
    """The 128-bit integer of an instruction; header flags and fields by name."""
    value = getattr(opcode, "value", opcode)
    opcode = _OPCODE_OF.get(value)
    if opcode is None:
        raise ValueError(f"{value!r} is not a valid Opcode")
    known = _FIELD_TABLES[value]
    flags = [(name, int(fields.pop(flag, 0))) for flag, name in _FLAG_FIELDS]
    word = 0
    for name, field in [("header.opcode", value), *flags, *fields.items()]:
        place = known.get(name)
        if place is None:
            raise ValueError(f"{opcode.name} has no field {name!r}")
        offset, width = place
        field = int(getattr(field, "value", field))
        if not 0 <= field < 1 << width:
            raise ValueError(f"{opcode.name}.{name} = {field} does not fit in {width} bits")
        word |= field << offset
    return word


def decode(word):
    """(Opcode, {field: value}) of a 128-bit instruction; raises ValueError if illegal."""
    code = word & 0xF
    opcode = _OPCODE_OF.get(code)
    if opcode is None:
        raise ValueError(f"unknown opcode {code}")
    fields = {name: (word >> offset) & ((1 << width) - 1)
              for name, (offset, width) in _FIELD_TABLES[code].items()}
    return opcode, fields


def field_places(opcode):
    """``{dotted name: (offset, width)}`` of every field of ``opcode``'s layout."""
    return _FIELD_TABLES[opcode.value]


def isa_markdown():
    """docs/isa.md, generated from the layouts above."""
    lines = ["# Instruction set", "",
             "Generated by `python -m hw.isa` from `hw/isa.py`; do not edit by hand.", "",
             __doc__.strip().split("\n\n", 1)[1], "",
             f"Instructions are {INSTRUCTION_BITS} bits; unused high bits must be zero.", "",
             "## Opcodes", "", "| opcode | value | layout | engine |", "| --- | --- | --- | --- |"]
    for opcode, layout in LAYOUTS.items():
        engine = ENGINE_OF.get(opcode)
        engine = engine.name.lower() if engine else ("named by `engine`" if opcode is Opcode.SYNC
                                                     else "fetch")
        lines.append(f"| `{opcode.name}` | {opcode.value} | `{layout.__name__}` | {engine} |")
    lines += ["", "Any other opcode is an illegal instruction.", ""]
    seen = set()
    for layout in LAYOUTS.values():
        if layout in seen:
            continue
        seen.add(layout)
        lines += [f"## `{layout.__name__}`", "", " ".join((layout.__doc__ or "").split()), "",
                  "| field | bits | width |", "| --- | --- | --- |"]
        for name, offset, width in _fields(layout):
            lines.append(f"| `{name}` | {offset + width - 1}..{offset} | {width} |")
        lines.append("")
    lines += ["## Enumerations", ""]
    for enum_type in (Opcode, Engine):
        lines.append(f"`{enum_type.__name__}`: " +
                     ", ".join(f"`{member.name}` = {member.value}" for member in enum_type))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "docs" / "isa.md"
    path.write_text(isa_markdown())
    print(f"wrote {path}")
