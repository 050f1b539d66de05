"""cocotb testbench of hw.output_stage.OutputStage and hw.serial_output_stage.SerialOutputStage
against verif.golden.requantize.

The pipelined stage takes each beat's parameters with the beat. The serial stage keeps a
table of ``channel_depth`` rows: the testbench writes a row for each of the next
``channel_depth`` beats (byte by byte, the reserved byte random), sends those beats, each
naming its row, and waits for their outputs before it writes the table again."""

import cocotb
import numpy as np
from cocotb.triggers import with_timeout

from hw.output_stage import OutputStage
from hw.serial_output_stage import SerialOutputStage
from verif.stimulus import (channel_param_fields, channel_param_record, edge_accumulators,
                            float32_rounding_edges, golden_requantize, near_tie_cases,
                            product_guard_edges, product_rounding_edges, random_channel_params,
                            tie_cases)
from verif.tb_util import (collect_stream, drive_stream, pack, port, start_clock_and_reset,
                           tb_params, tb_rng, unpack)


def _layouts():
    params = tb_params()
    if params.get("serial"):
        stage = SerialOutputStage(lanes=params["lanes"], channel_depth=params["channel_depth"],
                                  tag_shape=16)
        return params, stage, stage.out.p.shape()
    stage = OutputStage(lanes=params["lanes"], tag_shape=16, units=params.get("units"),
                        stages=params.get("stages", OutputStage.stages))
    return params, stage, stage.out.p.shape()


async def _send_serial(dut, stage, accs, params, rng, idle, stall):
    """Through the serial stage: table rows, then the beats that use them, in turns."""
    lanes, depth = stage.lanes, stage.channel_depth
    write_layout, in_layout = stage.params.p.shape(), stage.inp.p.shape()
    received = []
    for first in range(0, accs.shape[0], depth):
        group = range(first, min(first + depth, accs.shape[0]))
        writes = []
        for row, i in enumerate(group):
            records = [channel_param_record(params, i * lanes + lane, int(rng.integers(256)))
                       for lane in range(lanes)]
            writes += [pack(write_layout, {"index": row, "byte": byte,
                                           "data": [record[byte] for record in records]})
                       for byte in rng.permutation(len(records[0]))]
        await drive_stream(dut.clk, port(dut, "params"), writes, rng, idle)
        beats = [pack(in_layout, {"acc": [int(a) for a in accs[i]], "channel": row,
                                  "tag": i & 0xFFFF}) for row, i in enumerate(group)]
        cocotb.start_soon(drive_stream(dut.clk, port(dut, "inp"), beats, rng, idle))
        await collect_stream(dut.clk, port(dut, "out"), len(received) + len(beats), rng, stall,
                             sink=received)
    return received


async def _run(dut, accs, params, idle, stall):
    """Send rows of ``accs`` (beats × lanes) with per-element params; check every output."""
    tb, stage, out_layout = _layouts()
    lanes = tb["lanes"]
    rng = tb_rng(dut._log)
    # A test can end with its last beat still offered: none is left over for this one.
    for name in ("inp", "params") if tb.get("serial") else ("inp",):
        port(dut, name)[0].value = 0
    await start_clock_and_reset(dut)
    if tb.get("serial"):
        received = await with_timeout(
            _send_serial(dut, stage, accs, params, rng, idle, stall), 100, "ms")
    else:
        in_layout = stage.inp.p.shape()
        beats = [pack(in_layout, {
            "acc": [int(a) for a in accs[i]],
            "params": [channel_param_fields(params, i * lanes + lane) for lane in range(lanes)],
            "tag": i & 0xFFFF,
        }) for i in range(accs.shape[0])]
        cocotb.start_soon(drive_stream(dut.clk, port(dut, "inp"), beats, rng, idle))
        received = await with_timeout(
            collect_stream(dut.clk, port(dut, "out"), len(beats), rng, stall), 10, "ms")
    flat = {key: np.asarray(value).reshape(-1) for key, value in params.items()}
    expected = golden_requantize(accs.reshape(-1), flat).reshape(accs.shape) & 0xFF
    mismatches = 0
    for i, bits in enumerate(received):
        out = unpack(out_layout, bits)
        assert out["tag"] == i & 0xFFFF, f"beat {i}: tag {out['tag']} out of order"
        assert out["acc"] == [int(a) for a in accs[i]], f"beat {i}: accumulator passthrough"
        for lane in range(lanes):
            if out["q"][lane] != expected[i, lane]:
                mismatches += 1
                if mismatches <= 10:
                    k = i * lanes + lane
                    dut._log.error(
                        "beat %d lane %d: acc=%d bias=%d mult=%r zp=%d clamp=[%d,%d] unsigned=%d: "
                        "rtl %d, golden %d", i, lane, accs[i, lane], flat["bias"][k],
                        flat["multiplier"][k], flat["zero_point"][k], flat["clamp_lo"][k],
                        flat["clamp_hi"][k], flat["unsigned"][k], out["q"][lane], expected[i, lane])
    assert mismatches == 0, f"{mismatches} of {accs.size} outputs differ from the golden model"
    dut._log.info("%d outputs bit-exact against the golden model", accs.size)


