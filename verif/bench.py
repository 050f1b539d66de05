"""``make bench``: GEMMs, the layers of MLPerf Tiny's reference models and of ResNet-50 and
SqueezeNet, and whole networks end to end, through the RTL NPU, against the cost model.

The suite (issue 7):

1. GEMMs: 64³, 128³, 256³, 512³, matrix-vector 1x256x256 and 16x256x256
   (``verif.npu_workloads.gemm_workload``, checked against NumPy);
2. every conv and fully-connected layer of MLPerf Tiny's ResNet-8, DS-CNN and MobileNetV1
   0.25 (``verif.bench_models``), a row per distinct shape with its instance count;
3. a few conv layers of the ResNet-50 and SqueezeNet topologies shipped in the ``onnx``
   package (shapes from ``onnx.shape_inference``);
4. end to end: the digits model (``models/digits_int8.onnx``) and ResNet-8 quantized by
   onnxruntime's ``quantize_static``, through ``sw.compiler`` and ``sw.runtime`` as
   ``npu run`` runs them (the host runs pooling, additions and, for the convolutions the
   compiler lowers to GEMMs, im2col between NPU steps).

Layers run as one-node quantized models (random int8 weights) through the same compiler
and runtime, with their outputs checked bit for bit against onnxruntime; a layer the
compiler refuses is listed with the compiler's reason. Every row runs on
:class:`verif.bench_top.BenchTop` (the NPU with RTL memory, so no Python runs per cycle)
and is reported with the NPU's own counters: cycles, MAC utilization (MACs / (rows · cols ·
cycles)), DRAM bytes read and written against the compulsory bytes (each 8-bit input,
weight and output byte once; for layers those of the layer itself, so the inflation of an
im2col lowering shows; end to end, the model's weights, biases and quantization parameters, its input and
its output), time per inference, and ``sw.cost_model``'s predictions with their error.

Writes ``build/bench/results.json``, ``results.md``, ``utilization.png`` and ``dram.png``;
the generated models and inputs go to ``build/bench/rows/``. A benchmark, not a test: it
asserts nothing about speed.
"""

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx

from hw.config import DEFAULT_CONFIG
from sw.asm import Program
from sw.compiler import CompileError, compile_model
from sw.cost_model import predict
from sw.kernels import LayerError
from verif import bench_models
from verif.bench_top import BenchTop
from verif.npu_workloads import MemoryImage, gemm_workload
from verif.oracle import onnxruntime_session
from verif.runner import BUILD, ROOT, simulate


OUT = BUILD / "bench"
ROWS = OUT / "rows"
ONNX_MODELS = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

GEMMS = [(64, 64, 64), (128, 128, 128), (256, 256, 256), (512, 512, 512), (1, 256, 256),
         (16, 256, 256)]
#: Layers of the topologies shipped with onnx: (model, file, {node: name}). Chosen among
#: those whose memory image fits 1 MiB: the bench memory follows the largest row, and
#: converting it to Verilog takes about a minute per MiB (Amaranth writes its initial
#: contents bit by bit). ResNet-50's stride-2 3x3 convolutions need 3 MiB or more (the
#: compiler lowers them to GEMMs on the host's im2col), and SqueezeNet's conv10 2 MiB.
ONNX_LAYERS = [
    ("ResNet-50", "light_resnet50.onnx",
     {"n4": "res2a 1x1 reduce", "n42": "res3a 1x1 expand", "n48": "res3b 1x1 reduce"}),
    ("SqueezeNet", "light_squeezenet.onnx",
     {"n3": "fire2 squeeze 1x1", "n7": "fire2 expand 3x3", "n51": "fire9 expand 3x3"}),
]


def _program(blob):
    program = Program()
    program.words = [int.from_bytes(blob[i:i + 16].tobytes(), "little")
                     for i in range(0, len(blob), 16)]
    return program


def _prediction(config, programs):
    """The cost model's (cycles, DRAM bytes) summed over ``programs``, pairs of a program
    and the instruction ranges of the element-wise adds in it (``sw.cost_model.predict``)."""
    cycles = dram = 0
    for program, add in programs:
        p = predict(config, program, add)
        cycles += p.cycles
        dram += p.dma_read_bytes + p.dma_write_bytes
    return cycles, dram


