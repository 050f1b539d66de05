"""The NPU: controller, engines, DMA, scratchpad and matrix unit behind two AXI ports.

A host writes a program and its tensors to memory, writes the program's address to
``PROGRAM_ADDR`` and 1 to ``CONTROL.start`` over the AXI4-Lite port (``s_axil``), and
waits for ``irq`` (or polls ``STATUS``). The register map is ``hw/registers.py``.

Structure::

    m_axi ─┬─ read mux ─┬─ InstructionFetcher ─ decode ─┬─ load queue ── TransferEngine ─┐
           │            │                               ├─ compute queue ─ ComputeEngine │
           │            └──────────── DMA ◄──────────────┴─ store queue ── TransferEngine ─┘
           └──────────── (writes) ─── DMA ─── Scratchpad ─── ComputeEngine (MatrixUnit)

The fetcher reads instructions in order; the decoder checks each one
(``hw.fetcher.InstructionChecker``, a pipeline of ``InstructionChecker.latency`` cycles)
and appends it to its engine's queue (``config.queue_depth`` deep, holding only the bits
of the instruction its engine uses, ``hw.fetcher.to_queue``); the next instruction
enters the decoder in the cycle the current one is dispatched (with ``config.fetch_depth``
1, the decoder checks the fetcher's one instruction in place instead, and the fetcher
reads the next one once it is dispatched). The engines run concurrently and synchronise through four token counters
(decoupled access-execute, as in VTA). Load and store engines share the DMA, whose
descriptors complete in order.

Errors stop the NPU with ``STATUS.error``, an ``ErrorCode`` and the faulting
instruction's address, and raise ``irq`` when enabled:

* an illegal instruction (opcode, token flags, range, alignment) when it is decoded;
* an SLVERR/DECERR on an instruction fetch or on a LOAD/STORE;
* a deadlock: no instruction can be fetched or executed, no engine is working, and at
  least one waits for a token (reported at the lowest such instruction address).

``CONTROL.soft_reset`` waits for the AXI transfers in flight to finish, then resets
every engine, queue and counter; registers stay readable throughout.

After ``CONTROL.start`` the controller spends one cycle in ``START`` (``STATUS.busy``),
clearing the counters and token counters and starting the fetcher, then runs. The clear,
like the engines' reset, is a register, since it reaches every engine.

Members
-------
s_axil : ``In(AXI4LiteSignature(data_width=32, addr_width=8))``
m_axi : ``Out(AXI4Signature(data_width=bus_width, addr_width=addr_width, id_width=1))``
    ID 1: instruction fetch; ID 0: DMA.
irq : ``Out(1)``
"""

from amaranth import *
from amaranth.hdl import ResetInserter
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4LiteSignature, AXI4Signature
from .config import NPUConfig
from .counters import CounterFile
from .dma import DMA, Direction, DMAError
from .engines import DESCRIPTOR_ID_BITS, ComputeEngine, TransferEngine, act_tag_layout
from .fetcher import (InstructionChecker, InstructionFetcher, engine_of, fetched_layout,
                      from_queue, queued_bits, to_queue)
from .host_registers import HostRegisters
from .isa import Engine, Opcode
from .registers import BY_NAME, COUNTERS, ErrorCode
from .scratchpad import Scratchpad


__all__ = ["NPU"]
#: Cycles the deadlock condition must hold before it is reported.
DEADLOCK_CYCLES = 4


