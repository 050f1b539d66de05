"""Helpers shared by every cocotb testbench: parameters, seeds, clocks and payloads."""

import json
import os

import numpy as np
from amaranth.lib import data
from amaranth.hdl import Shape

__all__ = ["tb_params", "tb_rng", "start_clock_and_reset", "pack", "unpack", "port",
           "drive_stream", "collect_stream"]


def tb_params():
    """The parameters ``verif.runner.simulate`` passed to this testbench."""
    return json.loads(os.environ.get("NPU_TB", "{}"))


def tb_rng(log=None):
    """A NumPy generator for the running test, seeded from cocotb's per-test seed.

    cocotb derives each test's seed from the regression's ``COCOTB_RANDOM_SEED`` (which
    pytest's ``--seed`` sets), so that seed, printed here, replays the whole run.
    """
    import cocotb

    regression_seed = os.environ.get("COCOTB_RANDOM_SEED", "?")
    (log or cocotb.log).info("random seed %s (rerun with --seed %s)", regression_seed,
                             regression_seed)
    return np.random.default_rng(int(cocotb.RANDOM_SEED) & (2**64 - 1))


async def start_clock_and_reset(dut, cycles=2):
    """Start a 10 ns clock on ``dut.clk`` and hold ``dut.rst`` for ``cycles`` edges."""
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import RisingEdge

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


def pack(shape, value):
    """Pack a Python value into the integer bit pattern of an Amaranth shape.

    ``value`` is an int for a plain shape, a dict for a struct layout and a sequence (or
    NumPy array) for an array layout; nested layouts nest the same way.
    """
    if isinstance(shape, data.Layout):
        bits = 0
        for key, field in shape:
            bits |= pack(field.shape, value[key]) << field.offset
        return bits
    width = Shape.cast(shape).width
    return int(value) & ((1 << width) - 1)


def unpack(shape, bits):
    """The inverse of :func:`pack`: dicts for structs, lists for arrays, ints otherwise."""
    bits = int(bits)
    if isinstance(shape, data.ArrayLayout):
        return [unpack(field.shape, bits >> field.offset) for _, field in shape]
    if isinstance(shape, data.Layout):
        return {key: unpack(field.shape, bits >> field.offset) for key, field in shape}
    shape = Shape.cast(shape)
    bits &= (1 << shape.width) - 1
    if shape.signed and bits >> (shape.width - 1):
        bits -= 1 << shape.width
    return bits


def port(dut, name):
    """The (valid, payload, ready) handles of stream ``name`` on an Amaranth top level."""
    return (getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__payload"),
            getattr(dut, f"{name}__ready", None))


async def drive_stream(clk, handles, beats, rng, idle=0.0):
    """Send ``beats`` (ints) on a stream, idling with probability ``idle`` between beats.

    Inputs change on the falling edge and handshakes are sampled in the read-only phase
    before the next rising edge. ``valid`` never drops before ``ready``.
    """
    from cocotb.triggers import FallingEdge, ReadOnly

    valid, payload, ready = handles
    for beat in beats:
        await FallingEdge(clk)
        while idle and rng.random() < idle:
            valid.value = 0
            await FallingEdge(clk)
        valid.value = 1
        payload.value = beat
        while True:
            await ReadOnly()
            if ready.value:
                break
            await FallingEdge(clk)
    await FallingEdge(clk)
    valid.value = 0


async def collect_stream(clk, handles, count, rng, stall=0.0, sink=None, max_cycles=10**7):
    """Receive ``count`` beats, with ``ready`` low with probability ``stall`` each cycle.

    Appends each payload (an int) to ``sink`` and returns it; fails after ``max_cycles``.
    """
    from cocotb.triggers import FallingEdge, ReadOnly

    valid, payload, ready = handles
    sink = [] if sink is None else sink
    for _ in range(max_cycles):
        if len(sink) >= count:
            break
        await FallingEdge(clk)
        if ready is not None:
            ready.value = int(not (stall and rng.random() < stall))
        await ReadOnly()
        if valid.value and (ready is None or ready.value):
            sink.append(payload.value.to_unsigned())
    else:
        raise AssertionError(f"timeout: {len(sink)} of {count} beats after {max_cycles} cycles")
    return sink
