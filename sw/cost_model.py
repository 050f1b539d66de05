"""Cost model of NPU programs: predicted cycles and DRAM bytes, without RTL.

:func:`predict` replays a program's instruction list (``sw.asm.Program``, as
``sw.kernels.emit_gemm``, ``emit_conv`` and ``emit_add`` build it) through a timing model
of the hardware:

* **fetch and decode**: in order, one instruction every ``latency + 1`` cycles of the
  configuration's ``hw.fetcher.InstructionChecker`` (the decoder holds each instruction
  while it checks it; the prefetching ``hw.fetcher.InstructionFetcher`` keeps it fed) or
  ``16 / bus bytes`` cycles if the bus is slower, held back while the target engine's
  queue (``queue_depth``) is full;
* **load / store**: descriptors in the order the engines issue them, on a DMA shared by
  both engines (``hw.dma``): ``ceil(bytes / bus bytes)`` data cycles per row,
  ``BURST_OVERHEAD`` per AXI burst and ``WRITE_ROW_SETUP`` per row written; a
  descriptor's data follows the previous one's in the same direction, while a change of direction waits for the previous
  descriptor's completion (``READ_COMPLETION`` / ``WRITE_COMPLETION`` after its data);
* **compute**: a MATMUL streams ``count`` activation vectors, one per cycle, after its
  ``rows`` weight rows have entered the array; weight rows of consecutive tiles follow
  each other ``WEIGHT_GAP`` cycles apart, into the weight bank the last-but-one tile
  used once that tile has left every column (the interlocks of ``hw.systolic_array``);
  an emitting MATMUL completes the scratchpad's read latency, the array's latency and the
  configuration's output-stage latency (:func:`drain`) cycles after its last vector, and
  the next MATMUL waits for it (``hw.engines.ComputeEngine`` ordering); the result rows
  of an element-wise add (``predict(..., add=True)``) pass the add stage, one every
  ``cols / add_circuits`` cycles, and its latency (``hw.add_stage.AddStage``);
* **tokens**: each pop waits for the matching push (FIFO per counter), as the
  ``sw.simulator`` does, so load, compute and store overlap through the double buffers
  exactly as far as the program allows.

DRAM bytes are exact: the sum of LOAD and STORE sizes (the hardware counters count the
same). Cycle constants are calibrated against the RTL by ``make bench``.
"""

import functools
from collections import deque
from dataclasses import dataclass, fields

from hw.add_stage import AddStage
from hw.axi import BOUNDARY, MAX_BURST_BEATS
from hw.engines import ComputeEngine
from hw.fetcher import InstructionChecker
from hw.matrix_unit import config_output_stage_latency
from hw.scratchpad import Scratchpad
from hw.systolic_array import SystolicArray
from hw.isa import ENGINE_OF, INSTRUCTION_BYTES, Engine, Opcode, decode


__all__ = ["Prediction", "predict", "predict_gemm", "compulsory_bytes"]


#: Cycles from a DMA descriptor's data to its completion: reads (memory → scratchpad) and
#: writes (every B response back).
READ_COMPLETION = 8
WRITE_COMPLETION = 13
#: Cycles a transfer instruction spends in its engine besides the DMA (start, complete).
TRANSFER_OVERHEAD = 2
#: Cycles from a transfer's start to its first burst on an idle DMA: the descriptor queue
#: and the walker's range checks (``hw.dma``: MEASURE takes three cycles).
DESCRIPTOR_SETUP = 4
#: Cycles each AXI burst adds to its data beats with a memory serving one burst per
#: direction at a time.
BURST_OVERHEAD = 2
#: Cycles each row of a STORE adds to its bursts. A LOAD's rows add none: the DMA asks
#: for a row's data while the previous row's arrives (calibrated on the bench; with a
#: cycle per read row too, the 2,304 rows of 27 bytes of MobileNetV1's stem were
#: predicted 14% slow).
WRITE_ROW_SETUP = 1
#: Cycles between the weight rows of consecutive tiles on the weight read path.
WEIGHT_GAP = 2


@functools.cache
def drain(config):
    """Cycles from an emitting tile's last vector read to its tokens: the scratchpad's read
    latency, the array's latency, the output stage's pipeline and the compute engine's
    result FIFO. (An output stage with fewer lanes than columns takes longer per result,
    which is not modelled; a serial output stage counts here with its longest beat.)"""
    array = SystolicArray.latency_of(config.rows, config.cols, config.registered_products)
    return (Scratchpad.read_latency_of(config) + array + config_output_stage_latency(config) +
            ComputeEngine.result_latency_of(config))


