"""hw.fetcher.InstructionChecker, the decoder's legality check, in Amaranth's simulator
against the rules it mirrors (``sw.simulator.check_instruction``): random instructions of
every opcode and illegal ones, with token flags, alignments and every scratchpad,
accumulator and channel range drawn at, just below and just above its limit, on the
default configuration (products in multipliers) and on the iCEBreaker's (products by
shift and add, narrow addresses)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from fpga.configs import ICEBREAKER
from hw.config import DEFAULT_CONFIG
from hw.fetcher import InstructionChecker
from hw.isa import CHANNEL_PARAM_BYTES, INSTRUCTION_BITS, Opcode, decode, encode, slot_bytes
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
        f["rows"], f["row_bytes"] = int(rng.integers(0, 9)), int(rng.integers(0, size // 4))
        f["sp_stride"] = int(rng.integers(0, size // 4))
        f["sp_addr"] = edge(rng, size, (f["rows"] - 1) * f["sp_stride"] + f["row_bytes"])
    elif opcode is Opcode.MATMUL and rng.random() < 0.8:
        count = f["count"] = int(rng.integers(0, 40))
        f["act_stride"] = int(rng.integers(0, 4))
        f["out_stride"] = weight_slot * int(rng.integers(0, 8)) + (0 if aligned else 1)
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

    async def testbench(ctx):
        for word, expected in cases:
            ctx.set(dut.word, word)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick().repeat(dut.latency - 1)
            got = ErrorCode(ctx.get(dut.code))
            if got is not expected:
                mismatches.append(f"0x{word:032x}: {got.name}, expected {expected.name}")

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
