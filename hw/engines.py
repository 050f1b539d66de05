"""The NPU's three execution engines: load, compute and store.

Each engine takes the instructions of its own queue in order, waits for the dependency
tokens an instruction pops, executes it, and pushes its tokens once it has completed
(see ``hw/isa.py``). The engines run concurrently, so loads of the next tile and stores of
the previous tile overlap the current tile's compute.
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from .config import NPUConfig
from .dma import Descriptor
from .fetcher import fetched_layout
from .isa import (CHANNEL_PARAM_BYTES, Config, Engine, Header, Matmul, Opcode, Transfer,
                  slot_bytes)
from .matrix_unit import MatrixUnit
from .scratchpad import read_request_layout, read_response_layout, result_write_layout


__all__ = ["TokenPort", "TransferEngine", "ComputeEngine", "act_tag_layout",
           "DESCRIPTOR_ID_BITS"]


#: Width of the ``id`` of the transfer engines' DMA descriptors: an engine's
#: :class:`hw.isa.Engine` value.
DESCRIPTOR_ID_BITS = Shape.cast(Engine).width


class TokenPort(wiring.Signature):
    """An engine's side of the token counters.

    Members
    -------
    prev_available, next_available : ``In(1)``
        The counter from the previous / next engine is non-zero.
    pop_prev, pop_next, push_prev, push_next : ``Out(1)``
        One-cycle pulses that decrement / increment the counters.
    """

    def __init__(self):
        super().__init__({
            "prev_available": In(1), "next_available": In(1),
            "pop_prev": Out(1), "pop_next": Out(1), "push_prev": Out(1), "push_next": Out(1),
        })


def _tokens_ok(header, tokens):
    return (~header.pop_prev | tokens.prev_available) & (~header.pop_next | tokens.next_available)


def _pop(m, header, tokens):
    m.d.comb += [tokens.pop_prev.eq(header.pop_prev), tokens.pop_next.eq(header.pop_next)]


def _push(m, header, tokens):
    m.d.comb += [tokens.push_prev.eq(header.push_prev), tokens.push_next.eq(header.push_next)]


class TransferEngine(wiring.Component):
    """The load (or store) engine: LOAD (or STORE) and SYNC instructions.

    Members
    -------
    insn : ``In(stream.Signature(fetched_layout(config)))``
        The head of the engine's queue; ``ready`` dequeues it once it has completed.
    tokens : ``Out(TokenPort())``
    desc : ``Out(stream.Signature(Descriptor))``
        One DMA descriptor per LOAD/STORE, with ``id`` = ``engine_id``.
    done : ``In(1)``
        The DMA completed this engine's descriptor.
    halt : ``In(1)``
        Start nothing new.
    blocked : ``Out(1)``
        The head instruction waits for a token.
    stalled : ``Out(1)``
        The head instruction waits for a token or for the DMA to accept its descriptor.
    busy : ``Out(1)``
        An instruction is executing.

    Timing
    ------
    One cycle to start (tokens popped), the DMA transfer, one cycle to complete (tokens
    pushed, instruction dequeued).
    """

    def __init__(self, config=NPUConfig(), *, direction, engine_id):
        self.config = config
        self.direction = direction
        self.engine_id = engine_id
        self.descriptor = Descriptor(addr_width=config.addr_width,
                                     scratchpad_bytes=config.scratchpad_bytes,
                                     tag_width=DESCRIPTOR_ID_BITS)
        super().__init__({
            "insn": In(stream.Signature(fetched_layout(config))),
            "tokens": Out(TokenPort()),
            "desc": Out(stream.Signature(self.descriptor)),
            "done": In(1),
            "halt": In(1),
            "blocked": Out(1),
            "stalled": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        word = self.insn.p.word
        header = Header(word[:8])
        transfer = Transfer(word[:Shape.cast(Transfer).width])
        is_sync = word[:4] == Opcode.SYNC.value

        # Memory addresses and strides beyond the address space come from the queue
        # saturated at ``2**addr_width`` (``hw.fetcher.to_queue``), which the DMA's range
        # check refuses.
        m.d.comb += [
            self.desc.p.direction.eq(self.direction),
            self.desc.p.id.eq(self.engine_id),
            self.desc.p.mem_addr.eq(transfer.mem_addr),
            self.desc.p.sp_addr.eq(transfer.sp_addr),
            self.desc.p.rows.eq(transfer.rows),
            self.desc.p.row_bytes.eq(transfer.row_bytes),
            self.desc.p.mem_stride.eq(transfer.mem_stride),
            self.desc.p.sp_stride.eq(transfer.sp_stride),
        ]
        with m.FSM():
            with m.State("IDLE"):
                ok = _tokens_ok(header, self.tokens)
                m.d.comb += [self.blocked.eq(self.insn.valid & ~ok), self.stalled.eq(self.blocked)]
                with m.If(self.insn.valid & ok & ~self.halt):
                    _pop(m, header, self.tokens)
                    with m.If(is_sync):
                        m.next = "COMPLETE"
                    with m.Else():
                        m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += [self.busy.eq(1), self.desc.valid.eq(1), self.stalled.eq(~self.desc.ready)]
                with m.If(self.desc.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.done):
                    m.next = "COMPLETE"
            with m.State("COMPLETE"):
                m.d.comb += [self.busy.eq(1), self.insn.ready.eq(1)]
                _push(m, header, self.tokens)
                m.next = "IDLE"
        return m


def act_tag_layout(config):
    """Sideband of an activation read: how the matrix unit uses it and where its result goes."""
    return data.StructLayout({
        "last": unsigned(1), "first": unsigned(1), "emit": unsigned(1), "flip": unsigned(1),
        "acc_addr": unsigned(ceil_log2(config.acc_depth)),
        "channel": unsigned(ceil_log2(config.channel_depth)),
        "result": _result_tag_layout(config),
    })


def _result_tag_layout(config):
    out_slot_bits = ceil_log2(config.scratchpad_bytes) - exact_log2(slot_bytes(config.cols))
    return data.StructLayout({
        "out_slot": unsigned(out_slot_bits), "int32": unsigned(1), "final": unsigned(1),
    })


class _InPlaceCommand:
    """Stands for a command queue of one entry that is the compute queue's head itself
    (``w_data``, which is ``r_data``): ``r_rdy`` from the dispatch (``w_en``) until the
    reader's last request (``r_en``)."""

    def __init__(self, shape):
        self.w_en, self.w_rdy = Signal(), C(1)
        self.r_rdy, self.r_en = Signal(), Signal()
        self.r_data = self.w_data = Signal(shape)


