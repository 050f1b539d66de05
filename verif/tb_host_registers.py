"""cocotb testbench of hw.host_registers.HostRegisters through cocotbext-axi's AxiLiteMaster.

Every expected value comes from :class:`RegisterModel`, a sequential Python model of the
register map written from the access rules of ``hw/registers.py``. Every AXI4-Lite
channel runs with random pauses (valid gaps on AW, W and AR; ready back-pressure on B
and R), so AW and W arrive in either order or together. A monitor counts the cycles each
``w1p`` port is high and checks that no pulse lasts two cycles and that each falls in a
cycle where ``bvalid`` is high.
"""

from collections import Counter

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp
from cocotbext.axi.axil_channels import AxiLiteAWTransaction, AxiLiteWTransaction

from hw.config import NPUConfig
from hw.host_registers import ADDR_WIDTH, port_name
from hw.registers import REGISTERS, config_words
from verif.tb_util import start_clock_and_reset, tb_params, tb_rng


MASK32 = 2**32 - 1
#: Every word address of the bus that no register occupies.
UNMAPPED = sorted(set(range(0, 2**ADDR_WIDTH, 4)) - {r.address for r in REGISTERS})


class RegisterModel:
    """The register map as the host sees it, one transaction at a time."""

    def __init__(self, config):
        self.constants = config_words(config)
        self.by_word = {register.address >> 2: register for register in REGISTERS}
        self.state = {}           # r and rw port values, w1c sticky bits by `_set` port
        self.pulses = Counter()   # w1p pulses expected so far, by port
        self.held = set()         # `_set` inputs held high: they win over a clear
        for register in self.variable_registers():
            for field in register.fields:
                if field.access != "w1p":
                    self.state[port_name(register, field)] = 0

    def variable_registers(self):
        return [r for r in REGISTERS if r.name not in self.constants]

    def ports(self, access):
        return [(port_name(r, f), f.width) for r in self.variable_registers()
                for f in r.fields if f.access == access]

    def read(self, address):
        """(data, resp) of a read of ``address``."""
        register = self.by_word.get((address & 0xFF) >> 2)
        if register is None:
            return 0, AxiResp.SLVERR
        if register.name in self.constants:
            return self.constants[register.name], AxiResp.OKAY
        value = 0
        for field in register.fields:
            if field.access != "w1p":
                value |= self.state[port_name(register, field)] << field.offset
        return value, AxiResp.OKAY

    def write(self, address, data, strb):
        """Apply a write; return its resp."""
        register = self.by_word.get((address & 0xFF) >> 2)
        if register is None:
            return AxiResp.SLVERR
        if register.name in self.constants:
            return AxiResp.OKAY
        lanes = sum(0xFF << 8 * i for i in range(4) if strb >> i & 1)
        ones = data & lanes
        soft_reset = False
        for field in register.fields:
            name = port_name(register, field)
            mask = (1 << field.width) - 1
            if field.access == "rw":
                word = self.state[name] << field.offset
                word = (word & ~lanes) | (data & lanes)
                self.state[name] = (word >> field.offset) & mask
            elif field.access == "w1p" and ones >> field.offset & 1:
                self.pulses[name] += 1
                soft_reset |= name == "control_soft_reset"
            elif field.access == "w1c" and ones >> field.offset & 1:
                self.state[name] = 0
        if soft_reset:
            for name, _ in self.ports("w1c"):
                self.state[name] = 0
        for name in self.held:
            self.state[name] = 1
        return AxiResp.OKAY

    def irq(self):
        return int(bool(self.state["control_irq_enable"] and
                        (self.state["status_done_set"] or self.state["status_error_set"])))

    def unaffected_by_writes(self, address):
        """Whether no write can change what ``address`` reads (so it may race one)."""
        register = self.by_word.get(address >> 2)
        return register is None or all(f.access in ("r", "w1p") for f in register.fields)


def _pauses(rng, probability):
    while True:
        yield bool(rng.random() < probability)


