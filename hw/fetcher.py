"""Instruction fetch and decode.

:class:`InstructionFetcher` reads the program from memory through an AXI4 read channel,
one 16-byte instruction per INCR burst, from ``program_addr`` until it has fetched an
``END``. :func:`decode_error` is the decoder's legality check (opcode, token flags,
scratchpad, accumulator and channel ranges, alignment), the hardware twin of
``sw.simulator.check_instruction``.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .axi import AXI4Signature, Burst, Resp
from .config import NPUConfig
from .isa import (CHANNEL_PARAM_BYTES, INSTRUCTION_BITS, INSTRUCTION_BYTES, Config, Engine,
                  Header, Matmul, Opcode, Sync, Transfer, slot_bytes)
from .registers import ErrorCode


__all__ = ["fetched_layout", "InstructionFetcher", "decode_error", "engine_of"]


fetched_layout = data.StructLayout({
    "word": unsigned(INSTRUCTION_BITS),
    "addr": unsigned(32),
})


class InstructionFetcher(wiring.Component):
    """Fetches instructions over AXI4, in order, until ``END``.

    Members
    -------
    bus : ``Out(AXI4Signature(...))``
        Only the read channels are used (ID 0); the write channels stay idle.
    start : ``In(1)``
        Pulse: begin fetching at ``program_addr``.
    program_addr : ``In(32)``
    halt : ``In(1)``
        Stop after the burst in progress (if any) has completed.
    insn : ``Out(stream.Signature(fetched_layout))``
        Each instruction with its address.
    bus_error : ``Out(1)``
        Held high after an ``SLVERR``/``DECERR`` on a fetch, with ``bus_error_addr``, until
        the next ``start``; fetching stops.
    busy : ``Out(1)``
        A burst is in progress (an AXI read is outstanding or about to be issued).

    Timing
    ------
    One instruction every ``beats + 2`` cycles with a zero-wait memory and a ready
    consumer (``beats = 16 / bus bytes``).
    """

    def __init__(self, config=NPUConfig()):
        self.config = config
        self.bus_bytes = config.bus_width // 8
        self.beats = max(1, INSTRUCTION_BYTES // self.bus_bytes)
        super().__init__({
            "bus": Out(AXI4Signature(data_width=config.bus_width, addr_width=config.addr_width)),
            "start": In(1),
            "program_addr": In(32),
            "halt": In(1),
            "insn": Out(stream.Signature(fetched_layout)),
            "bus_error": Out(1),
            "bus_error_addr": Out(32),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        pc = Signal(32)
        word = Signal(INSTRUCTION_BITS)
        beat = Signal(range(self.beats + 1))
        failed = Signal()

        m.d.comb += [
            bus.araddr.eq(pc),
            bus.arlen.eq(self.beats - 1),
            bus.arsize.eq(exact_log2(self.bus_bytes)),
            bus.arburst.eq(Burst.INCR),
            bus.arcache.eq(0b0011),
            self.insn.p.word.eq(word),
            self.insn.p.addr.eq(pc),
        ]
        with m.If(self.start):
            m.d.sync += [self.bus_error.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += pc.eq(self.program_addr)
                    m.next = "ADDRESS"
            with m.State("ADDRESS"):
                m.d.comb += [bus.arvalid.eq(1), self.busy.eq(1)]
                with m.If(bus.arready):
                    m.d.sync += [beat.eq(0), failed.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [bus.rready.eq(1), self.busy.eq(1)]
                with m.If(bus.rvalid):
                    if self.bus_bytes >= INSTRUCTION_BYTES:
                        m.d.sync += word.eq(bus.rdata[:INSTRUCTION_BITS])
                    else:
                        m.d.sync += word.eq(Cat(word[self.config.bus_width:], bus.rdata))
                    m.d.sync += beat.eq(beat + 1)
                    error = (bus.rresp == Resp.SLVERR) | (bus.rresp == Resp.DECERR)
                    with m.If(bus.rlast):
                        with m.If(failed | error):
                            m.d.sync += [self.bus_error.eq(1), self.bus_error_addr.eq(pc)]
                            m.next = "IDLE"
                        with m.Elif(self.halt):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "OUTPUT"
                    with m.Elif(error):
                        m.d.sync += failed.eq(1)
            with m.State("OUTPUT"):
                m.d.comb += self.insn.valid.eq(~self.halt)
                with m.If(self.halt):
                    m.next = "IDLE"
                with m.Elif(self.insn.ready):
                    m.d.sync += pc.eq(pc + INSTRUCTION_BYTES)
                    with m.If(word[:4] == Opcode.END.value):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "ADDRESS"
        return m


def engine_of(word):
    """The :class:`Engine` value an instruction word goes to (for a legal opcode)."""
    opcode = word[:4]
    sync = Sync(word[:Shape.cast(Sync).width])
    return Mux(opcode == Opcode.LOAD.value, Engine.LOAD.value,
           Mux(opcode == Opcode.STORE.value, Engine.STORE.value,
           Mux(opcode == Opcode.SYNC.value, sync.engine.as_value(), Engine.COMPUTE.value)))


def decode_error(m, config, word):
    """The :class:`ErrorCode` of instruction ``word`` (a Value), as a combinational Value.

    Mirrors ``sw.simulator.check_instruction`` rule for rule.
    """
    size = config.scratchpad_bytes
    act_slot, weight_slot = slot_bytes(config.rows), slot_bytes(config.cols)
    header = Header(word[:8])
    transfer = Transfer(word[:Shape.cast(Transfer).width])
    matmul = Matmul(word[:Shape.cast(Matmul).width])
    cfg = Config(word[:Shape.cast(Config).width])
    opcode = word[:4]

    def signal(value, name):
        result = Signal(range(1 << 40), name=name)
        m.d.comb += result.eq(value)
        return result

    legal_opcode = Cat(opcode == op.value for op in Opcode).any()
    engine = engine_of(word)
    is_end = opcode == Opcode.END.value
    flags = Cat(header.pop_prev, header.pop_next, header.push_prev, header.push_next)
    bad_tokens = Mux(is_end, flags.any(),
                     ((engine == Engine.LOAD.value) & (header.pop_prev | header.push_prev)) |
                     ((engine == Engine.STORE.value) & (header.pop_next | header.push_next)))
    bad_engine = (opcode == Opcode.SYNC.value) & (word[8:10] == 3)

    transfer_end = signal(transfer.sp_addr + (transfer.rows - 1) * transfer.sp_stride +
                          transfer.row_bytes, "transfer_end")
    transfer_range = (transfer.rows != 0) & (transfer.row_bytes != 0) & (transfer_end > size)

    count = matmul.count
    out_bytes = Mux(matmul.out_int32, 4 * weight_slot, weight_slot)
    out_end = signal(matmul.out_addr + (count - 1) * matmul.out_stride + out_bytes, "out_end")
    matmul_range = (count != 0) & (
        (matmul.weight_addr + config.rows * weight_slot > size) |
        (signal(matmul.act_addr + ((count - 1) * matmul.act_stride + 1) * act_slot, "act_end") > size) |
        (matmul.acc_addr + count > config.acc_depth) |
        (matmul.channel >= config.channel_depth) |
        (matmul.emit & (out_end > size)))
    matmul_misaligned = ((matmul.weight_addr % weight_slot) != 0) | \
        ((matmul.act_addr % act_slot) != 0) | ((matmul.out_addr % weight_slot) != 0) | \
        ((matmul.out_stride % weight_slot) != 0)
    config_range = (cfg.channel + cfg.count > config.channel_depth) | \
        (signal(cfg.sp_addr + cfg.count * (config.cols * CHANNEL_PARAM_BYTES), "config_end") > size)
    config_misaligned = (cfg.sp_addr % weight_slot) != 0

    code = Signal(ErrorCode, name="decode_code")
    with m.If(~legal_opcode | bad_engine):
        m.d.comb += code.eq(ErrorCode.ILLEGAL_OPCODE)
    with m.Elif(bad_tokens):
        m.d.comb += code.eq(ErrorCode.ILLEGAL_TOKEN)
    with m.Elif((opcode == Opcode.MATMUL.value) & matmul_misaligned):
        m.d.comb += code.eq(ErrorCode.MISALIGNED)
    with m.Elif((opcode == Opcode.CONFIG.value) & config_misaligned):
        m.d.comb += code.eq(ErrorCode.MISALIGNED)
    with m.Elif((((opcode == Opcode.LOAD.value) | (opcode == Opcode.STORE.value)) & transfer_range) |
                ((opcode == Opcode.MATMUL.value) & matmul_range) |
                ((opcode == Opcode.CONFIG.value) & config_range)):
        m.d.comb += code.eq(ErrorCode.SCRATCHPAD_RANGE)
    return code
