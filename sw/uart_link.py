"""Host side of the UART link (``hw/uart_bridge.py`` defines the protocol and its constants).

Three layers, as the driver expects:

* a byte transport: ``async write(data)`` (returns once the bytes are sent) and
  ``async read(count, timeout)`` (up to ``count`` bytes, waiting at most ``timeout``
  seconds in all). :class:`SerialPort` is one for a real board (pyserial, imported
  lazily); the cocotb testbench (``verif/tb_board.py``) has another;
* :class:`UartLink`: framing, CRC, timeouts, retries and sequence numbers;
* :class:`UartBackend`: the driver's transport (registers, interrupt) and the runtime's
  backend (memory in chunks, programs through :class:`sw.driver.NPUDriver`), so the same
  runtime runs a compiled model over the UART.

Retry rules: a request is sent again, with the same sequence number, when its answer is
a NAK (``BAD_CRC``), is damaged (CRC, sync byte, sequence number, length) or does not
arrive within ``timeout`` plus the duration of the expected answer. Before resending, the link waits until the line has been quiet
for longer than the bridge's inter-byte timeout, so the bridge has dropped any partial
frame and finished any answer. The bridge recognises a retransmission of a frame it has
executed and answers it without executing it again.
"""

import asyncio
import random
from dataclasses import dataclass

from amaranth.lib import data

from hw.uart_bridge import (CRC_BYTES, INTERBYTE_TIMEOUT_BYTES, MAX_PAYLOAD, REGISTER_BYTES,
                            REQUEST_SYNC, RESPONSE_HEADER_BYTES, RESPONSE_SYNC, STATUS_BYTES,
                            BridgeStatus, Command, Status, command_length_ok, crc16)
from sw.driver import NPUDriver


__all__ = ["LinkError", "LinkStats", "encode_request", "UartLink", "UartBackend", "SerialPort"]


class LinkError(Exception):
    """The bridge refused a request, or no valid answer came after every retry."""


@dataclass
class LinkStats:
    requests: int = 0       # requests completed
    executed: int = 0       # completed requests the bridge counts as executed (not STATUS)
    retries: int = 0        # retransmissions
    naks: int = 0           # BAD_CRC answers
    timeouts: int = 0       # answers missing or cut short
    bad_answers: int = 0    # answers with a bad sync byte, CRC, sequence number or length


def encode_request(seq, command, address, length, payload=b""):
    """One request frame; ``command`` is a :class:`Command` or any byte (to test refusals)."""
    code = command.value if isinstance(command, Command) else command
    body = bytes([seq, code]) + address.to_bytes(4, "little") + \
        length.to_bytes(2, "little") + bytes(payload)
    crc = crc16(body)
    return bytes([REQUEST_SYNC]) + body + crc.to_bytes(2, "big")


def _unpack_status(raw):
    value = int.from_bytes(raw, "little")
    return {name: (value >> field.offset) & ((1 << field.width) - 1)
            for name, field in data.Layout.cast(BridgeStatus)}


