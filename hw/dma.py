"""DMA engine: 2-D strided copies between AXI4 memory and the scratchpad, any alignment.

One :class:`DMA` is an AXI4 manager whose data width is ``config.bus_width``. It executes
:class:`Descriptor` s from a queue, in order. A descriptor copies ``rows`` rows of
``row_bytes`` bytes each; row ``r`` starts at memory byte ``mem_addr + r * mem_stride``
and at scratchpad byte ``sp_addr + r * sp_stride``. ``direction`` says which side is
read. Every address, length and stride may have any byte alignment, on either side.

Members
-------
m_axi : ``Out(AXI4Signature(data_width=bus_width, addr_width=addr_width, id_width=id_width))``
    The memory port. Every burst is INCR, ``AxSIZE`` = the full bus width, ID 0,
    ``AxCACHE`` = 0b0011 (normal, non-cacheable, bufferable), ``AxPROT`` = 0.
sp : ``Out(hw.scratchpad.DMAPortSignature(sp_addr_width, bus_width))``
    The scratchpad port (see *Scratchpad protocol*).
desc : ``In(stream.Signature(Descriptor))``
    The descriptor queue (``queue_depth`` entries, the descriptor being walked among them:
    it leaves the queue once its last burst is issued, or once it completed without
    moving anything or failed). ``ready`` is low while the queue is full and while an error
    is pending (``error.code != NONE``). With ``queue_depth`` 0 there is no queue:
    ``ready`` rises in the cycle the engine is done with the descriptor in that sense, and
    the descriptor must hold still while ``valid`` is high.
done : ``Out(stream.Signature(Completion))``
    One beat with the descriptor's ``id`` when it has completed: every byte is in the
    scratchpad (memory → scratchpad), or every write burst has had its ``OKAY`` response
    (scratchpad → memory), from the cycle after. Buffered (8 entries): a descriptor starts
    only while the entries free in the cycle before outnumber the descriptors in progress
    then, so that a completion never waits for room (nor does the data path before it).
    A descriptor with ``rows == 0`` or ``row_bytes == 0`` completes without any access.
error : ``Out(ErrorInfo)``
    ``code`` (:class:`DMAError`), ``id`` of the failing descriptor and ``addr``, the failing
    address; held until ``clear``. ``code == NONE`` means no error.
clear : ``In(1)``
    Acknowledges an error once the engine has stopped (``busy`` low): the error is
    cleared, the descriptors still queued are discarded, and the queue accepts new
    descriptors from the next cycle. Ignored at any other time.
busy : ``Out(1)``
    A descriptor is queued or in progress, or the engine is winding down after an error.

Scratchpad protocol
-------------------
Word addressed: word ``a`` holds scratchpad bytes ``a * W .. a * W + W - 1``, with
``W = bus_width / 8``, byte ``a * W + i`` in data bits ``8 i .. 8 i + 7``. ``sp.req`` is a
stream of requests (``addr``, ``write``, ``data``, ``strb``); ``ready`` is the
scratchpad's grant, which may stay low for any number of cycles (a bank conflict) and may
depend combinationally on the request. A write writes the bytes whose ``strb`` bit is set
in the cycle it is accepted. A read accepted in cycle ``t`` must return its word on
``sp.rdata`` with ``sp.rvalid`` high in cycle ``t + L``, for a fixed ``L`` of at least 1
(:attr:`hw.scratchpad.Scratchpad.read_latency`; the DMA's testbench: 2), in request
order; the DMA always takes it.
The DMA keeps ``valid`` high only while it has a request to make, and may change or
withdraw a request that has not been granted.

Timing
------
With ``config.serial_products`` the range checks take one more cycle per bit of the
descriptor's ``rows`` field (16). Scratchpad requests leave through a three-entry register slice and R data reaches the
realigner through a three-entry buffer, so no combinational path crosses from the
scratchpad's grant or from the memory's R channel into the engine. A descriptor taken
from the queue spends two cycles in its range checks and one cycle per row setting the
row up; the bursts of a row are then issued one per AR/AW handshake. Up
to ``max_outstanding`` bursts are in flight (AR issued and last R beat not yet received,
or AW issued and B not yet received): the AR or AW of the next bursts, and of the next
descriptor in the same direction, go out while earlier data still moves. With a zero-wait
memory and an always-granting scratchpad the data path moves one bus word per cycle in
both directions: a 64 KiB single-row transfer takes ``65536 / W`` cycles plus a fixed
latency of a few cycles (range checks, the R buffer or the scratchpad reads, the slice)
from the descriptor's handshake to its completion's, at any width and alignment
(``make bench-dma`` measures it). A row whose memory offset
in the word is larger than its scratchpad offset (or the reverse, from scratchpad to
memory) costs one more cycle (see *Alignment*). A descriptor whose direction differs from
the one in progress waits until that one has completed, so a read of data just written
never overtakes the write.

Bursts
------
A row ``[addr, addr + row_bytes)`` is cut into INCR bursts at every 4 KiB boundary and
every 256 beats: each burst runs from its address (the row's first byte for the first
burst, a word boundary afterwards) to the earliest of the row's end, the next 4 KiB
boundary and 256 words past the word holding its first byte. ``AxADDR`` is the address of
the burst's first byte, which may be unaligned (allowed for INCR); partial words at a
row's ends are written with ``WSTRB`` covering only the row's bytes.

Alignment
---------
Both directions share one realigner that turns a row's word stream from one alignment
into another. Let ``a`` be the row's byte offset in the words read and ``b`` in the words
written (``a = mem_addr % W`` and ``b = sp_addr % W`` from memory to scratchpad, the other
way round from scratchpad to memory), and ``n`` the row's length. The row occupies
``ceil((a + n) / W)`` input words and ``ceil((b + n) / W)`` output words. Output word
``j`` is the ``W``-byte window at byte offset ``s`` of the concatenation of two
consecutive input words ``{in[m], in[m - 1]}``, where

* ``a > b``: ``s = a - b`` and ``m = j + 1``: the first input word is only stored
  (priming, one cycle without output);
* ``a <= b``: ``s = a - b + W`` (``W`` when ``a == b``, which selects ``in[j]``) and
  ``m = j``.

When ``in[m]`` lies beyond the row, the output word uses the stored word only (a flush
word at the row's end). Byte lanes outside the row are masked by the write strobes: lanes
below ``b`` in the first output word and above ``(b + n - 1) % W`` in the last one. The
counts of input and output words differ by at most one, which the priming and flush words
absorb, so a row costs ``ceil((b + n) / W)`` cycles, plus one when ``a > b``.

Errors
------
Checked when a descriptor leaves the queue, before any access:

* ``SP_RANGE``: the last scratchpad byte, ``sp_addr + (rows - 1) * sp_stride +
  row_bytes - 1``, is at or beyond ``scratchpad_bytes``; ``addr`` = ``sp_addr``. Scratchpad
  addresses never wrap. Without ``check_sp_range`` this check is the producer's, which
  must send no such descriptor (the NPU's decoder refuses the instruction).
* ``MEM_RANGE``: the last memory byte, computed the same way, is beyond the address
  space; ``addr`` = ``mem_addr``.

These are reported once the descriptors before it have completed. During a transfer:

* ``READ_SLVERR``/``READ_DECERR``: an R beat came back with that response. The beat and
  everything after it in the descriptor are discarded: the scratchpad write that would
  have used it, and every later one, is not issued. The writes of the data received
  before it still drain into the scratchpad (a few cycles) before ``busy`` falls.
* ``WRITE_SLVERR``/``WRITE_DECERR``: a B response with that code.

For bus errors ``addr`` is the first byte address of the failing burst (its ``AxADDR``).
From the cycle after the error response the engine issues no new AR or AW, no scratchpad
write of data from the failing beat on, and sends the remaining W beats of bursts already issued with ``WSTRB`` = 0 (a beat
whose ``WVALID`` was already high completes unchanged, as AXI requires); R and B
responses still due are accepted and dropped. Transfers behind the failing one that had
already started (same direction) are abandoned too. When nothing is outstanding, the
engine stops (``busy`` low) until ``clear``. Only the first error is recorded.
"""

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from hw.arith import product_register, saturating_product
from hw.axi import AXI4Signature, BOUNDARY, MAX_BURST_BEATS, Burst, Resp
from hw.config import DEFAULT_CONFIG
from hw.scratchpad import DMAPortSignature


