"""``make bench``: GEMMs and ResNet-8 convolution layers through the RTL NPU, against the
cost model.

Every row runs on :class:`verif.bench_top.BenchTop` (the NPU with RTL memory, so no Python
runs per cycle) with its outputs checked bit for bit against NumPy, and is reported with
the NPU's own counters: cycles, MAC utilization (MACs / (rows · cols · cycles)), DRAM bytes
read and written against the compulsory bytes (each input, weight and output byte once;
for convolutions those of the convolution itself, so the im2col inflation shows), time
per inference, and ``sw.cost_model``'s predictions with their error.

Writes ``build/bench/results.json``, ``results.md``, ``utilization.png`` and ``dram.png``.
A benchmark, not a test: it asserts nothing about speed.
"""

import argparse
import json
import sys
import time
from dataclasses import asdict

import numpy as np

from hw.config import DEFAULT_CONFIG
from sw.cost_model import compulsory_bytes, predict
from verif.bench_top import DEFAULT_BENCH_MEMORY, BenchTop
from verif.runner import BUILD, simulate
from verif.tb_bench import make_workload


OUT = BUILD / "bench"


def _gemm(M, K, N):
    return {"name": f"GEMM {M}x{K}x{N}", "kind": "gemm", "args": {"M": M, "K": K, "N": N},
            "compulsory": compulsory_bytes(M * K, K * N, M * N)}


def _conv(name, channels, out_channels, size, kernel, stride):
    padding = kernel // 2
    out = (size + 2 * padding - kernel) // stride + 1
    return {"name": f"ResNet-8 {name}: {kernel}x{kernel}/{stride} {channels}->{out_channels} "
                    f"{size}x{size}",
            "kind": "conv",
            "args": {"channels": channels, "out_channels": out_channels, "size": size,
                     "kernel": kernel, "stride": stride, "padding": padding},
            "compulsory": compulsory_bytes(channels * size * size,
                                           out_channels * channels * kernel * kernel,
                                           out_channels * out * out)}


#: The suite, in order of priority.
ROWS = [
    _gemm(64, 64, 64), _gemm(128, 128, 128), _gemm(256, 256, 256),
    _gemm(1, 256, 256), _gemm(16, 256, 256),
    _conv("stem", 3, 16, 32, 3, 1),
    _conv("stage 1", 16, 16, 32, 3, 1),
    _conv("stage 2a", 16, 32, 32, 3, 2),
    _conv("stage 2 shortcut", 16, 32, 32, 1, 2),
    _conv("stage 2b", 32, 32, 16, 3, 1),
    _conv("stage 3a", 32, 64, 16, 3, 2),
    _conv("stage 3 shortcut", 32, 64, 16, 1, 2),
    _conv("stage 3b", 64, 64, 8, 3, 1),
]


def clock():
    """(MHz, how it was obtained): the ULX3S build's achieved Fmax, else 100 MHz."""
    report = BUILD / "ulx3s" / "report.json"
    if report.exists():
        fmax = json.loads(report.read_text())["fmax_mhz"]["achieved"]    # fpga/build.py
        if fmax:
            return float(fmax), f"at {float(fmax):.1f} MHz (ULX3S achieved Fmax)"
    return 100.0, "at 100 MHz (no ULX3S report)"


def _error(predicted, measured):
    return (predicted - measured) / measured if measured else 0.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=len(ROWS), help="run the first N rows")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    config = DEFAULT_CONFIG
    rows = ROWS[:args.rows]
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / "rtl.json"
    began = time.perf_counter()
    simulate(BenchTop(config), name="bench_top", test_module="verif.tb_bench", seed=args.seed,
             params={"config": asdict(config), "memory_bytes": DEFAULT_BENCH_MEMORY,
                     "out": str(raw), "rows": rows})
    simulated = time.perf_counter() - began
    mhz, clock_note = clock()
    peak = config.rows * config.cols
    results = []
    for row, rtl in zip(rows, json.loads(raw.read_text())):
        workload = make_workload(config, np.random.default_rng(0), row["kind"], row["args"],
                                 DEFAULT_BENCH_MEMORY)
        p = predict(config, workload.program)
        dram = rtl["dma_read_bytes"] + rtl["dma_write_bytes"]
        results.append({
            **rtl, "compulsory_bytes": row["compulsory"], "dram_bytes": dram,
            "utilization": rtl["macs"] / (peak * rtl["cycles"]),
            "time_us": rtl["cycles"] / mhz, "clock_mhz": mhz,
            "cycles_per_second": rtl["cycles"] / rtl["run_seconds"],
            "predicted_cycles": p.cycles, "cycle_error": _error(p.cycles, rtl["cycles"]),
            "predicted_dram_bytes": p.dma_read_bytes + p.dma_write_bytes,
            "dram_error": _error(p.dma_read_bytes + p.dma_write_bytes, dram),
        })
    (OUT / "results.json").write_text(json.dumps(
        {"clock": clock_note, "config": asdict(config), "simulation_seconds": simulated,
         "rows": results}, indent=1))
    (OUT / "results.md").write_text(markdown(results, clock_note, config))
    plots(results)
    print((OUT / "results.md").read_text())
    print(f"simulation {simulated:.0f} s; {OUT}/results.json, results.md, utilization.png, "
          f"dram.png")
    return 0


def markdown(results, clock_note, config):
    lines = [f"NPU {config.rows}x{config.cols}, {config.bus_width}-bit AXI, RTL memory; "
             f"outputs bit-exact against NumPy on every row; time {clock_note}.", "",
             "| workload | MACs | cycles | MAC util. | DRAM read | DRAM write | compulsory | "
             "DRAM / compulsory | time (µs) | predicted cycles | error | predicted DRAM | "
             "error | stalls load/compute/store/fetch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['macs']:,} | {r['cycles']:,} | {100 * r['utilization']:.1f}% | "
            f"{r['dma_read_bytes']:,} | {r['dma_write_bytes']:,} | {r['compulsory_bytes']:,} | "
            f"{r['dram_bytes'] / r['compulsory_bytes']:.2f}x | {r['time_us']:.1f} | "
            f"{r['predicted_cycles']:,} | {100 * r['cycle_error']:+.1f}% | "
            f"{r['predicted_dram_bytes']:,} | {100 * r['dram_error']:+.1f}% | "
            f"{r['load_stall_cycles']:,}/{r['compute_stall_cycles']:,}/"
            f"{r['store_stall_cycles']:,}/{r['fetch_stall_cycles']:,} |")
    return "\n".join(lines) + "\n"


def plots(results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in results]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(names) + 1.5))
    ax.barh(y, [100 * r["utilization"] for r in results])
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("MAC utilization (%)")
    ax.set_xlim(0, 100)
    fig.tight_layout()
    fig.savefig(OUT / "utilization.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 0.4 * len(names) + 1.5))
    ax.barh(y - 0.2, [r["dram_bytes"] for r in results], 0.4, label="DRAM bytes (counters)")
    ax.barh(y + 0.2, [r["compulsory_bytes"] for r in results], 0.4, label="compulsory bytes")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("bytes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "dram.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
