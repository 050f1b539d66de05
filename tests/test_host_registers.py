"""Host register file (AXI4-Lite) in Verilator against a Python model of the register map."""

from dataclasses import asdict

import pytest

from hw.config import NPUConfig
from hw.host_registers import HostRegisters
from verif.runner import simulate


@pytest.mark.parametrize("name,config", [
    pytest.param("default", NPUConfig(), id="default"),
    pytest.param("4x4", NPUConfig(rows=4, cols=4), id="4x4"),
])
def test_host_registers(name, config, seed, waves):
    simulate(HostRegisters(config), name=f"host_registers_{name}",
             test_module="verif.tb_host_registers", params={"config": asdict(config)},
             seed=seed, waves=waves)