@functools.cache
def decode_cycles(config):
    """Cycles the decoder spends on each instruction: the legality check's latency + 1."""
    return InstructionChecker.latency_of(config) + 1


@functools.cache
def fetch_cycles(config):
    """Cycles between instructions entering their queues, with the queues free: the
    decoder's, while the fetcher reads ahead, or with ``config.fetch_depth`` 1 the read of
    each instruction (a burst of its beats) then its check."""
    beats = INSTRUCTION_BYTES // (config.bus_width // 8)
    if config.fetch_depth == 1:
        return beats + BURST_OVERHEAD + 1 + decode_cycles(config)
    return max(decode_cycles(config), beats)


# Engines by their values: :func:`predict` runs once per plan the compiler weighs, over
# hundreds of thousands of instructions per network, and hashing an enum member is slow.
_LOAD, _COMPUTE, _STORE = Engine.LOAD.value, Engine.COMPUTE.value, Engine.STORE.value
_ENGINES = (_LOAD, _COMPUTE, _STORE)
_NEIGHBOURS = {_LOAD: (None, _COMPUTE), _COMPUTE: (_LOAD, _STORE), _STORE: (_COMPUTE, None)}
_ENGINE_OF = {opcode: engine.value for opcode, engine in ENGINE_OF.items()}


