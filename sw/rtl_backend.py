"""The ``rtl`` backend: the same runtime, driving the Verilator model of the NPU.

cocotb runs Python inside the simulator, so a run launches one simulation
(``verif/tb_runtime.py``) that loads the ``.npu`` file and the inputs, runs the runtime
with the RTL as its backend, and writes the outputs and the hardware counters back.
"""

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np


__all__ = ["run_rtl"]


def run_rtl(path, model, config, inputs, batched=False, waves=False, seed=1):
    """Run ``model`` (loaded from ``path``) on the RTL NPU built with ``config``.

    ``inputs``: {name: array}; with ``batched``, each array has a leading axis of
    independent inferences. Returns ({name: array}, report) where the report holds the
    summed hardware counters, MACs and the per-inference cycles.
    """
    from hw.npu import NPU
    from verif.runner import BUILD, simulate

    directory = BUILD / "run"
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "inputs.npz", **inputs)
    name = "npu" if config.config_id() == type(config)().config_id() else \
        f"npu_{config.config_id():08x}"
    simulate(NPU(config), name=name, test_module="verif.tb_runtime", seed=seed, waves=waves,
             params={"model": str(Path(path).resolve()), "config": asdict(config),
                     "inputs": str(directory / "inputs.npz"), "batched": batched,
                     "outputs": str(directory / "outputs.npz"),
                     "report": str(directory / "report.json")})
    outputs = np.load(directory / "outputs.npz")
    report = json.loads((directory / "report.json").read_text())
    return {key: outputs[key] for key in outputs.files}, report
