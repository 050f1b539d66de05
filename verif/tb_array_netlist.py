"""cocotb testbench of verif.array_netlist.ArrayPair: the systolic array's iCE40 netlist
(products in the SB_MAC16s' registers) against its RTL and against NumPy.

Tiles of full-range int8 weights and activation vectors (``-128`` and ``127`` in every
tile) go into both at once, with random gaps on both streams. Every cycle, every output of
the netlist must equal the RTL's (``ready``, ``valid`` and the upcoming tag always, the
result's data and tag while it is valid), and each result must be ``a @ W`` of its vector.
"""

import cocotb
from amaranth import signed, unsigned
from amaranth.lib import data
from cocotb.triggers import FallingEdge, ReadOnly

from hw.systolic_array import activation_layout, result_layout
from verif.stimulus import int8_full_range
from verif.tb_util import drive_stream, pack, start_clock_and_reset, tb_params, tb_rng, unpack


def _handles(dut, name):
    return (getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__payload"),
            getattr(dut, f"rtl_{name}__ready"))


@cocotb.test()
async def netlist_matches_rtl(dut):
    p = tb_params()
    rows, cols, tag_width = p["rows"], p["cols"], p["tag_width"]
    rng = tb_rng(dut._log)
    acts_layout = activation_layout(rows, unsigned(tag_width))
    results_layout = result_layout(cols, unsigned(tag_width))
    await start_clock_and_reset(dut)

    weight_beats, act_beats, expected = [], [], []
    for _ in range(p["tiles"]):
        w = int8_full_range(rng, (rows, cols))
        w[0, 0], w[-1, -1] = -128, 127
        count = int(rng.integers(1, 9))
        a = int8_full_range(rng, (count, rows))
        a[0, 0], a[-1, -1] = -128, 127
        weight_beats += [pack(data.ArrayLayout(signed(8), cols), w[r]) for r in range(rows)]
        for i in range(count):
            tag = int(rng.integers(0, 2**tag_width))
            act_beats.append(pack(acts_layout, {"data": a[i], "last": i == count - 1,
                                                "tag": tag}))
            expected.append(([int(value) for value in a[i] @ w], tag))

    outputs = p["outputs"]
    results = []

    async def compare():
        while len(results) < len(expected):
            await ReadOnly()
            valid = int(dut.rtl_results__valid.value)
            for name in outputs:
                if name == "results__payload" and not valid:
                    continue
                rtl = getattr(dut, f"rtl_{name}").value
                netlist = getattr(dut, f"netlist_{name}").value
                assert netlist.is_resolvable and int(netlist) == int(rtl), \
                    f"{name}: netlist {netlist} against RTL {rtl}"
            if valid:
                beat = unpack(results_layout, dut.rtl_results__payload.value.to_unsigned())
                results.append((beat["data"], beat["tag"]))
            await FallingEdge(dut.clk)

    checker = cocotb.start_soon(compare())
    cocotb.start_soon(drive_stream(dut.clk, _handles(dut, "weights"), weight_beats, rng,
                                   idle=0.3))
    await drive_stream(dut.clk, _handles(dut, "acts"), act_beats, rng, idle=0.3)
    for _ in range(rows + cols + 4):
        await FallingEdge(dut.clk)
    assert checker.done(), f"{len(results)} of {len(expected)} results"
    for index, (got, want) in enumerate(zip(results, expected)):
        assert got == want, f"vector {index}: {got} instead of {want}"
    dut._log.info("%d vectors in %d tiles: the netlist matches the RTL and NumPy",
                  len(expected), p["tiles"])