def _gemm_row(config, rng, index, M, K, N):
    row = {"group": "GEMM", "name": f"{M}x{K}x{N}", "count": 1, "macs": M * K * N,
           "compulsory_bytes": M * K + K * N + M * N}
    try:
        workload = gemm_workload(config, rng, M, K, N, image=MemoryImage(size=1 << 30))
    except LayerError as error:
        return dict(row, refused=str(error).split(": ", 1)[1])
    path = ROWS / f"{index:02d}.npz"
    np.savez(path, data=workload.image.data[:workload.image.next],
             program_addr=workload.program_addr,
             names=[name for name, _, _ in workload.outputs],
             addrs=[addr for _, addr, _ in workload.outputs],
             **{f"expected{i}": want for i, (_, _, want) in enumerate(workload.outputs)})
    cycles, dram = _prediction(config, [(workload.program, [])])
    return dict(row, kind="image", image=str(path), memory_bytes=workload.image.next,
                predicted_cycles=cycles, predicted_dram_bytes=dram)


def _model_row(config, row, index, model, inputs):
    """Compile ``model``, run it in onnxruntime for the expected outputs, store the files."""
    try:
        compiled = compile_model(model, config, source=row["name"])
    except CompileError as error:
        return dict(row, refused=str(error).rsplit("): ", 1)[-1])
    prefix = ROWS / f"{index:02d}"
    compiled.save(f"{prefix}.npu")
    np.savez(f"{prefix}.inputs.npz", **inputs)
    session = onnxruntime_session(model)
    names = [output.name for output in session.get_outputs()]
    np.savez(f"{prefix}.expected.npz", **dict(zip(names, session.run(names, inputs))))
    programs = [(_program(compiled.constants[step["program"]]), step["add_ranges"])
                for step in compiled.steps if step.get("program")]
    cycles, dram = _prediction(config, programs)
    return dict(row, kind="model", model=f"{prefix}.npu", inputs=f"{prefix}.inputs.npz",
                expected=f"{prefix}.expected.npz", memory_bytes=compiled.memory_bytes,
                predicted_cycles=cycles, predicted_dram_bytes=dram)


def _layer_rows(group, model_layers, rng, index, names=None):
    rows = []
    for layer in bench_models.distinct(model_layers):
        label = names[layer["name"]] if names else \
            layer["names"][0] if len(layer["names"]) == 1 else \
            f"{layer['names'][0]} … {layer['names'][-1]}"
        row = {"group": group, "name": f"{label}: {bench_models.describe(layer)}",
               "count": layer["count"], "macs": bench_models.layer_macs(layer),
               "compulsory_bytes": bench_models.compulsory_bytes(layer),
               "conv": layer["kind"] == "conv"}
        model, inputs = bench_models.layer_model(layer, rng)
        rows.append(_model_row(DEFAULT_CONFIG, row, index + len(rows), model, inputs))
    return rows


def _end_to_end_row(name, index, model, inputs, changes=None):
    """A quantized model end to end; compulsory: its parameters, input and output once.
    ``changes``: fields of the default configuration it runs with changed (the row then
    runs on an NPU built with them)."""
    parameters = sum(onnx.numpy_helper.to_array(init).nbytes for init in model.graph.initializer)
    outputs = sum(int(np.prod([d.dim_value for d in value.type.tensor_type.shape.dim]))
                  for value in model.graph.output)
    row = {"group": "end to end", "name": name, "count": 1, "macs": None,
           "compulsory_bytes": parameters + sum(x.size for x in inputs.values()) + outputs,
           "changes": changes or {}}
    return _model_row(DEFAULT_CONFIG.with_(**row["changes"]), row, index, model, inputs)


def prepare(rng):
    """Every row of the suite, with its files under ``build/bench/rows/``."""
    ROWS.mkdir(parents=True, exist_ok=True)
    rows = [_gemm_row(DEFAULT_CONFIG, rng, index, *shape) for index, shape in enumerate(GEMMS)]
    networks = {}
    for group, build in bench_models.MLPERF_TINY.items():
        networks[group] = build(rng)
        rows += _layer_rows(group, bench_models.layers(networks[group]), rng, len(rows))
    for group, file, names in ONNX_LAYERS:
        picked = [layer for layer in bench_models.layers(onnx.load(ONNX_MODELS / file))
                  if layer["name"] in names]
        rows += _layer_rows(group, picked, rng, len(rows), names)

    digits = onnx.load(ROOT / "models" / "digits_int8.onnx")
    image = np.load(ROOT / "models" / "digits_test.npz")["images"][:1]
    rows.append(_end_to_end_row("digits (models/digits_int8.onnx)", len(rows), digits,
                                {digits.graph.input[0].name: image}))
    from verif.random_models import quantize

    path = quantize(networks["ResNet-8"], ROWS / "resnet8_int8.onnx", rng,
                    quant_format="QOperator", per_channel=True)
    resnet8 = onnx.load(path)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    rows.append(_end_to_end_row("ResNet-8 (quantize_static, per channel)", len(rows), resnet8,
                                {resnet8.graph.input[0].name: x}))
    other = {"elementwise_add": not DEFAULT_CONFIG.elementwise_add}
    rows.append(_end_to_end_row(
        f"ResNet-8, {'adds on the host' if DEFAULT_CONFIG.elementwise_add else 'with the add mode'} "
        f"(elementwise_add={int(other['elementwise_add'])})", len(rows), resnet8,
        {resnet8.graph.input[0].name: x}, other))
    return rows


