"""Counters kept in a memory, for devices where logic cells are scarce.

:class:`CounterFile` holds 32-bit counters, each counting a small number per cycle at
most (one event, or a few bytes). A counter in registers costs a logic cell per bit (and
a read multiplexer input); here each counter has only a small pending count of its own,
and its 32-bit word lives in a memory (a block RAM): one counter a cycle, in turn, adds
its pending count into its word. A read goes through the same memory port, in the turn of the cycle after it is
asked for.
"""

from amaranth import *
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2


__all__ = ["CounterFile", "READ_LATENCY"]


#: Cycles from a ``read`` to its ``value``.
READ_LATENCY = 2


class CounterFile(wiring.Component):
    """Counters of 32 bits (wrapping), in a memory.

    Parameters
    ----------
    widths : sequence of int
        Of each counter's increment, in bits (1: an event per cycle at most); at least 2
        counters.

    Members
    -------
    increments : ``In(sum(widths))``
        The increments of this cycle, counter 0's in the lowest ``widths[0]`` bits, then
        counter 1's, and so on.
    clear : ``In(1)``
        Every counter reads 0 from the next cycle; the increments of this cycle are not
        counted.
    read : ``In(1)``, index : ``In(range(len(widths)))``
        Read counter ``index``. Reads must be at least :data:`READ_LATENCY` + 2 cycles
        apart (an AXI4-Lite register file, which waits for each answer, is).
    value : ``Out(32)``
        :data:`READ_LATENCY` cycles after ``read``: the counter with every increment up to
        the cycle before, and with none if ``clear`` was high since.

    Timing
    ------
    Cycle ``t``: the word of the counter whose turn it is is read. Cycle ``t + 1``: the word
    plus the counter's pending count is written back, and the pending count restarts from
    that cycle's increment. A ``read`` in cycle ``t`` starts no turn; the word is read in
    ``t + 1``, when nothing is written, and ``value`` is the word plus the pending count,
    combinationally, in ``t + 2``. Between two turns of a counter there are at most
    ``2 * count`` cycles (reads take at most half of them), so a pending count of
    ``ceil_log2(4 * count * (2**width - 1) + 1)`` bits never overflows.
    """

    def __init__(self, widths):
        self.widths = tuple(widths)
        count = len(self.widths)
        if count < 2 or min(self.widths) < 1:
            raise ValueError(f"a CounterFile needs at least 2 counters of increments of at "
                             f"least one bit, not {self.widths}")
        self.count = count
        self.pending_bits = [ceil_log2(4 * count * (2**width - 1) + 1) for width in self.widths]
        super().__init__({
            "increments": In(sum(self.widths)),
            "clear": In(1),
            "read": In(1),
            "index": In(range(count)),
            "value": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.count
        m.submodules.counter_words = words = memory.Memory(shape=32, depth=n, init=[])
        write, read = words.write_port(), words.read_port()

        pending = [Signal(bits, name=f"pending{i}") for i, bits in enumerate(self.pending_bits)]
        offsets = [sum(self.widths[:i]) for i in range(n)]
        increments = [self.increments[offset:offset + width]
                      for offset, width in zip(offsets, self.widths)]
        # A counter's word is stale (reads as 0) from a clear, or a reset (the memory keeps
        # its words), until its next turn.
        stale = Signal(n, init=(1 << n) - 1)
        turn = Signal(range(n))         # next counter whose turn it is
        # Stage 1 (the word is read): whose word, and whether it is a read's.
        turn_valid, turn_index = Signal(), Signal(range(n))
        host_valid, host_index = Signal(), Signal(range(n))
        host_read = Signal()            # the read asked for in the previous cycle
        index_q = Signal(range(n))

        m.d.sync += host_read.eq(self.read)
        m.d.sync += index_q.eq(self.index)
        with m.If(host_read):
            m.d.comb += read.addr.eq(index_q)
            m.d.sync += [host_valid.eq(1), host_index.eq(index_q), turn_valid.eq(0)]
        with m.Else():
            m.d.comb += read.addr.eq(turn)
            m.d.sync += [host_valid.eq(0), turn_valid.eq(~self.read), turn_index.eq(turn)]
            with m.If(~self.read):
                m.d.sync += turn.eq(Mux(turn == n - 1, 0, turn + 1))

        # Stage 2: the word, plus its pending count, written back or answered.
        slot = Mux(host_valid, host_index, turn_index)
        pending_of = Array(pending)[slot]
        total = Mux(stale.bit_select(slot, 1), 0, read.data) + pending_of
        m.d.comb += [write.addr.eq(turn_index), write.data.eq(total),
                     write.en.eq(turn_valid), self.value.eq(total)]

        for i in range(n):
            flushed = turn_valid & (turn_index == i)
            with m.If(self.clear):
                m.d.sync += pending[i].eq(0)
            with m.Elif(flushed):
                m.d.sync += pending[i].eq(increments[i])
            with m.Else():
                m.d.sync += pending[i].eq(pending[i] + increments[i])
        with m.If(self.clear):
            m.d.sync += stale.eq(-1)
        with m.Elif(turn_valid):
            m.d.sync += stale.bit_select(turn_index, 1).eq(0)
        return m
