"""`make sim`, the main job, in Verilator:

1. the compute core: a 64 x 256 x 64 int8 GEMM with requantization streamed through the
   8 x 8 matrix unit at full rate, checked bit for bit against NumPy;
2. the whole NPU: a 128 x 512 x 128 GEMM with bias, requantization and ReLU, and a 3 x 3
   convolution (32 -> 32 channels, 16 x 16, padding 1, im2col in software), each a program
   in memory run through the host registers, checked bit for bit against NumPy, with
   cycles, MAC utilization and DMA bytes from the hardware counters.
"""

import argparse
import json
import random
import sys

from dataclasses import asdict

from hw.config import DEFAULT_CONFIG
from hw.matrix_unit import MatrixUnit
from hw.npu import NPU
from verif.runner import BUILD, simulate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gemm", type=int, nargs=3, default=(64, 256, 64), metavar=("M", "K", "N"),
                        help="the matrix-unit GEMM")
    parser.add_argument("--npu-gemm", type=int, nargs=3, default=(128, 512, 128),
                        metavar=("M", "K", "N"), help="the whole-NPU GEMM")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--waves", action="store_true", help="write build/sim/.../dump.fst")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    config = DEFAULT_CONFIG
    print(f"random seed {seed} (rerun with SEED={seed})")
    try:
        simulate(MatrixUnit(config), name="matrix_unit", test_module="verif.tb_matrix_unit",
                 testcase="gemm_throughput",
                 params={"config": {"rows": config.rows, "cols": config.cols,
                                    "acc_depth": config.acc_depth,
                                    "channel_depth": config.channel_depth},
                         "gemm": list(args.gemm)},
                 seed=seed, waves=args.waves)
    except AssertionError as error:
        print(f"make sim: FAILED: {error}", file=sys.stderr)
        return 1
    report = json.loads((BUILD / "sim" / "gemm_report.json").read_text())
    M, K, N = report["gemm"]
    print(f"\n1. Matrix unit: GEMM {M} x {K} x {N} on a {config.rows} x {config.cols} array, "
          f"bit-exact against NumPy")
    print(f"  MACs                     {report['macs']:>10,}")
    print(f"  cycles                   {report['streaming_cycles']:>10,}")
    print(f"  array utilization        {100 * report['utilization']:>9.1f}%   "
          f"(useful MACs / (rows x cols x cycles), fill and drain included)")
    print(f"  steady-state utilization {100 * report['steady_state_utilization']:>9.1f}%   "
          f"(cycles with an activation vector entering the array)")

    try:
        simulate(NPU(config), name="npu", test_module="verif.tb_npu", testcase="throughput",
                 params={"config": asdict(config), "gemm": list(args.npu_gemm)},
                 seed=seed, waves=args.waves)
    except AssertionError as error:
        print(f"make sim: FAILED: {error}", file=sys.stderr)
        return 1
    rows = json.loads((BUILD / "sim" / "npu_report.json").read_text())
    print(f"\n2. Whole NPU ({config.rows} x {config.cols} array, "
          f"{config.scratchpad_bytes // 1024} KiB scratchpad, {config.bus_width}-bit AXI, "
          f"zero-wait AxiRam): programs in memory, bit-exact against NumPy")
    print(f"  {'workload':<56} {'MACs':>11} {'cycles':>9} {'MAC util.':>9} "
          f"{'DMA read':>10} {'DMA write':>10}")
    for row in rows:
        print(f"  {row['name']:<56} {row['macs']:>11,} {row['cycles']:>9,} "
              f"{100 * row['utilization']:>8.1f}% {row['dma_read_bytes']:>10,} "
              f"{row['dma_write_bytes']:>10,}")
    print("  MAC utilization = MACs / (rows x cols x CYCLES), from the NPU's own counters; "
          "array busy: " + ", ".join(f"{100 * row['array_utilization']:.1f}%" for row in rows))
    if args.waves:
        print(f"  waveforms: {BUILD / 'sim'}/*-waves/dump.fst")
    return 0


if __name__ == "__main__":
    sys.exit(main())
