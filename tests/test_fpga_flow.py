"""The FPGA flow's fast checks: no synthesis here (`make bitstream` is CI's bitstreams job).

* `make flash` and `python -m fpga.flash` without a board stop with one line on stderr;
  a missing shared library of openFPGALoader is named with the package that provides it;
* the PLL settings are exact and inside the devices' limits;
* both board tops elaborate (Amaranth's platform preparation, RTLIL included), around a
  small stand-in design and around the real ``fpga.board.BoardDesign``;
* the report parser reads a small synthetic nextpnr report and Yosys ``stat``;
* a build script standing in for Yosys and nextpnr is stopped once its log estimates an
  Fmax far below the target after placement, and runs to its end otherwise.
"""

import os
from pathlib import Path
import re
import subprocess
import sys
import time

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
import pytest

from fpga import flash
from fpga.build import (FAMILIES, ROUTE_MARGIN, board_top, collision_free_memories,
                        explain_failure, parse_report, placement_estimate, run_tools,
                        until_timing_met, with_clock)
from fpga.build import main as build_main
from fpga.configs import BOARDS
from fpga.icebreaker import ice40_pll_params
from fpga.ulx3s import ecp5_pll_params


ROOT = Path(__file__).resolve().parent.parent


def run(*command, env=None):
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)


def assert_one_line_failure(result, expected):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


def no_board(board):
    """Skip when the board is on USB: these tests are about its absence."""
    try:
        attached = flash.board_attached(board)
    except flash.FlashError:
        return
    if attached:
        pytest.skip(f"a {board.title} is attached")


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_flash_without_board(name):
    board = BOARDS[name]
    no_board(board)
    result = run(sys.executable, "-m", "fpga.flash", "--board", name)
    assert_one_line_failure(result, "")
    assert result.returncode == 1
    assert (f"no {board.title} found on USB" in result.stderr
            or "shared library" in result.stderr)


def test_make_flash_without_board():
    no_board(BOARDS["ulx3s"])
    result = run("make", "-s", "flash", "BOARD=ulx3s", f"PYTHON={sys.executable}")
    assert_one_line_failure(result, "ULX3S")


@pytest.mark.parametrize("library, package", [("libusb-1.0.so.0", "libusb-1.0-0"),
                                              ("libftdi1.so.2", "libftdi1-2")])
def test_flash_missing_library(tmp_path, library, package):
    loader = tmp_path / flash.LOADER
    loader.write_text(
        "#!/bin/sh\n"
        f"echo 'openFPGALoader: error while loading shared libraries: {library}: "
        "cannot open shared object file: No such file or directory' >&2\n"
        "exit 127\n")
    loader.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    result = run(sys.executable, "-m", "fpga.flash", "--board", "ulx3s", env=env)
    assert_one_line_failure(result, f"apt-get install {package}")
    assert library in result.stderr


def test_flash_messages():
    board = BOARDS["icebreaker"]
    assert flash.explain(board, 1, "unable to open ftdi device: -3 (device not found)\n") == \
        "no iCEBreaker found on USB: connect the board (or check permissions)"
    assert "check permissions" in flash.explain(board, 1, "LIBUSB_ERROR_ACCESS\n")
    assert flash.explain(board, 5, "first\nsomething else\n\n") == \
        "openFPGALoader failed with exit status 5: something else"


@pytest.mark.parametrize("input_hz, output_hz", [(25_000_000, 100_000_000),
                                                 (25_000_000, 50_000_000),
                                                 (25_000_000, 125_000_000)])
def test_ecp5_pll(input_hz, output_hz):
    p = ecp5_pll_params(input_hz, output_hz)
    assert input_hz * p["CLKFB_DIV"] == output_hz * p["CLKI_DIV"]
    assert 400e6 <= output_hz * p["CLKOP_DIV"] <= 800e6
    assert input_hz / p["CLKI_DIV"] >= 3.125e6


