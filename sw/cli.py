"""The ``npu`` command line.

    npu compile MODEL.onnx -o MODEL.npu [--config KEY=VALUE,...]
    npu run MODEL.npu --input x.npy --output y.npy [--backend golden|rtl|fpga] [--config ...]
    npu run MODEL.npu --input x.npy --backend fpga --port /dev/ttyUSB0
    npu info MODEL.npu
    npu disasm MODEL.npu

Every error is one line on standard error and a non-zero exit status.
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from hw.config import DEFAULT_CONFIG, NPUConfig


__all__ = ["main", "parse_config"]


class UsageError(Exception):
    pass


#: The steps that run a program on the NPU.
_NPU_STEPS = ("gemm", "npu_add")


def parse_config(text):
    """``rows=4,cols=4,scratchpad_bytes=16384,elementwise_add=1`` → NPUConfig (defaults for
    the rest; flags as 0 or 1)."""
    if not text:
        return DEFAULT_CONFIG
    fields = {f.name: f.type for f in dataclasses.fields(NPUConfig)}
    values = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in fields:
            raise UsageError(f"--config: unknown parameter '{key}' (known: {', '.join(sorted(fields))})")
        try:
            values[key] = int(value, 0)
        except ValueError:
            raise UsageError(f"--config: {key} must be an integer, not '{value}'") from None
        if fields[key] in (bool, "bool"):
            # 0 or 1 on the command line; a bool in the configuration (and its identifier).
            values[key] = bool(values[key])
    try:
        return NPUConfig(**values)
    except ValueError as error:
        raise UsageError(f"--config: {error}") from None


def _load_inputs(model, specs):
    """``--input`` values: ``FILE.npy`` for a one-input model, or ``NAME=FILE.npy``."""
    inputs = {}
    names = [spec["name"] for spec in model.inputs]
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            if len(names) != 1:
                raise UsageError(f"the model has inputs {names}: use --input NAME=FILE.npy")
            name, path = names[0], spec
        try:
            inputs[name] = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file") from None
        except (ValueError, OSError) as error:
            raise UsageError(f"{path}: not a .npy file ({error})") from None
    return inputs


def cmd_compile(args):
    from sw.compiler import compile_model
    config = parse_config(args.config)
    model = compile_model(args.model, config, source=args.model)
    output = args.output or str(Path(args.model).with_suffix(".npu"))
    model.save(output)
    npu = [s for s in model.steps if s["op"] in _NPU_STEPS]
    print(f"{output}: {len(model.steps)} steps ({len(npu)} on the NPU, "
          f"{sum(s['instructions'] for s in npu)} instructions), compiled for a "
          f"{config.rows}x{config.cols} array with {config.scratchpad_bytes // 1024} KiB "
          f"(configuration 0x{config.config_id():08x})")


def cmd_run(args):
    from sw.npu_file import CompiledModel
    model = CompiledModel.load(args.model)
    config = parse_config(args.config)
    inputs = _load_inputs(model, args.input)
    if args.backend == "golden":
        from sw.runtime import GoldenBackend, Runtime
        runtime = Runtime(model, GoldenBackend(config, model.memory_bytes), config, args.model)
        outputs = runtime.infer_sync(inputs)
        stats = runtime.stats
        print(f"golden: {stats.npu_runs} NPU programs, {stats.macs:,} MACs, "
              f"DMA {stats.counters.get('dma_read_bytes', 0):,} bytes read, "
              f"{stats.counters.get('dma_write_bytes', 0):,} written")
    elif args.backend == "fpga":
        outputs, stats = _run_on_board(args, model, inputs)
        counters = stats.counters
        cycles = counters.get("cycles", 0)
        utilization = stats.macs / (model.config.rows * model.config.cols * cycles) if cycles else 0.0
        print(f"fpga: {stats.npu_runs} NPU programs, {cycles:,} cycles, {stats.macs:,} MACs, "
              f"MAC utilization {100 * utilization:.1f}%, DMA {counters.get('dma_read_bytes', 0):,} "
              f"bytes read, {counters.get('dma_write_bytes', 0):,} written")
    else:
        from sw.rtl_backend import run_rtl
        outputs, report = run_rtl(args.model, model, config, inputs, waves=args.waves)
        counters = report["counters"]
        cycles = counters.get("cycles", 0)
        utilization = report["macs"] / (config.rows * config.cols * cycles) if cycles else 0.0
        print(f"rtl: {report['npu_runs']} NPU programs, {cycles:,} cycles, {report['macs']:,} MACs, "
              f"MAC utilization {100 * utilization:.1f}%, DMA {counters.get('dma_read_bytes', 0):,} "
              f"bytes read, {counters.get('dma_write_bytes', 0):,} written")
    names = [spec["name"] for spec in model.outputs]
    if args.output:
        if len(names) == 1:
            np.save(args.output, outputs[names[0]])
        else:
            np.savez(args.output, **outputs)
        print(f"wrote {args.output}")
    else:
        for name in names:
            print(f"{name} = {np.array2string(outputs[name], threshold=64)}")


def _run_on_board(args, model, inputs):
    """Run on a board over its UART link: the device's configuration must be the model's."""
    import asyncio

    from sw.runtime import Runtime
    from sw.uart_link import LinkError, SerialPort, UartBackend, UartLink
    if not args.port:
        raise UsageError("--backend fpga needs --port (for example /dev/ttyUSB0)")
    try:
        port = SerialPort(args.port, args.baud)
    except RuntimeError as error:
        raise UsageError(str(error)) from None
    except Exception as error:
        raise UsageError(f"{args.port}: cannot open the board's serial port ({error})") from None

    async def run():
        backend = UartBackend(UartLink(port, baud=args.baud), run_timeout=args.timeout)
        try:
            await backend.driver.check_config(model.config)
        except RuntimeError as error:
            raise UsageError(f"{args.port}: {error}; recompile with its --config") from None
        runtime = Runtime(model, backend, model.config, args.model)
        return await runtime.infer(inputs), runtime.stats

    try:
        return asyncio.run(run())
    except (LinkError, TimeoutError) as error:
        raise UsageError(f"{args.port}: no answer from the board ({error})") from None
    finally:
        port.close()


def cmd_info(args):
    from sw.npu_file import CompiledModel
    model = CompiledModel.load(args.model)
    c = model.config
    print(f"{args.model}: compiled from {model.source}")
    print(f"  configuration 0x{c.config_id():08x}: {c.rows}x{c.cols} array, "
          f"{c.scratchpad_bytes // 1024} KiB scratchpad in {c.scratchpad_banks} banks, "
          f"{c.acc_depth} accumulator rows, {c.bus_width}-bit bus")
    for kind, tensors in (("input", model.inputs), ("output", model.outputs)):
        for t in tensors:
            print(f"  {kind:<6} {t['name']}: {t['dtype']} {t['shape']}")
    print(f"  memory image: {model.memory_bytes:,} bytes")
    print(f"  {'step':<5} {'where':<5} {'operation':<16} {'node':<32} details")
    run = 0                                 # steps so far of the run being listed
    for index, step in enumerate(model.steps):
        where = "npu" if step["op"] in _NPU_STEPS else "host"
        details = ""
        if step["op"] == "npu_add":
            layer = step["layer"]
            details = f"add mode: {layer['n']} {'uint8' if layer['unsigned'] else 'int8'} elements"
        if step.get("host_reason"):
            details = f"on the host: {step['host_reason']}"
        if step["op"] == "gemm":
            shapes = ", ".join(f"{l['M']}x{l['K']}x{l['N']}" for l in step["layers"][:3])
            more = f" (+{len(step['layers']) - 3} more)" if len(step["layers"]) > 3 else ""
            kind = step["kind"]
            if kind == "conv":
                first = step["layers"][0]
                kind += " (depthwise, direct)" if first.get("depthwise") else \
                    " (direct)" if first.get("direct") else " (im2col)"
            details = f"{kind}: GEMM {shapes}{more}"
        if step["op"] in _NPU_STEPS and not step.get("host_reason"):
            details += "".join(f", {note}" for note in _run_notes(step, run))
            run = run + 1 if step.get("runs_with_next") else 0
        print(f"  {index:<5} {where:<5} {step['op']:<16} {step.get('node', ''):<32} {details}")


def _run_notes(step, before):
    """What ``npu info`` says of an NPU step's program and of where its tensors are, the
    step being the next of a run of ``before`` steps."""
    notes = []
    layer = step["layers"][0] if step["op"] == "gemm" else step
    if layer.get("x_resident"):
        notes.append("its inputs in the scratchpad" if step["op"] == "npu_add" else
                     "its input in the scratchpad")
    elif layer.get("x_in_program"):
        notes.append("its input stored by an earlier step of its program")
    if step.get("y_resident"):
        notes.append("its output kept in the scratchpad")
    if step.get("runs_with_next"):
        notes.append("runs in the program of a later step")
    elif before:
        notes.append(f"{step['instructions']} instructions (this step and the {before} "
                     f"before it)")
    else:
        notes.append(f"{step['instructions']} instructions")
    return notes


def cmd_disasm(args):
    from sw.asm import disassemble
    from sw.npu_file import CompiledModel
    model = CompiledModel.load(args.model)
    for step in model.steps:
        if step["op"] not in _NPU_STEPS:
            continue
        if step.get("runs_with_next"):
            print(f"; node {step['node']} ({step['op_type']}): in a later node's program")
            continue
        print(f"; node {step['node']} ({step['op_type']}), program at 0x{step['program_addr']:08x}")
        for line in disassemble(model.constants[step["program"]].tobytes(), step["program_addr"]):
            print(line)


def build_parser():
    parser = argparse.ArgumentParser(prog="npu", description="Compile and run quantized ONNX "
                                     "models on the open edge NPU.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("compile", help="compile a quantized ONNX model to a .npu file")
    p.add_argument("model")
    p.add_argument("-o", "--output")
    p.add_argument("--config", help="hardware configuration, e.g. rows=4,cols=4")
    p.set_defaults(func=cmd_compile)
    p = commands.add_parser("run", help="run a .npu model on a backend")
    p.add_argument("model")
    p.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE.npy")
    p.add_argument("--output", metavar="FILE.npy")
    p.add_argument("--backend", choices=["golden", "rtl", "fpga"], default="golden")
    p.add_argument("--port", help="fpga: the board's serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=115200, help="fpga: UART baud rate")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="fpga: seconds to wait for one NPU program")
    p.add_argument("--config", help="the target's hardware configuration")
    p.add_argument("--waves", action="store_true", help="rtl: write a VCD waveform")
    p.set_defaults(func=cmd_run)
    p = commands.add_parser("info", help="what is inside a .npu file")
    p.add_argument("model")
    p.set_defaults(func=cmd_info)
    p = commands.add_parser("disasm", help="disassemble the NPU programs of a .npu file")
    p.add_argument("model")
    p.set_defaults(func=cmd_disasm)
    return parser


def main(argv=None):
    from sw.compiler import CompileError
    from sw.kernels import LayerError
    from sw.npu_file import NPUFileError
    from sw.runtime import InferenceError
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CompileError, NPUFileError, InferenceError, LayerError, UsageError) as error:
        print(f"npu: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