def memory_size(rows):
    """The bench memory: a power of two, at least 1 MiB, holding every row's image."""
    need = max([1 << 20] + [row["memory_bytes"] for row in rows if "kind" in row])
    return 1 << (need - 1).bit_length()


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
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    config = DEFAULT_CONFIG
    began = time.perf_counter()
    rows = prepare(np.random.default_rng(args.seed))
    prepared = time.perf_counter()
    runnable = [row for row in rows if "kind" in row]
    memory_bytes = memory_size(runnable)
    # One NPU per configuration the rows need (the default's first).
    batches = {}
    for row in runnable:
        batches.setdefault(json.dumps(row.get("changes", {}), sort_keys=True), []).append(row)
    measured = {}
    for changes, batch in batches.items():
        built = config.with_(**json.loads(changes))
        raw = OUT / f"rtl_{built.config_id():08x}.json"
        simulate(BenchTop(built, memory_bytes),
                 name="bench_top" if built == config else f"bench_top_{built.config_id():08x}",
                 test_module="verif.tb_bench", seed=args.seed,
                 params={"config": asdict(built), "memory_bytes": memory_bytes, "out": str(raw),
                         "rows": batch})
        measured.update(zip((id(row) for row in batch), json.loads(raw.read_text())))
    simulated = time.perf_counter() - prepared
    rows_seconds = sum(rtl["row_seconds"] for rtl in measured.values())
    mhz, clock_note = clock()
    peak = config.rows * config.cols
    results = []
    for row in rows:
        if "kind" not in row:
            results.append(row)
            continue
        rtl = measured[id(row)]
        macs = row["macs"] or rtl["macs"]
        dram = rtl["dma_read_bytes"] + rtl["dma_write_bytes"]
        results.append({
            **row, **rtl, "macs": macs, "dram_bytes": dram,
            "utilization": macs / (peak * rtl["cycles"]),
            # The board's clock is that of the default configuration's build.
            "time_us": None if row.get("changes") else rtl["cycles"] / mhz, "clock_mhz": mhz,
            "cycles_per_second": rtl["cycles"] / rtl["run_seconds"],
            "cycle_error": _error(row["predicted_cycles"], rtl["cycles"]),
            "dram_error": _error(row["predicted_dram_bytes"], dram),
        })
    summary = {"clock": clock_note, "config": asdict(config), "memory_bytes": memory_bytes,
               "prepare_seconds": prepared - began, "rows_seconds": rows_seconds,
               "build_seconds": simulated - rows_seconds,
               **summarize(results, peak)}
    (OUT / "results.json").write_text(json.dumps({**summary, "rows": results}, indent=1))
    (OUT / "results.md").write_text(markdown(results, summary, config))
    plots(results)
    print((OUT / "results.md").read_text())
    print(f"{time.perf_counter() - began:.0f} s; {OUT}/results.json, results.md, "
          f"utilization.png, dram.png")
    return 0


def _mean_utilization(rows, peak):
    """Mean MAC utilization over layer instances, and over their MACs and cycles."""
    count = sum(r["count"] for r in rows)
    return (sum(r["count"] * r["utilization"] for r in rows) / count,
            sum(r["count"] * r["macs"] for r in rows) /
            (peak * sum(r["count"] * r["cycles"] for r in rows)))


def summarize(results, peak):
    ran = [r for r in results if "cycles" in r]
    summary = {"cycles": sum(r["cycles"] for r in ran),
               "run_seconds": sum(r["run_seconds"] for r in ran), "networks": {}}
    summary["cycles_per_second"] = summary["cycles"] / summary["run_seconds"]
    for group in bench_models.MLPERF_TINY:
        convs = [r for r in ran if r["group"] == group and r["conv"]]
        if convs:
            per_instance, overall = _mean_utilization(convs, peak)
            summary["networks"][group] = {
                "conv_layers": sum(r["count"] for r in convs),
                "refused": sum(r["count"] for r in results if r["group"] == group and "refused" in r),
                "mean_utilization": per_instance, "conv_utilization": overall}
    return summary


