"""Instruction-level NumPy simulator of the whole NPU: the golden model of the hardware.

It executes the same program binary on a memory image and leaves memory bit-identical to
the RTL's. Instructions are fetched in order into one bounded queue per engine (as the
hardware's fetcher does), and the engines execute them in dataflow order through the
dependency-token counters, so a program that deadlocks in hardware (for example a token
that can never arrive, or a queue that fills before its tokens' producer is fetched)
deadlocks here too, with the same error code and faulting address.
"""

from dataclasses import dataclass, field

import numpy as np

from hw.config import NPUConfig
from hw.isa import (CHANNEL_PARAM_BYTES, ENGINE_OF, INSTRUCTION_BYTES, Engine, Opcode, decode,
                    slot_bytes)
from hw.registers import ErrorCode
from verif.golden import add_output, requantize


__all__ = ["NPUSimulator", "RunResult", "NPUError", "check_instruction",
           "CHANNEL_PARAM_DTYPE", "CHANNEL_ADD_DTYPE", "pack_channel_params",
           "channel_param_records", "pack_add_params"]

class NPUError(Exception):
    def __init__(self, code, address):
        self.code, self.address = ErrorCode(code), address
        super().__init__(f"{self.code.name} at instruction 0x{address:08x}")


@dataclass
class RunResult:
    error: ErrorCode = ErrorCode.NONE
    error_addr: int = 0
    instructions: int = 0
    mac_cycles: int = 0
    dma_read_bytes: int = 0
    dma_write_bytes: int = 0
    counters: dict = field(default_factory=dict)


# Token counters, named (from, to).
_NEIGHBOURS = {
    Engine.LOAD:    (None, Engine.COMPUTE),
    Engine.COMPUTE: (Engine.LOAD, Engine.STORE),
    Engine.STORE:   (Engine.COMPUTE, None),
}


def check_instruction(config, opcode, f):
    """The ErrorCode the decoder raises for a well-formed opcode, or ``ErrorCode.NONE``."""
    engine = ENGINE_OF.get(opcode)
    if opcode is Opcode.SYNC:
        if f["engine"] > Engine.STORE.value:
            return ErrorCode.ILLEGAL_OPCODE
        engine = Engine(f["engine"])
    if engine is None:
        if any(f[f"header.{flag}"] for flag in ("pop_prev", "pop_next", "push_prev", "push_next")):
            return ErrorCode.ILLEGAL_TOKEN
        return ErrorCode.NONE
    prev, nxt = _NEIGHBOURS[engine]
    if (prev is None and (f["header.pop_prev"] or f["header.push_prev"])) or \
            (nxt is None and (f["header.pop_next"] or f["header.push_next"])):
        return ErrorCode.ILLEGAL_TOKEN
    size = config.scratchpad_bytes
    act_slot, weight_slot = slot_bytes(config.rows), slot_bytes(config.cols)
    if opcode in (Opcode.LOAD, Opcode.STORE):
        if f["rows"] and f["row_bytes"]:
            end = f["sp_addr"] + (f["rows"] - 1) * f["sp_stride"] + f["row_bytes"]
            if end > size:
                return ErrorCode.SCRATCHPAD_RANGE
    elif opcode is Opcode.MATMUL:
        if f["weight_addr"] % weight_slot or f["act_addr"] % act_slot or \
                f["out_addr"] % weight_slot or f["out_stride"] % weight_slot:
            return ErrorCode.MISALIGNED
        count = f["count"]
        if count:
            out_bytes = weight_slot * (4 if f["out_int32"] else 1)
            if f["weight_addr"] + config.rows * weight_slot > size or \
                    f["act_addr"] + ((count - 1) * f["act_stride"] + 1) * act_slot > size or \
                    f["acc_addr"] + count > config.acc_depth or \
                    f["channel"] >= config.channel_depth or \
                    (f["emit"] and f["out_addr"] + (count - 1) * f["out_stride"] + out_bytes > size):
                return ErrorCode.SCRATCHPAD_RANGE
    elif opcode is Opcode.CONFIG:
        if f["sp_addr"] % weight_slot:
            return ErrorCode.MISALIGNED
        if f["channel"] + f["count"] > config.channel_depth or \
                f["sp_addr"] + f["count"] * config.cols * CHANNEL_PARAM_BYTES > size:
            return ErrorCode.SCRATCHPAD_RANGE
    return ErrorCode.NONE


