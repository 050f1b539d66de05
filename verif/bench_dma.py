"""DMA throughput: bytes per cycle of one 64 KiB transfer against a zero-wait AxiRam.

``python -m verif.bench_dma`` (``make bench-dma``) builds the DMA harness at 32, 64 and
128 bits, moves 64 KiB each way with no pauses on any AXI channel and an always-granting
scratchpad, and prints bytes per cycle from the cycle the descriptor is accepted to the
cycle its completion is taken, against the bus peak (``bus_width / 8`` bytes per cycle).
Each transfer is also checked against the NumPy model. A benchmark, not a test: it asserts
nothing about speed.
"""

import argparse
import json
import tempfile
from pathlib import Path

import cocotb

from hw.config import NPUConfig
from verif.dma_harness import DMAHarness
from verif.runner import simulate
from verif.tb_dma import MEM_TO_SP, SP_TO_MEM, TB


SIZE = 64 * 1024
#: (label, direction, memory offset, scratchpad offset)
CASES = [
    ("read  (mem -> sp)", MEM_TO_SP, 0, 0),
    ("write (sp -> mem)", SP_TO_MEM, 0, 0),
    ("read, misaligned", MEM_TO_SP, 3, 5),
    ("write, misaligned", SP_TO_MEM, 5, 3),
]


@cocotb.test()
async def throughput(dut):
    tb = TB(dut)
    await tb.start(pause=0.0, stall=0.0)
    await tb.fill_scratchpad()
    results = []
    for label, direction, mem_off, sp_off in CASES:
        desc = tb.descriptor(direction, 0x10000 + mem_off, sp_off, 1, SIZE - sp_off, 0, 0)
        await tb.run([desc])
        cycles = tb.mon.done_cycles[-1] - tb.mon.desc_cycles[-1]
        results.append({"case": label, "bytes": desc["row_bytes"], "cycles": cycles})
    Path(tb.p["out"]).write_text(json.dumps(results))
    tb.finish()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            config = NPUConfig(bus_width=width, scratchpad_bytes=SIZE)
            out = Path(tmp) / f"dma_{width}.json"
            simulate(DMAHarness(config), name=f"dma_{width}", test_module="verif.bench_dma",
                     params={"bus_width": width, "scratchpad_bytes": SIZE,
                             "mem_bytes": 4 * SIZE, "out": str(out)}, seed=1)
            for result in json.loads(out.read_text()):
                rows.append((width, result))
    print(f"\n{'width':>5}  {'transfer':<18} {'bytes':>6} {'cycles':>7} {'B/cycle':>8} "
          f"{'peak':>5} {'% peak':>7}")
    for width, r in rows:
        rate, peak = r["bytes"] / r["cycles"], width // 8
        print(f"{width:>5}  {r['case']:<18} {r['bytes']:>6} {r['cycles']:>7} {rate:>8.2f} "
              f"{peak:>5} {100 * rate / peak:>6.1f}%")


if __name__ == "__main__":
    main()
