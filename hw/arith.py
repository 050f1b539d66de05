"""Small arithmetic helpers shared by the NPU's blocks."""

from amaranth import *
from amaranth.lib import memory
from amaranth.utils import ceil_log2, exact_log2


__all__ = ["at_least", "delay_line", "device_family", "product_register", "registered_product",
           "saturated", "saturating_product"]


def at_least(value, bound):
    """``value >= bound`` (unsigned) for a constant ``bound``, as AND and OR gates from the
    top bit down, where a compare would take a carry chain as long as ``value``."""
    value = Value.cast(value)
    if bound <= 0:
        return C(1)
    if bound >= 2**len(value):
        return C(0)
    top = len(value) - 1
    rest = at_least(value[:top], bound & ~(1 << top))
    return value[top] & rest if bound >> top & 1 else value[top] | rest


def saturated(value, limit):
    """``min(value, limit)`` (unsigned, ``limit`` a constant): for range checks, to which
    every value of ``limit`` or more stands for the same out-of-range one. The compare is
    :func:`at_least`'s gates (an OR of the high bits when ``limit`` is a power of two)."""
    return Mux(at_least(value, limit), limit, value)


def saturating_product(m, a, b, start, limit, name):
    """``min(a * b, limit)`` (unsigned; ``limit`` a power of two and ``a`` at most
    ``limit``) by shift and add, one bit of ``b`` per cycle from the top: for range checks,
    to which any product of ``limit`` or more is out of range, in ``log2(limit) + 1`` bits.

    ``a`` and ``b`` must hold their values from the cycle ``start`` is high until the
    product is done: each step selects its bit of ``b`` in place, a cycle ahead into a
    register, so that no path runs from ``b`` through the addition. Returns ``(product,
    done)``: ``product`` is valid while ``done`` is high, from ``len(b)`` cycles after
    ``start`` (the next ``start`` excepted); ``done`` is high before the first ``start``
    too.
    """
    steps = len(b)
    top = exact_log2(limit)
    product = Signal(top + 1, name=f"{name}_product")
    left = Signal(range(steps + 1), name=f"{name}_steps")
    bit = Signal(name=f"{name}_bit")        # the bit of ``b`` of the next step
    with m.If(start):
        m.d.sync += [product.eq(0), left.eq(steps), bit.eq(b[steps - 1])]
    with m.Elif(left != 0):
        step = (product << 1) + Mux(bit, a, 0)
        m.d.sync += [product.eq(saturated(step, limit)), left.eq(left - 1),
                     bit.eq(b.bit_select((left - 2)[:len(left)], 1))]
    return product, left == 0


def device_family(platform):
    """The FPGA family ``platform`` builds for (``"ecp5"``, ``"ice40"``), in lower case, or
    ``""`` when elaborating for simulation."""
    return str(getattr(platform, "family", "")).lower()


def registered_product(m, platform, a, b, shape, name):
    """``a * b`` registered: the product of two operand registers' values, one cycle after
    they load, as ``shape``.

    ``a`` and ``b`` are (register, the value it loads) pairs. On ECP5 the product is a
    ``MULT18X18D`` with its input and output registers on, fed with the values the
    operand registers load: its input registers hold the same operands, and no fabric
    routing lies between the multiplier and its registers (the operand registers may then
    go unused, and synthesis removes them). Operands are at most 18 bits, each signed or
    unsigned as its shape says. Elsewhere, a register of the registers' product; on iCE40
    it has no reset, so that Yosys (``synth_ice40 -dsp``) puts it in the ``SB_MAC16``'s
    own pipeline registers, which have none that a synchronous reset could use
    (``tests/test_array_netlist.py`` simulates that netlist). Its value after a reset is
    then whatever the last product was: a consumer must not use it before the product of
    operands it loaded.
    """
    family = device_family(platform)
    product = Signal(shape, name=name, reset_less=family == "ice40")
    if family != "ecp5":
        m.d.sync += product.eq(a[0] * b[0])
        return product
    _ecp5_multiplier(m, name, [a, b], product, registered_inputs=True)
    return product