class NPUSimulator:
    """The NPU's architectural state and an interpreter of its programs."""

    def __init__(self, config=NPUConfig()):
        self.config = config
        self.reset()

    def reset(self):
        c = self.config
        self.scratchpad = np.zeros(c.scratchpad_bytes, np.uint8)
        self.accumulators = np.zeros((c.acc_depth, c.cols), np.int32)
        self.channel_table = {
            "bias": np.zeros((c.channel_depth, c.cols), np.int64),
            "multiplier": np.zeros((c.channel_depth, c.cols), np.float32),
            "zero_point": np.zeros((c.channel_depth, c.cols), np.int64),
            "clamp_lo": np.zeros((c.channel_depth, c.cols), np.int64),
            "clamp_hi": np.zeros((c.channel_depth, c.cols), np.int64),
            "unsigned": np.zeros((c.channel_depth, c.cols), bool),
            "add": np.zeros((c.channel_depth, c.cols), bool),
            "fixed": np.zeros((c.channel_depth, c.cols), np.float32),
            "ratio_x": np.zeros((c.channel_depth, c.cols), np.float32),
            "ratio_y": np.zeros((c.channel_depth, c.cols), np.float32),
            "add_lo": np.zeros((c.channel_depth, c.cols), np.int64),
            "add_hi": np.zeros((c.channel_depth, c.cols), np.int64),
        }

    # --- Program execution ----------------------------------------------------------
    def run(self, memory, program_addr, max_instructions=1 << 20):
        """Run the program at ``program_addr`` on ``memory`` (a writable uint8 array).

        Returns a :class:`RunResult`; an error stops the run as it stops the hardware.
        """
        result = RunResult()
        queues = {engine: [] for engine in Engine}
        tokens = {(a, b): 0 for a in Engine for b in Engine}
        pc, fetching = program_addr, True
        try:
            while True:
                progressed = False
                # Fetch in order until an engine queue is full or END.
                while fetching:
                    word = int.from_bytes(bytes(memory[pc:pc + INSTRUCTION_BYTES]), "little")
                    try:
                        opcode, fields = decode(word)
                    except ValueError:
                        raise NPUError(ErrorCode.ILLEGAL_OPCODE, pc) from None
                    code = check_instruction(self.config, opcode, fields)
                    if code is not ErrorCode.NONE:
                        raise NPUError(code, pc)
                    if opcode is Opcode.END:
                        fetching = False
                        progressed = True
                        break
                    engine = Engine(fields["engine"]) if opcode is Opcode.SYNC else ENGINE_OF[opcode]
                    if len(queues[engine]) >= self.config.queue_depth:
                        break
                    queues[engine].append((pc, opcode, fields))
                    pc += INSTRUCTION_BYTES
                    progressed = True
                    result.instructions += 1
                    if result.instructions > max_instructions:
                        raise RuntimeError("program exceeds max_instructions")
                # Execute every engine whose head instruction has its tokens.
                for engine in Engine:
                    while queues[engine]:
                        address, opcode, fields = queues[engine][0]
                        prev, nxt = _NEIGHBOURS[engine]
                        need = []
                        if fields["header.pop_prev"]:
                            need.append((prev, engine))
                        if fields["header.pop_next"]:
                            need.append((nxt, engine))
                        if any(tokens[key] == 0 for key in need):
                            break
                        for key in need:
                            tokens[key] -= 1
                        self._execute(opcode, fields, memory, result)
                        if fields["header.push_prev"]:
                            tokens[(engine, prev)] += 1
                        if fields["header.push_next"]:
                            tokens[(engine, nxt)] += 1
                        queues[engine].pop(0)
                        progressed = True
                if not fetching and not any(queues.values()):
                    return result
                if not progressed:
                    blocked = min(queue[0][0] for queue in queues.values() if queue)
                    raise NPUError(ErrorCode.DEADLOCK, blocked)
        except NPUError as error:
            result.error, result.error_addr = error.code, error.address
            return result

    # --- Instructions ---------------------------------------------------------------
    def _execute(self, opcode, f, memory, result):
        if opcode is Opcode.LOAD:
            for r in range(f["rows"]):
                src = f["mem_addr"] + r * f["mem_stride"]
                dst = f["sp_addr"] + r * f["sp_stride"]
                self.scratchpad[dst:dst + f["row_bytes"]] = memory[src:src + f["row_bytes"]]
            result.dma_read_bytes += f["rows"] * f["row_bytes"]
        elif opcode is Opcode.STORE:
            for r in range(f["rows"]):
                src = f["sp_addr"] + r * f["sp_stride"]
                dst = f["mem_addr"] + r * f["mem_stride"]
                memory[dst:dst + f["row_bytes"]] = self.scratchpad[src:src + f["row_bytes"]]
            result.dma_write_bytes += f["rows"] * f["row_bytes"]
        elif opcode is Opcode.MATMUL:
            self._matmul(f, result)
        elif opcode is Opcode.CONFIG:
            self._config(f)

    def _matmul(self, f, result):
        c = self.config
        R, C, count = c.rows, c.cols, f["count"]
        if not count:
            return
        act_slot, weight_slot = slot_bytes(R), slot_bytes(C)
        sp = self.scratchpad
        weights = np.stack([sp[f["weight_addr"] + k * weight_slot:][:C] for k in range(R)])
        acts = np.stack([sp[f["act_addr"] + m * f["act_stride"] * act_slot:][:R]
                         for m in range(count)])
        if f["act_flip"]:
            acts = acts ^ 0x80
        partial = acts.view(np.int8).astype(np.int64) @ weights.view(np.int8).astype(np.int64)
        rows = slice(f["acc_addr"], f["acc_addr"] + count)
        total = partial + (self.accumulators[rows].astype(np.int64) if f["accumulate"] else 0)
        total = total.astype(np.int64).astype(np.int32)
        result.mac_cycles += count
        if not f["emit"]:
            self.accumulators[rows] = total
            return
        t = {key: value[f["channel"]] for key, value in self.channel_table.items()}
        for m in range(count):
            out = f["out_addr"] + m * f["out_stride"]
            if f["out_int32"]:
                row = np.frombuffer(total[m].astype("<i4").tobytes(), np.uint8)
                for s in range(4):
                    sp[out + s * weight_slot:][:C] = row[s * C:(s + 1) * C]
            else:
                q = requantize(total[m], t["bias"], t["multiplier"], t["zero_point"],
                               t["clamp_lo"], t["clamp_hi"], t["unsigned"])
                if t["add"].any():
                    q = np.where(t["add"], add_output(total[m], t["fixed"], t["ratio_x"],
                                                      t["ratio_y"], t["add_lo"], t["add_hi"],
                                                      t["unsigned"]), q)
                sp[out:out + C] = (q & 0xFF).astype(np.uint8)

    def _config(self, f):
        C, slot = self.config.cols, slot_bytes(self.config.cols)
        size = f["count"] * CHANNEL_PARAM_BYTES * slot
        raw = self.scratchpad[f["sp_addr"]:f["sp_addr"] + size].reshape(f["count"], CHANNEL_PARAM_BYTES, slot)
        records = np.ascontiguousarray(raw[:, :, :C].transpose(0, 2, 1))
        entries = np.frombuffer(records.tobytes(), dtype=CHANNEL_PARAM_DTYPE).reshape(f["count"], C)
        rows = slice(f["channel"], f["channel"] + f["count"])
        table = self.channel_table
        table["bias"][rows] = entries["bias"]
        table["multiplier"][rows] = entries["multiplier"]
        table["zero_point"][rows] = entries["zero_point"]
        table["clamp_lo"][rows] = entries["clamp_lo"]
        table["clamp_hi"][rows] = entries["clamp_hi"]
        table["unsigned"][rows] = (entries["flags"] & 1).astype(bool)
        adds = np.frombuffer(records.tobytes(), dtype=CHANNEL_ADD_DTYPE).reshape(f["count"], C)
        table["add"][rows] = (entries["flags"] & 2).astype(bool) & self.config.elementwise_add
        for key in ("fixed", "ratio_x", "ratio_y"):
            table[key][rows] = adds[key]
        signed = ~table["unsigned"][rows]
        for key in ("lo", "hi"):
            table[f"add_{key}"][rows] = np.where(signed, adds[key].astype(np.int8), adds[key])


