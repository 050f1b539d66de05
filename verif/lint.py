"""`make lint`: Verilator lint (-Wall) of the generated Verilog of every top-level block.

Waivers live in one place, verif/verilator_waivers.vlt, each with its reason.
"""

import sys

from hw.add_stage import AddStage
from hw.config import DEFAULT_CONFIG
from hw.matrix_unit import MatrixUnit
from hw.npu import NPU
from hw.output_stage import OutputStage
from hw.serial_output_stage import SerialOutputStage
from verif.runner import lint


def blocks(config=DEFAULT_CONFIG):
    """(name, component) of every block that is linted, at the default configuration."""
    return [
        ("add_stage", AddStage(config.cols, config.add_circuits, tag_shape=16)),
        ("output_stage", OutputStage(config.cols, tag_shape=16)),
        ("serial_output_stage", SerialOutputStage(config.cols, config.channel_depth, tag_shape=16)),
        ("matrix_unit", MatrixUnit(config)),
        ("matrix_unit_add_mode", MatrixUnit(config.with_(elementwise_add=True))),
        ("npu", NPU(config)),
    ]


def main():
    failed = 0
    for name, component in blocks():
        ok, output = lint(component, name=name)
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
        if not ok:
            failed += 1
            print(output)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