def product_register(m, platform, a, b, shape, name):
    """A register of ``a * b``, as ``shape``: the product one cycle after the operands.

    On ECP5 the product is a ``MULT18X18D`` with its output register on, which is that
    register, and its inputs unregistered: no fabric routing lies between the multiplier
    and the register (a multiplier's output comes 3.9 ns after its inputs at speed grade
    6), and the register has no reset. Operands are at most 18 bits, each signed or
    unsigned as its shape says. Elsewhere, a register of ``a * b``.
    """
    if device_family(platform) != "ecp5":
        product = Signal(shape, name=name)
        m.d.sync += product.eq(a * b)
        return product
    product = Signal(shape, name=name, reset_less=True)
    _ecp5_multiplier(m, name, [(a, a), (b, b)], product, registered_inputs=False)
    return product


def _ecp5_multiplier(m, name, operands, product, *, registered_inputs):
    """A ``MULT18X18D`` whose output register drives ``product``: ``operands`` are (value
    whose shape gives the operand's width and signedness, value the multiplier takes)
    pairs, registered at the multiplier's inputs with ``registered_inputs``."""
    inputs = []
    for label, (shaped, value) in zip("AB", operands):
        operand_shape = Value.cast(shaped).shape()
        assert operand_shape.width <= 18, (name, operand_shape)
        operand = Signal(signed(18) if operand_shape.signed else unsigned(18),
                         name=f"{name}_{label.lower()}")
        m.d.comb += operand.eq(value)
        inputs.append((label, operand, operand_shape.signed))
    p = Signal(36, name=f"{name}_p")
    m.d.comb += product.eq(p[:len(product)])
    ports = {f"o_P{i}": p[i] for i in range(36)}
    ports |= {f"i_C{i}": C(0) for i in range(18)}
    for label, operand, is_signed in inputs:
        ports |= {f"i_{label}{i}": operand[i] for i in range(18)}
        ports[f"i_SIGNED{label}"] = C(int(is_signed))
        ports[f"i_SOURCE{label}"] = C(0)
    input_clock = "CLK0" if registered_inputs else "NONE"
    m.submodules[name] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK=input_clock, p_REG_INPUTB_CLK=input_clock, p_REG_OUTPUT_CLK="CLK0",
        p_REG_INPUTA_CE="CE0", p_REG_INPUTB_CE="CE0", p_REG_OUTPUT_CE="CE0",
        p_REG_INPUTA_RST="RST0", p_REG_INPUTB_RST="RST0", p_REG_OUTPUT_RST="RST0",
        p_GSR="DISABLED", p_RESETMODE="SYNC",
        i_CLK0=ClockSignal(), i_CE0=C(1), i_RST0=C(0),
        **ports)


def delay_line(m, value, cycles, name, *, block_ram=False):
    """``value``, ``cycles`` (at least 2) clock cycles later: a memory written every cycle
    at a running pointer and read ``cycles - 1`` entries behind it, with a registered read.
    With ``block_ram`` the memory asks Yosys for a block RAM (``ram_style``) however shallow
    it is, rather than flip-flops on a device without LUT RAM.
    """
    depth = 1 << ceil_log2(cycles)
    line = memory.Memory(shape=unsigned(len(value)), depth=depth, init=[],
                         attrs={"ram_style": "block"} if block_ram else None)
    m.submodules[name] = line
    write, read = line.write_port(), line.read_port()
    pointer = Signal(range(depth), name=f"{name}_pointer")
    m.d.sync += pointer.eq(pointer + 1)
    m.d.comb += [write.addr.eq(pointer), write.data.eq(value), write.en.eq(1),
                 read.addr.eq(pointer - (cycles - 1))]
    return read.data
