"""hw.fetcher.InstructionChecker, the decoder's legality check, in Amaranth's simulator
against the rules it mirrors (``sw.simulator.check_instruction``): random instructions of
every opcode and illegal ones, with token flags, alignments and every scratchpad,
accumulator and channel range drawn at, just below and just above its limit, each held
past its check's latency (the code must hold too) and some after a check that the next
``start`` cut short, on the default configuration (products in multipliers) and on the iCEBreaker's (products by
shift and add, narrow addresses). Then what the engines' queues keep of the instructions
the check passes (``hw.fetcher.to_queue``), against the fields the instruction set's rules
say each engine uses."""

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from fpga.configs import ICEBREAKER
from hw.config import DEFAULT_CONFIG
from hw.fetcher import InstructionChecker, fetched_layout, from_queue, to_queue
from hw.isa import (CHANNEL_PARAM_BYTES, ENGINE_OF, INSTRUCTION_BITS, Engine, Opcode, decode,
                    encode, slot_bytes)
from hw.registers import ErrorCode
from sw.simulator import check_instruction


INSTRUCTIONS = 2000
FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")


def field_widths(opcode):
    """{field: width} of ``opcode``'s layout, header flags excluded."""
    ones = decode(((1 << INSTRUCTION_BITS) - 1) & ~0xF | opcode.value)[1]
    return {name: value.bit_length() for name, value in ones.items()
            if not name.startswith("header.")}


def edge(rng, limit, used, unit=1):
    """An address whose range of ``used`` bytes ends ``unit`` before, at or after ``limit``
    (not below zero)."""
    return max(0, limit - used + unit * int(rng.integers(-1, 2)))


