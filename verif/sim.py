"""`make sim`, the main job, in Verilator:

1. the compute core: a 64 x 256 x 64 int8 GEMM with requantization streamed through the
   8 x 8 matrix unit at full rate, checked bit for bit against NumPy;
2. the whole NPU: a 128 x 512 x 128 GEMM with bias, requantization and ReLU, and a 3 x 3
   convolution (32 -> 32 channels, 16 x 16, padding 1) both as a GEMM on im2col done in
   software and run straight from its NHWC input on the NPU, each a program
   in memory run through the host registers, checked bit for bit against NumPy, with
   cycles, MAC utilization and DMA bytes from the hardware counters;
3. a real model: the quantized digits CNN (models/digits_int8.onnx), compiled from ONNX
   and run on the RTL NPU for a batch of test images, every output checked against
   onnxruntime bit for bit, with accuracy and cycles per inference.
"""

import argparse
import json
import random
import sys

from dataclasses import asdict

from hw.config import DEFAULT_CONFIG
from hw.matrix_unit import MatrixUnit
from hw.npu import NPU
from verif.runner import BUILD, ROOT, simulate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gemm", type=int, nargs=3, default=(64, 256, 64), metavar=("M", "K", "N"),
                        help="the matrix-unit GEMM")
    parser.add_argument("--npu-gemm", type=int, nargs=3, default=(128, 512, 128),
                        metavar=("M", "K", "N"), help="the whole-NPU GEMM")
    parser.add_argument("--images", type=int, default=64, help="digits test images to run")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--waves", action="store_true", help="write build/sim/.../dump.vcd")
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
    print(f"  {'workload':<60} {'MACs':>11} {'cycles':>9} {'MAC util.':>9} "
          f"{'DMA read':>10} {'DMA write':>10}")
    for row in rows:
        print(f"  {row['name']:<60} {row['macs']:>11,} {row['cycles']:>9,} "
              f"{100 * row['utilization']:>8.1f}% {row['dma_read_bytes']:>10,} "
              f"{row['dma_write_bytes']:>10,}")
    print("  MAC utilization = MACs / (rows x cols x CYCLES), from the NPU's own counters; "
          "array busy: " + ", ".join(f"{100 * row['array_utilization']:.1f}%" for row in rows))
    if not digits(config, args.images, seed, args.waves):
        return 1
    if args.waves:
        print(f"  waveforms: {BUILD / 'sim'}/*-waves/run-*/dump.vcd")
    return 0


def digits(config, count, seed, waves):
    """The digits CNN on the RTL NPU against onnxruntime; False on a mismatch."""
    import numpy as np

    from sw.compiler import compile_model
    from sw.rtl_backend import run_rtl
    from verif.oracle import onnxruntime_session

    onnx_path = ROOT / "models" / "digits_int8.onnx"
    test_set = np.load(ROOT / "models" / "digits_test.npz")
    images, labels = test_set["images"][:count], test_set["labels"][:count]
    compiled = compile_model(onnx_path, config, source=str(onnx_path.relative_to(ROOT)))
    npu_path = BUILD / "sim" / "digits_int8.npu"
    compiled.save(npu_path)
    name = compiled.inputs[0]["name"]
    session = onnxruntime_session(onnx_path)
    expected = np.stack([session.run(None, {name: image[None]})[0] for image in images])
    outputs, report = run_rtl(npu_path, compiled, config, {name: images[:, None]}, batched=True,
                              waves=waves, seed=seed)
    got = outputs[compiled.outputs[0]["name"]]
    mismatches = int(np.count_nonzero(got != expected))
    accuracy = float(np.mean(got.reshape(len(images), -1).argmax(axis=1) == labels))
    cycles = report["cycles_per_inference"]
    counters = report["counters"]
    macs = report["macs"] / len(images)
    utilization = report["macs"] / (config.rows * config.cols * counters["cycles"])
    print(f"\n3. Digits CNN ({onnx_path.relative_to(ROOT)}, compiled from ONNX) on the RTL NPU, "
          f"{len(images)} test images")
    print(f"  outputs equal to onnxruntime  {len(images) - len(set(np.nonzero(got != expected)[0]))}"
          f" of {len(images)} images ({mismatches} mismatching values)")
    print(f"  accuracy                      {100 * accuracy:.1f}%")
    print(f"  cycles per inference          {int(np.mean(cycles)):,} (NPU busy; host steps between)")
    print(f"  MACs per inference            {int(macs):,}")
    print(f"  MAC utilization               {100 * utilization:.1f}%")
    print(f"  DMA per inference             {counters['dma_read_bytes'] // len(images):,} bytes read, "
          f"{counters['dma_write_bytes'] // len(images):,} written")
    if mismatches:
        print(f"make sim: FAILED: {mismatches} digits outputs differ from onnxruntime", file=sys.stderr)
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
