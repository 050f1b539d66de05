"""The ``rtl`` backend: the same runtime, driving the Verilator model of the NPU.

cocotb runs Python inside the simulator, so a run launches one simulation
(``verif/tb_runtime.py``) that loads the ``.npu`` file and the inputs, runs the runtime
with the RTL as its backend, and writes the outputs and the hardware counters back.
"""

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np


__all__ = ["run_rtl", "run_rtl_jobs"]


def run_rtl(path, model, config, inputs, batched=False, waves=False, seed=1):
    """Run ``model`` (loaded from ``path``) on the RTL NPU built with ``config``.

    ``inputs``: {name: array}; with ``batched``, each array has a leading axis of
    independent inferences. Returns ({name: array}, report) where the report holds the
    summed hardware counters, MACs and the per-inference cycles.
    """
    return run_rtl_jobs([(path, model, inputs, batched)], config, waves, seed)[0]


def run_rtl_jobs(jobs, config, waves=False, seed=1):
    """Several (path, model, inputs, batched) runs in one simulation; a list of results."""
    from hw.npu import NPU
    from verif.runner import BUILD, simulate

    directory = Path(tempfile.mkdtemp(prefix="run-", dir=_mkdir(BUILD / "run")))
    specs = []
    for index, (path, model, inputs, batched) in enumerate(jobs):
        np.savez(directory / f"inputs{index}.npz", **inputs)
        specs.append({"model": str(Path(path).resolve()), "batched": batched,
                      "inputs": str(directory / f"inputs{index}.npz"),
                      "outputs": str(directory / f"outputs{index}.npz"),
                      "report": str(directory / f"report{index}.json")})
    name = "npu" if config.config_id() == type(config)().config_id() else \
        f"npu_{config.config_id():08x}"
    simulate(NPU(config), name=name, test_module="verif.tb_runtime", seed=seed, waves=waves,
             params={"config": asdict(config), "jobs": specs,
                     "memory_bytes": max(model.memory_bytes for _, model, _, _ in jobs)})
    results = []
    for spec in specs:
        outputs = np.load(spec["outputs"])
        report = json.loads(Path(spec["report"]).read_text())
        results.append(({key: outputs[key] for key in outputs.files}, report))
    shutil.rmtree(directory, ignore_errors=True)
    return results


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path