#: One channel's parameters as they sit in memory (:data:`hw.isa.CHANNEL_PARAM_BYTES`).
CHANNEL_PARAM_DTYPE = np.dtype([("bias", "<i4"), ("multiplier", "<f4"), ("zero_point", "<i2"),
                                ("clamp_lo", "<i2"), ("clamp_hi", "<i2"), ("flags", "<u2")])
#: The same bytes in the output stage's add mode (flags bit 1; ``hw.add_stage``): the
#: clamp bounds are bytes of the output type.
CHANNEL_ADD_DTYPE = np.dtype([("fixed", "<f4"), ("ratio_x", "<f4"), ("ratio_y", "<f4"),
                              ("lo", "u1"), ("hi", "u1"), ("flags", "<u2")])
assert CHANNEL_PARAM_DTYPE.itemsize == CHANNEL_ADD_DTYPE.itemsize == CHANNEL_PARAM_BYTES


def pack_channel_params(config, params):
    """Scratchpad bytes of channel-parameter rows for CONFIG (transposed, see hw.isa.Config).

    ``params``: dict of per-channel arrays (bias, multiplier, zero_point, clamp_lo,
    clamp_hi, unsigned); the last table row is padded with zero records.
    """
    C = config.cols
    count = len(params["bias"])
    records = np.zeros(-(-count // C) * C, CHANNEL_PARAM_DTYPE)
    records[:count] = channel_param_records(params)
    return _transposed(config, records)


def channel_param_records(params):
    """The records (:data:`CHANNEL_PARAM_DTYPE`) of ``params``, a dict of per-channel
    arrays (bias, multiplier, zero_point, clamp_lo, clamp_hi, unsigned)."""
    records = np.zeros(len(params["bias"]), CHANNEL_PARAM_DTYPE)
    for key in ("bias", "multiplier", "zero_point", "clamp_lo", "clamp_hi"):
        records[key] = params[key]
    records["flags"] = np.asarray(params["unsigned"], np.uint16) & 1
    return records


def pack_add_params(config, count, fixed, ratio_x, ratio_y, clamp_lo, clamp_hi, unsigned):
    """Scratchpad bytes of channel-parameter rows for CONFIG in the output stage's add mode
    (``verif.golden.add_output``): ``count`` channels with the same float32 ``fixed``,
    ``ratio_x`` and ``ratio_y``, clamp bounds in the output type, and its signedness."""
    C = config.cols
    n = -(-count // C) * C
    records = np.zeros(n, CHANNEL_ADD_DTYPE)
    records["fixed"][:count], records["ratio_x"][:count] = fixed, ratio_x
    records["ratio_y"][:count] = ratio_y
    records["lo"][:count], records["hi"][:count] = clamp_lo & 0xFF, clamp_hi & 0xFF
    records["flags"][:count] = 2 | int(bool(unsigned))
    return _transposed(config, records)


def _transposed(config, records):
    """CONFIG's layout of channel records: one byte of every channel per weight slot."""
    C, slot = config.cols, slot_bytes(config.cols)
    n = len(records)
    raw = np.frombuffer(records.tobytes(), np.uint8).reshape(n // C, C, CHANNEL_PARAM_BYTES)
    out = np.zeros((n // C, CHANNEL_PARAM_BYTES, slot), np.uint8)
    out[:, :, :C] = raw.transpose(0, 2, 1)
    return out.reshape(-1)