class ComputeEngine(wiring.Component):
    """The compute engine: MATMUL, CONFIG and SYNC, driving the matrix unit.

    A MATMUL is dispatched as two commands, one to the weight reader (``rows`` weight
    slots into the array's weight stream) and one to the activation reader (``count``
    activation slots into the array, each tagged with its accumulator row and its result
    address), and an entry in the completion queue. Dispatch takes one cycle, so the next
    tile's weights are read while the current tile streams, and tiles follow each other
    with no bubble (with ``config.queue_depth`` of 2 or more; with 1, one MATMUL is in
    flight at a time). A MATMUL completes when its last activation has entered the array, or,
    with ``emit``, when its last result row has been written to the scratchpad; tokens are
    pushed then, in order.

    Ordering: a MATMUL after an emitting MATMUL, a CONFIG and a SYNC wait until every
    earlier instruction has completed, so results written to the scratchpad are visible to
    later reads and channel parameters never change under a tile in flight.

    Members
    -------
    insn : ``In(stream.Signature(fetched_layout(config)))``
        The head of the compute queue.
    tokens : ``Out(TokenPort())``
    act_req, act_resp, wgt_req, wgt_resp, res :
        The scratchpad's compute ports (:class:`hw.scratchpad.Scratchpad`), flipped.
    halt : ``In(1)``
    blocked : ``Out(1)``
        The head instruction waits for a token.
    stalled : ``Out(1)``
        The head instruction cannot be dispatched this cycle (tokens, ordering, full
        command queues).
    busy : ``Out(1)``
        An instruction is in flight.
    mac : ``Out(1)``
        An activation vector enters the array this cycle.
    """

    @staticmethod
    def result_latency_of(config):
        """Cycles between a result leaving the output stage and its write: one (the result
        write register)."""
        return 1

    def __init__(self, config=NPUConfig()):
        self.config = config
        self.weight_slot = slot_bytes(config.cols)
        self.act_slot = slot_bytes(config.rows)
        self.tag = act_tag_layout(config)
        self.sp_addr_bits = ceil_log2(config.scratchpad_bytes)
        act_addr_width = self.sp_addr_bits - exact_log2(self.act_slot)
        wgt_addr_width = self.sp_addr_bits - exact_log2(self.weight_slot)
        super().__init__({
            "insn": In(stream.Signature(fetched_layout(config))),
            "tokens": Out(TokenPort()),
            "act_req": Out(stream.Signature(read_request_layout(act_addr_width, self.tag))),
            "act_resp": In(stream.Signature(read_response_layout(config.rows, self.tag))),
            "wgt_req": Out(stream.Signature(read_request_layout(wgt_addr_width, self.tag))),
            "wgt_resp": In(stream.Signature(read_response_layout(config.cols, self.tag))),
            "res": Out(stream.Signature(result_write_layout(wgt_addr_width, config.cols))),
            "halt": In(1),
            "blocked": Out(1),
            "stalled": Out(1),
            "busy": Out(1),
            "mac": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self.config
        R, C = config.rows, config.cols
        act_shift = exact_log2(self.act_slot)
        wgt_shift = exact_log2(self.weight_slot)

        m.submodules.matrix = matrix = MatrixUnit(config, tag_shape=_result_tag_layout(config))

        word = self.insn.p.word
        header = Header(word[:8])
        matmul = Matmul(word[:Shape.cast(Matmul).width])
        cfg = Config(word[:Shape.cast(Config).width])
        opcode = word[:4]

        # --- Command queues between dispatch and the readers ----------------------------
        # Fields as wide as the decoder's check bounds them (``hw.fetcher.checked_fields``):
        # a count of at most ``acc_depth`` vectors (queued as the index of the last, which
        # the activation reader compares without a subtraction), strides within the
        # scratchpad.
        weight_cmd = data.StructLayout({"slot": unsigned(self.sp_addr_bits - wgt_shift)})
        act_cmd = data.StructLayout({
            "slot": unsigned(self.sp_addr_bits - act_shift),
            "stride": unsigned(min(8, self.sp_addr_bits - act_shift)),
            "last_index": range(config.acc_depth),
            "acc_addr": unsigned(ceil_log2(config.acc_depth)),
            "first": unsigned(1), "emit": unsigned(1), "flip": unsigned(1), "int32": unsigned(1),
            "channel": unsigned(ceil_log2(config.channel_depth)),
            "out_slot": unsigned(self.sp_addr_bits - wgt_shift),
            "out_stride": unsigned(self.sp_addr_bits - wgt_shift),
        })
        completion = data.StructLayout({"emit": unsigned(1), "push_prev": unsigned(1),
                                        "push_next": unsigned(1)})
        # As many MATMULs in flight as the instruction queue holds, four at most, and twice
        # as many completions. (With one, the iCEBreaker's test programs take as many
        # cycles as with two, to 0.2%: its serial output stage sets the pace.)
        # With a queue of one, the readers work from the MATMUL at its head, which leaves the
        # queue once both have read their last vector, instead of from command queues.
        cmd_depth = min(4, config.queue_depth)
        in_place = config.queue_depth == 1
        if in_place:
            weight_cmds, act_cmds = _InPlaceCommand(weight_cmd), _InPlaceCommand(act_cmd)
        else:
            m.submodules.weight_cmds = weight_cmds = fifo.SyncFIFOBuffered(
                width=Shape.cast(weight_cmd).width, depth=cmd_depth)
            m.submodules.act_cmds = act_cmds = fifo.SyncFIFOBuffered(
                width=Shape.cast(act_cmd).width, depth=cmd_depth)
        m.submodules.completions = completions = fifo.SyncFIFOBuffered(
            width=Shape.cast(completion).width, depth=2 * cmd_depth)

        # --- Dispatch -------------------------------------------------------------------
        drain = Signal()            # the last MATMUL dispatched emits
        all_complete = ~completions.r_rdy
        configuring = Signal()
        ok = _tokens_ok(header, self.tokens)
        is_matmul = opcode == Opcode.MATMUL.value
        is_config = opcode == Opcode.CONFIG.value
        streams = is_matmul & (matmul.count != 0)

        weight_payload = Signal(weight_cmd)
        act_payload = Signal(act_cmd)
        completion_payload = Signal(completion)
        m.d.comb += [
            weight_payload.slot.eq(matmul.weight_addr >> wgt_shift),
            act_payload.slot.eq(matmul.act_addr >> act_shift),
            act_payload.stride.eq(matmul.act_stride),
            act_payload.last_index.eq(matmul.count - 1),
            act_payload.acc_addr.eq(matmul.acc_addr),
            act_payload.first.eq(~matmul.accumulate),
            act_payload.emit.eq(matmul.emit),
            act_payload.flip.eq(matmul.act_flip),
            act_payload.int32.eq(matmul.out_int32),
            act_payload.channel.eq(matmul.channel),
            act_payload.out_slot.eq(matmul.out_addr >> wgt_shift),
            act_payload.out_stride.eq(matmul.out_stride >> wgt_shift),
            completion_payload.emit.eq(matmul.emit),
            completion_payload.push_prev.eq(header.push_prev),
            completion_payload.push_next.eq(header.push_next),
            weight_cmds.w_data.eq(weight_payload),
            act_cmds.w_data.eq(act_payload),
            completions.w_data.eq(completion_payload),
        ]
        # ``streaming``: the head MATMUL is dispatched and its readers work from it in place.
        streaming = Signal()
        head = self.insn.valid & ~configuring & ~streaming & ~self.halt
        m.d.comb += self.blocked.eq(self.insn.valid & ~configuring & ~streaming & ~ok)
        dispatch_stream = head & ok & streams & ~(drain & ~all_complete) & \
            weight_cmds.w_rdy & act_cmds.w_rdy & completions.w_rdy
        immediate = head & ok & ~streams & ~is_config & all_complete
        start_config = head & ok & is_config & all_complete
        config_done = Signal()
        m.d.comb += self.stalled.eq(head & ~(dispatch_stream | immediate | start_config))

        with m.If(dispatch_stream):
            _pop(m, header, self.tokens)
            m.d.comb += [weight_cmds.w_en.eq(1), act_cmds.w_en.eq(1), completions.w_en.eq(1)]
            m.d.sync += drain.eq(matmul.emit)
            if in_place:
                m.d.sync += streaming.eq(1)
            else:
                m.d.comb += self.insn.ready.eq(1)
        with m.Elif(immediate):
            _pop(m, header, self.tokens)
            _push(m, header, self.tokens)
            m.d.comb += self.insn.ready.eq(1)
        with m.Elif(start_config):
            _pop(m, header, self.tokens)
            m.d.sync += configuring.eq(1)
        with m.If(config_done):
            _push(m, header, self.tokens)
            m.d.comb += self.insn.ready.eq(1)
            m.d.sync += configuring.eq(0)

        # --- Completion: in order, when acts (and results, for emit) are done -----------
        acts_done = Signal(range(16))
        results_done = Signal(range(16))
        act_finished = Signal()
        result_finished = Signal()
        head_done = Signal(completion)
        m.d.comb += head_done.eq(completions.r_data)
        complete = completions.r_rdy & (acts_done != 0) & (~head_done.emit | (results_done != 0))
        with m.If(complete):
            m.d.comb += [completions.r_en.eq(1), self.tokens.push_prev.eq(head_done.push_prev),
                         self.tokens.push_next.eq(head_done.push_next)]
        # A final result row counts from the cycle after the scratchpad takes it: no path
        # from the scratchpad's grant into the count.
        result_counted = Signal()
        m.d.sync += [
            result_counted.eq(result_finished),
            acts_done.eq(acts_done + act_finished - complete),
            results_done.eq(results_done + result_counted - (complete & head_done.emit)),
        ]
        m.d.comb += self.busy.eq(completions.r_rdy | configuring)

        # --- Weight reader (and CONFIG reader) ----------------------------------------------
        weight_head = Signal(weight_cmd)
        m.d.comb += weight_head.eq(weight_cmds.r_data)
        weight_row = Signal(range(R))
        config_reads = Signal(range(16 * 256 + 1))
        config_slot = Signal(self.sp_addr_bits - wgt_shift)
        with m.If(configuring):
            m.d.comb += [self.wgt_req.valid.eq(config_reads != 0),
                         self.wgt_req.p.addr.eq(config_slot)]
            with m.If(self.wgt_req.valid & self.wgt_req.ready):
                m.d.sync += [config_reads.eq(config_reads - 1), config_slot.eq(config_slot + 1)]
        with m.Else():
            m.d.comb += [self.wgt_req.valid.eq(weight_cmds.r_rdy),
                         self.wgt_req.p.addr.eq(weight_head.slot + weight_row)]
            with m.If(self.wgt_req.valid & self.wgt_req.ready):
                with m.If(weight_row == R - 1):
                    m.d.sync += weight_row.eq(0)
                    m.d.comb += weight_cmds.r_en.eq(1)
                with m.Else():
                    m.d.sync += weight_row.eq(weight_row + 1)
            m.d.comb += [matrix.weights.valid.eq(self.wgt_resp.valid),
                         self.wgt_resp.ready.eq(matrix.weights.ready)]
            m.d.comb += [matrix.weights.p[c].eq(self.wgt_resp.p.data[c]) for c in range(C)]
        with m.If(start_config):
            m.d.sync += [config_reads.eq(cfg.count * CHANNEL_PARAM_BYTES),
                         config_slot.eq(cfg.sp_addr >> wgt_shift)]

        # CONFIG: each byte of the records goes to the matrix unit's table a cycle after it
        # arrives, from registers (no path from the response's valid through the byte
        # count), 16 per row.
        byte_index = Signal(range(CHANNEL_PARAM_BYTES))
        config_row = Signal(range(256))
        config_rows = Signal(range(257))
        config_valid = Signal()
        config_data = Signal.like(self.wgt_resp.p.data, reset_less=True)
        m.d.sync += [config_valid.eq(configuring & self.wgt_resp.valid),
                     config_data.eq(self.wgt_resp.p.data)]
        with m.If(start_config):
            m.d.sync += [config_row.eq(cfg.channel), config_rows.eq(cfg.count), byte_index.eq(0)]
        with m.If(configuring):
            m.d.comb += [self.wgt_resp.ready.eq(1), config_done.eq(config_rows == 0)]
        with m.If(config_valid):
            m.d.sync += byte_index.eq(byte_index + 1)
            with m.If(byte_index == CHANNEL_PARAM_BYTES - 1):
                m.d.sync += [config_row.eq(config_row + 1), config_rows.eq(config_rows - 1)]
        m.d.comb += [matrix.params.valid.eq(config_valid), matrix.params.p.index.eq(config_row),
                     matrix.params.p.byte.eq(byte_index)]
        m.d.comb += [matrix.params.p.data[c].eq(config_data[c]) for c in range(C)]

        # --- Activation reader ------------------------------------------------------------
        act_head = Signal(act_cmd)
        m.d.comb += act_head.eq(act_cmds.r_data)
        act_index = Signal.like(act_head.last_index)
        act_slot = Signal.like(act_head.slot)
        acc_addr = Signal.like(act_head.acc_addr)
        out_slot = Signal.like(act_head.out_slot)
        first_of_cmd = act_index == 0
        tag = self.act_req.p.tag
        m.d.comb += [
            self.act_req.valid.eq(act_cmds.r_rdy),
            self.act_req.p.addr.eq(Mux(first_of_cmd, act_head.slot, act_slot)),
            tag.last.eq(act_index == act_head.last_index),
            tag.first.eq(act_head.first),
            tag.emit.eq(act_head.emit),
            tag.flip.eq(act_head.flip),
            tag.acc_addr.eq(Mux(first_of_cmd, act_head.acc_addr, acc_addr)),
            tag.channel.eq(act_head.channel),
            tag.result.out_slot.eq(Mux(first_of_cmd, act_head.out_slot, out_slot)),
            tag.result.int32.eq(act_head.int32),
            tag.result.final.eq(act_head.emit & (act_index == act_head.last_index)),
        ]
        with m.If(self.act_req.valid & self.act_req.ready):
            m.d.sync += [acc_addr.eq(tag.acc_addr + 1),
                         act_slot.eq(self.act_req.p.addr + act_head.stride),
                         out_slot.eq(tag.result.out_slot + act_head.out_stride)]
            with m.If(tag.last):
                m.d.sync += act_index.eq(0)
                m.d.comb += act_cmds.r_en.eq(1)
            with m.Else():
                m.d.sync += act_index.eq(act_index + 1)

        response = self.act_resp.p
        m.d.comb += [
            matrix.acts.valid.eq(self.act_resp.valid),
            self.act_resp.ready.eq(matrix.acts.ready),
            matrix.acts.p.last.eq(response.tag.last),
            matrix.acts.p.first.eq(response.tag.first),
            matrix.acts.p.emit.eq(response.tag.emit),
            matrix.acts.p.acc_addr.eq(response.tag.acc_addr),
            matrix.acts.p.channel.eq(response.tag.channel),
            matrix.acts.p.tag.eq(response.tag.result),
        ]
        m.d.comb += [matrix.acts.p.data[r].eq(response.data[r] ^ Mux(response.tag.flip, 0x80, 0))
                     for r in range(R)]
        accepted = matrix.acts.valid & matrix.acts.ready
        m.d.comb += [self.mac.eq(accepted), act_finished.eq(accepted & response.tag.last)]

        if in_place:
            for command in (weight_cmds, act_cmds):
                with m.If(command.w_en):
                    m.d.sync += command.r_rdy.eq(1)
                with m.If(command.r_en):
                    m.d.sync += command.r_rdy.eq(0)
            # The MATMUL leaves the queue in the cycle after its last reader took its last
            # vector (from registers: no path from the scratchpad's grants into the queue).
            with m.If(streaming & ~weight_cmds.r_rdy & ~act_cmds.r_rdy):
                m.d.comb += self.insn.ready.eq(1)
                m.d.sync += streaming.eq(0)

        # --- Result writer ---------------------------------------------------------------------
        # Result rows (or, for int32 outputs, their four byte planes) go to the scratchpad
        # from a register (``result_write``), the cycle after they leave the output stage.
        # The scratchpad's result port is always ready (result writes own its banks' write
        # ports), so nothing reaches the output stage or this register from its arbitration;
        # were it not ready, the register would hold its row and the output stage wait.
        results = matrix.results.p
        result_tag = Signal(_result_tag_layout(config))
        m.d.comb += result_tag.eq(results.tag)
        write = data.StructLayout({"addr": unsigned(len(self.res.p.addr)),
                                   "data": data.ArrayLayout(unsigned(8), C),
                                   "final": unsigned(1)})
        queued = Signal(write)
        head = Signal(write, name="result_write")
        head_valid = Signal()
        take = ~head_valid | self.res.ready
        part = Signal(2)
        last_part = ~result_tag.int32 | (part == 3)
        acc_bytes = results.acc.as_value()
        m.d.comb += [
            queued.addr.eq(result_tag.out_slot + part),
            queued.final.eq(result_tag.final & last_part),
            matrix.results.ready.eq(take & last_part),
        ]
        with m.If(result_tag.int32):
            with m.Switch(part):
                for s in range(4):
                    with m.Case(s):
                        m.d.comb += [queued.data[j].eq(acc_bytes[8 * (s * C + j):][:8])
                                     for j in range(C)]
        with m.Else():
            m.d.comb += [queued.data[j].eq(results.q[j]) for j in range(C)]
        with m.If(take):
            m.d.sync += [head_valid.eq(matrix.results.valid), head.eq(queued)]
        with m.If(matrix.results.valid & take):
            m.d.sync += part.eq(Mux(last_part, 0, part + 1))
        m.d.comb += [
            self.res.valid.eq(head_valid),
            self.res.p.addr.eq(head.addr),
            self.res.p.data.eq(head.data),
            result_finished.eq(self.res.valid & self.res.ready & head.final),
        ]
        return m
