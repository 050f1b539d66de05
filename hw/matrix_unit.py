"""Matrix unit: systolic array, int32 accumulators and output stage.

A GEMM ``Y = requantize(A @ W)`` is computed as a sequence of weight tiles. For each
output-channel tile ``n`` (``cols`` channels) and each reduction tile ``k`` (``rows``
deep), the ``weights`` stream sends the ``rows × cols`` weight tile (zero-padded at the
edges) and the ``acts`` stream sends ``M`` activation vectors ``A[m, k-tile]``. Each
activation beat names the accumulator row it adds into:

* ``first``: this is the first K-tile; overwrite the accumulator instead of adding;
* ``emit``: this is the last K-tile; send ``acc + partial`` through the output stage
  instead of writing it back;
* ``acc_addr``: the accumulator row (``M`` rows, one per output row);
* ``channel``: the row of the channel-parameter table holding this N-tile's bias,
  multiplier, zero point and clamp (``hw.output_stage.channel_params`` per column);
* ``last``: the final activation vector of the weight tile (the array switches weight
  banks after it).

Accumulators are read in the cycle a result leaves the array and written back three
cycles later (read-modify-write with forwarding of the sum to a result one to three
cycles behind), so consecutive beats may name the same row. Without
``config.registered_accumulators`` a row is read in the cycle before its result leaves
the array and written as it leaves, and an activation naming the row of the one accepted
in the cycle before waits one cycle, so that no row is read as it is written. Emitted rows go through a FIFO reserved by credits: an activation is accepted
only when its result has room, so the array never needs back-pressure and the
``results`` consumer may stall at will.

Members
-------
weights : ``In(stream.Signature(ArrayLayout(signed(8), cols)))``
    Weight rows, ``rows`` beats per tile (see :class:`hw.systolic_array.SystolicArray`).
acts : ``In(stream.Signature(matrix_beat_layout(...)))``
    Activation vectors with their accumulation control.
params : ``In(stream.Signature(channel_param_write_layout(cols, channel_depth)))``
    Writes of the channel-parameter table, a byte of each column's record at a time
    (``hw.output_stage.channel_param_write_layout``). Always ready. A row must not be
    rewritten while beats that use it are in flight. For the pipelined output stage the
    bytes of a row come in order, byte 0 first: they shift into one record per column,
    which is the row itself with ``config.channel_depth`` = 1 and is written to the table
    in the cycle after its last byte otherwise. The serial output stage keeps the table
    itself, in a memory written byte by byte.
results : ``Out(stream.Signature(...))``
    ``q``: ``cols`` 8-bit outputs; ``acc``: the ``cols`` int32 accumulators before bias;
    ``tag``: the activation beat's tag.

Latency
-------
An emitting activation accepted in cycle ``t`` appears on ``results`` no earlier than
``t + rows + cols + 6`` plus the output stage's ``latency`` (array, accumulator
read-modify-write, FIFO, parameter lookup, output stage: :func:`config_output_stage`),
two cycles more with a pipelined output stage and a channel table of several rows (whose
row is registered twice as it leaves its block RAM), one more with
``registered_products`` (the array's).
Throughput: one activation vector per cycle, with weight loading hidden as described in
:mod:`hw.systolic_array`.
"""

from amaranth import *
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .add_stage import AddStage
from .config import NPUConfig
from .isa import CHANNEL_PARAM_BYTES
from .output_stage import OutputStage, channel_param_write_layout, channel_params
from .serial_output_stage import SerialOutputStage
from .systolic_array import SystolicArray


__all__ = ["MatrixUnit", "matrix_beat_layout", "config_output_stage", "config_output_stage_latency"]


def matrix_beat_layout(config, tag_shape):
    return data.StructLayout({
        "data":     data.ArrayLayout(signed(8), config.rows),
        "last":     unsigned(1),
        "first":    unsigned(1),
        "emit":     unsigned(1),
        "acc_addr": unsigned(ceil_log2(config.acc_depth)),
        "channel":  unsigned(ceil_log2(config.channel_depth)),
        "tag":      tag_shape,
    })


