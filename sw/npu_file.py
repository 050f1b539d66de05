"""The ``.npu`` file: one compiled model.

A zip archive holding ``manifest.json`` (the configuration it was compiled for, the
model's inputs and outputs with shapes, dtypes, scales and zero points, and the steps to
run) and ``constants.npz`` (weights, biases, scales and the NPU programs).
"""

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field

import numpy as np

from hw.config import NPUConfig


__all__ = ["CompiledModel", "NPUFileError", "FORMAT_VERSION"]

#: 2: an NPU step names its input's dtype, and may run with the next step (the pair of
#: convolutions of ``sw.kernels.resident_pair``). 4: runs of NPU steps in one program
#: (``sw.compiler._Compiler.plan_run``): a step says which of its tensors stay in the
#: scratchpad, and a program the instruction ranges of its adds.
FORMAT_VERSION = 4


class NPUFileError(Exception):
    """A ``.npu`` file that cannot be used (the message names the file and the reason)."""


@dataclass
class CompiledModel:
    config: NPUConfig
    inputs: list                    # [{name, shape, dtype, scale?, zero_point?}]
    outputs: list
    steps: list                     # JSON-able dicts, see sw.compiler
    constants: dict = field(default_factory=dict)   # name -> np.ndarray
    memory_bytes: int = 0
    source: str = ""

    def save(self, path):
        manifest = {
            "format": FORMAT_VERSION, "source": self.source,
            "config": asdict(self.config), "config_id": self.config.config_id(),
            "inputs": self.inputs, "outputs": self.outputs, "steps": self.steps,
            "memory_bytes": self.memory_bytes,
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **self.constants)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("manifest.json", json.dumps(manifest, indent=1))
            archive.writestr("constants.npz", buffer.getvalue())

    @classmethod
    def load(cls, path):
        try:
            with zipfile.ZipFile(path) as archive:
                manifest = json.loads(archive.read("manifest.json"))
                constants = np.load(io.BytesIO(archive.read("constants.npz")))
                constants = {name: constants[name] for name in constants.files}
        except FileNotFoundError:
            raise NPUFileError(f"{path}: no such file") from None
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
            raise NPUFileError(f"{path}: not a compiled .npu model ({error})") from None
        if manifest.get("format") != FORMAT_VERSION:
            raise NPUFileError(f"{path}: .npu format {manifest.get('format')}, this tool reads "
                               f"format {FORMAT_VERSION}")
        config = NPUConfig(**manifest["config"])
        return cls(config, manifest["inputs"], manifest["outputs"], manifest["steps"], constants,
                   manifest["memory_bytes"], manifest.get("source", ""))