__all__ = ["Direction", "DMAError", "Descriptor", "ErrorInfo", "Completion",
           "DMA"]


class Direction(enum.Enum, shape=1):
    MEM_TO_SP = 0
    SP_TO_MEM = 1


class DMAError(enum.Enum, shape=3):
    """``error.code`` of the :class:`DMA`; see the module docstring for when each is set."""
    NONE = 0
    READ_SLVERR = 1
    READ_DECERR = 2
    WRITE_SLVERR = 3
    WRITE_DECERR = 4
    SP_RANGE = 5
    MEM_RANGE = 6


class Descriptor(data.StructLayout):
    """One 2-D transfer. Field widths follow the configuration.

    ``direction`` (:class:`Direction`), ``id`` (``tag_width`` bits, reported by ``done``
    and ``error``), ``mem_addr`` and ``mem_stride`` (``0 .. 2**addr_width``: the producer
    stands a larger value for ``2**addr_width``, which the range check refuses as it
    would the value itself), ``sp_addr`` (bytes, ``ceil_log2(scratchpad_bytes)`` bits),
    ``sp_stride`` and ``row_bytes`` (``0 .. scratchpad_bytes``), ``rows`` (``rows_width``
    bits).
    """

    def __init__(self, *, addr_width, scratchpad_bytes, tag_width=8, rows_width=16):
        self.addr_width = addr_width
        self.scratchpad_bytes = scratchpad_bytes
        self.tag_width = tag_width
        self.rows_width = rows_width
        super().__init__({
            "direction":  Direction,
            "id":         unsigned(tag_width),
            "mem_addr":   range(2**addr_width + 1),
            "sp_addr":    unsigned(ceil_log2(scratchpad_bytes)),
            "rows":       unsigned(rows_width),
            "row_bytes":  range(scratchpad_bytes + 1),
            "mem_stride": range(2**addr_width + 1),
            "sp_stride":  range(scratchpad_bytes + 1),
        })


