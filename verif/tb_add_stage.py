"""cocotb testbench of hw.add_stage.AddStage: its add-mode lanes, requantized as the output
stage does (``verif.golden.requantize``), against ``verif.golden.add_output``; its other
lanes unchanged."""

import cocotb
import numpy as np
from cocotb.triggers import with_timeout

from hw.add_stage import AddStage
from verif.golden import add_output, requantize
from verif.stimulus import (add_operands, add_tie_cases, channel_param_fields,
                            edge_accumulators, random_add_params, random_channel_params)
from verif.tb_util import (collect_stream, drive_stream, pack, port, start_clock_and_reset,
                           tb_params, tb_rng, unpack)


def _add_fields(params, index):
    """Lane ``index`` of :func:`random_add_params` as ``channel_params`` fields."""
    bits = {key: int(np.float32(params[key][index]).view(np.uint32))
            for key in ("fixed", "ratio_x", "ratio_y")}
    lo, hi = int(params["clamp_lo"][index]) & 0xFF, int(params["clamp_hi"][index]) & 0xFF
    return {"bias": bits["fixed"], "multiplier": bits["ratio_x"],
            "zero_point": bits["ratio_y"] & 0xFFFF, "clamp_lo": bits["ratio_y"] >> 16,
            "clamp_hi": lo | hi << 8, "unsigned_output": int(params["unsigned"][index]),
            "add_mode": 1}


def _shared_records(rng, beats, lanes, depth):
    """Runs of 1 to ``depth`` beats that add up to ``beats``, and for each lane of each
    beat the index of the record it uses: its run's first beat's."""
    runs = []
    while beats:
        runs.append(min(beats, int(rng.integers(1, depth + 1))))
        beats -= runs[-1]
    first = np.repeat(np.cumsum([0] + runs[:-1]), runs)
    return runs, (first[:, None] * lanes + np.arange(lanes)).ravel()


async def _run(dut, runs, accs, adding, add_params, requant_params, idle):
    """Send ``accs`` in beats, lane ``k`` in the add mode where ``adding[k]``; check every
    lane of every output beat. The beats go in ``runs``, each once the run before has
    left, as an emitting MATMUL's beats do (they share a channel row: the records of a
    run's beats must be the same)."""
    tb = tb_params()
    lanes = tb["lanes"]
    rng = tb_rng(dut._log)
    layout = AddStage(lanes, tb["circuits"], tag_shape=16).inp.p.shape()
    n = len(accs)
    fields = [_add_fields(add_params, k) if adding[k] else channel_param_fields(requant_params, k)
              for k in range(n)]
    beats = [pack(layout, {"acc": [int(a) for a in accs[i * lanes:(i + 1) * lanes]],
                           "params": fields[i * lanes:(i + 1) * lanes], "tag": i & 0xFFFF})
             for i in range(n // lanes)]
    expected = add_output(accs, add_params["fixed"], add_params["ratio_x"], add_params["ratio_y"],
                          add_params["clamp_lo"], add_params["clamp_hi"], add_params["unsigned"])

    await start_clock_and_reset(dut)
    received, sent = [], 0
    for count in runs:
        cocotb.start_soon(drive_stream(dut.clk, port(dut, "inp"), beats[sent:sent + count], rng,
                                       idle=idle))
        sent += count
        await with_timeout(collect_stream(dut.clk, port(dut, "out"), sent, rng, sink=received),
                           1, "ms")
    mismatches = 0
    for i, bits in enumerate(received):
        out = unpack(layout, bits)
        assert out["tag"] == i & 0xFFFF, f"beat {i}: tag {out['tag']} out of order"
        for lane in range(lanes):
            k = i * lanes + lane
            acc, p = out["acc"][lane], out["params"][lane]
            if not adding[k]:
                assert (acc, p) == (int(accs[k]), fields[k]), f"beat {i} lane {lane}: changed"
                continue
            multiplier = np.uint32(p["multiplier"] & 0xFFFF_FFFF).view(np.float32)
            q = int(requantize(acc, p["bias"], multiplier, p["zero_point"], p["clamp_lo"],
                               p["clamp_hi"], p["unsigned_output"]))
            if q != expected[k]:
                mismatches += 1
                if mismatches <= 10:
                    dut._log.error(
                        "beat %d lane %d: acc=%d fixed=%r ratio_x=%r ratio_y=%r unsigned=%d: "
                        "rtl %d (acc %d, multiplier %r), golden %d", i, lane, accs[k],
                        add_params["fixed"][k], add_params["ratio_x"][k], add_params["ratio_y"][k],
                        add_params["unsigned"][k], q, acc, multiplier, expected[k])
    assert mismatches == 0, f"{mismatches} of {int(adding.sum())} adds differ from the golden model"
    dut._log.info("%d adds bit-exact against the golden model, %d lanes passed through",
                  int(adding.sum()), int((~adding).sum()))


@cocotb.test()
async def add_lanes_and_passthrough(dut):
    """Random beats, each lane in the add mode or not; full-range operands, tie-making
    ratios, wide exponent spreads, input gaps."""
    tb = tb_params()
    rng = tb_rng(dut._log)
    n = tb["beats"] * tb["lanes"]
    runs, record = _shared_records(rng, tb["beats"], tb["lanes"], tb["depth"])
    adding = rng.random(n) < 0.75
    adding[::tb["lanes"]] = True         # the stage takes only beats with an add-mode lane
    adding = adding[record]
    add_params = {key: value[record] for key, value in random_add_params(rng, n).items()}
    requant_params = {key: value[record] for key, value in random_channel_params(rng, n).items()}
    accs = np.where(adding, add_operands(rng, n), edge_accumulators(rng, n))
    await _run(dut, runs, accs, adding, add_params, requant_params, 0.2)


@cocotb.test()
async def rounding_ties(dut):
    """Sums exactly halfway between two float32 values, in either multiply-add: to even
    (each beat with records of its own, so a run of one)."""
    tb = tb_params()
    rng = tb_rng(dut._log)
    beats = tb["beats"] // 4
    n = beats * tb["lanes"]
    accs, params = add_tie_cases(rng, n)
    await _run(dut, [1] * beats, accs, np.ones(n, bool), params, random_channel_params(rng, n), 0.0)
