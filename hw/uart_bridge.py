"""UART host link: an 8N1 receiver and transmitter, and a framed bridge that lets a host
read and write memory and the NPU's registers.

The protocol constants (sync bytes, commands, status codes, sizes, the CRC and the
``STATUS`` layout) are defined here once; the host side, ``sw/uart_link.py``, imports them.

Protocol
--------
Stop and wait: the host sends one request frame and waits for its answer before sending
the next. Multi-byte fields are little-endian, except the CRC, which is sent high byte
first so that the CRC of everything after the sync byte, CRC included, is zero.

Request (``9 + n + 2`` bytes)::

    0xA5 | seq | command | address (4) | length (2) | payload (n) | crc (2, high first)

Answer (``5 + m + 2`` bytes)::

    0x5A | seq | status | length (2) | data (m) | crc (2, high first)

``crc`` is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no
final XOR) over every byte after the sync byte. ``length`` is the number of data bytes the
command moves; the payload is present (``n = length``) only for the write commands, the
answer data (``m = length``) only for the read commands that succeed.

=============  ========  ======================================================
command        length    action
=============  ========  ======================================================
``READ_REG``   4         read the 32-bit register at ``address`` (AXI4-Lite)
``WRITE_REG``  4         write the payload to the register at ``address``
``READ_MEM``   1..256    read ``length`` bytes of memory from ``address``
``WRITE_MEM``  1..256    write the payload to memory at ``address``
``STATUS``     8         read the bridge status (:class:`BridgeStatus`): the NPU's
                         ``irq`` line and the bridge's error counters
=============  ========  ======================================================

The answer's ``status`` is a :class:`Status`. Rules:

* A frame whose CRC is wrong is answered with ``BAD_CRC`` (a NAK echoing the received
  ``seq``, no data) and is not applied.
* A frame that stops before its end is dropped without an answer when no byte arrives
  for ``timeout_bytes`` byte times (the inter-byte timeout, :data:`INTERBYTE_TIMEOUT_BYTES`
  by default); bytes outside a frame are ignored until the next ``0xA5``.
* A well-formed frame with an unknown command or a wrong ``length`` is answered with
  ``BAD_COMMAND`` or ``BAD_LENGTH`` and is not applied. A write frame whose ``length``
  is above ``MAX_PAYLOAD`` is taken to end at the inter-byte timeout: it is answered
  then, with ``BAD_LENGTH`` if the CRC of all its bytes after the sync byte is 0 (it
  was whole), ``BAD_CRC`` otherwise.
* The bridge remembers the ``seq`` and CRC of the last frame it executed. A frame with
  the same ``seq`` and CRC (a retransmission after a lost answer) is **not executed
  again**: the saved answer is sent again (its status; for ``READ_REG``, ``READ_MEM`` and
  ``STATUS``, which have no side effects, the data is read again). The host must
  therefore give every new request a new ``seq`` (it counts modulo 256).
* An AXI error response on a register or memory access is answered with ``BUS_ERROR``.

Timing
------
One bit is ``divisor`` clock cycles; a byte is ``10 * divisor``. Received bytes are
ignored while the bridge executes a frame or sends its answer. A memory write is applied
after its CRC is checked, one byte per two cycles at most; the answer starts a few cycles
after the last request byte (register accesses: after the AXI4-Lite response).

Interrupt
---------
The host polls: the ``irq`` field of the ``STATUS`` answer is the NPU's ``irq`` line at
the time the answer is sent.
"""

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arith import device_family
from .axi import AXI4LiteSignature, Resp


__all__ = ["REQUEST_SYNC", "RESPONSE_SYNC", "MAX_PAYLOAD", "REGISTER_BYTES", "STATUS_BYTES",
           "REQUEST_HEADER_BYTES", "RESPONSE_HEADER_BYTES", "CRC_BYTES",
           "INTERBYTE_TIMEOUT_BYTES", "CRC_INIT", "CRC_POLY", "Command", "Status",
           "BridgeStatus", "crc16", "command_length_ok", "MemoryBusSignature", "UartRx",
           "UartTx", "UartBridge"]


REQUEST_SYNC = 0xA5
RESPONSE_SYNC = 0x5A
#: The most bytes one READ_MEM or WRITE_MEM moves.
MAX_PAYLOAD = 256
REGISTER_BYTES = 4
STATUS_BYTES = 8
#: sync, seq, command, address (4), length (2).
REQUEST_HEADER_BYTES = 9
#: sync, seq, status, length (2).
RESPONSE_HEADER_BYTES = 5
CRC_BYTES = 2
#: Default inter-byte timeout of the bridge, in byte times.
INTERBYTE_TIMEOUT_BYTES = 32
CRC_INIT = 0xFFFF
CRC_POLY = 0x1021


