"""ECP5 block RAM output registers: the flip-flops that take a block RAM's read data, moved
into the block RAM.

Yosys maps a memory's synchronous read port to a ``DP16KD`` with its output register off
(``REGMODE`` ``NOREG``): the data then comes 5.6 ns after the clock (speed grade 6), and
the register the design puts after it must sit beside the block RAM for the rest of the
10 ns to suffice. The ``DP16KD`` has that register inside (``OUTREG``), with the data
0.9 ns after the clock. Yosys does not use it, so this pass does, on Yosys's JSON netlist
before nextpnr reads it: for each port of each ``DP16KD`` whose every used ``DO`` bit
goes to one flip-flop's ``DI`` and nowhere else, each flip-flop on the block RAM port's
clock, without a clock enable or a reset, and whose own output clock enable is high and
reset low, it sets that port's ``REGMODE`` to ``OUTREG``, drives the flip-flops' outputs
from the ``DO`` pins and removes the flip-flops. The register then holds what the
flip-flops held, one cycle after the read, and the netlist does what it did.

``make bitstream BOARD=ulx3s`` runs it between Yosys and nextpnr::

    python -m fpga.block_ram_registers top.json
"""

import json
import sys
from collections import defaultdict


__all__ = ["absorb_output_registers", "main"]


def _top(netlist):
    """The netlist's top module."""
    for module in netlist["modules"].values():
        if int(module.get("attributes", {}).get("top", "0"), 2):
            return module
    raise ValueError("the netlist has no top module")


def _sinks(module):
    """Each net bit's readers: (cell name, port) pairs, and ``(None, port)`` for a module
    output."""
    sinks = defaultdict(list)
    for name, cell in module["cells"].items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) != "output":
                for bit in bits:
                    sinks[bit].append((name, port))
    for port, info in module["ports"].items():
        if info["direction"] != "input":
            for bit in info["bits"]:
                sinks[bit].append((None, port))
    return sinks


def _plain_register(cell, clock):
    """Whether ``cell`` is a flip-flop on ``clock`` without a clock enable or a reset."""
    if cell["type"] != "TRELLIS_FF":
        return False
    parameters, connections = cell["parameters"], cell["connections"]
    enabled = (parameters.get("CEMUX", "CE").strip() == "1"
               or connections.get("CE", ["1"]) == ["1"])
    no_reset = connections.get("LSR", ["0"]) == ["0"]
    return (enabled and no_reset and parameters.get("CLKMUX", "CLK").strip() == "CLK"
            and connections["CLK"] == clock)


def absorb_output_registers(netlist):
    """Move the output registers of ``netlist``'s block RAM ports into the ``DP16KD``s
    (see the module's description), in place. Returns how many ports now use ``OUTREG``
    and how many flip-flops were removed."""
    module = _top(netlist)
    cells = module["cells"]
    sinks = _sinks(module)
    ports = removed = 0
    for ram in list(cells.values()):
        if ram["type"] != "DP16KD":
            continue
        connections = ram["connections"]
        for side in "AB":
            if (ram["parameters"].get(f"REGMODE_{side}", "NOREG") != "NOREG"
                    or connections.get(f"OCE{side}") != ["1"]
                    or connections.get(f"RST{side}") != ["0"]):
                continue
            clock = connections.get(f"CLK{side}")
            registers = {}
            for pin in (f"DO{side}{i}" for i in range(18)):
                bit = connections.get(pin, ["x"])[0]
                if isinstance(bit, int) and sinks[bit]:
                    registers[pin] = sinks[bit]
            if not registers or not all(
                    len(readers) == 1 and readers[0][0] is not None and readers[0][1] == "DI"
                    and _plain_register(cells[readers[0][0]], clock)
                    for readers in registers.values()):
                continue
            for pin, [(register, _)] in registers.items():
                connections[pin] = cells.pop(register)["connections"]["Q"]
                removed += 1
            ram["parameters"][f"REGMODE_{side}"] = "OUTREG"
            ports += 1
    return ports, removed


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m fpga.block_ram_registers NETLIST.json", file=sys.stderr)
        return 2
    path = args[0]
    try:
        with open(path) as file:
            netlist = json.load(file)
        ports, removed = absorb_output_registers(netlist)
    except (OSError, ValueError, KeyError) as error:
        print(f"fpga.block_ram_registers: {path}: {error}", file=sys.stderr)
        return 1
    with open(path, "w") as file:
        json.dump(netlist, file)
    print(f"{path}: {ports} block RAM ports use their output register ({removed} flip-flops "
          f"moved into them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
