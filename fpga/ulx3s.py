"""Radiona ULX3S (ECP5-85F) top: the 25 MHz oscillator, an EHXPLLL, the FTDI UART and an LED.

:class:`ULX3STop` wraps a platform-independent design (``fpga.board.BoardDesign``) whose
ports are ``uart_rx``, ``uart_tx`` and, if it has one, ``irq``. It makes the ``sync``
domain from the PLL, holds it in reset until the PLL locks, connects the UART to the
FTDI chip (``/dev/ttyUSB0`` on the host) and shows ``irq`` on LED 0.

nextpnr derives the core clock's timing constraint from the PLL's dividers and the
oscillator's 25 MHz.
"""

from amaranth import *
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .board import connect_pins


__all__ = ["ULX3STop", "ecp5_pll_params", "ULX3SPlatform"]


class ULX3SPlatform(ULX3S_85F_Platform):
    """The ULX3S 85F, its build script running :mod:`fpga.block_ram_registers` on Yosys's
    netlist before nextpnr reads it (with the Python in ``$PYTHON``)."""

    @property
    def required_tools(self):
        return [*super().required_tools, "python"]

    @property
    def command_templates(self):
        synthesis, *place_and_route = super().command_templates
        return [synthesis,
                r"""{{invoke_tool("python")}} -m fpga.block_ram_registers {{name}}.json""",
                *place_and_route]

#: EHXPLLL limits (Lattice TN1263): phase detector and VCO frequencies, in Hz.
PFD_RANGE = (3.125e6, 400e6)
VCO_RANGE = (400e6, 800e6)


def ecp5_pll_params(input_hz, output_hz):
    """Dividers of an EHXPLLL that makes exactly ``output_hz`` from ``input_hz`` on CLKOP.

    Returns a dict with ``CLKI_DIV``, ``CLKFB_DIV`` and ``CLKOP_DIV`` (feedback from CLKOP:
    ``output = input * CLKFB_DIV / CLKI_DIV`` and ``VCO = output * CLKOP_DIV``), choosing the
    highest VCO frequency. Raises :class:`ValueError` when no setting is exact.
    """
    best = None
    for clki_div in range(1, 129):
        pfd = input_hz / clki_div
        if not PFD_RANGE[0] <= pfd <= PFD_RANGE[1]:
            continue
        for clkfb_div in range(1, 81):
            if input_hz * clkfb_div != output_hz * clki_div:
                continue
            for clkop_div in range(1, 129):
                vco = output_hz * clkop_div
                if VCO_RANGE[0] <= vco <= VCO_RANGE[1] and (best is None or vco > best[0]):
                    best = (vco, dict(CLKI_DIV=clki_div, CLKFB_DIV=clkfb_div,
                                      CLKOP_DIV=clkop_div))
    if best is None:
        raise ValueError(f"an ECP5 PLL cannot make {output_hz / 1e6:g} MHz "
                         f"from {input_hz / 1e6:g} MHz exactly")
    return best[1]


class ULX3STop(Elaboratable):
    """The ULX3S board top.

    Parameters
    ----------
    design : :class:`amaranth.lib.wiring.Component`
        With ``uart_rx: In(1)``, ``uart_tx: Out(1)`` and optionally ``irq: Out(1)``; its
        ``sync`` domain runs at ``clock_hz``.
    clock_hz : int
        The core clock, made by the PLL from the 25 MHz oscillator.
    """

    def __init__(self, design, clock_hz):
        self.design = design
        self.clock_hz = clock_hz

    def elaborate(self, platform):
        m = Module()
        input_hz = int(platform.default_clk_frequency)
        params = ecp5_pll_params(input_hz, self.clock_hz)

        m.domains.sync = cd_sync = ClockDomain()
        m.submodules.clk25 = clk25 = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{input_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{self.clock_hz / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKOP_ENABLE="ENABLED", p_FEEDBK_PATH="CLKOP",
            p_CLKI_DIV=params["CLKI_DIV"], p_CLKFB_DIV=params["CLKFB_DIV"],
            p_CLKOP_DIV=params["CLKOP_DIV"], p_CLKOP_CPHASE=params["CLKOP_DIV"] - 1,
            p_CLKOP_FPHASE=0,
            i_CLKI=clk25.i, i_CLKFB=cd_sync.clk, o_CLKOP=cd_sync.clk, o_LOCK=locked,
            i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
            i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
        )
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")

        m.submodules.design = design = self.design
        connect_pins(m, platform, design, "led")
        return m
