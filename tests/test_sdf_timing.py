"""fpga.sdf_timing: endpoint slacks from an SDF file, against delays summed by hand."""

import pytest

from fpga.sdf_timing import block_of, endpoint_slacks, slack_summary


def triple(delay):
    """An SDF delay: ``delay`` (ps) as min, typical and max, or a (min, typ, max) tuple."""
    return "({}:{}:{})".format(*(delay if isinstance(delay, tuple) else (delay,) * 3))


def cell(celltype, instance, iopaths=(), setups=()):
    paths = "".join(f"(IOPATH {i} {o} {triple(d)} {triple(d)})" for i, o, d in iopaths)
    checks = "".join(f"(SETUPHOLD (posedge {pin}) (posedge {clock}) ({t}:{t}:{t}) (0:0:0))"
                     for pin, clock, t in setups)
    return (f'(CELL (CELLTYPE "{celltype}") (INSTANCE {instance}) '
            f"(DELAY (ABSOLUTE {paths})) (TIMINGCHECK {checks}))")


def sdf(nets, cells):
    wires = "".join(f"(INTERCONNECT {a} {b} ({d}:{d}:{d}) ({d}:{d}:{d}))" for a, b, d in nets)
    return ('(DELAYFILE (SDFVERSION "3.0") (TIMESCALE 1ps) (CELL (CELLTYPE "top") (INSTANCE ) '
            f"(DELAY (ABSOLUTE {wires}))) {''.join(cells)})")


# Two flip-flops and a block RAM into a LUT, on to a flip-flop; a constant into another.
# Delays in ps; the maximum of min:typ:max counts.
DESIGN = sdf(
    nets=[
        ("a_TRELLIS_FF_Q/Q", "sum_LUT4_Z/A", 1000),
        ("ram.0.0/DOB3", "sum_LUT4_Z/B", 700),
        ("sum_LUT4_Z/F", "out\\/reg_TRELLIS_FF_Q/DI", 300),
        ("$PACKER_VCC/F", "other_TRELLIS_FF_Q/DI", 5000),
        ("a_TRELLIS_FF_Q/Q", "other_TRELLIS_FF_Q/M", 2000),
    ],
    cells=[
        cell("TRELLIS_FF", "a_TRELLIS_FF_Q", [("CLK", "Q", 500)]),
        cell("DP16KD", "ram.0.0", [("CLKB", "DOB3", (5000, 5400, 5800))], [("ADB5", "CLKB", 200)]),
        cell("TRELLIS_COMB", "sum_LUT4_Z", [("A", "F", 200), ("B", "F", 250)]),
        cell("TRELLIS_FF", "out\\/reg_TRELLIS_FF_Q", [("CLK", "Q", 500)], [("DI", "CLK", 100)]),
        cell("TRELLIS_FF", "other_TRELLIS_FF_Q", [("CLK", "Q", 500)],
             [("DI", "CLK", 0), ("M", "CLK", 50)]),
    ])


def test_endpoint_slacks_sum_the_worst_path():
    slacks = {endpoint: (round(slack, 3), origin)
              for slack, endpoint, origin in endpoint_slacks(DESIGN, 10.0)}
    # The block RAM's path: 5800 + 700 + 250 + 300 = 7050 ps, and the 100 ps setup.
    assert slacks[("out/reg_TRELLIS_FF_Q", "DI")] == (2.85, ("ram.0.0", "DOB3"))
    assert slacks[("other_TRELLIS_FF_Q", "M")] == (7.45, ("a_TRELLIS_FF_Q", "Q"))
    # A path from a constant, and the block RAM's address with no driver, are not timed.
    assert set(slacks) == {("out/reg_TRELLIS_FF_Q", "DI"), ("other_TRELLIS_FF_Q", "M")}


@pytest.mark.parametrize("period_ns,failing", [(10.0, 0), (7.1, 1), (2.5, 2)])
def test_slack_summary_counts_failing_endpoints(period_ns, failing):
    summary = slack_summary(DESIGN, period_ns)
    assert summary["endpoints"] == 2 and summary["failing"] == failing
    assert summary["worst_by_block"][0] == {"block": "out/reg", "path_ns": 7.15, "from": "ram.0.0"}


def test_block_of_strips_the_tools_suffixes():
    assert block_of("design.npu.dma.queue.r_rdy_TRELLIS_FF_Q_3") == "design.npu.dma.queue.r_rdy"
    assert block_of("design.npu.scratchpad.bank1_word_TRELLIS_FF_Q") == \
        "design.npu.scratchpad.bank1_word"
    assert block_of("design.npu.checker.out_product_s1$CCU2_COMB0") == \
        "design.npu.checker.out_product_s1"