def test_ice40_pll():
    p = ice40_pll_params(12_000_000, 24_000_000)
    assert 12_000_000 * (p["DIVF"] + 1) == 24_000_000 * (p["DIVR"] + 1) * 2 ** p["DIVQ"]
    assert 533e6 <= 12e6 / (p["DIVR"] + 1) * (p["DIVF"] + 1) <= 1066e6
    assert p["FILTER_RANGE"] == 1       # a 12 MHz phase detector
    with pytest.raises(ValueError, match="cannot make"):
        ice40_pll_params(12_000_000, 23_456_789)


class Loopback(wiring.Component):
    uart_rx: In(1)
    uart_tx: Out(1)
    irq: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [self.uart_tx.eq(self.uart_rx), self.irq.eq(~self.irq)]
        return m


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_top_elaborates(name):
    platform, top = board_top(BOARDS[name], Loopback())
    plan = platform.prepare(top, name="top")
    rtlil = plan.files["top.il"]
    assert ("EHXPLLL" if name == "ulx3s" else "SB_PLL40_PAD") in rtlil
    constraints = plan.files["top.lpf" if name == "ulx3s" else "top.pcf"]
    assert "uart_0__rx" in constraints and "uart_0__tx" in constraints


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_design_elaborates(name):
    platform, top = board_top(BOARDS[name])
    plan = platform.prepare(top, name="top")
    assert "design" in plan.files["top.il"]
    # The host link's pins and the interrupt's LED are placed.
    constraints = next(text for file, text in plan.files.items() if file.endswith((".lpf", ".pcf")))
    for pin in ("uart_0__rx__io", "uart_0__tx__io", "led"):
        assert pin in constraints, f"{name}: no {pin} pin"
    # The memories read without a read-during-write order are in the design under those
    # names (a renamed one would silently keep its cost).
    read_ports = set(re.findall(r'cell \$memrd_v2 \S+\n\s+parameter \\MEMID "\\\\(\w+)"',
                                plan.files["top.il"]))
    assert set(collision_free_memories(BOARDS[name])) <= read_ports, read_ports


def test_parse_report():
    nextpnr = {
        "utilization": {
            "TRELLIS_COMB": {"used": 8364, "available": 83640},
            "TRELLIS_FF": {"used": 4182, "available": 83640},
            "MULT18X18D": {"used": 78, "available": 156},
            "DP16KD": {"used": 52, "available": 208},
        },
        "fmax": {
            "$glbnet$clk": {"achieved": 97.5, "constraint": 100.0},
            "clk25": {"achieved": 400.0, "constraint": 25.0},
        },
        "critical_paths": [{
            "from": "posedge $glbnet$clk", "to": "posedge $glbnet$clk",
            "path": [
                {"type": "clk-to-q", "delay": 0.5, "from": {"cell": "a"}, "to": {"cell": "a"}},
                {"type": "routing", "delay": 2.0, "net": "n1", "sources": ["x.py:1"],
                 "from": {"cell": "a"}, "to": {"cell": "b"}},
                {"type": "logic", "delay": 1.0, "from": {"cell": "b"}, "to": {"cell": "b"}},
                {"type": "setup", "delay": 0.25, "from": {"cell": "b"}, "to": {"cell": "c"}},
            ],
        }],
    }
    stat = {"design": {"num_cells_by_type": {"LUT4": 1}}}
    report = parse_report("ecp5", nextpnr, stat, 100_000_000)
    assert report["resources"]["LUT"] == {"used": 8364, "available": 83640, "percent": 10.0}
    assert report["resources"]["DSP"] == {"used": 78, "available": 156, "percent": 50.0}
    assert report["resources"]["BRAM"]["used"] == 52
    assert report["fmax_mhz"] == {"target": 100.0, "achieved": 97.5, "clock": "$glbnet$clk"}
    assert not report["timing_met"]
    path = report["critical_path"]
    assert (path["delay_ns"], path["from"], path["to"], path["logic_levels"]) == (3.75, "a", "c", 1)
    assert path["nets"] == [{"net": "n1", "delay_ns": 2.0, "sources": ["x.py:1"]}]