class NPU(wiring.Component):
    def __init__(self, config=NPUConfig()):
        self.config = config
        super().__init__({
            "s_axil": In(AXI4LiteSignature(data_width=32, addr_width=8)),
            "m_axi": Out(AXI4Signature(data_width=config.bus_width,
                                       addr_width=config.addr_width, id_width=1)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self.config
        # Both from registers, set as the controller enters START or RESET: they reach
        # every engine.
        core_reset = Signal()
        clear = Signal()            # a program starts, or the soft reset completes

        def core(name, component):
            m.submodules[name] = ResetInserter(core_reset)(component)
            return component

        def sliced(name, upstream):
            """``upstream`` (a stream) through a three-entry register slice ``name``: the
            stream out of it, whose ``ready`` reaches only the slice."""
            buffer = core(name, fifo.SyncFIFOBuffered(
                width=Shape.cast(upstream.p.shape()).width, depth=3))
            downstream = stream.Signature(upstream.p.shape()).create()
            m.d.comb += [buffer.w_en.eq(upstream.valid), buffer.w_data.eq(upstream.p),
                         upstream.ready.eq(buffer.w_rdy),
                         downstream.valid.eq(buffer.r_rdy), downstream.p.eq(buffer.r_data),
                         buffer.r_en.eq(downstream.ready)]
            return downstream

        m.submodules.registers = registers = HostRegisters(config)
        wiring.connect(m, wiring.flipped(self.s_axil), registers.bus)
        m.d.comb += self.irq.eq(registers.irq)

        fetcher = core("fetcher", InstructionFetcher(config, burst=config.fetch_burst,
                                                     depth=config.fetch_depth))
        # The decoder refuses a LOAD or STORE beyond the scratchpad (SCRATCHPAD_RANGE), so
        # the DMA does not check that again.
        dma = core("dma", DMA(config, id_width=1, tag_width=DESCRIPTOR_ID_BITS,
                              queue_depth=config.dma_queue_depth,
                              max_outstanding=config.dma_outstanding, check_sp_range=False))
        scratchpad = core("scratchpad", Scratchpad(config, tag_shape=act_tag_layout(config)))
        load = core("load", TransferEngine(config, direction=Direction.MEM_TO_SP,
                                           engine_id=Engine.LOAD.value))
        store = core("store", TransferEngine(config, direction=Direction.SP_TO_MEM,
                                             engine_id=Engine.STORE.value))
        compute = core("compute", ComputeEngine(config))
        # Each queue holds what its engine uses of a checked instruction (``to_queue``).
        queues = {engine: core(f"{engine.name.lower()}_queue", fifo.SyncFIFOBuffered(
            width=len(queued_bits(config, engine)) + config.addr_width,
            depth=config.queue_depth)) for engine in Engine}
        engines = {Engine.LOAD: load, Engine.COMPUTE: compute, Engine.STORE: store}

        # --- Memory port: instruction fetch (ID 1) and DMA (ID 0) share m_axi ------------------
        self._read_mux(m, fetcher.bus, dma.m_axi, clear)

        # --- Scratchpad: DMA side and compute side ----------------------------------------------
        wiring.connect(m, dma.sp, scratchpad.dma)
        # Read requests pass through register slices (the compute engine's address logic
        # then never meets the scratchpad's arbiters in one cycle) unless
        # ``config.read_slices`` is off; responses and result writes connect directly.
        for port in ("act_req", "act_resp", "wgt_req", "wgt_resp", "res"):
            a, b = getattr(compute, port), getattr(scratchpad, port)
            if port.endswith("resp"):
                a, b = b, a
            if port.endswith("req") and config.read_slices:
                a = sliced(f"{port}_slice", a)
            m.d.comb += [b.valid.eq(a.valid), b.p.eq(a.p), a.ready.eq(b.ready)]

        # --- Engines and the DMA ----------------------------------------------------------------
        for engine, component in engines.items():
            queue = queues[engine]
            m.d.comb += [component.insn.valid.eq(queue.r_rdy),
                         component.insn.p.eq(from_queue(config, engine, queue.r_data)),
                         queue.r_en.eq(component.insn.ready)]
        # Load and store share the DMA's descriptor queue; the load engine goes first, and
        # a descriptor once offered stays offered until taken (without a queue the DMA
        # reads it until then).
        offered = Signal()
        offered_store = Signal()
        from_store = Mux(offered, offered_store, ~load.desc.valid)
        m.d.sync += [offered.eq(dma.desc.valid & ~dma.desc.ready), offered_store.eq(from_store)]
        with m.If(~from_store):
            m.d.comb += [dma.desc.valid.eq(load.desc.valid), dma.desc.p.eq(load.desc.p),
                         load.desc.ready.eq(dma.desc.ready)]
        with m.Else():
            m.d.comb += [dma.desc.valid.eq(store.desc.valid), dma.desc.p.eq(store.desc.p),
                         store.desc.ready.eq(dma.desc.ready)]
        m.d.comb += [
            dma.done.ready.eq(1),
            load.done.eq(dma.done.valid & (dma.done.p.id == Engine.LOAD.value)),
            store.done.eq(dma.done.valid & (dma.done.p.id == Engine.STORE.value)),
        ]

        # --- Token counters: (producer, consumer) ----------------------------------------------
        pairs = [(Engine.LOAD, Engine.COMPUTE), (Engine.COMPUTE, Engine.LOAD),
                 (Engine.COMPUTE, Engine.STORE), (Engine.STORE, Engine.COMPUTE)]
        order = [Engine.LOAD, Engine.COMPUTE, Engine.STORE]
        for producer, consumer in pairs:
            count = Signal(16, name=f"tokens_{producer.name.lower()}_{consumer.name.lower()}")
            p, c = engines[producer].tokens, engines[consumer].tokens
            upstream = order.index(producer) < order.index(consumer)
            # A push counts from a register, a cycle late (a token never comes early); a pop
            # at once, so that a consumer never sees the token it took.
            push = Signal(name=f"{count.name}_pushed")
            m.d.sync += push.eq((p.push_next if upstream else p.push_prev) & ~clear)
            pop = c.pop_prev if upstream else c.pop_next
            available = c.prev_available if upstream else c.next_available
            # ``count != 0``, registered: set by a push, cleared by a pop of the last token,
            # so that it does not wait for the count's adder.
            nonzero = Signal(name=f"{count.name}_nonzero")
            # One adder: the count plus 1, 0 or -1.
            step = Mux(push == pop, 0, Mux(push, 1, -1))
            next_count = (count + step)[:len(count)]
            m.d.comb += available.eq(nonzero)
            with m.If(clear):
                m.d.sync += [count.eq(0), nonzero.eq(0)]
            with m.Else():
                m.d.sync += [count.eq(next_count),
                             nonzero.eq(Mux(push == pop, nonzero, push | (count != 1)))]

        # --- Decode and dispatch ----------------------------------------------------------------
        # With ``fetch_depth`` 1 the decoder checks the fetcher's one instruction where it
        # is and takes it as it dispatches it (or reaches END): the fetcher reads the next
        # one after that. Otherwise each instruction enters a register of its own while the
        # fetcher reads ahead, through a three-entry slice (``fetch_slice``), so that no path
        # runs from the dispatch into the fetcher's FIFO.
        in_place = config.fetch_depth == 1
        decoding = Signal()
        # Engines, decoder and fetcher stop in HALTED, DRAIN and RESET: a register, set and
        # cleared with those states.
        halt = Signal()
        m.submodules.checker = checker = InstructionChecker(config)
        if in_place:
            insn = fetcher.insn.p
            entering = fetcher.insn.valid & ~decoding & ~halt
            if config.serial_products:
                m.d.comb += checker.start.eq(entering)
        else:
            fetched = sliced("fetch_slice", fetcher.insn)
            insn = Signal(fetched_layout(config))
            entering = fetched.valid & fetched.ready
            if config.serial_products:
                m.d.sync += checker.start.eq(entering & ~clear)
        m.d.comb += checker.word.eq(insn.word)
        code = checker.code
        # The check's result arrives ``checker.latency`` cycles after the instruction.
        wait = Signal(range(checker.latency + 1))
        decoded = decoding & (wait == 0)
        target = Signal(Engine)
        m.d.comb += target.eq(engine_of(insn.word))
        is_end = insn.word[:4] == Opcode.END.value
        end_reached = Signal()
        target_ready = Signal()
        m.d.comb += [queue.w_data.eq(to_queue(config, engine, insn))
                     for engine, queue in queues.items()]
        with m.Switch(target):
            for engine in Engine:
                with m.Case(engine):
                    m.d.comb += target_ready.eq(queues[engine].w_rdy)
        legal = code == ErrorCode.NONE
        dispatch = decoded & legal & ~is_end & target_ready & ~halt
        with m.Switch(target):
            for engine in Engine:
                with m.Case(engine):
                    m.d.comb += queues[engine].w_en.eq(dispatch)
        ending = decoded & legal & is_end & ~halt
        if in_place:
            m.d.comb += fetcher.insn.ready.eq(dispatch | ending)
        else:
            # The next instruction enters as the current one is dispatched.
            m.d.comb += fetched.ready.eq((~decoding | dispatch) & ~halt)
        with m.If(wait != 0):
            m.d.sync += wait.eq(wait - 1)
        with m.If(clear):
            m.d.sync += [decoding.eq(0), end_reached.eq(0)]
        with m.Elif(entering):
            m.d.sync += [decoding.eq(1), wait.eq(checker.latency)]
            if not in_place:
                m.d.sync += insn.eq(fetched.p)
        with m.Elif(dispatch):
            m.d.sync += decoding.eq(0)
        with m.Elif(ending):
            m.d.sync += [decoding.eq(0), end_reached.eq(1)]

        for component in (load, store, compute):
            m.d.comb += component.halt.eq(halt)
        m.d.comb += fetcher.halt.eq(halt)

        # --- Completion, errors and deadlock ----------------------------------------------------
        engines_idle = Cat(~queues[e].r_rdy & ~engines[e].busy for e in Engine).all()
        done = end_reached & ~decoding & engines_idle & ~dma.busy & ~fetcher.busy
        stuck = Cat(~engines[e].busy & (~queues[e].r_rdy | engines[e].blocked)
                    for e in Engine).all()
        any_blocked = Cat(engines[e].blocked for e in Engine).any()
        fetch_stuck = (end_reached | (decoded & legal & ~target_ready)) & ~fetcher.busy
        # Both seen from registers, a cycle late: once true, each holds until the controller
        # acts on it.
        finished = Signal()
        deadlock_now = Signal()
        m.d.sync += [finished.eq(done & ~clear),
                     deadlock_now.eq(fetch_stuck & stuck & any_blocked & ~dma.busy)]
        deadlock_count = Signal(range(DEADLOCK_CYCLES + 1))
        with m.If(deadlock_now & (deadlock_count != DEADLOCK_CYCLES)):
            m.d.sync += deadlock_count.eq(deadlock_count + 1)
        with m.Elif(~deadlock_now):
            m.d.sync += deadlock_count.eq(0)
        # The lowest blocked instruction address, registered: it holds still during the
        # DEADLOCK_CYCLES a deadlock takes to be reported.
        # Compares side by side, not chained: engine i wins when it is blocked and no other
        # blocked engine has a lower address (ties to the earlier engine).
        # One compare per pair: engine j beats a later engine k when ``addrs[j] <= addrs[k]``,
        # and k beats j otherwise.
        addrs = [engines[e].insn.p.addr for e in order]
        # The compares and ``blocked`` are registered too: the engines hold still while
        # deadlocked.
        not_above = {}
        for j in range(len(order)):
            for k in range(j + 1, len(order)):
                not_above[j, k] = Signal(name=f"not_above_{j}_{k}")
                m.d.sync += not_above[j, k].eq(addrs[j] <= addrs[k])
        blocked = [Signal(name=f"blocked_{e.name.lower()}") for e in order]
        m.d.sync += [b.eq(engines[e].blocked) for b, e in zip(blocked, order)]
        def lower(i, j):
            return not_above[i, j] if i < j else ~not_above[j, i]
        wins = [blocked[i] & Cat(~blocked[j] | lower(i, j) for j in range(len(order)) if j != i).all()
                for i in range(len(order))]
        lowest = Const(-1, config.addr_width)
        for win, addr in zip(wins, addrs):
            lowest = Mux(win, addr, lowest)
        blocked_addr = Signal(config.addr_width)
        m.d.sync += blocked_addr.eq(lowest)
        # The instruction whose DMA descriptor failed.
        dma_addr = Mux(dma.error.id == Engine.STORE.value, store.insn.p.addr, load.insn.p.addr)

        error_code = Signal(ErrorCode)
        error_addr = Signal(32)
        found_code = Signal(ErrorCode)
        found_addr = Signal(32)
        # The controller acts on an error a cycle after it is found, from registers (every
        # source holds still until then: the error stops its engine or fetcher).
        seen_code = Signal(ErrorCode)
        seen_addr = Signal(32)
        m.d.sync += [seen_code.eq(Mux(clear, ErrorCode.NONE, found_code)),
                     seen_addr.eq(found_addr)]
        # DRAIN waits for the AXI transfers in flight from registers, a cycle late: nothing
        # starts one under ``halt``, and a descriptor the DMA takes in the cycle before
        # ``halt`` rises (its ``busy`` rises only in the next) counts as one.
        transfers_busy = Signal()
        m.d.sync += transfers_busy.eq(fetcher.busy | dma.busy
                                      | (dma.desc.valid & dma.desc.ready))
        with m.If(fetcher.bus_error):
            m.d.comb += [found_code.eq(ErrorCode.BUS_ERROR_FETCH),
                         found_addr.eq(fetcher.bus_error_addr)]
        with m.Elif(dma.error.code != DMAError.NONE):
            m.d.comb += [found_code.eq(ErrorCode.BUS_ERROR_DMA), found_addr.eq(dma_addr)]
        with m.Elif(decoded & ~legal):
            m.d.comb += [found_code.eq(code), found_addr.eq(insn.addr)]
        with m.Elif(deadlock_count == DEADLOCK_CYCLES):
            m.d.comb += [found_code.eq(ErrorCode.DEADLOCK), found_addr.eq(blocked_addr)]

        # --- Control ------------------------------------------------------------------------------
        # Counters in registers, or with ``config.counters_in_memory`` in a CounterFile,
        # which the register file asks.
        names = [name.lower() for name in COUNTERS]
        in_memory = names if config.counters_in_memory else []
        counters = {name: Signal(32, name=name) for name in names if name not in in_memory}
        # PROGRAM_ADDR holds only the bits above an instruction's alignment.
        program_low = BY_NAME["PROGRAM_ADDR"].field("address").offset
        running = Signal()
        resetting = Signal()
        starting = Signal()
        with m.FSM():
            with m.State("IDLE"):
                with m.If(registers.control_soft_reset):
                    m.d.sync += halt.eq(1)
                    m.next = "DRAIN"
                with m.Elif(registers.control_start):
                    m.d.sync += clear.eq(1)
                    m.next = "START"
            with m.State("START"):
                m.d.comb += [starting.eq(1), fetcher.start.eq(1)]
                m.d.sync += clear.eq(0)
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += running.eq(1)
                with m.If(registers.control_soft_reset):
                    m.d.sync += halt.eq(1)
                    m.next = "DRAIN"
                with m.Elif(seen_code != ErrorCode.NONE):
                    m.d.sync += [error_code.eq(seen_code), error_addr.eq(seen_addr), halt.eq(1)]
                    m.d.comb += registers.status_error_set.eq(1)
                    m.next = "HALTED"
                with m.Elif(finished):
                    m.d.comb += registers.status_done_set.eq(1)
                    m.next = "IDLE"
            with m.State("HALTED"):
                with m.If(registers.control_soft_reset):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += resetting.eq(1)
                with m.If(~transfers_busy):
                    m.d.sync += [core_reset.eq(1), clear.eq(1)]
                    m.next = "RESET"
            with m.State("RESET"):
                m.d.comb += [resetting.eq(1), dma.clear.eq(1)]
                m.d.sync += [core_reset.eq(0), clear.eq(0), halt.eq(0)]
                m.next = "IDLE"

        # Bytes as the DMA writes them into the scratchpad, and into memory: each handshake
        # and its strobes are registered, and counted from the registers (on the ULX3S a
        # path ran from the DMA's completion FIFO through the scratchpad's grant into the
        # event register).
        def bytes_moved(fire, strobes, name):
            fired = Signal(name=f"{name}_fired")
            fired_strobes = Signal.like(strobes, name=f"{name}_strobes", reset_less=True)
            moved = Signal(range(len(strobes) + 1), name=f"{name}_bytes_moved")
            m.d.sync += [fired.eq(fire), fired_strobes.eq(strobes)]
            m.d.comb += moved.eq(Mux(fired, sum(fired_strobes), 0))
            return moved
        read_bytes = bytes_moved(dma.sp.req.valid & dma.sp.req.ready & dma.sp.req.p.write,
                                 dma.sp.req.p.strb, "dma_read")
        write_bytes = bytes_moved(dma.m_axi.wvalid & dma.m_axi.wready, dma.m_axi.wstrb,
                                  "dma_write")
        increments = {
            "cycles": running,
            "mac_cycles": compute.mac,
            "dma_read_bytes": read_bytes,
            "dma_write_bytes": write_bytes,
            "load_stall_cycles": running & load.stalled,
            "compute_stall_cycles": running & compute.stalled,
            "store_stall_cycles": running & store.stalled,
            "fetch_stall_cycles": running & decoded & legal & ~is_end & ~target_ready,
        }
        # The events reach the counters a cycle late, from registers, so that no path runs
        # from the engines' logic into the counters' adders (on the ULX3S, one ran from the
        # DMA's realigner through the strobes' sum into the bytes counters).
        events = {}
        for name, increment in increments.items():
            events[name] = Signal(len(Value.cast(increment)), name=f"{name}_event")
            m.d.sync += events[name].eq(Mux(clear, 0, increment))
        if in_memory:
            m.submodules.counter_file = counter_file = CounterFile(
                [len(events[name]) for name in in_memory])
            m.d.comb += [
                counter_file.increments.eq(Cat(events[name] for name in in_memory)),
                counter_file.clear.eq(clear),
                counter_file.read.eq(registers.counter_read),
                counter_file.index.eq(registers.counter_index),
                registers.counter_value.eq(counter_file.value),
            ]
        with m.If(clear):
            m.d.sync += [counter.eq(0) for counter in counters.values()]
            m.d.sync += [error_code.eq(ErrorCode.NONE), error_addr.eq(0)]
        with m.Else():
            m.d.sync += [counter.eq(counter + events[name])
                         for name, counter in counters.items()]
        m.d.comb += [getattr(registers, name).eq(counter) for name, counter in counters.items()]
        m.d.comb += [
            registers.status_idle.eq(~starting & ~running & ~resetting),
            registers.status_busy.eq(starting | running),
            registers.status_error_code.eq(error_code),
            registers.error_addr.eq(error_addr),
            fetcher.program_addr.eq(Cat(C(0, program_low), registers.program_addr_address)),
        ]
        return m

    def _read_mux(self, m, fetch, dma, clear):
        """Merge the fetcher's (ID 1) and the DMA's (ID 0) AXI4 ports onto ``m_axi``.

        Reads: the AR channel is granted from a register, ``owner``, so that neither
        port's ``ARREADY`` depends on the other port's request. The grant passes to the
        other port when it asks and the owner's request has been accepted or is not
        offered (round robin, one cycle to pass); ``clear`` (no request is offered then)
        gives it to the fetcher, so that every run starts alike. R beats are routed by RID.
        Writes: the DMA's.
        """
        bus = self.m_axi
        owner = Signal()            # 1: fetcher
        other_asks = Mux(owner, dma.arvalid, fetch.arvalid)
        with m.If(other_asks & (~bus.arvalid | bus.arready)):
            m.d.sync += owner.eq(~owner)
        with m.If(clear):
            m.d.sync += owner.eq(1)
        fields = ("addr", "len", "size", "burst", "lock", "cache", "prot", "qos")
        for name in fields:
            m.d.comb += getattr(bus, f"ar{name}").eq(
                Mux(owner, getattr(fetch, f"ar{name}"), getattr(dma, f"ar{name}")))
        m.d.comb += [
            bus.arid.eq(owner),
            bus.arvalid.eq(Mux(owner, fetch.arvalid, dma.arvalid)),
            fetch.arready.eq(owner & bus.arready),
            dma.arready.eq(~owner & bus.arready),
        ]
        to_fetch = bus.rid[0]
        for target, selected in ((fetch, to_fetch), (dma, ~to_fetch)):
            m.d.comb += [target.rdata.eq(bus.rdata), target.rresp.eq(bus.rresp),
                         target.rlast.eq(bus.rlast), target.rvalid.eq(bus.rvalid & selected),
                         target.rid.eq(0)]
        m.d.comb += bus.rready.eq(Mux(to_fetch, fetch.rready, dma.rready))
        for name in fields:
            m.d.comb += getattr(bus, f"aw{name}").eq(getattr(dma, f"aw{name}"))
        m.d.comb += [
            bus.awid.eq(0), bus.awvalid.eq(dma.awvalid), dma.awready.eq(bus.awready),
            bus.wdata.eq(dma.wdata), bus.wstrb.eq(dma.wstrb), bus.wlast.eq(dma.wlast),
            bus.wvalid.eq(dma.wvalid), dma.wready.eq(bus.wready),
            dma.bid.eq(0), dma.bresp.eq(bus.bresp), dma.bvalid.eq(bus.bvalid),
            bus.bready.eq(dma.bready),
        ]
