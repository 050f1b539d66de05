"""AXI4 and AXI4-Lite interface signatures, and the AXI constants the NPU uses.

Both signatures describe the **manager** (master) side: address, write data and ready
for read data are outputs; an ``In(...)`` of the signature, or ``.flip()``, is a
subordinate (slave) port. Member names are the AMBA signal names in lower case (``awaddr``,
``wstrb``, ``rlast``), which are the names cocotbext-axi looks for, so a top-level port ``m_axi: Out(AXI4Signature(...))``
comes out as ``m_axi__awaddr`` and is found by
``AxiBus.from_prefix(dut, "m_axi", bus_separator="__")``.

AXI4 (:class:`AXI4Signature`) carries ``awlock``, ``awcache``, ``awprot`` and ``awqos``
(and their read twins) but no ``region`` or ``user`` signals. AXI4-Lite
(:class:`AXI4LiteSignature`) has ``awprot``/``arprot`` and no IDs, bursts or ``last``.
"""

from amaranth import *
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["Resp", "Burst", "AXI4Signature", "AXI4LiteSignature", "BOUNDARY", "MAX_BURST_BEATS"]


#: INCR bursts must not cross an address that is a multiple of this (AXI4 rule).
BOUNDARY = 4096
#: The longest INCR burst AXI4 allows (``AxLEN`` = 255).
MAX_BURST_BEATS = 256


class Resp(enum.Enum, shape=2):
    """``BRESP``/``RRESP`` encodings."""
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


class Burst(enum.Enum, shape=2):
    """``AxBURST`` encodings."""
    FIXED = 0
    INCR = 1
    WRAP = 2


def _check(data_width, addr_width, id_width=None):
    if data_width not in (8, 16, 32, 64, 128, 256, 512, 1024):
        raise ValueError(f"AXI data width must be a power of two from 8 to 1024, not {data_width}")
    if not isinstance(addr_width, int) or not 1 <= addr_width <= 64:
        raise ValueError(f"AXI address width must be an integer from 1 to 64, not {addr_width}")
    if id_width is not None and (not isinstance(id_width, int) or not 1 <= id_width <= 32):
        raise ValueError(f"AXI ID width must be an integer from 1 to 32, not {id_width}")


class AXI4Signature(wiring.Signature):
    """AXI4 (full) manager interface.

    Parameters
    ----------
    data_width : int
        ``WDATA``/``RDATA`` width in bits; ``WSTRB`` has ``data_width // 8`` bits.
    addr_width : int
        ``AWADDR``/``ARADDR`` width in bits.
    id_width : int
        ``AWID``/``BID``/``ARID``/``RID`` width in bits (at least 1).

    Members
    -------
    aw* : ``Out``, ``awready`` ``In``
        Write address channel: ``awid``, ``awaddr``, ``awlen`` (beats − 1), ``awsize``
        (log2 bytes per beat), ``awburst`` (:class:`Burst`), ``awlock``, ``awcache``,
        ``awprot``, ``awqos``, ``awvalid``.
    w* : ``Out``, ``wready`` ``In``
        Write data channel: ``wdata``, ``wstrb``, ``wlast``, ``wvalid``.
    b* : ``In``, ``bready`` ``Out``
        Write response channel: ``bid``, ``bresp`` (:class:`Resp`), ``bvalid``.
    ar* : ``Out``, ``arready`` ``In``
        Read address channel, the same members as the write address channel.
    r* : ``In``, ``rready`` ``Out``
        Read data channel: ``rid``, ``rdata``, ``rresp`` (:class:`Resp`), ``rlast``,
        ``rvalid``.

    Timing
    ------
    Every channel is a valid/ready handshake: a beat moves on a rising edge where both
    are high; once raised, a valid stays high with stable payload until that edge.
    """

    def __init__(self, *, data_width, addr_width, id_width=1):
        _check(data_width, addr_width, id_width)
        self.data_width = data_width
        self.addr_width = addr_width
        self.id_width = id_width
        members = {}
        for ch in ("aw", "ar"):
            members.update({
                f"{ch}id":    Out(id_width),
                f"{ch}addr":  Out(addr_width),
                f"{ch}len":   Out(8),
                f"{ch}size":  Out(3),
                f"{ch}burst": Out(Burst),
                f"{ch}lock":  Out(1),
                f"{ch}cache": Out(4),
                f"{ch}prot":  Out(3),
                f"{ch}qos":   Out(4),
                f"{ch}valid": Out(1),
                f"{ch}ready": In(1),
            })
        members.update({
            "wdata":  Out(data_width),
            "wstrb":  Out(data_width // 8),
            "wlast":  Out(1),
            "wvalid": Out(1),
            "wready": In(1),
            "bid":    In(id_width),
            "bresp":  In(Resp),
            "bvalid": In(1),
            "bready": Out(1),
            "rid":    In(id_width),
            "rdata":  In(data_width),
            "rresp":  In(Resp),
            "rlast":  In(1),
            "rvalid": In(1),
            "rready": Out(1),
        })
        super().__init__(members)

    def __eq__(self, other):
        return (type(other) is type(self) and
                (self.data_width, self.addr_width, self.id_width) ==
                (other.data_width, other.addr_width, other.id_width))

    def __repr__(self):
        return (f"AXI4Signature(data_width={self.data_width}, addr_width={self.addr_width}, "
                f"id_width={self.id_width})")


class AXI4LiteSignature(wiring.Signature):
    """AXI4-Lite manager interface.

    Parameters
    ----------
    data_width : int
        32 or 64.
    addr_width : int
        ``AWADDR``/``ARADDR`` width in bits.

    Members
    -------
    ``awaddr``, ``awprot``, ``awvalid`` / ``awready``; ``wdata``, ``wstrb``, ``wvalid`` /
    ``wready``; ``bresp``, ``bvalid`` / ``bready``; ``araddr``, ``arprot``, ``arvalid`` /
    ``arready``; ``rdata``, ``rresp``, ``rvalid`` / ``rready``, with the directions of
    :class:`AXI4Signature`.

    Timing
    ------
    As :class:`AXI4Signature`; every transaction is a single beat.
    """

    def __init__(self, *, data_width=32, addr_width):
        if data_width not in (32, 64):
            raise ValueError(f"AXI4-Lite data width must be 32 or 64, not {data_width}")
        _check(data_width, addr_width)
        self.data_width = data_width
        self.addr_width = addr_width
        super().__init__({
            "awaddr":  Out(addr_width),
            "awprot":  Out(3),
            "awvalid": Out(1),
            "awready": In(1),
            "wdata":   Out(data_width),
            "wstrb":   Out(data_width // 8),
            "wvalid":  Out(1),
            "wready":  In(1),
            "bresp":   In(Resp),
            "bvalid":  In(1),
            "bready":  Out(1),
            "araddr":  Out(addr_width),
            "arprot":  Out(3),
            "arvalid": Out(1),
            "arready": In(1),
            "rdata":   In(data_width),
            "rresp":   In(Resp),
            "rvalid":  In(1),
            "rready":  Out(1),
        })

    def __eq__(self, other):
        return (type(other) is type(self) and
                (self.data_width, self.addr_width) == (other.data_width, other.addr_width))

    def __repr__(self):
        return f"AXI4LiteSignature(data_width={self.data_width}, addr_width={self.addr_width})"
