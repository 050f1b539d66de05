"""The systolic array as ``make bitstream BOARD=icebreaker`` synthesizes it (Yosys
``synth_ice40``, the products' registers inside the SB_MAC16 DSP blocks), simulated as a
netlist of iCE40 cells beside its RTL, against both the RTL and NumPy
(``verif/tb_array_netlist.py``)."""

from amaranth.lib.wiring import Out

from fpga.configs import ICEBREAKER
from verif.array_netlist import ArrayPair, array_ports, write_sources
from verif.runner import BUILD, simulate


def test_array_netlist(seed, waves):
    rows, cols, tag_width = ICEBREAKER.config.rows, ICEBREAKER.config.cols, 16
    directory = BUILD / "sim" / "array_netlist_sources"
    directory.mkdir(parents=True, exist_ok=True)
    sources = write_sources(rows, cols, tag_width, directory)
    outputs = [name for name, flow, _ in array_ports(rows, cols, tag_width) if flow == Out]
    simulate(ArrayPair(rows, cols, tag_width), name="array_pair",
             test_module="verif.tb_array_netlist",
             params={"rows": rows, "cols": cols, "tag_width": tag_width, "tiles": 40,
                     "outputs": outputs},
             seed=seed, waves=waves, sources=sources)