class TB:
    def __init__(self, dut, pause=0.3):
        self.dut = dut
        self.rng = tb_rng(dut._log)
        self.config = NPUConfig(**tb_params()["config"])
        self.model = RegisterModel(self.config)
        self.master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "bus", bus_separator="__"),
                                    dut.clk, dut.rst)
        self.write_if = self.master.write_if
        channels = [self.write_if.aw_channel, self.write_if.w_channel, self.write_if.b_channel,
                    self.master.read_if.ar_channel, self.master.read_if.r_channel]
        for channel in channels:
            channel.set_pause_generator(_pauses(self.rng, pause))
        self.seen = Counter()
        self.errors = []

    async def start(self):
        for name, _ in self.model.ports("r") + self.model.ports("w1c"):
            getattr(self.dut, name).value = 0
        await start_clock_and_reset(self.dut)
        cocotb.start_soon(self._watch_pulses())

    async def _watch_pulses(self):
        names = [name for name, _ in self.model.ports("w1p")]
        previous = {name: 0 for name in names}
        while True:
            await FallingEdge(self.dut.clk)
            await ReadOnly()
            for name in names:
                value = int(getattr(self.dut, name).value)
                if value:
                    self.seen[name] += 1
                    if previous[name]:
                        self.errors.append(f"{name} high for two cycles")
                    if not self.dut.bus__bvalid.value:
                        self.errors.append(f"{name} pulsed without bvalid")
                previous[name] = value

    async def read(self, address):
        """Read ``address`` and check data and resp against the model."""
        expected = self.model.read(address)
        result = await self.master.read(address, 4)
        got = int.from_bytes(result.data, "little"), result.resp
        assert got == expected, (f"read 0x{address:02X}: got 0x{got[0]:08X} {got[1].name}, "
                                 f"expected 0x{expected[0]:08X} {expected[1].name}")
        return got[0]

    async def write(self, address, data, strb=0xF):
        """One write, with any ``wstrb`` (sparse ones included)."""
        await self.writes([(address, data, strb)])

    async def writes(self, beats):
        """Queue ``(address, data, strb)`` beats on the master's AW and W channels at
        once, so several writes are in flight; check each B response in order, then the
        ports."""
        for address, data, strb in beats:
            await self.write_if.aw_channel.send(AxiLiteAWTransaction(awaddr=address, awprot=0))
            await self.write_if.w_channel.send(AxiLiteWTransaction(wdata=data, wstrb=strb))
        for address, data, strb in beats:
            b = await self.write_if.b_channel.recv()
            expected = self.model.write(address, data, strb)
            assert int(b.bresp) == expected, (f"write 0x{address:02X}: bresp {int(b.bresp)}, "
                                              f"expected {expected.name}")
        await self.check_ports()

    async def reads(self, addresses):
        """Several reads in flight at once (the master queues their AR beats)."""
        tasks = [cocotb.start_soon(self.read(address)) for address in addresses]
        for task in tasks:
            await task

    async def set_sticky(self, name):
        """Pulse a ``_set`` input for one cycle."""
        await FallingEdge(self.dut.clk)
        getattr(self.dut, name).value = 1
        await FallingEdge(self.dut.clk)
        getattr(self.dut, name).value = 0
        self.model.state[name] = 1
        await self.check_ports()

    async def drive_inputs(self, names=None):
        """Random values on read-only input ports (all of them by default)."""
        await FallingEdge(self.dut.clk)
        for name, width in self.model.ports("r"):
            if names is None or name in names:
                value = int(self.rng.integers(0, 2**width, dtype="uint64"))
                getattr(self.dut, name).value = value
                self.model.state[name] = value

    async def check_ports(self):
        """``rw`` ports, ``irq`` and the pulse counts equal the model."""
        await FallingEdge(self.dut.clk)
        await ReadOnly()
        for name, _ in self.model.ports("rw"):
            got = int(getattr(self.dut, name).value)
            assert got == self.model.state[name], f"{name} = {got}, model {self.model.state[name]}"
        assert int(self.dut.irq.value) == self.model.irq(), "irq differs from the model"
        assert self.seen == self.model.pulses, f"pulses {dict(self.seen)}, model {dict(self.model.pulses)}"
        assert not self.errors, self.errors

    def random_write(self):
        address = self.random_address(writable=True) | int(self.rng.integers(4))
        data = int(self.rng.integers(0, 2**32)) & int(self.rng.choice([MASK32, 0x7]))
        strb = 0xF if self.rng.random() < 0.5 else int(self.rng.integers(16))
        return address, data, strb

    def random_address(self, writable):
        if self.rng.random() < 0.1:
            address = int(self.rng.choice(UNMAPPED))
        else:
            registers = [r for r in REGISTERS if not writable or
                         any(f.access != "r" for f in r.fields)]
            address = registers[int(self.rng.integers(len(registers)))].address
        return address


def _run(coroutine):
    return with_timeout(coroutine, 2, "ms")


@cocotb.test()
async def constants(dut):
    """ID, VERSION and CONFIG_* read back as config_words(config); writes leave them."""
    tb = TB(dut)
    await tb.start()
    words = config_words(tb.config)
    for register in REGISTERS:
        if register.name in words:
            assert await _run(tb.read(register.address)) == words[register.name]
            await _run(tb.write(register.address, int(tb.rng.integers(0, 2**32)), 0xF))
            assert await _run(tb.read(register.address)) == words[register.name]


@cocotb.test()
async def rw_random_strobes(dut):
    """Random data with random WSTRB (0 to 15) into every register with a rw field."""
    tb = TB(dut)
    await tb.start()
    targets = [r.address for r in REGISTERS if any(f.access == "rw" for f in r.fields)]
    for _ in range(150):
        address = targets[int(tb.rng.integers(len(targets)))]
        await _run(tb.write(address, int(tb.rng.integers(0, 2**32)), int(tb.rng.integers(16))))
        await _run(tb.read(address))
    for address in targets:
        await _run(tb.read(address))