@dataclass
class Prediction:
    cycles: int
    dma_read_bytes: int
    dma_write_bytes: int
    mac_cycles: int
    fetch_cycles: int
    dma_cycles: int

    def __add__(self, other):
        """The prediction of two programs run one after the other."""
        return Prediction(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def _instructions(program):
    out = []
    for word in program.words:
        opcode, fields = decode(word)
        if opcode is Opcode.END:
            break
        engine = fields["engine"] if opcode is Opcode.SYNC else _ENGINE_OF[opcode]
        out.append((opcode, engine, fields))
    return out


def predict(config, program, add=False):
    """A :class:`Prediction` for ``program`` (a ``sw.asm.Program``) on ``config``; ``add``:
    the program is an element-wise add's (``sw.kernels.emit_add``), whose emitting
    MATMULs' result rows pass the add stage, or a list of ``[start, end)`` ranges of the
    instructions of the adds in it."""
    if add is True:
        add = [(0, len(program))]
    add_emit = {i for start, end in (add or []) for i in range(start, end)}
    R, C = config.rows, config.cols
    bus = config.bus_width // 8
    fetch_cost = fetch_cycles(config)
    emit_drain = drain(config)
    insns = _instructions(program)
    per_engine = {e: [i for i, (_, engine, _) in enumerate(insns) if engine == e]
                  for e in _ENGINES}
    position = {i: k for e in _ENGINES for k, i in enumerate(per_engine[e])}
    fetched = [None] * len(insns)        # cycle the instruction enters its queue
    dequeued = [None] * len(insns)       # cycle it leaves its queue
    tokens = {(a, b): deque() for a in _ENGINES for b in _ENGINES}
    free = {e: 0 for e in _ENGINES}
    dma_free = 0                         # cycle the DMA's data path is free
    dma_done = 0                         # completion of the last descriptor
    dma_direction = None
    weights_free = 0                     # cycle the weight path may start the next tile
    bank_free = [0, 0]                   # cycle each weight bank may be rewritten
    bank = 0
    array_free = 0                       # cycle the next vector may enter the array
    outstanding = 0                      # completion cycle of the last emitting MATMUL
    pending_emit = False
    read = written = mac_cycles = dma_cycles = 0
    heads = {e: 0 for e in _ENGINES}
    next_fetch, fetch_time = 0, 0

    while True:
        progressed = False
        while next_fetch < len(insns):
            engine = insns[next_fetch][1]
            k = position[next_fetch]
            gate = 0
            if k >= config.queue_depth:
                earlier = per_engine[engine][k - config.queue_depth]
                if dequeued[earlier] is None:
                    break
                gate = dequeued[earlier]
            fetch_time = max(fetch_time + fetch_cost, gate + 1)
            fetched[next_fetch] = fetch_time
            next_fetch += 1
            progressed = True
        while True:
            # The engines' head instructions run in the order of their start cycles, so
            # that the DMA takes descriptors in the order the engines issue them.
            ready = []
            for engine in _ENGINES:
                if heads[engine] == len(per_engine[engine]):
                    continue
                index = per_engine[engine][heads[engine]]
                if fetched[index] is None:
                    continue
                f = insns[index][2]
                prev, nxt = _NEIGHBOURS[engine]
                need = [(prev, engine)] if f["header.pop_prev"] else []
                need += [(nxt, engine)] if f["header.pop_next"] else []
                if any(not tokens[key] for key in need):
                    continue
                start = max([fetched[index] + 1, free[engine]] + [tokens[key][0] for key in need])
                ready.append((start, engine, index, need))
            if not ready:
                break
            start, engine, index, need = min(ready)
            for key in need:
                tokens[key].popleft()
            opcode, _, f = insns[index]
            prev, nxt = _NEIGHBOURS[engine]
            if opcode in (Opcode.LOAD, Opcode.STORE):
                size = f["rows"] * f["row_bytes"]
                bursts = -(-f["row_bytes"] // min(MAX_BURST_BEATS * bus, BOUNDARY))
                setup = WRITE_ROW_SETUP if opcode is Opcode.STORE else 0
                beats = f["rows"] * (-(-f["row_bytes"] // bus) + setup + BURST_OVERHEAD * bursts)
                # Same direction: the data follows the previous descriptor's; a change
                # of direction waits for its completion.
                available = dma_free if opcode is dma_direction else dma_done
                begin = max(start + DESCRIPTOR_SETUP, available)
                dma_free = begin + beats
                dma_done = dma_free + (READ_COMPLETION if opcode is Opcode.LOAD
                                       else WRITE_COMPLETION)
                dma_direction = opcode
                dma_cycles += beats
                done = dma_done + TRANSFER_OVERHEAD
                if opcode is Opcode.LOAD:
                    read += size
                else:
                    written += size
                dequeued[index] = done
            elif opcode is Opcode.MATMUL:
                count = f["count"]
                dispatch = max(start, outstanding if pending_emit else 0)
                # The tile's weights load into the bank its last-but-one tile used,
                # once that tile has left every column, after the previous tile's.
                loading = max(dispatch, weights_free, bank_free[bank])
                weights_free = loading + R + WEIGHT_GAP
                begin = max(array_free, loading + R)
                array_free = begin + count
                bank_free[bank] = array_free - 1 + C
                bank ^= 1
                mac_cycles += count
                if not f["emit"]:
                    done = array_free
                elif index in add_emit:
                    steps, latency = AddStage.timing(config.cols, config.add_circuits)
                    done = max(array_free, begin + count * steps) + emit_drain + latency
                else:
                    done = array_free + emit_drain
                pending_emit = bool(f["emit"])
                outstanding = max(outstanding, done)
                dequeued[index] = start + 1
            elif opcode is Opcode.CONFIG:
                begin = max(start, outstanding)
                done = begin + f["count"] * 16 * 2 + 2
                outstanding = done
                dequeued[index] = done
            else:               # SYNC
                done = max(start, outstanding) + 1 if engine == _COMPUTE else start + 1
                dequeued[index] = done
            free[engine] = dequeued[index]
            if f["header.push_prev"]:
                tokens[(engine, prev)].append(done + 1)
            if f["header.push_next"]:
                tokens[(engine, nxt)].append(done + 1)
            heads[engine] += 1
            progressed = True
        if next_fetch == len(insns) and all(heads[e] == len(per_engine[e]) for e in _ENGINES):
            break
        if not progressed:
            raise ValueError("the program deadlocks")
    finish = max([fetch_time, outstanding, dma_done] + [d for d in dequeued if d is not None])
    return Prediction(cycles=int(finish), dma_read_bytes=read, dma_write_bytes=written,
                      mac_cycles=mac_cycles, fetch_cycles=fetch_cost * len(insns),
                      dma_cycles=dma_cycles)


def predict_gemm(config, layer):
    """:func:`predict` for one ``sw.kernels.GemmLayer``, compiled with ``emit_gemm``."""
    from sw.kernels import emit_gemm

    program = emit_gemm(config, layer)
    program.end()
    return predict(config, program)


def compulsory_bytes(inputs, weights, outputs):
    """DRAM bytes with every input, weight and output byte moved exactly once."""
    return inputs + weights + outputs