def test_parse_report_ice40():
    nextpnr = {
        "utilization": {
            "ICESTORM_LC": {"used": 3000, "available": 5280},
            "ICESTORM_DSP": {"used": 4, "available": 8},
            "ICESTORM_RAM": {"used": 15, "available": 30},
            "ICESTORM_SPRAM": {"used": 2, "available": 4},
        },
        "fmax": {"clk": {"achieved": 30.0, "constraint": 24.000383}},
    }
    stat = {"design": {"num_cells_by_type": {
        "SB_LUT4": 2500, "SB_CARRY": 100, "SB_DFF": 10, "SB_DFFE": 20, "SB_DFFSR": 30}}}
    report = parse_report("ice40", nextpnr, stat, 24_000_000)
    assert report["resources"]["LUT"] == {"used": 2500, "available": 5280, "percent": 47.3}
    assert report["resources"]["FF"]["used"] == 60
    assert report["resources"]["SPRAM"] == {"used": 2, "available": 4, "percent": 50.0}
    assert report["fmax_mhz"]["achieved"] == 30.0
    assert report["timing_met"]
    assert report["critical_path"] is None


def test_does_not_fit_message(tmp_path):
    (tmp_path / "top.tim").write_text(
        "Info: Device utilisation:\n"
        "Info: \t         ICESTORM_LC:    6000/   5280   113%\n"
        "Info: \t        ICESTORM_RAM:      12/     30    40%\n"
        "ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_LC'\n")
    assert explain_failure(tmp_path) == (
        f"the design does not fit the device: ICESTORM_LC 6000/5280 (see {tmp_path / 'top.tim'})")
    (tmp_path / "top.tim").write_text("Info: fine\nERROR: something else\n")
    assert explain_failure(tmp_path).startswith("ERROR: something else")


def test_a_tool_that_crashes_is_explained_by_its_last_line(tmp_path):
    """A crash's traceback stays in tools.log; the message is its cause, in one line."""
    (tmp_path / "top.rpt").write_text("2.52.24.5. Executing ABC9.\n")
    (tmp_path / "build_top.sh").write_text(
        "echo 'Traceback (most recent call last):' >&2\n"
        "echo '    raise WasmtimeError' >&2\n"
        "echo '    wasm trap: call stack exhausted' >&2\n"
        "echo '' >&2\n"
        "exit 1\n")
    with pytest.raises(subprocess.CalledProcessError):
        run_tools(tmp_path, 100.0, poll_seconds=0.1)
    assert explain_failure(tmp_path) == (
        f"wasm trap: call stack exhausted (see {tmp_path / 'tools.log'})")


def test_clock_override_sets_the_pll_target_and_the_uart_divisor():
    board = with_clock(BOARDS["ulx3s"], 50)
    assert board.clock_hz == 50_000_000
    assert board.divisor == round(50_000_000 / board.baud)
    assert board.config == BOARDS["ulx3s"].config


