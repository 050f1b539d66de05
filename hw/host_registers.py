"""Host register file: an AXI4-Lite subordinate generated from ``hw/registers.py``.

Every register, its address, its fields and their access types come from
:data:`hw.registers.REGISTERS`; this module names no register in its decode. The
signature is derived from the same table (see :class:`HostRegisters`), so adding a field
to the table adds its port.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4LiteSignature, Resp
from .counters import READ_LATENCY
from .registers import BY_NAME, COUNTERS, REGISTERS, config_words


__all__ = ["ADDR_WIDTH", "port_name", "HostRegisters"]


#: Width of the register file's AXI4-Lite address.
ADDR_WIDTH = 8


def port_name(register, field):
    """The port of ``field``: ``<register>_<field>``, or ``<register>`` for a register
    whose single field spans all 32 bits; lower case. A ``w1c`` field's port adds
    ``_set``."""
    if len(register.fields) == 1 and register.fields[0].width == 32:
        name = register.name.lower()
    else:
        name = f"{register.name}_{field.name}".lower()
    return f"{name}_set" if field.access == "w1c" else name


def _check_table():
    words = set()
    for register in REGISTERS:
        word = register.address >> 2
        if register.address % 4 or register.address >= 2**ADDR_WIDTH or word in words:
            raise ValueError(f"register {register.name} at 0x{register.address:02X} is not "
                             f"4-byte aligned, out of range or overlaps another")
        words.add(word)
        for field in register.fields:
            if field.offset + field.width > 32:
                raise ValueError(f"field {register.name}.{field.name} exceeds 32 bits")
            if field.access in ("w1p", "w1c") and field.width != 1:
                raise ValueError(f"{field.access} field {register.name}.{field.name} "
                                 f"must be 1 bit wide")


class HostRegisters(wiring.Component):
    """The NPU's AXI4-Lite register file.

    Parameters
    ----------
    config : :class:`hw.config.NPUConfig`
        Gives the values of the constant registers (:func:`hw.registers.config_words`).

    Members
    -------
    bus : ``In(AXI4LiteSignature(data_width=32, addr_width=8))``
        The host's port. ``awaddr``/``araddr`` bits 1..0 are ignored (a register is one
        word); ``awprot``/``arprot`` are ignored.
    <register>_<field> : ``In(width)``
        One per read-only field of a register that is not a constant: the value the
        register reads. A register with a single 32-bit field drops ``_<field>``
        (``error_addr``, ``cycles``, ``mac_cycles``, ...).
    <register>_<field> : ``Out(width)``
        One per ``rw`` field (``control_irq_enable``, ``program_addr_address``): the stored
        value, 0 after reset.
    <register>_<field> : ``Out(1)``
        One per ``w1p`` field (``control_start``, ``control_soft_reset``): a one-cycle
        pulse per write of 1.
    <register>_<field>_set : ``In(1)``
        One per ``w1c`` field (``status_done_set``, ``status_error_set``): sets the
        field's sticky bit. The bit reads back in its register; writing 1 over AXI or a
        ``control_soft_reset`` pulse clears it.
    irq : ``Out(1)``
        High while ``control_irq_enable`` is set and any ``w1c`` bit (``STATUS.done``,
        ``STATUS.error``) is set. Driven by registers only (no path from an input).
    counter_read : ``Out(1)``; counter_index : ``Out(range(len(COUNTERS)))``;
    counter_value : ``In(32)``
        With ``config.counters_in_memory``, instead of the ports of the registers of
        :data:`hw.registers.COUNTERS`: a read of one of them asks a
        :class:`hw.counters.CounterFile` for counter ``counter_index`` (its place in that
        list) in the cycle of the handshake, and takes ``counter_value``
        :data:`hw.counters.READ_LATENCY` cycles later.

    Timing
    ------
    Write: the subordinate waits for both ``awvalid`` and ``wvalid`` (in either order or
    together) and accepts both in the same cycle, raising ``awready`` and ``wready``
    combinationally when no write response is pending. Registers, pulses and
    ``bvalid`` change one cycle after that handshake: ``rw`` fields and the cleared
    ``w1c`` bits are visible, and ``w1p`` ports are high, in the cycle ``bvalid`` rises.
    Pulses last exactly one cycle. Only bytes whose ``wstrb`` bit is set are written, for
    every access type. Writes to read-only fields are ignored (``OKAY``).

    Read: ``arready`` is high while no read response is pending; ``rvalid`` rises one
    cycle after the handshake, with ``rdata`` sampled at the handshake and held until
    ``rready`` (a counter kept in a ``CounterFile``: ``READ_LATENCY`` + 1 cycles after,
    with ``rdata`` its value then). A read and a write may be in flight at once; a read
    handshake in the cycle of a write handshake returns the value before the write.

    Unmapped addresses: the transaction completes with ``SLVERR``; reads return 0.

    Sticky bits: a ``_set`` pulse takes effect on the next cycle. In one cycle, a
    ``control_soft_reset`` pulse wins over ``_set``, and ``_set`` wins over a write of 1,
    so no event is lost to a racing clear.
    """

    def __init__(self, config):
        _check_table()
        self.config = config
        self.constants = config_words(config)
        self.in_memory = COUNTERS if config.counters_in_memory else ()
        members = {"bus": In(AXI4LiteSignature(data_width=32, addr_width=ADDR_WIDTH))}
        if self.in_memory:
            members.update(counter_read=Out(1), counter_index=Out(range(len(COUNTERS))),
                           counter_value=In(32))
        for register in REGISTERS:
            if register.name in self.constants or register.name in self.in_memory:
                continue
            for field in register.fields:
                direction = In if field.access in ("r", "w1c") else Out
                width = 1 if field.access in ("w1p", "w1c") else field.width
                members[port_name(register, field)] = direction(width)
        members["irq"] = Out(1)
        super().__init__(members)

    def _port(self, register, field):
        return getattr(self, port_name(register, field))

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        # The value each register reads, and the sticky bits of w1c fields.
        words = {}
        sticky = {}
        for register in REGISTERS:
            if register.name in self.constants:
                words[register.name] = C(self.constants[register.name], 32)
                continue
            if register.name in self.in_memory:
                continue
            word = words[register.name] = Signal(32, name=f"{register.name.lower()}_word")
            for field in register.fields:
                bits = word[field.offset:field.offset + field.width]
                if field.access == "w1c":
                    bit = sticky[register.name, field.name] = \
                        Signal(name=port_name(register, field)[:-len("_set")])
                    m.d.comb += bits.eq(bit)
                elif field.access in ("r", "rw"):
                    m.d.comb += bits.eq(self._port(register, field))

        # Write channel.
        write = Signal()
        clear = {key: Signal(name=f"{bit.name}_clear") for key, bit in sticky.items()}
        m.d.comb += [
            write.eq(bus.awvalid & bus.wvalid & ~bus.bvalid),
            bus.awready.eq(write),
            bus.wready.eq(write),
        ]
        for register in REGISTERS:
            for field in register.fields:
                if field.access == "w1p":
                    m.d.sync += self._port(register, field).eq(0)
        with m.If(write):
            m.d.sync += [bus.bvalid.eq(1), bus.bresp.eq(Resp.OKAY)]
            with m.Switch(bus.awaddr[2:]):
                for register in REGISTERS:
                    with m.Case(register.address >> 2):
                        self._decode_write(m, register, clear)
                with m.Default():
                    m.d.sync += bus.bresp.eq(Resp.SLVERR)
        with m.Elif(bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        # Sticky bits.
        soft_reset = self._port(BY_NAME["CONTROL"], BY_NAME["CONTROL"].field("soft_reset"))
        for (name, field_name), bit in sticky.items():
            register = BY_NAME[name]
            with m.If(soft_reset):
                m.d.sync += bit.eq(0)
            with m.Elif(self._port(register, register.field(field_name))):
                m.d.sync += bit.eq(1)
            with m.Elif(clear[name, field_name]):
                m.d.sync += bit.eq(0)

        irq_enable = self._port(BY_NAME["CONTROL"], BY_NAME["CONTROL"].field("irq_enable"))
        m.d.comb += self.irq.eq(irq_enable & Cat(*sticky.values()).any())

        # Read channel. ``waiting``: cycles until a counter file's answer.
        waiting = Signal(range(READ_LATENCY + 1))
        m.d.comb += bus.arready.eq(~bus.rvalid & (waiting == 0))
        if self.in_memory:
            with m.If(waiting != 0):
                m.d.sync += waiting.eq(waiting - 1)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.rvalid.eq(1), bus.rresp.eq(Resp.OKAY)]
            with m.Switch(bus.araddr[2:]):
                for register in REGISTERS:
                    with m.Case(register.address >> 2):
                        if register.name in self.in_memory:
                            m.d.comb += [self.counter_read.eq(1), self.counter_index.eq(
                                self.in_memory.index(register.name))]
                            m.d.sync += [bus.rvalid.eq(0), waiting.eq(READ_LATENCY)]
                        else:
                            m.d.sync += bus.rdata.eq(words[register.name])
                with m.Default():
                    m.d.sync += [bus.rdata.eq(0), bus.rresp.eq(Resp.SLVERR)]
        with m.Elif(bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        if self.in_memory:
            with m.If(waiting == 1):
                m.d.sync += [bus.rvalid.eq(1), bus.rdata.eq(self.counter_value)]

        return m

    def _decode_write(self, m, register, clear):
        """A write handshake to ``register``: update its rw, w1p and w1c fields."""
        bus = self.bus
        for field in register.fields:
            if field.access == "rw":
                port = self._port(register, field)
                for byte in range(4):
                    lo = max(field.offset, 8 * byte)
                    hi = min(field.offset + field.width, 8 * byte + 8)
                    if lo < hi:
                        with m.If(bus.wstrb[byte]):
                            m.d.sync += port[lo - field.offset:hi - field.offset].eq(
                                bus.wdata[lo:hi])
            elif field.access in ("w1p", "w1c"):
                one = bus.wdata[field.offset] & bus.wstrb[field.offset // 8]
                if field.access == "w1p":
                    m.d.sync += self._port(register, field).eq(one)
                else:
                    m.d.comb += clear[register.name, field.name].eq(one)