def config_output_stage(config, tag_shape=unsigned(1)):
    """The output stage ``config`` asks for: :class:`hw.output_stage.OutputStage`, or
    :class:`hw.serial_output_stage.SerialOutputStage` with ``config.serial_output``."""
    if config.serial_output:
        return SerialOutputStage(config.cols, config.channel_depth, tag_shape=tag_shape)
    return OutputStage(config.cols, tag_shape=tag_shape, units=config.output_stage_lanes,
                       stages=config.output_stages)


def config_output_stage_latency(config):
    """The :attr:`latency` of :func:`config_output_stage`'s stage, without building one."""
    if config.serial_output:
        return SerialOutputStage.latency_of(config.cols)
    return OutputStage.latency_of(config.output_stages)


class MatrixUnit(wiring.Component):
    def __init__(self, config=NPUConfig(), tag_shape=unsigned(16)):
        self.config = config
        self.tag_shape = tag_shape
        C = config.cols
        self._sideband = data.StructLayout({
            "first":    unsigned(1),
            "emit":     unsigned(1),
            "acc_addr": unsigned(ceil_log2(config.acc_depth)),
            "channel":  unsigned(ceil_log2(config.channel_depth)),
            "tag":      tag_shape,
        })
        self._emitted = data.StructLayout({
            "acc":     data.ArrayLayout(signed(32), C),
            "channel": unsigned(ceil_log2(config.channel_depth)),
            "tag":     tag_shape,
        })
        # Room for every beat in flight between the array input and the FIFO, so that
        # the array streams at full rate while the consumer keeps up.
        self.fifo_depth = 1 << ceil_log2(config.rows + config.cols + 4)
        super().__init__({
            "weights": In(stream.Signature(data.ArrayLayout(signed(8), C))),
            "acts":    In(stream.Signature(matrix_beat_layout(config, tag_shape))),
            "params":  In(stream.Signature(channel_param_write_layout(C, config.channel_depth))),
            "results": Out(stream.Signature(data.StructLayout({
                "q":   data.ArrayLayout(unsigned(8), C),
                "acc": data.ArrayLayout(signed(32), C),
                "tag": tag_shape,
            }))),
        })

    def elaborate(self, platform):
        m = Module()
        config = self.config
        C = config.cols

        m.submodules.array = array = SystolicArray(config.rows, C, tag_shape=self._sideband,
                                                   tag_memory=config.array_tag_memory,
                                                   registered_weights=config.registered_weights,
                                                   registered_products=config.registered_products)
        m.submodules.results_fifo = results_fifo = fifo.SyncFIFOBuffered(
            width=Shape.cast(self._emitted).width, depth=self.fifo_depth)
        m.submodules.output_stage = output_stage = config_output_stage(config, self.tag_shape)
        m.submodules.accumulators = accumulators = memory.Memory(
            shape=data.ArrayLayout(signed(32), C), depth=config.acc_depth, init=[])
        if config.channel_depth > 1 and not config.serial_output:
            m.submodules.channel_table = channel_table = memory.Memory(
                shape=data.ArrayLayout(channel_params, C), depth=config.channel_depth, init=[])

        # --- Inputs and credits ------------------------------------------------------
        wiring.connect(m, wiring.flipped(self.weights), array.weights)

        # Results reserved (emitting activations accepted whose result has not left the
        # FIFO), and whether one more fits, in registers.
        reserved = Signal(range(self.fifo_depth + 1))
        room_left = Signal(init=1)
        has_room = room_left
        if not config.registered_accumulators:
            # An activation on the accumulator row of the one accepted in the cycle before
            # waits a cycle (see the read-modify-write below).
            taken = Signal()
            taken_row = Signal.like(self.acts.p.acc_addr)
            m.d.sync += taken.eq(self.acts.valid & self.acts.ready)
            with m.If(self.acts.valid & self.acts.ready):
                m.d.sync += taken_row.eq(self.acts.p.acc_addr)
            has_room = has_room & ~(taken & (self.acts.p.acc_addr == taken_row))
        m.d.comb += [
            array.acts.valid.eq(self.acts.valid & has_room),
            self.acts.ready.eq(array.acts.ready & has_room),
            array.acts.p.data.eq(self.acts.p.data),
            array.acts.p.last.eq(self.acts.p.last),
            array.acts.p.tag.first.eq(self.acts.p.first),
            array.acts.p.tag.emit.eq(self.acts.p.emit),
            array.acts.p.tag.acc_addr.eq(self.acts.p.acc_addr),
            array.acts.p.tag.channel.eq(self.acts.p.channel),
            array.acts.p.tag.tag.eq(self.acts.p.tag),
        ]

        if config.serial_output:
            wiring.connect(m, wiring.flipped(self.params), output_stage.params)
        else:
            m.d.comb += self.params.ready.eq(1)
            records = [Signal(8 * CHANNEL_PARAM_BYTES, name=f"record{c}") for c in range(C)]
            shifted = [Cat(records[c][8:], self.params.p.data[c]) for c in range(C)]
            with m.If(self.params.valid):
                m.d.sync += [records[c].eq(shifted[c]) for c in range(C)]

            def row_of(records):
                # The record's bits are channel_params' up to the add-mode flag.
                flag = channel_params["add_mode"].offset
                row = Signal(data.ArrayLayout(channel_params, C))
                for c in range(C):
                    m.d.comb += row[c].eq(Cat(records[c][:flag],
                                              records[c][flag] & config.elementwise_add))
                return row

            if config.channel_depth > 1:
                # A row is written in the cycle after its last byte, from registers (the
                # records hold it then), so that no path runs from the stream's handshake
                # to the block RAM's address.
                table_write = channel_table.write_port()
                write_row = Signal.like(self.params.p.index)
                write_row_now = Signal()
                m.d.sync += [write_row.eq(self.params.p.index),
                             write_row_now.eq(self.params.valid
                                              & (self.params.p.byte == CHANNEL_PARAM_BYTES - 1))]
                m.d.comb += [table_write.addr.eq(write_row), table_write.data.eq(row_of(records)),
                             table_write.en.eq(write_row_now)]

        # --- Accumulator read-modify-write -------------------------------------------
        acc_write = accumulators.write_port()
        total = Signal(data.ArrayLayout(signed(32), C))
        if config.registered_accumulators:
            # A result is read from its accumulator row in the cycle it leaves the array,
            # its row's data registered in the next (``held_read``: the block RAM's output
            # goes straight into registers), its sum made in the one after and written
            # from registers (``written``) in the next (an ECP5 block RAM's inputs are far
            # from the adders). A result one, two or three cycles behind on the same row
            # takes that sum from ``written``, ``written_before`` or ``written_earlier``
            # instead of the data read, which missed it (or, three cycles behind, was read
            # as it was written, which a block RAM may not return); four or more cycles
            # behind, the row holds the sum.
            acc_read = accumulators.read_port()
            m.d.comb += acc_read.addr.eq(array.results.p.tag.acc_addr)
            partial = Signal.like(array.results.p.data)
            sideband = Signal(self._sideband)
            valid = Signal()
            m.d.sync += [partial.eq(array.results.p.data), sideband.eq(array.results.p.tag),
                         valid.eq(array.results.valid)]
            held_read = Signal.like(acc_read.data, reset_less=True)
            held_partial = Signal.like(partial)
            held_sideband = Signal(self._sideband)
            held_valid = Signal()
            writes = held_valid & ~held_sideband.emit
            written = Signal.like(total)
            written_before = Signal.like(total)
            written_earlier = Signal.like(total)
            written_row = Signal.like(held_sideband.acc_addr)
            written_before_row = Signal.like(written_row)
            written_valid = Signal()
            written_before_valid = Signal()
            m.d.sync += [written.eq(total), written_before.eq(written),
                         written_earlier.eq(written_before),
                         written_row.eq(held_sideband.acc_addr),
                         written_before_row.eq(written_row),
                         written_valid.eq(writes), written_before_valid.eq(written_valid)]
            # The sums two and three cycles behind are merged a cycle ahead into
            # ``forwarded`` (``written`` and ``written_before`` then become
            # ``written_before`` and ``written_earlier``), and the choice between the
            # registers, the row read and nothing (``first``) is registered one-hot, so
            # that an addend is an AND-OR of three registers.
            def same_row(valid, row):
                return valid & (sideband.acc_addr == row)
            follows = same_row(writes, held_sideband.acc_addr)
            follows_written = same_row(written_valid, written_row)
            follows_written_before = same_row(written_before_valid, written_before_row)
            forwarded = Signal.like(total, reset_less=True)
            take_written = Signal()
            take_forwarded = Signal()
            take_read = Signal()
            m.d.sync += [
                forwarded.eq(Mux(follows_written, written, written_before)),
                take_written.eq(~sideband.first & follows),
                take_forwarded.eq(~sideband.first & ~follows
                                  & (follows_written | follows_written_before)),
                take_read.eq(~sideband.first & ~follows & ~follows_written
                             & ~follows_written_before),
                held_read.eq(acc_read.data),
                held_partial.eq(partial), held_sideband.eq(sideband), held_valid.eq(valid),
            ]
            for c in range(C):
                addend = (Mux(take_written, written[c], 0) | Mux(take_forwarded, forwarded[c], 0)
                          | Mux(take_read, held_read[c], 0))
                m.d.comb += total[c].eq(addend + held_partial[c])
            m.d.comb += [acc_write.addr.eq(written_row), acc_write.data.eq(written),
                         acc_write.en.eq(written_valid)]
        else:
            # A result's row is read in the cycle before it leaves the array (from the
            # array's ``upcoming_tag``), and the sum written as it leaves. No result reads
            # the row written in the same cycle: the input holds back an activation naming
            # the row of the one accepted in the cycle before.
            acc_read = accumulators.read_port()
            m.d.comb += acc_read.addr.eq(array.upcoming_tag.acc_addr)
            held, held_partial = acc_read.data, array.results.p.data
            held_sideband, held_valid = array.results.p.tag, array.results.valid
            writes = held_valid & ~held_sideband.emit
            m.d.comb += [acc_write.addr.eq(held_sideband.acc_addr), acc_write.data.eq(total),
                         acc_write.en.eq(writes)]
            for c in range(C):
                m.d.comb += total[c].eq(Mux(held_sideband.first, held_partial[c],
                                            held[c] + held_partial[c]))

        emitted = Signal(self._emitted)
        m.d.comb += [
            emitted.acc.eq(total),
            emitted.channel.eq(held_sideband.channel),
            emitted.tag.eq(held_sideband.tag),
            results_fifo.w_data.eq(emitted),
            results_fifo.w_en.eq(held_valid & held_sideband.emit),
        ]

        accepted_emit = self.acts.valid & self.acts.ready & self.acts.p.emit
        left = results_fifo.r_en & results_fifo.r_rdy
        reserved_next = reserved + accepted_emit - left
        m.d.sync += [reserved.eq(reserved_next), room_left.eq(reserved_next < self.fifo_depth)]

        # --- Channel-parameter lookup, then the output stage ----------------------------
        fifo_head = Signal(self._emitted)
        m.d.comb += fifo_head.eq(results_fifo.r_data)
        if config.serial_output:
            # The stage looks the row up itself; the FIFO's head is its held beat.
            m.d.comb += [
                output_stage.inp.valid.eq(results_fifo.r_rdy),
                output_stage.inp.p.acc.eq(fifo_head.acc),
                output_stage.inp.p.channel.eq(fifo_head.channel),
                output_stage.inp.p.tag.eq(fifo_head.tag),
                results_fifo.r_en.eq(output_stage.inp.ready),
            ]
            wiring.connect(m, output_stage.out, wiring.flipped(self.results))
            return m
        if config.channel_depth == 1:
            # The single row is the records, and the FIFO's head goes to the output stage
            # directly: the row cannot change under a beat in flight (the compute engine's
            # CONFIG waits for them).
            row = row_of(records)
            beat_valid, beat = results_fifo.r_rdy, fifo_head
            m.d.comb += results_fifo.r_en.eq(output_stage.inp.ready)
        else:
            # The beat waits in ``beat`` while its row is read.
            table_read = channel_table.read_port()
            m.d.comb += table_read.addr.eq(fifo_head.channel)
            row = table_read.data
            beat_valid, beat = Signal(), Signal(self._emitted)
            if output_stage.always_ready:
                # The lookup never waits, so no enable fans out from the output stage's
                # ready: a row leaves the FIFO only with a credit, one for each beat the
                # output stage can still take (``OutputStage.capacity``), and the output
                # stage takes every beat it is offered.
                # The row is registered twice as it leaves its block RAM (an ECP5 block
                # RAM's output comes 5.6 ns after the clock: the first register can sit
                # beside it), its beat alongside.
                credits = Signal(range(output_stage.capacity + 1), init=output_stage.capacity)
                has_credit = Signal(init=1)
                taken = results_fifo.r_rdy & has_credit
                delivered = self.results.valid & self.results.ready
                left = credits - taken + delivered
                looked_up_valid, looked_up = Signal(), Signal(self._emitted)
                row_valid, row_beat = Signal(), Signal(self._emitted)
                row_near = Signal(table_read.data.shape(), reset_less=True)
                row = Signal(table_read.data.shape(), reset_less=True)
                m.d.sync += [credits.eq(left), has_credit.eq(left != 0),
                             looked_up_valid.eq(taken), looked_up.eq(fifo_head),
                             row_near.eq(table_read.data), row.eq(row_near),
                             row_valid.eq(looked_up_valid), row_beat.eq(looked_up),
                             beat_valid.eq(row_valid), beat.eq(row_beat)]
                m.d.comb += results_fifo.r_en.eq(has_credit)
            else:
                advance = ~beat_valid | output_stage.inp.ready
                m.d.comb += [results_fifo.r_en.eq(advance), table_read.en.eq(advance)]
                with m.If(advance):
                    m.d.sync += [beat_valid.eq(results_fifo.r_rdy), beat.eq(fifo_head)]
        beat_payload = Signal.like(output_stage.inp.p)
        m.d.comb += [beat_payload.acc.eq(beat.acc), beat_payload.params.eq(row),
                     beat_payload.tag.eq(beat.tag)]
        if config.elementwise_add:
            # Beats of add-mode rows go through the add stage first, the others straight
            # on: an emitting MATMUL's beats all use one row, and the next emitting MATMUL
            # waits for them (``ComputeEngine``), so the two paths never hold beats at once.
            # The credits count the add stage's beats too, so its FIFO holds as many.
            m.submodules.add_stage = add_stage = AddStage(C, config.add_circuits,
                                                          output_stage.capacity, self.tag_shape)
            adding = Cat(row[c].add_mode for c in range(C)).any()
            m.d.comb += [add_stage.inp.valid.eq(beat_valid), add_stage.inp.p.eq(beat_payload)]
            with m.If(add_stage.out.valid):
                m.d.comb += [output_stage.inp.valid.eq(1),
                             output_stage.inp.p.eq(add_stage.out.p)]
            with m.Else():
                m.d.comb += [output_stage.inp.valid.eq(beat_valid & ~adding),
                             output_stage.inp.p.eq(beat_payload)]
        else:
            m.d.comb += [output_stage.inp.valid.eq(beat_valid),
                         output_stage.inp.p.eq(beat_payload)]
        wiring.connect(m, output_stage.out, wiring.flipped(self.results))
        return m