class ErrorInfo(data.StructLayout):
    """``code`` (:class:`DMAError`), ``id`` of the failing descriptor, failing ``addr``."""

    def __init__(self, *, addr_width, tag_width=8):
        super().__init__({
            "code": DMAError,
            "id":   unsigned(tag_width),
            "addr": unsigned(max(addr_width, 1)),
        })


class Completion(data.StructLayout):
    """``id`` of a completed descriptor."""

    def __init__(self, *, tag_width=8):
        super().__init__({"id": unsigned(tag_width)})


class _Realigner(wiring.Component):
    """Moves rows of bytes from one word alignment to another (see *Alignment* above).

    ``cmd`` describes a row (``in_off``, ``out_off``, ``bytes``, ``base``, ``tag``);
    ``inp`` carries its input words; ``out`` gives its output words with ``strb``,
    ``addr`` (``base`` + word index), ``last`` (last word of the row) and ``tag``.
    Rows follow each other without a gap; ``out`` depends combinationally on ``inp``.
    """

    def __init__(self, lanes, max_bytes, base_shape, tag_shape):
        self.lanes = lanes
        self.max_words = max_bytes // lanes + 2
        bytes_shape = range(max_bytes + 1)
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({
                "in_off":  range(lanes),
                "out_off": range(lanes),
                "bytes":   bytes_shape,
                "base":    base_shape,
                "tag":     tag_shape,
            }))),
            "inp": In(stream.Signature(8 * lanes)),
            "out": Out(stream.Signature(data.StructLayout({
                "data": unsigned(8 * lanes),
                "strb": unsigned(lanes),
                "addr": base_shape,
                "last": unsigned(1),
                "tag":  tag_shape,
            }))),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.lanes
        lw = exact_log2(W)

        active = Signal()
        priming = Signal()
        first = Signal()
        shift = Signal(range(W + 1))
        in_left = Signal(range(self.max_words + 1))
        out_left = Signal(range(self.max_words + 1))
        lo = Signal(range(W))
        hi = Signal(range(W))
        addr = Signal(self.out.p.addr.shape())
        tag = Signal(self.out.p.tag.shape())
        prev = Signal(8 * W)

        # ``in_left != 0`` and ``out_left == 1``, registered beside the counts.
        need_in = Signal()
        last = Signal()
        out_fire = self.out.valid & self.out.ready
        in_fire = self.inp.valid & self.inp.ready
        ones = Const(2**W - 1, W)
        below_row = Mux(first, lo, 0)       # lanes before the row's first byte
        after_row = Mux(last, ~hi, 0)       # lanes after its last byte (W - 1 - hi)
        m.d.comb += [
            self.out.valid.eq(active & ~priming & (~need_in | self.inp.valid)),
            self.out.p.data.eq(Cat(prev, self.inp.payload).bit_select(shift * 8, 8 * W)),
            self.out.p.strb.eq((ones << below_row)[:W] & (ones >> after_row)),
            self.out.p.addr.eq(addr),
            self.out.p.last.eq(last),
            self.out.p.tag.eq(tag),
            self.inp.ready.eq(active & (priming | (self.out.ready & need_in))),
            self.cmd.ready.eq(~active | (out_fire & last)),
        ]

        with m.If(in_fire):
            m.d.sync += [prev.eq(self.inp.payload), in_left.eq(in_left - 1), priming.eq(0),
                         need_in.eq(in_left != 1)]
        with m.If(out_fire):
            m.d.sync += [first.eq(0), out_left.eq(out_left - 1), addr.eq(addr + 1),
                         last.eq(out_left == 2)]
            with m.If(last):
                m.d.sync += active.eq(0)

        cmd = self.cmd.p
        with m.If(self.cmd.valid & self.cmd.ready):
            ahead = cmd.in_off > cmd.out_off
            in_words = (cmd.in_off + cmd.bytes + (W - 1)) >> lw
            out_words = (cmd.out_off + cmd.bytes + (W - 1)) >> lw
            m.d.sync += [
                active.eq(1),
                priming.eq(ahead),
                first.eq(1),
                shift.eq(Mux(ahead, cmd.in_off - cmd.out_off, cmd.in_off + W - cmd.out_off)),
                in_left.eq(in_words),
                need_in.eq(in_words != 0),
                out_left.eq(out_words),
                last.eq(out_words == 1),
                lo.eq(cmd.out_off),
                hi.eq((cmd.out_off + cmd.bytes - 1)[:lw]),
                addr.eq(cmd.base),
                tag.eq(cmd.tag),
            ]
        return m


