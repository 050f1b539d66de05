"""1BitSquared iCEBreaker (iCE40UP5K) top: the 12 MHz oscillator, an SB_PLL40_PAD, the FTDI UART
and the red LED.

:class:`ICEBreakerTop` wraps a platform-independent design (``fpga.board.BoardDesign``)
whose ports are ``uart_rx``, ``uart_tx`` and, if it has one, ``irq``. It makes the
``sync`` domain from the PLL (fed straight from the clock pad, pin 35), holds it in reset
until the PLL locks, connects the UART to the FTDI chip's second channel and shows ``irq``
on the red LED.

nextpnr derives the core clock's timing constraint from the PLL's dividers and the
oscillator's 12 MHz.
"""

from amaranth import *
from amaranth.lib.cdc import ResetSynchronizer
from amaranth_boards.icebreaker import ICEBreakerPlatform

from .board import connect_pins


__all__ = ["ICEBreakerTop", "ice40_pll_params", "ICEBreakerPlatform"]


#: SB_PLL40 limits (Lattice iCE40 sysCLOCK PLL guide): phase detector and VCO, in Hz.
PFD_RANGE = (10e6, 133e6)
VCO_RANGE = (533e6, 1066e6)
#: FILTER_RANGE by phase detector frequency, as icepll chooses it.
FILTER_LIMITS = (17e6, 26e6, 44e6, 66e6, 101e6)


def ice40_pll_params(input_hz, output_hz):
    """``DIVR``, ``DIVF``, ``DIVQ`` and ``FILTER_RANGE`` of an SB_PLL40 making exactly
    ``output_hz`` from ``input_hz``: ``output = input * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``.

    Raises :class:`ValueError` when no setting is exact.
    """
    for divr in range(16):
        pfd = input_hz / (divr + 1)
        if not PFD_RANGE[0] <= pfd <= PFD_RANGE[1]:
            continue
        for divq in range(1, 7):
            for divf in range(128):
                vco = pfd * (divf + 1)
                if (VCO_RANGE[0] <= vco <= VCO_RANGE[1]
                        and input_hz * (divf + 1) == output_hz * (divr + 1) * 2 ** divq):
                    filter_range = 1 + sum(pfd >= limit for limit in FILTER_LIMITS)
                    return dict(DIVR=divr, DIVF=divf, DIVQ=divq, FILTER_RANGE=filter_range)
    raise ValueError(f"an iCE40 PLL cannot make {output_hz / 1e6:g} MHz "
                     f"from {input_hz / 1e6:g} MHz exactly")


class ICEBreakerTop(Elaboratable):
    """The iCEBreaker board top.

    Parameters
    ----------
    design : :class:`amaranth.lib.wiring.Component`
        With ``uart_rx: In(1)``, ``uart_tx: Out(1)`` and optionally ``irq: Out(1)``; its
        ``sync`` domain runs at ``clock_hz``.
    clock_hz : int
        The core clock, made by the PLL from the 12 MHz oscillator.
    """

    def __init__(self, design, clock_hz):
        self.design = design
        self.clock_hz = clock_hz

    def elaborate(self, platform):
        m = Module()
        params = ice40_pll_params(int(platform.default_clk_frequency), self.clock_hz)

        m.domains.sync = cd_sync = ClockDomain()
        clk12 = platform.request(platform.default_clk, dir="-")
        locked = Signal()
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=params["DIVR"], p_DIVF=params["DIVF"], p_DIVQ=params["DIVQ"],
            p_FILTER_RANGE=params["FILTER_RANGE"],
            i_PACKAGEPIN=clk12.io, i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBAL=cd_sync.clk, o_LOCK=locked,
        )
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")

        m.submodules.design = design = self.design
        connect_pins(m, platform, design, "led_r")
        return m