def random_fields(rng, config, opcode, widths):
    """Fields of ``opcode``: uniform over their widths, or small, or aligned and placed at
    a range's edge."""
    size, cols = config.scratchpad_bytes, config.cols
    act_slot, weight_slot = slot_bytes(config.rows), slot_bytes(cols)

    def draw(width):
        kind = rng.integers(0, 4)
        if kind == 0:
            return int(rng.integers(0, 1 << width))
        if kind == 1:
            return int(rng.integers(0, 4))
        return int(rng.integers(0, min(1 << width, 2 * size + 2)))

    f = {name: draw(width) for name, width in widths.items()}
    aligned = rng.random() < 0.8
    if opcode in (Opcode.LOAD, Opcode.STORE) and rng.random() < 0.7:
        if rng.random() < 0.8:
            f["rows"], f["row_bytes"] = int(rng.integers(0, 9)), int(rng.integers(0, size // 4))
            f["sp_stride"] = int(rng.integers(0, size // 4))
        else:                   # rows as long as the scratchpad
            f["rows"], f["row_bytes"] = int(rng.integers(1, 3)), size - int(rng.integers(0, 2))
            f["sp_stride"] = int(rng.integers(0, 2))
        f["sp_addr"] = edge(rng, size, (f["rows"] - 1) * f["sp_stride"] + f["row_bytes"])
    elif opcode is Opcode.MATMUL and rng.random() < 0.8:
        shape = rng.random()
        if shape < 0.7:         # a few vectors, short strides
            count, act_steps, out_steps = rng.integers(0, 40), rng.integers(0, 4), rng.integers(0, 8)
        elif shape < 0.85:      # two vectors, strides up to the scratchpad's size
            count, act_steps = 2, rng.integers(0, 256)
            out_steps = rng.integers(0, size // weight_slot)
        else:                   # every accumulator row
            count, act_steps, out_steps = config.acc_depth - rng.integers(0, 2), 1, 1
        count = f["count"] = int(count)
        f["act_stride"] = int(act_steps)
        f["out_stride"] = weight_slot * int(out_steps) + (0 if aligned else 1)
        out_bytes = weight_slot * (4 if f["out_int32"] else 1)
        which = rng.integers(0, 5)
        f["weight_addr"] = edge(rng, size, config.rows * weight_slot, weight_slot) \
            if which == 0 else weight_slot * int(rng.integers(0, size // weight_slot // 2))
        f["act_addr"] = edge(rng, size, ((count - 1) * f["act_stride"] + 1) * act_slot, act_slot) \
            if which == 1 else act_slot * int(rng.integers(0, size // act_slot // 2))
        f["out_addr"] = edge(rng, size, (count - 1) * f["out_stride"] + out_bytes, weight_slot) \
            if which == 2 else weight_slot * int(rng.integers(0, size // weight_slot // 2))
        f["acc_addr"] = edge(rng, config.acc_depth, count) if which == 3 \
            else int(rng.integers(0, config.acc_depth))
        f["channel"] = edge(rng, config.channel_depth, 1) if which == 4 \
            else int(rng.integers(0, config.channel_depth))
        if not aligned:
            f[["weight_addr", "act_addr", "out_addr"][rng.integers(0, 3)]] += 1
    elif opcode is Opcode.CONFIG and rng.random() < 0.7:
        f["count"] = int(rng.integers(0, 4))
        f["channel"] = edge(rng, config.channel_depth, f["count"])
        f["sp_addr"] = edge(rng, size, f["count"] * cols * CHANNEL_PARAM_BYTES, weight_slot) + \
            (0 if aligned else 1)
    return {name: value & ((1 << widths[name]) - 1) for name, value in f.items()}


def random_instruction(rng, config):
    """(word, expected ErrorCode) of a random instruction."""
    value = int(rng.integers(0, 16)) if rng.random() < 0.1 else \
        list(Opcode)[rng.integers(0, len(Opcode))].value
    if value not in {opcode.value for opcode in Opcode}:
        word = int(rng.integers(0, 1 << 62)) << 4 | value
        return word, ErrorCode.ILLEGAL_OPCODE
    opcode = Opcode(value)
    widths = field_widths(opcode)
    fields = random_fields(rng, config, opcode, widths)
    flags = {flag: int(rng.random() < 0.15) for flag in FLAGS}
    word = encode(opcode, **fields, **flags)
    expected = check_instruction(config, opcode, decode(word)[1])
    return word, expected


@pytest.mark.parametrize("board", ["default", "icebreaker"])
def test_instruction_checker_matches_the_rules(board, seed):
    config = DEFAULT_CONFIG if board == "default" else ICEBREAKER.config
    rng = np.random.default_rng(seed)
    cases = [random_instruction(rng, config) for _ in range(INSTRUCTIONS)]
    dut = InstructionChecker(config)
    mismatches = []

    # Some checks are cut short by the next instruction's start, and every code is read
    # again while its word holds past the latency.
    interrupted = [(random_instruction(rng, config)[0], int(rng.integers(1, dut.latency)))
                   if rng.random() < 0.2 else None for _ in cases]
    held = [int(rng.integers(0, 4)) for _ in cases]

    async def check(ctx, word, cycles):
        """``word`` from a ``start``, for ``cycles`` cycles."""
        ctx.set(dut.word, word)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(cycles - 1):
            await ctx.tick()

    async def testbench(ctx):
        for (word, expected), cut, extra in zip(cases, interrupted, held):
            if cut is not None:
                await check(ctx, *cut)
            await check(ctx, word, dut.latency)
            for wait in (0, extra):
                for _ in range(wait):
                    await ctx.tick()
                got = ErrorCode(ctx.get(dut.code))
                if got is not expected:
                    mismatches.append(f"0x{word:032x} (+{wait} cycles): {got.name}, "
                                      f"expected {expected.name}")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    codes = {code.name: sum(expected is code for _, expected in cases) for code in ErrorCode}
    print(f"{len(cases)} instructions: {codes}")
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ: {mismatches[:5]}"
    # The draws reach every outcome the checker can give.
    assert all(codes[code.name] for code in (ErrorCode.NONE, ErrorCode.ILLEGAL_OPCODE,
                                             ErrorCode.ILLEGAL_TOKEN, ErrorCode.MISALIGNED,
                                             ErrorCode.SCRATCHPAD_RANGE)), codes


def used_fields(config, opcode, f):
    """The fields of a legal instruction that its engine uses, with the values it uses
    (the instruction set's rules, stated here apart from ``hw.fetcher.checked_fields``):
    a transfer that moves nothing uses no address or stride (and of no rows, no row
    length), one row no stride; a
    ``MATMUL`` of no vectors only its header, one vector no stride, one that does not emit
    no result address; a ``CONFIG`` of no rows no scratchpad address; ``SYNC`` its header.
    Memory addresses and strides count saturated at the address space's end, as the DMA's
    range check takes them."""
    used = {name: value for name, value in f.items() if name.startswith("header.")}
    if opcode in (Opcode.LOAD, Opcode.STORE):
        used["rows"] = f["rows"]
        if f["rows"]:
            used["row_bytes"] = f["row_bytes"]
        if f["rows"] and f["row_bytes"]:
            beyond = 1 << config.addr_width
            used.update(mem_addr=min(f["mem_addr"], beyond), sp_addr=f["sp_addr"])
            if f["rows"] > 1:
                used.update(mem_stride=min(f["mem_stride"], beyond), sp_stride=f["sp_stride"])
    elif opcode is Opcode.MATMUL:
        used["count"] = f["count"]
        if f["count"]:
            used.update({name: f[name] for name in ("weight_addr", "act_addr", "acc_addr",
                                                    "channel", "accumulate", "emit",
                                                    "act_flip", "out_int32")})
            if f["count"] > 1:
                used["act_stride"] = f["act_stride"]
            if f["emit"]:
                used["out_addr"] = f["out_addr"]
                if f["count"] > 1:
                    used["out_stride"] = f["out_stride"]
    elif opcode is Opcode.CONFIG:
        used.update(channel=f["channel"], count=f["count"])
        if f["count"]:
            used["sp_addr"] = f["sp_addr"]
    return used


@pytest.mark.parametrize("board", ["default", "icebreaker"])
def test_queues_keep_what_their_engines_use(board, seed):
    config = DEFAULT_CONFIG if board == "default" else ICEBREAKER.config
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < INSTRUCTIONS:
        word, expected = random_instruction(rng, config)
        if expected is ErrorCode.NONE and word & 0xF != Opcode.END.value:
            cases.append((word, int(rng.integers(0, 1 << config.addr_width))))
    m = Module()
    insn = Signal(fetched_layout(config))
    queued = {engine: Signal(fetched_layout(config), name=f"{engine.name.lower()}_insn")
              for engine in Engine}
    m.d.comb += [queued[engine].eq(from_queue(config, engine, to_queue(config, engine, insn)))
                 for engine in Engine]
    mismatches = []
    narrowed = 0

    async def testbench(ctx):
        nonlocal narrowed
        for word, addr in cases:
            ctx.set(insn.word, word)
            ctx.set(insn.addr, addr)
            opcode, fields = decode(word)
            engine = ENGINE_OF.get(opcode) or Engine(fields["engine"])
            kept_word, kept_addr = ctx.get(queued[engine].word), ctx.get(queued[engine].addr)
            kept = decode(kept_word)[1]
            expected = used_fields(config, opcode, fields)
            wrong = {name: (kept[name], value) for name, value in expected.items()
                     if kept[name] != value}
            if wrong or kept_addr != addr:
                mismatches.append(f"{opcode.name} 0x{word:032x}: {wrong}, address "
                                  f"{kept_addr:#x} for {addr:#x}")
            narrowed += kept_word != word

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    opcodes = {opcode.name: sum(word & 0xF == opcode.value for word, _ in cases)
               for opcode in Opcode}
    print(f"{len(cases)} legal instructions: {opcodes}; {narrowed} narrowed")
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ: {mismatches[:5]}"