def _cells(r):
    if "refused" in r:
        return [f"{r['macs']:,}" if r["macs"] else "", f"refused by the compiler: {r['refused']}"] + \
            [""] * 11
    return [f"{r['macs']:,}", f"{r['cycles']:,}", f"{100 * r['utilization']:.1f}%",
            f"{r['dma_read_bytes']:,}", f"{r['dma_write_bytes']:,}", f"{r['compulsory_bytes']:,}",
            f"{r['dram_bytes'] / r['compulsory_bytes']:.2f}x",
            "—" if r["time_us"] is None else f"{r['time_us']:.1f}",
            f"{r['predicted_cycles']:,}", f"{100 * r['cycle_error']:+.1f}%",
            f"{r['predicted_dram_bytes']:,}", f"{100 * r['dram_error']:+.1f}%",
            f"{r['load_stall_cycles']:,}/{r['compute_stall_cycles']:,}/"
            f"{r['store_stall_cycles']:,}/{r['fetch_stall_cycles']:,}"]


def markdown(results, summary, config):
    lines = [f"NPU {config.rows}x{config.cols}, {config.bus_width}-bit AXI, RTL memory "
             f"({summary['memory_bytes'] >> 20} MiB); outputs bit-exact on every row (GEMMs "
             f"against NumPy, layers and networks against onnxruntime); time {summary['clock']}. "
             f"Layers: one row per distinct shape, × its instances in the network; end to end: "
             f"the NPU's counters summed over the model's NPU steps (host steps not timed).", "",
             "| model | workload | × | MACs | cycles | MAC util. | DRAM read | DRAM write | "
             "compulsory | DRAM / compulsory | time (µs) | predicted cycles | error | "
             "predicted DRAM | error | stalls load/compute/store/fetch |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append("| " + " | ".join([r["group"], r["name"], str(r["count"]), *_cells(r)]) + " |")
    lines.append("")
    for group, network in summary["networks"].items():
        lines.append(f"- {group}: mean MAC utilization over its {network['conv_layers']} conv "
                     f"layers {100 * network['mean_utilization']:.1f}% (per layer instance), "
                     f"{100 * network['conv_utilization']:.1f}% over their MACs and cycles"
                     + (f"; {network['refused']} refused" if network["refused"] else ""))
    for r in results:
        if r["group"] == "end to end" and "cycles" in r:
            lines.append(f"- {r['name']} end to end: DRAM {r['dram_bytes']:,} / compulsory "
                         f"{r['compulsory_bytes']:,} bytes = {r['dram_bytes'] / r['compulsory_bytes']:.2f}x; "
                         f"{r['cycles']:,} NPU cycles in {r['npu_runs']} programs, "
                         + ("no board build of this configuration meets timing"
                            if r["time_us"] is None else f"{r['time_us']:.0f} µs")
                         + f", MAC utilization {100 * r['utilization']:.1f}%")
    off = [r for r in results if "cycles" in r and abs(r["cycle_error"]) > 0.1]
    lines.append(f"- cost model: {len(off)} of {sum('cycles' in r for r in results)} rows off "
                 f"by more than 10% in cycles" + "".join(
                     f"{'; ' if i else ': '}{r['group']} {r['name']} {100 * r['cycle_error']:+.0f}%"
                     for i, r in enumerate(off)))
    lines.append(f"- simulation: {summary['cycles']:,} cycles in {summary['run_seconds']:.0f} s "
                 f"of NPU runs, {summary['cycles_per_second']:,.0f} simulated cycles per second; "
                 f"{summary['rows_seconds']:.0f} s with backdoor loads, host steps and checks; "
                 f"{summary['prepare_seconds']:.0f} s to prepare the rows, "
                 f"{summary['build_seconds']:.0f} s to build the simulation (Verilog and "
                 f"Verilator, when the hardware changed)")
    return "\n".join(lines) + "\n"


def plots(results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [r for r in results if "cycles" in r]
    names = [f"{r['group']}: {r['name']}" for r in ran]
    y = np.arange(len(names))
    height = 0.28 * len(names) + 1.5
    fig, ax = plt.subplots(figsize=(13, height))
    ax.barh(y, [100 * r["utilization"] for r in ran])
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("MAC utilization (%)")
    ax.set_xlim(0, 100)
    fig.tight_layout()
    fig.savefig(OUT / "utilization.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(13, height))
    ax.barh(y - 0.2, [r["dram_bytes"] for r in ran], 0.4, label="DRAM bytes (counters)")
    ax.barh(y + 0.2, [r["compulsory_bytes"] for r in ran], 0.4, label="compulsory bytes")
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("bytes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "dram.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
