"""Every timing endpoint's slack, from the SDF file nextpnr writes after routing.

nextpnr reports the critical path of each clock, one path: a design short by a few paths
and one short on thousands look the same in its report. Its SDF back-annotation
(``--sdf``) holds every routed net's delay from driver to sink and every cell's delays and
setup times, the same numbers its own timing analysis uses. :func:`endpoint_slacks` runs a
static timing analysis over them, one clock domain at one period: each path starts at a
cell's clock-to-output delay and ends at an input with a setup check; paths from
constants and ports are not timed. :func:`slack_summary` counts the failing endpoints and
names the worst path into each block, the first thing to know before changing a design
for timing.
"""

import collections
import re


__all__ = ["endpoint_slacks", "slack_summary", "block_of"]

#: Clock inputs of the ECP5 and iCE40 cells nextpnr times. ``WCK`` is an ECP5 LUT RAM's
#: write clock: nextpnr's SDF checks its write enable and address against it, not its
#: write data, whose paths only nextpnr's own report times.
CLOCK_PINS = {"CLK", "CLKA", "CLKB", "CLK0", "CLK1", "CLK2", "CLK3", "RCLK", "WCLK", "WCK",
              "CLOCK"}

_ENTRY = re.compile(
    r"\(INSTANCE ?(?P<instance>[^)]*)\)"
    r"|\(INTERCONNECT (?P<driver>\S+) (?P<sink>\S+) (?P<net>\([^)]*\))"
    r"|\(IOPATH (?P<input>\S+) (?P<output>\S+) (?P<path>\([^)]*\))"
    r"|\(SETUPHOLD \((?:pos|neg)edge (?P<data>\S+)\) \((?:pos|neg)edge (?P<clock>\S+)\) "
    r"(?P<setup>\([^)]*\))")

#: Suffixes Yosys and nextpnr add to a signal's name to name the cells built from it.
_CELL_SUFFIX = re.compile(r"_TRELLIS|\$|_CCU2|_LUT4|_PFUMX|_L6MUX|_MULT18|_DP16KD|_SB_|_ICESTORM")


def _pin(text):
    """(instance, pin) of an SDF pin path, its separator the last unescaped ``/``."""
    for index in range(len(text) - 1, -1, -1):
        if text[index] == "/" and (index == 0 or text[index - 1] != "\\"):
            return text[:index].replace("\\", ""), text[index + 1:]
    raise ValueError(f"not an SDF pin: {text}")


def _worst(triple):
    """The maximum of an SDF ``(min:typ:max)`` delay, in ps."""
    return float(triple.strip("()").split(":")[-1])


def endpoint_slacks(sdf, period_ns):
    """The slack of every timed endpoint of ``sdf`` (the text of an SDF file) at a clock
    period of ``period_ns``: a list of ``(slack_ns, endpoint, start)``, worst first, where
    ``endpoint`` and ``start`` are the (instance, pin) of the path's last input and of the
    output it starts from."""
    fanin = collections.defaultdict(list)       # (instance, pin) -> [(source, delay ps)]
    launch = {}                                 # output -> clock-to-output delay, ps
    setup = {}                                  # input -> setup time, ps
    instance = ""
    for entry in _ENTRY.finditer(sdf):
        if entry["instance"] is not None:
            instance = entry["instance"].strip().replace("\\", "")
        elif entry["driver"]:
            fanin[_pin(entry["sink"])].append((_pin(entry["driver"]), _worst(entry["net"])))
        elif entry["input"]:
            node = (instance, entry["output"])
            if entry["input"] in CLOCK_PINS:
                launch[node] = max(launch.get(node, 0.0), _worst(entry["path"]))
            else:
                fanin[node].append(((instance, entry["input"]), _worst(entry["path"])))
        elif entry["clock"] in CLOCK_PINS:
            node = (instance, entry["data"])
            setup[node] = max(setup.get(node, 0.0), _worst(entry["setup"]))

    arrival, start = {}, {}
    expanded = set()
    for endpoint in setup:
        # Depth first, without recursion: a node is timed once its sources are (a source
        # still being expanded closes a loop, and is left out).
        stack = [endpoint]
        while stack:
            node = stack[-1]
            if node in arrival:
                stack.pop()
                continue
            if node in launch:
                arrival[node], start[node] = launch[node], node
                stack.pop()
                continue
            if node not in expanded:
                expanded.add(node)
                pending = [source for source, _ in fanin.get(node, ())
                           if source not in arrival and source not in expanded
                           and source[1] not in CLOCK_PINS]
                if pending:
                    stack.extend(pending)
                    continue
            best, origin = None, None
            for source, delay in fanin.get(node, ()):
                if arrival.get(source) is not None and (best is None
                                                        or arrival[source] + delay > best):
                    best, origin = arrival[source] + delay, start[source]
            arrival[node], start[node] = best, origin
            stack.pop()
    slacks = [((period_ns * 1000 - setup[node] - arrival[node]) / 1000, node, start[node])
              for node in setup if arrival.get(node) is not None]
    return sorted(slacks)


def block_of(instance):
    """The design block a cell belongs to: its name without the suffixes the tools add
    (``design.npu.dma.queue.r_rdy_TRELLIS_FF_Q`` is in ``design.npu.dma.queue.r_rdy``)."""
    return re.sub(r"_\d+$", "", _CELL_SUFFIX.split(instance)[0])


def slack_summary(sdf, period_ns, blocks=20):
    """``endpoints``, ``failing`` (negative slack) and ``worst_by_block``: for the
    ``blocks`` blocks holding the worst endpoints, the worst path's length (ns) into the
    block and the block it starts from."""
    slacks = endpoint_slacks(sdf, period_ns)
    worst = {}
    for slack, endpoint, origin in slacks:
        block = block_of(endpoint[0])
        if block not in worst:
            worst[block] = {"block": block, "path_ns": round(period_ns - slack, 2),
                            "from": block_of(origin[0])}
            if len(worst) == blocks:
                break
    return {
        "endpoints": len(slacks),
        "failing": sum(slack < 0 for slack, _, _ in slacks),
        "worst_by_block": list(worst.values()),
    }