class Command(enum.Enum, shape=8):
    READ_REG = 0x01
    WRITE_REG = 0x02
    READ_MEM = 0x03
    WRITE_MEM = 0x04
    STATUS = 0x05


class Status(enum.Enum, shape=8):
    OK = 0x00
    BAD_CRC = 0x01        # NAK: the frame was damaged; send it again
    BAD_COMMAND = 0x02
    BAD_LENGTH = 0x03
    BUS_ERROR = 0x04


class BridgeStatus(data.Struct):
    """The ``STATUS`` answer's 8 data bytes (little-endian). Counters start at 0 on reset
    and wrap."""
    irq: 8              # 1 while the NPU's interrupt line is high
    bad_frames: 8       # frames answered with BAD_CRC
    truncated: 8        # frames dropped by the inter-byte timeout
    duplicates: 8       # retransmissions answered from the saved answer
    executed: 32        # READ/WRITE_REG/MEM commands executed (STATUS not counted)


def crc16(payload, crc=CRC_INIT):
    """CRC-16/CCITT-FALSE of ``payload`` (bytes), continuing from ``crc``."""
    for byte in payload:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def _crc16_next(crc, byte):
    """The CRC register after one more byte, as an Amaranth expression.

    The update is linear over GF(2): each next bit is the XOR of some bits of ``crc``
    and ``byte``. The bit sets are found by running :func:`crc16`'s loop on masks
    (bit ``i`` of a mask stands for input bit ``i`` of ``Cat(crc, byte)``).
    """
    state = [1 << i for i in range(16)]
    for i in range(8):
        state[8 + i] ^= 1 << (16 + i)
    for _ in range(8):
        msb = state[15]
        state = [0] + state[:15]
        state = [bit ^ (msb if CRC_POLY >> i & 1 else 0) for i, bit in enumerate(state)]
    inputs = Cat(crc, byte)
    return Cat(*(Cat(*(inputs[j] for j in range(24) if mask >> j & 1)).xor() for mask in state))


def command_length_ok(command, length):
    """Whether ``length`` is valid for ``command`` (Python ints or Amaranth values)."""
    if isinstance(command, Value):
        with_mem = (length != 0) & (length <= MAX_PAYLOAD)
        return Mux((command == Command.READ_MEM) | (command == Command.WRITE_MEM), with_mem,
                   Mux(command == Command.STATUS, length == STATUS_BYTES,
                       length == REGISTER_BYTES))
    command = Command(command)
    if command in (Command.READ_MEM, Command.WRITE_MEM):
        return 1 <= length <= MAX_PAYLOAD
    return length == (STATUS_BYTES if command is Command.STATUS else REGISTER_BYTES)


class MemoryBusSignature(wiring.Signature):
    """A byte-wide memory port (manager side).

    Members
    -------
    addr : ``Out(addr_width)``
        Byte address.
    write : ``Out(1)``
        1: write ``wdata``; 0: read.
    wdata : ``Out(8)``
    valid : ``Out(1)``, ready : ``In(1)``
        A request is accepted on a cycle where both are high.
    rdata : ``In(8)``

    Timing
    ------
    ``rdata`` holds the byte read in the cycle after its request was accepted, and only
    then. A manager holds ``valid`` and its request stable until ``ready``.
    """

    def __init__(self, addr_width=32):
        self.addr_width = addr_width
        super().__init__({
            "addr": Out(addr_width),
            "write": Out(1),
            "wdata": Out(8),
            "valid": Out(1),
            "ready": In(1),
            "rdata": In(8),
        })

    def __eq__(self, other):
        return type(other) is type(self) and other.addr_width == self.addr_width

    def __repr__(self):
        return f"MemoryBusSignature(addr_width={self.addr_width})"


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"the UART divisor must be an integer of at least 4, not {divisor!r}")