class UartLink:
    """Requests over a byte transport ``port``.

    Parameters
    ----------
    port :
        The byte transport.
    baud : int
        Bits per second on the line (gives the byte time, 10 bits).
    timeout : float
        Seconds to wait for the first byte of an answer (after the request is sent);
        at least twice the bridge's inter-byte timeout by default, plus 50 ms for USB
        adapters.
    retries : int
        Retransmissions of one request before :class:`LinkError`.
    timeout_bytes : int
        The bridge's inter-byte timeout, in byte times.
    """

    def __init__(self, port, *, baud, timeout=None, retries=8,
                 timeout_bytes=INTERBYTE_TIMEOUT_BYTES, seq=None):
        self.port = port
        self.byte_time = 10 / baud
        self.quiet = 2 * timeout_bytes * self.byte_time
        self.timeout = timeout if timeout is not None else 2 * self.quiet + 0.05
        self.retries = retries
        self.seq = random.randrange(256) if seq is None else seq
        self.stats = LinkStats()

    async def request(self, command, address=0, length=0, payload=b""):
        """Send one request until it is answered; return the answer's data."""
        command = Command(command)
        if not command_length_ok(command, length):
            raise ValueError(f"{command.name}: invalid length {length}")
        seq, self.seq = self.seq, (self.seq + 1) & 0xFF
        frame = encode_request(seq, command, address, length, payload)
        expected = length if command in (Command.READ_REG, Command.READ_MEM, Command.STATUS) \
            else 0
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
                await self.drain()
            await self.port.write(frame)
            answer = await self.receive_answer(seq, expected)
            if answer is None:
                continue
            status, data = answer
            if status is Status.BAD_CRC:
                self.stats.naks += 1
                continue
            if status is not Status.OK:
                raise LinkError(f"{command.name} at 0x{address:08x}: the bridge answered "
                                f"{status.name}")
            if len(data) != expected:
                raise LinkError(f"{command.name}: {len(data)} bytes answered, {expected} expected")
            self.stats.requests += 1
            if command is not Command.STATUS:
                self.stats.executed += 1
            return data
        raise LinkError(f"{command.name} at 0x{address:08x}: no valid answer after "
                        f"{self.retries + 1} attempts")

    async def receive_answer(self, seq, expected=0):
        """(Status, data) of the answer to ``seq``; None if it is missing or damaged.

        Waits ``timeout`` plus the time an answer with ``expected`` data bytes takes, so a
        lost answer has ended (and the bridge listens again) before the request is resent.
        """
        answer_time = (RESPONSE_HEADER_BYTES + expected + CRC_BYTES) * self.byte_time
        head = await self.port.read(RESPONSE_HEADER_BYTES, self.timeout + answer_time)
        if len(head) < RESPONSE_HEADER_BYTES:
            self.stats.timeouts += 1
            return None
        length = int.from_bytes(head[3:5], "little")
        if head[0] != RESPONSE_SYNC or length > MAX_PAYLOAD:
            self.stats.bad_answers += 1
            return None
        rest = await self.port.read(length + CRC_BYTES,
                                    self.quiet + (length + CRC_BYTES) * self.byte_time)
        if len(rest) < length + CRC_BYTES:
            self.stats.timeouts += 1
            return None
        if crc16(head[1:] + rest) != 0:
            self.stats.bad_answers += 1
            return None
        try:
            status = Status(head[2])
        except ValueError:
            self.stats.bad_answers += 1
            return None
        if head[1] != seq and status is not Status.BAD_CRC:
            self.stats.bad_answers += 1
            return None
        return status, bytes(rest[:length])

    async def drain(self):
        """Discard input until the line has been quiet for the bridge's timeout, twice."""
        while await self.port.read(4096, self.quiet):
            pass

    async def read_register(self, address):
        return int.from_bytes(await self.request(Command.READ_REG, address, REGISTER_BYTES),
                              "little")

    async def write_register(self, address, value):
        await self.request(Command.WRITE_REG, address, REGISTER_BYTES,
                           (value & 0xFFFF_FFFF).to_bytes(4, "little"))

    async def read_memory(self, address, length):
        chunks = []
        for offset in range(0, length, MAX_PAYLOAD):
            size = min(MAX_PAYLOAD, length - offset)
            chunks.append(await self.request(Command.READ_MEM, address + offset, size))
        return b"".join(chunks)

    async def write_memory(self, address, payload):
        payload = bytes(payload)
        for offset in range(0, len(payload), MAX_PAYLOAD):
            chunk = payload[offset:offset + MAX_PAYLOAD]
            await self.request(Command.WRITE_MEM, address + offset, len(chunk), chunk)

    async def status(self):
        """The bridge's :class:`hw.uart_bridge.BridgeStatus` as a dict."""
        return _unpack_status(await self.request(Command.STATUS, 0, STATUS_BYTES))


class UartBackend:
    """The driver's transport and the runtime's backend over a :class:`UartLink`.

    ``poll_interval`` (seconds) spaces the ``STATUS`` polls that wait for the interrupt;
    ``run_timeout`` (seconds, at least) bounds one program run.
    """

    name = "uart"

    def __init__(self, link, *, poll_interval=1e-3, run_timeout=10.0):
        self.link = link
        self.poll_interval = poll_interval
        self.run_timeout = run_timeout
        self.driver = NPUDriver(self)

    async def read_register(self, address):
        return await self.link.read_register(address)

    async def write_register(self, address, value):
        await self.link.write_register(address, value)

    async def wait_for_interrupt(self, timeout):
        """Poll the bridge's status every ``poll_interval`` for at least ``timeout`` seconds."""
        polls = max(1, int(timeout / self.poll_interval))
        for _ in range(polls):
            if (await self.link.status())["irq"]:
                return True
            await self.link.port.read(4096, self.poll_interval)
        return bool((await self.link.status())["irq"])

    async def write_memory(self, address, payload):
        await self.link.write_memory(address, payload)

    async def read_memory(self, address, length):
        return await self.link.read_memory(address, length)

    async def run_program(self, address):
        return await self.driver.run(address, timeout=self.run_timeout)


class SerialPort:
    """A byte transport on a serial device (needs pyserial)."""

    def __init__(self, device="/dev/ttyUSB0", baud=115200):
        try:
            import serial
        except ImportError:
            raise RuntimeError("the UART link to a board needs pyserial: pip install pyserial") \
                from None
        self.serial = serial.Serial(device, baud, timeout=0)

    async def write(self, payload):
        await asyncio.to_thread(self._write, bytes(payload))

    def _write(self, payload):
        self.serial.write(payload)
        self.serial.flush()

    async def read(self, count, timeout):
        return await asyncio.to_thread(self._read, count, timeout)

    def _read(self, count, timeout):
        self.serial.timeout = timeout
        return self.serial.read(count)

    def close(self):
        self.serial.close()
