"""``fpga.block_ram_registers`` on a netlist Yosys (``synth_ecp5``) makes of three block
RAMs: the flip-flops after the first one's read data move into its ``DP16KD`` (``OUTREG``),
and the second's (a register with a reset) and the third's (read data that also goes
elsewhere) stay where they are."""

import json
import subprocess

from amaranth import *
from amaranth.back import rtlil
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from fpga.block_ram_registers import absorb_output_registers, main
from fpga.build import TOOLS


class ThreeBlockRams(wiring.Component):
    addr: In(9)
    data: In(16)
    write: In(1)
    registered: Out(16)
    reset: Out(16)
    shared: Out(16)
    shared_raw: Out(16)

    def elaborate(self, platform):
        m = Module()
        reads = []
        for name in ("registered", "reset", "shared"):
            m.submodules[name] = ram = memory.Memory(shape=16, depth=512, init=[])
            write, read = ram.write_port(), ram.read_port()
            m.d.comb += [write.addr.eq(self.addr), write.data.eq(self.data + len(reads)),
                         write.en.eq(self.write), read.addr.eq(self.addr)]
            reads.append(read.data)
        registered = Signal(16, reset_less=True)
        reset = Signal(16)
        shared = Signal(16, reset_less=True)
        m.d.sync += [registered.eq(reads[0]), reset.eq(reads[1]), shared.eq(reads[2])]
        m.d.comb += [self.registered.eq(registered), self.reset.eq(reset),
                     self.shared.eq(shared), self.shared_raw.eq(reads[2])]
        return m


def synthesized(tmp_path):
    (tmp_path / "top.il").write_text(rtlil.convert(ThreeBlockRams(), name="top"))
    subprocess.run([TOOLS["YOSYS"], "-q", "-p", "read_rtlil top.il; synth_ecp5 -top top; "
                    "write_json top.json"], cwd=tmp_path, check=True)
    return json.loads((tmp_path / "top.json").read_text())


def drivers(module, port):
    """The (cell, pin) driving each bit of the top module's output ``port``."""
    found = {}
    for name, cell in module["cells"].items():
        for pin, bits in cell["connections"].items():
            if cell["port_directions"][pin] == "output":
                for bit in bits:
                    found[bit] = (name, pin)
    return [found[bit] for bit in module["ports"][port]["bits"]]


def test_only_plain_registers_move_into_their_block_ram(tmp_path):
    netlist = synthesized(tmp_path)
    module = netlist["modules"]["top"]
    cells = module["cells"]
    before = {port: drivers(module, port) for port in ("registered", "reset", "shared")}
    for port, found in before.items():
        assert {cells[name]["type"] for name, _ in found} == {"TRELLIS_FF"}, port

    assert absorb_output_registers(netlist) == (1, 16)

    rams = {name: cell for name, cell in cells.items() if cell["type"] == "DP16KD"}
    after = drivers(module, "registered")
    [ram] = {name for name, _ in after}
    assert ram in rams
    assert all(pin.startswith("DO") for _, pin in after)
    side = after[0][1][2]
    assert rams[ram]["parameters"][f"REGMODE_{side}"] == "OUTREG"
    assert all(name not in cells for name, _ in before["registered"])
    for port in ("reset", "shared"):
        assert drivers(module, port) == before[port], port
    assert [cell["parameters"][f"REGMODE_{s}"] for name, cell in rams.items() if name != ram
            for s in "AB"] == ["NOREG"] * 4
    assert absorb_output_registers(netlist) == (0, 0)


def test_a_netlist_it_cannot_read_is_named_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.json")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "missing.json" in error
