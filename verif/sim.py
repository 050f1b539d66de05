"""`make sim`: a 64 x 256 x 64 int8 GEMM with requantization through the 8 x 8 matrix unit
in Verilator, checked bit for bit against NumPy, with MACs, cycles and utilization."""

import argparse
import json
import random
import sys

from hw.config import DEFAULT_CONFIG
from hw.matrix_unit import MatrixUnit
from verif.runner import BUILD, simulate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gemm", type=int, nargs=3, default=(64, 256, 64), metavar=("M", "K", "N"))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--waves", action="store_true", help="write build/sim/.../dump.fst")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    config = DEFAULT_CONFIG
    print(f"random seed {seed} (rerun with SEED={seed})")
    try:
        simulate(MatrixUnit(config), name="matrix_unit_sim", test_module="verif.tb_matrix_unit",
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
    print(f"\nGEMM {M} x {K} x {N} on a {config.rows} x {config.cols} array: bit-exact against NumPy")
    print(f"  MACs                     {report['macs']:>10,}")
    print(f"  cycles                   {report['streaming_cycles']:>10,}")
    print(f"  array utilization        {100 * report['utilization']:>9.1f}%   "
          f"(useful MACs / (rows x cols x cycles), fill and drain included)")
    print(f"  steady-state utilization {100 * report['steady_state_utilization']:>9.1f}%   "
          f"(cycles with an activation vector entering the array)")
    if args.waves:
        print(f"  waveform: {BUILD / 'sim' / 'matrix_unit_sim-waves' / 'dump.fst'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