@cocotb.test()
async def pulses(dut):
    """w1p ports pulse for one cycle per write of 1, never on 0 or an unstrobed byte."""
    tb = TB(dut)
    await tb.start()
    control = next(r for r in REGISTERS if r.name == "CONTROL").address
    for data, strb in [(0, 0xF), (1, 0xF), (2, 0xF), (3, 0xF), (3, 0xE), (0xFFFFFFFC, 0xF),
                       (1, 0x1), (2, 0x1), (0, 0x1)] * 3:
        await _run(tb.write(control, data, strb))
        assert await _run(tb.read(control)) & 3 == 0, "w1p fields read 0"
    assert tb.seen["control_start"] == 9 and tb.seen["control_soft_reset"] == 9


@cocotb.test()
async def sticky_bits_and_irq(dut):
    """w1c: set by `_set`, kept on writes of 0, cleared by 1 and by soft reset; irq."""
    tb = TB(dut)
    await tb.start()
    status = next(r for r in REGISTERS if r.name == "STATUS").address
    control = next(r for r in REGISTERS if r.name == "CONTROL").address
    for irq_enable in (0, 4):
        await _run(tb.write(control, irq_enable))
        for name, bit in (("status_done_set", 4), ("status_error_set", 8)):
            await _run(tb.set_sticky(name))
            assert await _run(tb.read(status)) & bit
            assert int(dut.irq.value) == bool(irq_enable)
            await _run(tb.write(status, MASK32 ^ bit))
            assert await _run(tb.read(status)) & bit, "a write of 0 cleared a w1c bit"
            await _run(tb.write(status, bit, 0xE))
            assert await _run(tb.read(status)) & bit, "an unstrobed write cleared a w1c bit"
            await _run(tb.write(status, bit))
            assert not await _run(tb.read(status)) & bit, "a write of 1 kept a w1c bit"
            assert int(dut.irq.value) == 0
        await _run(tb.set_sticky("status_done_set"))
        await _run(tb.set_sticky("status_error_set"))
        await _run(tb.write(control, irq_enable | 2))
        assert await _run(tb.read(status)) & 0xC == 0, "soft reset kept a w1c bit"
    # A `_set` held through a clearing write wins.
    await FallingEdge(dut.clk)
    dut.status_done_set.value = 1
    tb.model.held.add("status_done_set")
    tb.model.state["status_done_set"] = 1
    await _run(tb.write(status, 4))
    assert await _run(tb.read(status)) & 4


@cocotb.test()
async def read_only_inputs(dut):
    """Random values on every read-only input port read back in their registers."""
    tb = TB(dut)
    await tb.start()
    readable = sorted({r.address for r in tb.model.variable_registers()})
    for _ in range(20):
        await tb.drive_inputs()
        for address in readable:
            await _run(tb.read(address))


@cocotb.test()
async def unmapped(dut):
    """Every unmapped word answers SLVERR to reads (data 0) and writes; mapped ones OKAY."""
    tb = TB(dut)
    await tb.start()
    await tb.drive_inputs()
    for address in range(0, 2**ADDR_WIDTH, 4):
        await _run(tb.read(address))
        if address in UNMAPPED:
            await _run(tb.write(address | int(tb.rng.integers(4)), int(tb.rng.integers(2**32))))


@cocotb.test()
async def random_traffic(dut):
    """Random reads, writes, `_set` pulses and input changes, one at a time or several
    reads or writes in flight; a read of a register that no write can change sometimes
    runs concurrently with a write."""
    tb = TB(dut, pause=0.5)
    await tb.start()
    sticky = [name for name, _ in tb.model.ports("w1c")]
    inputs = [name for name, _ in tb.model.ports("r")]
    for _ in range(300):
        choice = tb.rng.random()
        if choice < 0.3:
            await _run(tb.read(tb.random_address(writable=False)))
        elif choice < 0.4:
            await _run(tb.reads([tb.random_address(writable=False) for _ in range(3)]))
        elif choice < 0.6:
            other = tb.random_address(writable=False)
            if tb.model.unaffected_by_writes(other) and tb.rng.random() < 0.5:
                read = cocotb.start_soon(_run(tb.read(other)))
                await _run(tb.write(*tb.random_write()))
                await read
            else:
                await _run(tb.write(*tb.random_write()))
        elif choice < 0.7:
            await _run(tb.writes([tb.random_write() for _ in range(3)]))
        elif choice < 0.8:
            await _run(tb.set_sticky(sticky[int(tb.rng.integers(len(sticky)))]))
        else:
            await tb.drive_inputs(set(tb.rng.choice(inputs, size=3)))
    for register in REGISTERS:
        await _run(tb.read(register.address))
    dut._log.info("pulses seen: %s", dict(tb.seen))