class UartRx(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (at least 4).

    Members
    -------
    rx : ``In(1)``
        The serial line (idle high); synchronised inside.
    data : ``Out(stream.Signature(8, always_ready=True))``
        One received byte, ``valid`` for one cycle. A byte whose stop bit is low is
        dropped. ``payload`` holds the last byte received (0 from reset to the first).

    Timing
    ------
    Each bit is sampled at its middle (two cycles late, through the synchroniser);
    ``data.valid`` is high, from a register, in the cycle after the stop bit is sampled,
    half a bit time before the line may carry the next start bit.
    """

    rx: In(1, init=1)
    data: Out(stream.Signature(8, always_ready=True))

    def __init__(self, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(self.divisor))
        bit = Signal(range(8))
        shift = Signal(8)
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        m.d.sync += self.data.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), bit.eq(0)]
                    with m.If(line):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), shift.eq(Cat(shift[1:], line)),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(line):
                        m.d.sync += self.data.valid.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        m.d.comb += self.data.payload.eq(shift)
        return m


class UartTx(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (at least 4).

    Members
    -------
    data : ``In(stream.Signature(8))``
        Bytes to send; ``ready`` is high while the transmitter is idle.
    tx : ``Out(1, init=1)``
        The serial line, driven from a register.

    Timing
    ------
    The start bit begins the cycle after a byte is accepted; ``ready`` rises again at the
    end of the stop bit, so back-to-back bytes leave without gaps.
    """

    data: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        shift = Signal(9, init=0x1FF)
        bits = Signal(range(11))
        m.d.comb += self.data.ready.eq(bits == 0)
        with m.If(bits == 0):
            with m.If(self.data.valid):
                m.d.sync += [self.tx.eq(0), shift.eq(Cat(self.data.payload, C(1, 1))),
                             bits.eq(10), timer.eq(self.divisor - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [self.tx.eq(shift[0]), shift.eq(Cat(shift[1:], C(1, 1))),
                         bits.eq(bits - 1), timer.eq(self.divisor - 1)]
        return m


class UartBridge(wiring.Component):
    """The host link: frames from the UART to register and memory accesses, and back.

    The protocol, its timing and its rules are in this module's docstring.

    Parameters
    ----------
    divisor : int
        Clock cycles per UART bit (at least 4).
    reg_addr_width : int
        Address width of the register port.
    timeout_bytes : int
        Inter-byte timeout within a frame, in byte times (``10 * divisor`` cycles).

    Members
    -------
    rx : ``In(1)``
        Serial input from the host.
    tx : ``Out(1)``
        Serial output to the host.
    m_axil : ``Out(AXI4LiteSignature(data_width=32, addr_width=reg_addr_width))``
        Register accesses, one at a time.
    mem : ``Out(MemoryBusSignature())``
        Memory accesses, one byte at a time.
    irq : ``In(1)``
        Reported to the host in the ``STATUS`` answer.
    """

    def __init__(self, divisor, *, reg_addr_width=8, timeout_bytes=INTERBYTE_TIMEOUT_BYTES):
        _check_divisor(divisor)
        self.divisor = divisor
        self.timeout_cycles = timeout_bytes * 10 * divisor
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "m_axil": Out(AXI4LiteSignature(data_width=32, addr_width=reg_addr_width)),
            "mem": Out(MemoryBusSignature()),
            "irq": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = uart_rx = UartRx(self.divisor)
        m.submodules.uart_tx = uart_tx = UartTx(self.divisor)
        m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx)]
        rx_valid, rx_byte = uart_rx.data.valid, uart_rx.data.payload

        # The payload of a write at 0 .. MAX_PAYLOAD - 1. From MAX_PAYLOAD on (the status
        # area), the ``STATUS`` answer's bytes at their offsets in :class:`BridgeStatus` (the
        # ``irq`` byte stays 0 and is ORed with ``irq`` as it is sent), then a byte counted
        # by the frames that count in no counter. On ECP5 it is in LUT RAM, whose read
        # register is a flip-flop: a block RAM's output (5.6 ns after the clock) into the
        # counters' increment and the frame logic was the design's critical path at 100 MHz.
        m.submodules.buffer = buffer = Memory(
            shape=8, depth=2 * MAX_PAYLOAD, init=[],
            attrs={"ram_style": "distributed"} if device_family(platform) == "ecp5" else None)
        buffer_w = buffer.write_port()
        buffer_r = buffer.read_port(domain="sync")

        # The frame being received or answered.
        seq = Signal(8)
        command = Signal(8)
        addr = Signal(32)
        length = Signal(range(MAX_PAYLOAD + 1))     # 0 from the answer on when it has no data
        long = Signal()                 # the length field is above MAX_PAYLOAD
        crc = Signal(16)                # of the frame's bytes up to its trailer
        crc_mismatch = Signal()         # the trailer differs from ``crc``
        count = Signal(range(MAX_PAYLOAD + 1))
        word = Signal(32)               # register payload, then the answer's data
        status = Signal(Status)
        dropped = Signal()              # the frame timed out: counted, not answered
        # The last executed frame and its answer.
        last_valid = Signal()
        last_seq = Signal(8)
        last_crc = Signal(16)
        last_status = Signal(Status)

        idle = Signal(range(self.timeout_cycles + 1))
        with m.If(rx_valid):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != self.timeout_cycles):
            m.d.sync += idle.eq(idle + 1)
        timed_out = idle == self.timeout_cycles

        next_crc = Signal(16)
        crc_in = Signal(8)
        m.d.comb += next_crc.eq(_crc16_next(crc, crc_in))
        # The counters' area while they are counted and for a ``STATUS`` answer.
        status_area = Signal()
        m.d.comb += [crc_in.eq(rx_byte), buffer_w.data.eq(rx_byte),
                     buffer_w.addr.eq(Cat(count[:8], status_area)),
                     buffer_r.addr.eq(Cat(count[:8], status_area))]

        is_write = (command == Command.WRITE_REG) | (command == Command.WRITE_MEM)
        is_read = ((command == Command.READ_REG) | (command == Command.READ_MEM) |
                   (command == Command.STATUS))
        known = Signal()
        with m.Switch(command):
            with m.Case(*Command):
                m.d.comb += known.eq(1)
        # ``count`` reaches the last byte of the payload or of the answer's data.
        next_count = count + 1
        # The frame checks, registered in SETTLE for CHECK.
        crc_bad = Signal()
        duplicate = Signal()
        known_q = Signal()
        length_ok = Signal()
        m.d.sync += [
            crc_bad.eq(crc_mismatch),
            duplicate.eq(last_valid & (last_seq == seq) & (last_crc == crc) & ~long),
            known_q.eq(known),
            length_ok.eq(command_length_ok(command, length) & ~long),
        ]
        from_memory = command == Command.READ_MEM
        m.d.comb += [
            self.mem.addr.eq(addr),
            self.mem.wdata.eq(buffer_r.data),
            self.m_axil.araddr.eq(addr),
            self.m_axil.awaddr.eq(addr),
            self.m_axil.wdata.eq(word),
            self.m_axil.wstrb.eq(0b1111),
        ]
        aw_done = Signal()
        w_done = Signal()

        def send(m, value, next_state, update_crc=True):
            m.d.comb += [uart_tx.data.valid.eq(1), uart_tx.data.payload.eq(value), crc_in.eq(value)]
            with m.If(uart_tx.data.ready):
                if update_crc:
                    m.d.sync += crc.eq(next_crc)
                m.next = next_state

        def status_offset(field):
            return data.Layout.cast(BridgeStatus)[field].offset // 8

        with m.FSM(init="CLEAR"):
            with m.State("CLEAR"):
                # The counters start at 0: ``rx_byte`` is 0 until a byte has been
                # received, which takes longer than these STATUS_BYTES cycles.
                m.d.comb += [status_area.eq(1), buffer_w.en.eq(1)]
                m.d.sync += count.eq(next_count)
                with m.If(count == STATUS_BYTES - 1):
                    m.d.sync += count.eq(0)
                    m.next = "IDLE"

            with m.State("IDLE"):
                with m.If(rx_valid & (rx_byte == REQUEST_SYNC)):
                    m.d.sync += [crc.eq(CRC_INIT), count.eq(0), dropped.eq(0)]
                    m.next = "HEADER"

            with m.State("HEADER"):
                with m.If(rx_valid):
                    m.d.sync += [crc.eq(next_crc), count.eq(next_count)]
                    with m.Switch(count):
                        with m.Case(0):
                            m.d.sync += seq.eq(rx_byte)
                        with m.Case(1):
                            m.d.sync += command.eq(rx_byte)
                        for i in range(4):
                            with m.Case(2 + i):
                                m.d.sync += addr.word_select(i, 8).eq(rx_byte)
                        with m.Case(6):
                            m.d.sync += length[:8].eq(rx_byte)
                        with m.Case(7):
                            m.d.sync += [length[8].eq(rx_byte[0]),
                                         long.eq((rx_byte[1:] != 0) |
                                                 (rx_byte[0] & (length[:8] != 0)))]
                    with m.If(count == 7):
                        m.d.sync += count.eq(0)
                        with m.If(~is_write | (Cat(length[:8], rx_byte) == 0)):
                            m.next = "TRAILER"
                        with m.Elif((rx_byte[1:] != 0) | (rx_byte[0] & (length[:8] != 0))):
                            m.next = "SKIP"
                        with m.Else():
                            m.next = "PAYLOAD"
                with m.Elif(timed_out):
                    m.next = "TRUNCATED"

            with m.State("PAYLOAD"):
                with m.If(rx_valid):
                    m.d.comb += buffer_w.en.eq(1)
                    m.d.sync += [crc.eq(next_crc), count.eq(next_count),
                                 word.eq(Cat(word[8:], rx_byte))]
                    with m.If(next_count == length):
                        m.d.sync += count.eq(0)
                        m.next = "TRAILER"
                with m.Elif(timed_out):
                    m.next = "TRUNCATED"

            with m.State("SKIP"):
                # A write longer than MAX_PAYLOAD, refused: its bytes are taken up to
                # the inter-byte timeout, and its CRC holds when the CRC of them all is 0.
                with m.If(rx_valid):
                    m.d.sync += crc.eq(next_crc)
                with m.Elif(timed_out):
                    m.d.sync += crc_mismatch.eq(crc != 0)
                    m.next = "SETTLE"

            with m.State("TRAILER"):
                # The CRC's high byte, then its low byte, compared with ``crc``, which
                # then stands for the frame.
                with m.If(rx_valid):
                    m.d.sync += count.eq(next_count)
                    with m.If(count == 0):
                        m.d.sync += crc_mismatch.eq(rx_byte != crc[8:])
                    with m.Else():
                        m.d.sync += crc_mismatch.eq(crc_mismatch | (rx_byte != crc[:8]))
                    with m.If(count == 1):
                        m.d.sync += count.eq(0)
                        m.next = "SETTLE"
                with m.Elif(timed_out):
                    m.next = "TRUNCATED"

            with m.State("TRUNCATED"):
                m.d.sync += [dropped.eq(1), count.eq(status_offset("truncated"))]
                m.next = "COUNT"

            with m.State("SETTLE"):
                m.next = "CHECK"

            with m.State("CHECK"):
                # The status, and the counter the frame counts in (``count``).
                with m.If(crc_bad):
                    m.d.sync += [status.eq(Status.BAD_CRC),
                                 count.eq(status_offset("bad_frames"))]
                with m.Elif(duplicate):
                    m.d.sync += [status.eq(Mux(command == Command.READ_REG, Status.OK,
                                               last_status)),
                                 count.eq(status_offset("duplicates"))]
                with m.Elif(~known_q):
                    m.d.sync += [status.eq(Status.BAD_COMMAND), count.eq(STATUS_BYTES)]
                with m.Elif(~length_ok):
                    m.d.sync += [status.eq(Status.BAD_LENGTH), count.eq(STATUS_BYTES)]
                with m.Else():
                    m.d.sync += [status.eq(Status.OK), aw_done.eq(0), w_done.eq(0),
                                 count.eq(Mux(command == Command.STATUS, STATUS_BYTES,
                                              status_offset("executed")))]
                m.next = "COUNT"

            # One byte of a counter in the buffer is read, then written incremented; the
            # carry goes on to the next byte within ``executed``.
            with m.State("COUNT"):
                m.d.comb += status_area.eq(1)
                m.next = "COUNT_WRITE"
            with m.State("COUNT_WRITE"):
                m.d.comb += [status_area.eq(1), buffer_w.en.eq(1),
                             buffer_w.data.eq(buffer_r.data + 1)]
                executed = status_offset("executed")
                with m.If((buffer_r.data == 0xFF) & (count >= executed) &
                          (count < executed + 3)):
                    m.d.sync += count.eq(next_count)
                    m.next = "COUNT"
                with m.Else():
                    m.d.sync += count.eq(0)
                    with m.If(dropped):
                        m.next = "IDLE"
                    with m.Elif((status != Status.OK) |
                                (duplicate & (command != Command.READ_REG))):
                        m.next = "ANSWER"
                    with m.Else():
                        with m.Switch(command):
                            with m.Case(Command.READ_REG):
                                m.next = "REG_READ"
                            with m.Case(Command.WRITE_REG):
                                m.next = "REG_WRITE"
                            with m.Case(Command.WRITE_MEM):
                                m.next = "MEM_WRITE_FETCH"
                            with m.Default():
                                m.next = "EXECUTED"

            with m.State("REG_READ"):
                m.d.comb += self.m_axil.arvalid.eq(1)
                with m.If(self.m_axil.arready):
                    m.next = "REG_READ_DATA"
            with m.State("REG_READ_DATA"):
                m.d.comb += self.m_axil.rready.eq(1)
                with m.If(self.m_axil.rvalid):
                    m.d.sync += word.eq(self.m_axil.rdata)
                    with m.If(self.m_axil.rresp != Resp.OKAY):
                        m.d.sync += status.eq(Status.BUS_ERROR)
                    m.next = "EXECUTED"

            with m.State("REG_WRITE"):
                m.d.comb += [self.m_axil.awvalid.eq(~aw_done), self.m_axil.wvalid.eq(~w_done)]
                aw_next = aw_done | self.m_axil.awready
                w_next = w_done | self.m_axil.wready
                m.d.sync += [aw_done.eq(aw_next), w_done.eq(w_next)]
                with m.If(aw_next & w_next):
                    m.next = "REG_WRITE_RESP"
            with m.State("REG_WRITE_RESP"):
                m.d.comb += self.m_axil.bready.eq(1)
                with m.If(self.m_axil.bvalid):
                    with m.If(self.m_axil.bresp != Resp.OKAY):
                        m.d.sync += status.eq(Status.BUS_ERROR)
                    m.next = "EXECUTED"

            with m.State("MEM_WRITE_FETCH"):
                m.next = "MEM_WRITE"
            with m.State("MEM_WRITE"):
                m.d.comb += [self.mem.valid.eq(1), self.mem.write.eq(1)]
                with m.If(self.mem.ready):
                    m.d.sync += [addr.eq(addr + 1), count.eq(next_count)]
                    with m.If(next_count == length):
                        m.d.sync += count.eq(0)
                        m.next = "EXECUTED"
                    with m.Else():
                        m.next = "MEM_WRITE_FETCH"

            with m.State("EXECUTED"):
                m.d.sync += [last_valid.eq(1), last_seq.eq(seq), last_crc.eq(crc),
                             last_status.eq(status)]
                m.next = "ANSWER"

            with m.State("ANSWER"):
                # ``length`` becomes the answer's: 0 unless a read succeeded.
                send(m, RESPONSE_SYNC, "ANSWER_SEQ", update_crc=False)
                m.d.sync += crc.eq(CRC_INIT)
                with m.If((status != Status.OK) | ~is_read):
                    m.d.sync += length.eq(0)
            with m.State("ANSWER_SEQ"):
                send(m, seq, "ANSWER_STATUS")
            with m.State("ANSWER_STATUS"):
                send(m, status, "ANSWER_LENGTH_LOW")
            with m.State("ANSWER_LENGTH_LOW"):
                send(m, length[:8], "ANSWER_LENGTH_HIGH")
            with m.State("ANSWER_LENGTH_HIGH"):
                with m.If(length == 0):
                    send(m, length[8:], "ANSWER_CRC_HIGH")
                with m.Elif(from_memory):
                    send(m, length[8:], "ANSWER_MEM_READ")
                with m.Else():
                    send(m, length[8:], "ANSWER_DATA")
            with m.State("ANSWER_MEM_READ"):
                m.d.comb += self.mem.valid.eq(1)
                with m.If(self.mem.ready):
                    m.d.sync += addr.eq(addr + 1)
                    m.next = "ANSWER_MEM_DATA"
            with m.State("ANSWER_MEM_DATA"):
                m.d.sync += word[:8].eq(self.mem.rdata)
                m.next = "ANSWER_DATA"
            with m.State("ANSWER_DATA"):
                # STATUS sends its bytes from the buffer (``irq`` into the first), the
                # others from ``word``.
                m.d.comb += status_area.eq(command == Command.STATUS)
                last = next_count == length
                report = Cat(buffer_r.data[0] | (self.irq & (count[:3] == 0)), buffer_r.data[1:])
                data_byte = Mux(command == Command.STATUS, report, word[:8])
                with m.If(last):
                    send(m, data_byte, "ANSWER_CRC_HIGH")
                with m.Elif(from_memory):
                    send(m, data_byte, "ANSWER_MEM_READ")
                with m.Else():
                    send(m, data_byte, "ANSWER_DATA")
                with m.If(uart_tx.data.ready):
                    m.d.sync += [count.eq(Mux(last, 0, next_count)), word.eq(word[8:])]
            with m.State("ANSWER_CRC_HIGH"):
                send(m, crc[8:], "ANSWER_CRC_LOW", update_crc=False)
            with m.State("ANSWER_CRC_LOW"):
                send(m, crc[:8], "IDLE", update_crc=False)
        return m