class DMA(wiring.Component):
    """The DMA engine; see the module docstring.

    Parameters
    ----------
    config : NPUConfig
        ``bus_width``, ``addr_width`` and ``scratchpad_bytes`` are used.
    id_width : int
        AXI ID width (the engine always uses ID 0).
    tag_width, rows_width : int
        Widths of the descriptor's ``id`` and ``rows`` fields.
    queue_depth : int
        Descriptors the queue holds (0: no queue).
    max_outstanding : int
        Bursts in flight at most; also the depth, up to 8, of the queues of row commands
        and of words read from the scratchpad.
    check_sp_range : bool
        Whether the engine checks the scratchpad range (``SP_RANGE``) itself.
    """

    def __init__(self, config=DEFAULT_CONFIG, *, id_width=1, tag_width=8, rows_width=16,
                 queue_depth=4, max_outstanding=8, check_sp_range=True):
        self.check_sp_range = check_sp_range
        self.lanes = config.bus_width // 8
        if config.scratchpad_bytes % self.lanes:
            raise ValueError("scratchpad_bytes must be a multiple of bus_width / 8")
        self.config = config
        self.scratchpad_bytes = config.scratchpad_bytes
        self.addr_width = config.addr_width
        self.sp_addr_width = ceil_log2(config.scratchpad_bytes // self.lanes)
        self.queue_depth = queue_depth
        self.max_outstanding = max_outstanding
        self.descriptor_layout = Descriptor(addr_width=config.addr_width,
                                            scratchpad_bytes=config.scratchpad_bytes,
                                            tag_width=tag_width, rows_width=rows_width)
        super().__init__({
            "m_axi": Out(AXI4Signature(data_width=config.bus_width,
                                       addr_width=config.addr_width, id_width=id_width)),
            "sp":    Out(DMAPortSignature(self.sp_addr_width, config.bus_width)),
            "desc":  In(stream.Signature(self.descriptor_layout)),
            "done":  Out(stream.Signature(Completion(tag_width=tag_width))),
            "error": Out(ErrorInfo(addr_width=config.addr_width, tag_width=tag_width)),
            "clear": In(1),
            "busy":  Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.lanes
        lw = exact_log2(W)
        aw = self.addr_width
        axi = self.m_axi
        layout = self.descriptor_layout
        tag_shape = unsigned(layout.tag_width)

        flush = Signal()        # empties the data path after an error
        flush_queue = Signal()  # discards the queued descriptors on clear

        def fifo(name, shape, depth, reset=flush):
            f = SyncFIFOBuffered(width=Shape.cast(shape).width, depth=depth)
            m.submodules[name] = f if reset is None else ResetInserter(reset)(f)
            if not isinstance(shape, data.Layout):
                return f, f.w_data, f.r_data
            return f, data.View(shape, f.w_data), data.View(shape, f.r_data)

        # Row commands and words read from the scratchpad: as deep as the bursts in flight,
        # eight at most; the register slices three at most (two halve their throughput).
        buffers = min(8, self.max_outstanding)

        # Descriptor queue: ``queued`` is its head, waiting while ``head_valid``; the walker
        # reads it from ``begin`` until ``take`` pops it, with no copy of its own.
        err = Signal(self.error.shape())
        m.d.comb += self.error.eq(err)
        begin = Signal()
        take = Signal()
        if self.queue_depth:
            queue, _, queued = fifo("queue", layout, self.queue_depth, reset=flush_queue)
            head_valid = queue.r_rdy
            m.d.comb += [
                self.desc.ready.eq(queue.w_rdy & (err.code == DMAError.NONE)),
                queue.w_en.eq(self.desc.valid & self.desc.ready),
                queue.w_data.eq(self.desc.payload),
                queue.r_en.eq(take),
            ]
        else:
            queued, head_valid = self.desc.payload, self.desc.valid
            m.d.comb += self.desc.ready.eq(take)

        # Completions: every descriptor started holds an entry of the FIFO (see
        # ``done_room``), so that a completion never waits for one.
        done_depth = 8
        done_fifo, done_w, done_r = fifo("done", self.done.p.shape(), done_depth, reset=None)
        m.d.comb += [
            self.done.valid.eq(done_fifo.r_rdy),
            self.done.payload.eq(done_r),
            done_fifo.r_en.eq(self.done.ready),
        ]

        # Bursts in flight, in issue order; popped by the last R beat or by B.
        inflight, inflight_w, inflight_r = fifo("inflight", data.StructLayout({
            "addr": unsigned(aw), "id": tag_shape, "last": unsigned(1),
        }), self.max_outstanding)
        # Beats of each write burst, for WLAST.
        wbursts, wbursts_w, wbursts_r = fifo("wbursts", unsigned(8), self.max_outstanding)
        # Rows for the scratchpad reader (scratchpad to memory).
        rd_cmds, rd_cmds_w, rd_cmds_r = fifo("rd_cmds", data.StructLayout({
            "base": unsigned(self.sp_addr_width), "count": range(self.scratchpad_bytes // W + 2),
        }), buffers)
        # Words read from the scratchpad, waiting for the realigner.
        sp_depth = buffers
        sp_data, _, _ = fifo("sp_data", unsigned(8 * W), sp_depth)
        # R data on its way to the realigner: a register slice between memory and realigner.
        r_buffer, _, _ = fifo("r_buffer", unsigned(8 * W), min(3, buffers))

        rl = _Realigner(W, self.scratchpad_bytes, unsigned(self.sp_addr_width),
                        data.StructLayout({"id": tag_shape, "last_row": unsigned(1)}))
        m.submodules.realigner = ResetInserter(flush)(rl)
        rl_cmds, rl_cmds_w, _ = fifo("rl_cmds", rl.cmd.p.shape(), buffers)
        m.d.comb += [
            rl.cmd.valid.eq(rl_cmds.r_rdy),
            rl.cmd.payload.eq(rl_cmds.r_data),
            rl_cmds.r_en.eq(rl.cmd.ready),
        ]

        abort = Signal()        # a bus error was seen: wind down
        direction = Signal(Direction)
        pending = Signal(8)     # descriptors started and not yet completed
        # Room in the completion FIFO for one more descriptor, beside those pending: from
        # registers, a cycle late, which is safe because the walker starts (or completes, if
        # it moves nothing) a descriptor at most once in five cycles. The data path then
        # completes a descriptor whenever it is done, so that neither the scratchpad
        # requests nor the B channel wait on this FIFO.
        done_room = Signal()
        m.d.sync += done_room.eq(pending + done_fifo.level < done_depth)
        to_mem = direction == Direction.SP_TO_MEM

        # ---- Descriptor walker: checks, rows and bursts. -------------------------------
        d = queued              # the descriptor walked, where it waits
        rows_left = Signal.like(d.rows)
        row_mem = Signal(aw)
        row_sp = Signal(ceil_log2(self.scratchpad_bytes))
        cur = Signal(aw)
        # Beats from ``cur`` to the end of its row and to the next 4 KiB boundary, in
        # registers set per row and stepped per burst, so that a burst's length is a short
        # compare of registers.
        to_end = Signal(range((2 * (W - 1) + self.scratchpad_bytes) // W + 1))
        to_boundary = Signal(range(BOUNDARY // W + 1))
        held = Signal()         # AxVALID is up and must stay up until the handshake

        # Range checks of ``d``, registered in steps: the products ``rows * stride`` (in
        # MEASURE's first two cycles) and the rest of each extent (as the walker begins
        # it); the compares are registered from them, valid from the cycle after MEASURE,
        # which lasts three cycles.
        # Rows are non-zero where it matters.
        # With ``config.serial_products`` the products ``(rows - 1) * stride`` are made by
        # shift and add (one cycle per bit of ``rows``) while the walker waits in MEASURE,
        # saturating at twice the extent's bound, beyond which every extent is out of range.
        products_done = []
        if not self.config.serial_products:
            popped = Signal(2)
            measured = Signal()
            m.d.sync += [popped.eq(Cat(begin, popped[0])), measured.eq(popped[1])]

        def extent_parts(addr, stride, name, bound):
            base = Signal(signed(max(len(addr), len(stride), len(d.row_bytes)) + 2),
                          name=f"{name}_base")
            if self.config.serial_products:
                product, done = saturating_product(
                    m, stride, (d.rows - 1)[:len(d.rows)], begin, 2 * bound, name)
                base_value = addr + d.row_bytes
            else:
                # From the queue's registers: two multiplier-sized products of 17-bit
                # pieces of the stride in MEASURE's first cycle, their sum in its second;
                # ready in its third, when ``measured`` rises.
                # Each product is a multiplier's output register on ECP5
                # (``hw.arith.product_register``).
                low = product_register(m, platform, d.rows, stride[:17],
                                       unsigned(len(d.rows) + 17), f"{name}_low")
                high = C(0) if len(stride) <= 17 else product_register(
                    m, platform, d.rows, stride[17:], unsigned(len(d.rows) + len(stride) - 17),
                    f"{name}_high")
                product = Signal(len(d.rows) + len(stride), name=f"{name}_product")
                m.d.sync += product.eq(low + (high << 17))
                done = measured
                base_value = addr + d.row_bytes - stride
            products_done.append(done)
            with m.If(begin):
                m.d.sync += base.eq(base_value)
            return product + base
        sp_bound, mem_bound = self.scratchpad_bytes, 1 << aw
        mem_over = Signal()
        if self.check_sp_range:
            sp_over = Signal()
            m.d.sync += sp_over.eq(extent_parts(d.sp_addr, d.sp_stride, "extent_sp", sp_bound)
                                   > sp_bound)
        m.d.sync += mem_over.eq(extent_parts(d.mem_addr, d.mem_stride, "extent_mem", mem_bound)
                                > mem_bound)
        empty = Signal()        # ``d`` moves nothing, registered as the walker begins it
        with m.If(begin):
            m.d.sync += empty.eq((d.rows == 0) | (d.row_bytes == 0))

        beat = cur[lw:]
        beats = Signal(range(MAX_BURST_BEATS + 1))
        m.d.comb += beats.eq(MAX_BURST_BEATS)
        with m.If(to_boundary < MAX_BURST_BEATS):
            m.d.comb += beats.eq(to_boundary)
        with m.If((to_end < MAX_BURST_BEATS) & (to_end < to_boundary)):
            m.d.comb += beats.eq(to_end)
        next_addr = Cat(Const(0, lw), beat + beats)
        # ``beats == to_end``, straight from the registers rather than through ``beats``.
        row_done = (to_end <= MAX_BURST_BEATS) & (to_end <= to_boundary)

        a_valid = Signal()
        a_ready = Mux(to_mem, axi.awready, axi.arready)
        for ch in ("aw", "ar"):
            m.d.comb += [
                getattr(axi, f"{ch}addr").eq(cur),
                getattr(axi, f"{ch}len").eq(beats - 1),
                getattr(axi, f"{ch}size").eq(lw),
                getattr(axi, f"{ch}burst").eq(Burst.INCR),
                getattr(axi, f"{ch}cache").eq(0b0011),
            ]
        m.d.comb += [
            axi.awvalid.eq(a_valid & to_mem),
            axi.arvalid.eq(a_valid & ~to_mem),
        ]

        start = Signal()        # a descriptor enters the data path
        finish = Signal()       # the data path completes a descriptor
        finish_id = Signal(tag_shape)
        # The completion enters the FIFO in the cycle after (no path from the scratchpad's
        # grant or the B channel into the FIFO and ``pending``).
        finished = Signal()
        finished_id = Signal(tag_shape)
        m.d.sync += [finished.eq(finish), finished_id.eq(finish_id)]

        # Scratchpad requests pass through a register slice, so that neither the reader
        # nor the realigner waits on the scratchpad's combinational grant. A write entry
        # that ends a descriptor completes it when the scratchpad takes it.
        sp_slice, sp_slice_w, sp_slice_r = fifo("sp_slice", data.StructLayout({
            "req": self.sp.req.p.shape(),
            "end": unsigned(1),
            "id":  finish_id.shape(),
        }), min(3, buffers))

        m.d.sync += pending.eq(pending + start - finished)

        def reject(code, addr):
            with m.If(pending == 0):
                m.d.comb += take.eq(1)
                m.d.sync += [err.code.eq(code), err.id.eq(d.id), err.addr.eq(addr)]
                m.next = "HALTED"

        with m.FSM(init="IDLE") as fsm:
            with m.State("IDLE"):
                with m.If(abort):
                    m.next = "DRAIN"
                with m.Elif(head_valid):
                    m.d.comb += begin.eq(1)
                    m.next = "MEASURE"

            with m.State("MEASURE"):
                if products_done:
                    with m.If(Cat(*products_done).all()):
                        m.next = "CHECK"
                else:
                    m.next = "CHECK"

            with m.State("CHECK"):
                with m.If(abort):
                    m.d.comb += take.eq(1)
                    m.next = "DRAIN"
                with m.Elif(empty):
                    with m.If((pending == 0) & done_room):
                        m.d.comb += [done_fifo.w_en.eq(1), done_w.id.eq(d.id), take.eq(1)]
                        m.next = "IDLE"
                if self.check_sp_range:
                    with m.Elif(sp_over):
                        reject(DMAError.SP_RANGE, d.sp_addr)
                with m.Elif(mem_over):
                    reject(DMAError.MEM_RANGE, d.mem_addr)
                with m.Elif(((pending == 0) | (d.direction == direction)) & done_room):
                    m.d.comb += start.eq(1)
                    m.d.sync += [
                        direction.eq(d.direction),
                        rows_left.eq(d.rows),
                        row_mem.eq(d.mem_addr),
                        row_sp.eq(d.sp_addr),
                    ]
                    m.next = "ROW"

            with m.State("ROW"):
                sp_off, mem_off = row_sp[:lw], row_mem[:lw]
                from_sp = d.direction == Direction.SP_TO_MEM
                m.d.comb += [
                    rl_cmds_w.in_off.eq(Mux(from_sp, sp_off, mem_off)),
                    rl_cmds_w.out_off.eq(Mux(from_sp, mem_off, sp_off)),
                    rl_cmds_w.bytes.eq(d.row_bytes),
                    rl_cmds_w.base.eq(row_sp[lw:]),
                    rl_cmds_w.tag.id.eq(d.id),
                    rl_cmds_w.tag.last_row.eq(rows_left == 1),
                    rd_cmds_w.base.eq(row_sp[lw:]),
                    rd_cmds_w.count.eq((sp_off + d.row_bytes + (W - 1)) >> lw),
                ]
                with m.If(abort):
                    m.d.comb += take.eq(1)
                    m.next = "DRAIN"
                with m.Elif(rl_cmds.w_rdy & rd_cmds.w_rdy):
                    m.d.comb += [rl_cmds.w_en.eq(1), rd_cmds.w_en.eq(from_sp)]
                    m.d.sync += [
                        cur.eq(row_mem),
                        to_end.eq((row_mem[:lw] + d.row_bytes + (W - 1)) >> lw),
                        to_boundary.eq(BOUNDARY // W - row_mem[lw:exact_log2(BOUNDARY)]),
                        row_mem.eq(row_mem + d.mem_stride),
                        row_sp.eq(row_sp + d.sp_stride),
                        rows_left.eq(rows_left - 1),
                    ]
                    m.next = "BURST"

            with m.State("BURST"):
                m.d.comb += [
                    a_valid.eq(held | (~abort & inflight.w_rdy)),
                    inflight_w.addr.eq(cur),
                    inflight_w.id.eq(d.id),
                    inflight_w.last.eq(row_done & (rows_left == 0)),
                    wbursts_w.eq(beats - 1),
                ]
                m.d.sync += held.eq(a_valid & ~a_ready)
                with m.If(a_valid & a_ready):
                    m.d.comb += [inflight.w_en.eq(1), wbursts.w_en.eq(to_mem)]
                    m.d.sync += [
                        cur.eq(next_addr),
                        to_end.eq(to_end - beats),
                        to_boundary.eq(Mux(beats == to_boundary, BOUNDARY // W,
                                           to_boundary - beats)),
                    ]
                    with m.If(row_done):
                        m.next = "ROW"
                        with m.If(rows_left == 0):
                            m.d.comb += take.eq(1)
                            m.next = "IDLE"
                with m.Elif(~a_valid & abort):
                    m.d.comb += take.eq(1)
                    m.next = "DRAIN"

            with m.State("DRAIN"):
                # The data received before the error still reaches the scratchpad.
                with m.If((inflight.level == 0) & (r_buffer.level == 0) &
                          (sp_slice.level == 0)):
                    m.next = "FLUSH"

            with m.State("FLUSH"):
                m.d.comb += flush.eq(1)
                m.d.sync += pending.eq(0)
                m.next = "HALTED"

            with m.State("HALTED"):
                with m.If(self.clear):
                    m.d.comb += flush_queue.eq(1)
                    m.d.sync += [err.code.eq(DMAError.NONE), abort.eq(0)]
                    m.next = "IDLE"

        m.d.comb += self.busy.eq(~fsm.ongoing("HALTED") &
                                 (~fsm.ongoing("IDLE") | (pending != 0) | head_valid))

        def fail(code, entry):
            with m.If(~abort):
                m.d.sync += [abort.eq(1), err.code.eq(code), err.id.eq(entry.id),
                             err.addr.eq(entry.addr)]

        # ---- Memory to scratchpad: R beats through the realigner into scratchpad writes.
        r_ok = ~axi.rresp.as_value()[1]
        r_fire = axi.rvalid & axi.rready
        with m.If(r_fire & axi.rlast):
            m.d.comb += inflight.r_en.eq(1)
        with m.If(r_fire & ~r_ok):
            fail(Mux(axi.rresp == Resp.DECERR, DMAError.READ_DECERR, DMAError.READ_SLVERR),
                 inflight_r)

        out = rl.out
        desc_end = out.p.last & out.p.tag.last_row
        sp_write = Signal()
        m.d.comb += sp_write.eq(~to_mem & out.valid)


        # ---- Scratchpad reader (scratchpad to memory). ---------------------------------
        rd_active = Signal()
        rd_addr = Signal(self.sp_addr_width)
        rd_left = Signal.like(rd_cmds_r.count)
        rd_pending = Signal(range(max(sp_depth, 8)))   # reads in the slice or in the scratchpad
        rd_valid = rd_active & ~abort & (sp_data.level + rd_pending < sp_depth)
        rd_fire = rd_valid & sp_slice.w_rdy
        m.d.sync += rd_pending.eq(rd_pending + rd_fire - self.sp.rvalid)
        m.d.comb += [
            sp_data.w_en.eq(self.sp.rvalid),
            sp_data.w_data.eq(self.sp.rdata),
        ]
        with m.If(rd_fire):
            m.d.sync += [rd_addr.eq(rd_addr + 1), rd_left.eq(rd_left - 1)]
            with m.If(rd_left == 1):
                m.d.sync += rd_active.eq(0)
        with m.If((~rd_active | (rd_fire & (rd_left == 1))) & rd_cmds.r_rdy):
            m.d.comb += rd_cmds.r_en.eq(1)
            m.d.sync += [rd_active.eq(1), rd_addr.eq(rd_cmds_r.base),
                         rd_left.eq(rd_cmds_r.count)]
        with m.If(flush):
            m.d.sync += [rd_active.eq(0), rd_pending.eq(0)]

        # ---- Scratchpad port: writes from the realigner or reads for the W channel. ----
        req = self.sp.req
        m.d.comb += [
            sp_slice.w_en.eq(Mux(to_mem, rd_valid, sp_write)),
            sp_slice_w.req.addr.eq(Mux(to_mem, rd_addr, out.p.addr)),
            sp_slice_w.req.write.eq(~to_mem),
            sp_slice_w.req.data.eq(out.p.data),
            sp_slice_w.req.strb.eq(out.p.strb),
            sp_slice_w.end.eq(~to_mem & desc_end),
            sp_slice_w.id.eq(out.p.tag.id),
            req.valid.eq(sp_slice.r_rdy),
            req.p.eq(sp_slice_r.req),
            sp_slice.r_en.eq(req.valid & req.ready),
        ]

        # ---- Realigner input: R data or scratchpad words. ------------------------------
        m.d.comb += [
            r_buffer.w_en.eq(axi.rvalid & r_ok & ~abort & ~to_mem),
            r_buffer.w_data.eq(axi.rdata),
            axi.rready.eq(abort | (~to_mem & r_buffer.w_rdy)),
            rl.inp.valid.eq(Mux(to_mem, sp_data.r_rdy, r_buffer.r_rdy)),
            rl.inp.payload.eq(Mux(to_mem, sp_data.r_data, r_buffer.r_data)),
            sp_data.r_en.eq(to_mem & rl.inp.ready),
            r_buffer.r_en.eq(~to_mem & rl.inp.ready),
        ]

        # ---- W channel from the realigner. ---------------------------------------------
        w_count = Signal(8)
        w_held = Signal()       # WVALID is up with a beat of the data
        w_data = wbursts.r_rdy & (w_held | ~abort)
        m.d.comb += [
            axi.wvalid.eq(wbursts.r_rdy & (abort | out.valid)),
            axi.wdata.eq(out.p.data),
            axi.wstrb.eq(Mux(w_data, out.p.strb, 0)),
            axi.wlast.eq(w_count == wbursts_r),
        ]
        w_fire = axi.wvalid & axi.wready
        m.d.sync += w_held.eq(w_data & out.valid & to_mem & ~axi.wready)
        with m.If(w_fire):
            m.d.sync += w_count.eq(w_count + 1)
            with m.If(axi.wlast):
                m.d.sync += w_count.eq(0)
                m.d.comb += wbursts.r_en.eq(1)

        m.d.comb += out.ready.eq(Mux(to_mem, w_data & axi.wready,
                                     sp_slice.w_rdy & sp_write))

        # ---- B channel. ----------------------------------------------------------------
        b_ok = ~axi.bresp.as_value()[1]
        m.d.comb += axi.bready.eq(1)
        b_fire = axi.bvalid & axi.bready
        with m.If(b_fire):
            m.d.comb += inflight.r_en.eq(1)
            with m.If(~b_ok):
                fail(Mux(axi.bresp == Resp.DECERR, DMAError.WRITE_DECERR, DMAError.WRITE_SLVERR),
                     inflight_r)

        # ---- Completions from the data path. -------------------------------------------
        with m.If(b_fire & b_ok & inflight_r.last & ~abort):
            m.d.comb += [finish.eq(1), finish_id.eq(inflight_r.id)]
        with m.If(req.valid & req.ready & sp_slice_r.end):
            m.d.comb += [finish.eq(1), finish_id.eq(sp_slice_r.id)]
        with m.If(finished):
            m.d.comb += [done_fifo.w_en.eq(1), done_w.id.eq(finished_id)]

        return m