@cocotb.test()
async def random_full_range(dut):
    """Random accumulators and parameters, with back-pressure and input gaps."""
    tb = tb_params()
    rng = tb_rng(dut._log)
    n = tb["beats"] * tb["lanes"]
    accs = edge_accumulators(rng, n).reshape(-1, tb["lanes"])
    await _run(dut, accs, random_channel_params(rng, n), idle=0.2, stall=0.3)


@cocotb.test()
async def large_accumulators_without_bias(dut):
    """|acc| beyond 2^24, where the int32 -> float32 conversion itself rounds."""
    tb = tb_params()
    rng = tb_rng(dut._log)
    n = tb["beats"] * tb["lanes"]
    magnitude = rng.integers(2**24, 2**31, size=n)
    accs = (magnitude * rng.choice([-1, 1], size=n)).reshape(-1, tb["lanes"])
    params = random_channel_params(rng, n)
    params["bias"][:] = 0
    params["multiplier"] = np.exp2(rng.uniform(-32, -20, size=n)).astype(np.float32)
    await _run(dut, accs, params, idle=0.0, stall=0.0)


def _unclamped_params(rng, multipliers):
    """Random channel parameters with ``multipliers``, no bias, clamps far outside the
    output types and the zero point at the middle of the unsigned type (0 when signed), so
    that an output shows the rounding of its product."""
    params = random_channel_params(rng, len(multipliers))
    params["bias"][:] = 0
    params["multiplier"] = multipliers
    params["clamp_lo"][:] = -1000
    params["clamp_hi"][:] = 1000
    params["zero_point"][:] = np.where(params["unsigned"], 128, 0)
    return params


@cocotb.test()
async def rounding_ties(dut):
    """Products exactly halfway between integers round to even, in both signs."""
    tb = tb_params()
    rng = tb_rng(dut._log)
    n = tb["beats"] * tb["lanes"]
    accs, multipliers = tie_cases(rng, n)
    await _run(dut, accs.reshape(-1, tb["lanes"]), _unclamped_params(rng, multipliers),
               idle=0.1, stall=0.1)


@cocotb.test()
async def near_rounding_ties(dut):
    """Products one bit, at any place below the half, above a tie round up."""
    tb = tb_params()
    rng = tb_rng(dut._log)
    n = 2 * 19 * tb["lanes"]
    accs, multipliers = near_tie_cases(rng, n)
    await _run(dut, accs.reshape(-1, tb["lanes"]), _unclamped_params(rng, multipliers),
               idle=0.1, stall=0.1)


@cocotb.test()
async def clamp_edges(dut):
    """Outputs land on, just inside and just outside every clamp and saturation edge."""
    tb = tb_params()
    rng = tb_rng(dut._log)
    n = tb["beats"] * tb["lanes"]
    params = random_channel_params(rng, n)
    params["bias"][:] = 0
    params["multiplier"][:] = np.float32(1.0)
    edges = np.select([rng.integers(0, 2, size=n) == 0], [params["clamp_lo"]], params["clamp_hi"])
    edges = np.where(rng.integers(0, 3, size=n) == 0,
                     np.where(params["unsigned"], rng.choice([0, 255], size=n),
                              rng.choice([-128, 127], size=n)), edges)
    accs = edges - params["zero_point"] + rng.integers(-1, 2, size=n)
    await _run(dut, accs.reshape(-1, tb["lanes"]), params, idle=0.0, stall=0.5)


@cocotb.test()
async def float32_rounding(dut):
    """The crafted float32 edges that tests/test_golden_onnxruntime.py checks against
    onnxruntime: conversion rounding beyond 2^24 and exact ties, through the bias path."""
    tb = tb_params()
    rng = tb_rng(dut._log)
    targets, multipliers = float32_rounding_edges()
    lanes = tb["lanes"]
    n = -(-len(targets) // lanes) * lanes
    params = random_channel_params(rng, n)
    accs = rng.integers(-2**20, 2**20, size=n)
    params["bias"][:len(targets)] = targets - accs[:len(targets)]
    params["multiplier"][:len(targets)] = multipliers
    params["zero_point"][:] = np.where(params["unsigned"], 128, 0)
    params["clamp_lo"][:] = -1000
    params["clamp_hi"][:] = 1000
    await _run(dut, accs.reshape(-1, lanes), params, idle=0.0, stall=0.0)


@cocotb.test()
async def product_rounding(dut):
    """float32 products that round up only because of their lowest bits, onto an integer
    plus one half plus 2^-16, in both signs: a multiply that lost those bits would round
    the tie to even instead, one below. Some have only one such bit, the product's 16th."""
    tb = tb_params()
    rng = tb_rng(dut._log)
    lanes = tb["lanes"]
    n = 64 * lanes
    accs, multipliers = (np.concatenate(edges) for edges in zip(
        product_rounding_edges(rng, n - 8 * lanes), product_guard_edges(rng, 8 * lanes)))
    params = random_channel_params(rng, n)
    params["bias"][:] = 0
    params["multiplier"] = multipliers
    params["unsigned"] = accs > 0
    params["zero_point"][:] = np.where(accs > 0, 0, 127)
    params["clamp_lo"][:] = -1000
    params["clamp_hi"][:] = 1000
    await _run(dut, accs.reshape(-1, lanes), params, idle=0.1, stall=0.1)