def test_clock_the_pll_cannot_make_is_refused_in_one_line(capsys):
    assert build_main(["--board", "ulx3s", "--clock-mhz", "33.3333"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("ULX3S: an ECP5 PLL cannot make 33.3333 MHz")
    assert "\n" not in error and "Traceback" not in error


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit:
        build_main(["--help"])
    assert exit.value.code == 0
    help_text = capsys.readouterr().out
    assert "--route-anyway" in help_text and f"under {ROUTE_MARGIN:.0%} of it" in help_text


def test_a_routed_build_that_misses_its_target_is_tried_again_with_other_seeds():
    def builds(outcomes):
        tried = []

        def build_with(seed):
            tried.append(seed)
            routed, met = outcomes[len(tried) - 1]
            return {"seed": seed, "bitstream": "top.bin" if routed else None,
                    "timing_met": met}
        return build_with, tried

    build_with, tried = builds([(True, True)])
    assert until_timing_met(build_with, (1, 2, 3))["seed"] is None and tried == [None]
    build_with, tried = builds([(True, False), (True, False), (True, True), (True, True)])
    report = until_timing_met(build_with, (1, 2, 3))
    assert report["seed"] == 2 and report["timing_met"] and tried == [None, 1, 2]
    build_with, tried = builds([(True, False)] * 4)
    report = until_timing_met(build_with, (1, 2, 3))
    assert report["seed"] == 3 and not report["timing_met"] and tried == [None, 1, 2, 3]
    # Stopped after placement: far from its target, another seed would not route it.
    build_with, tried = builds([(False, False)] * 4)
    assert until_timing_met(build_with, (1, 2, 3))["bitstream"] is None and tried == [None]
    # The ECP5 builds route once.
    assert FAMILIES["ecp5"]["retry_seeds"] == () and FAMILIES["ice40"]["retry_seeds"]


def test_placement_estimate_is_the_first_fmax_of_the_core_clock():
    log = ("Info: Max frequency for clock 'clk25': 300.00 MHz (PASS at 25.00 MHz)\n"
           "Info: Max frequency for clock '$glbnet$clk': 52.32 MHz (FAIL at 100.00 MHz)\n"
           "Info: Routing globals...\n"
           "Warning: Max frequency for clock '$glbnet$clk': 55.00 MHz (FAIL at 100.00 MHz)\n")
    assert placement_estimate(log, 100.0) == 52.32
    assert placement_estimate(log.splitlines()[0], 100.0) is None


def _fake_tools(tmp_path, estimate, status=0, route_seconds=60, place_seconds=0):
    """A build script that "places" for ``place_seconds``, logs ``estimate``, then "routes"
    for ``route_seconds`` and writes ``routed`` (or exits with ``status`` at once when that
    is not 0)."""
    (tmp_path / "build_top.sh").write_text(
        f"sleep {place_seconds}\n"
        f"echo \"Info: Max frequency for clock 'clk': {estimate:.2f} MHz (FAIL at 100.00 MHz)\""
        f" > top.tim\n"
        + (f"exit {status}\n" if status else f"sleep {route_seconds}\ntouch routed\n"))


@pytest.mark.parametrize("route_anyway", [False, True])
def test_build_far_below_its_target_stops_before_routing(tmp_path, route_anyway):
    began = time.monotonic()
    estimate = round(100 * ROUTE_MARGIN - 1, 2)     # as the log prints it
    if route_anyway:
        _fake_tools(tmp_path, estimate, route_seconds=1)
        assert run_tools(tmp_path, 100.0, route_anyway=True, poll_seconds=0.1) is None
        assert (tmp_path / "routed").exists()
    else:
        _fake_tools(tmp_path, estimate)
        assert run_tools(tmp_path, 100.0, poll_seconds=0.1) == estimate
        assert time.monotonic() - began < 30
        time.sleep(0.5)
        assert not (tmp_path / "routed").exists()


def test_build_near_its_target_routes_and_failures_raise(tmp_path):
    """The estimate is read from this build's log, not from an earlier build's."""
    (tmp_path / "top.tim").write_text(
        "Info: Max frequency for clock 'clk': 10.00 MHz (FAIL at 100.00 MHz)\n")
    _fake_tools(tmp_path, 100 * ROUTE_MARGIN + 1, route_seconds=1, place_seconds=0.5)
    assert run_tools(tmp_path, 100.0, poll_seconds=0.1) is None
    assert (tmp_path / "routed").exists()
    _fake_tools(tmp_path, 10.0, status=3)
    with pytest.raises(subprocess.CalledProcessError):
        run_tools(tmp_path, 100.0, route_anyway=True, poll_seconds=0.1)
