"""Output stage (bias, requantization, clamp) in Verilator against the NumPy golden model."""

import pytest

from hw.add_stage import AddStage
from hw.output_stage import OutputStage
from hw.serial_output_stage import SerialOutputStage
from verif.runner import simulate


@pytest.mark.parametrize("lanes", [8])
def test_output_stage_matches_golden(lanes, seed, waves):
    """The default stage (its lanes are copies of one circuit; 4 lanes in the small stages
    below): 12,000 lanes."""
    simulate(OutputStage(lanes=lanes, tag_shape=16), name=f"output_stage_{lanes}",
             test_module="verif.tb_output_stage", params={"lanes": lanes, "beats": 1500},
             seed=seed, waves=waves)


@pytest.mark.parametrize("lanes, units, stages", [(2, 1, 5), (4, 2, 3)])
def test_small_output_stage_matches_golden(lanes, units, stages, seed, waves):
    """Fewer lane circuits than lanes (groups on consecutive cycles) and fewer registers."""
    simulate(OutputStage(lanes=lanes, tag_shape=16, units=units, stages=stages),
             name=f"output_stage_{lanes}_u{units}_s{stages}", test_module="verif.tb_output_stage",
             params={"lanes": lanes, "units": units, "stages": stages, "beats": 1500 // lanes * 4},
             seed=seed, waves=waves)


@pytest.mark.parametrize("lanes, channel_depth", [(2, 4)])
def test_serial_output_stage_matches_golden(lanes, channel_depth, seed, waves):
    """One bit per cycle, lane after lane, the parameters read a byte at a time from the
    stage's own table (``NPUConfig.serial_output``, the iCEBreaker's): the same outputs,
    1,600 lanes in the random test."""
    simulate(SerialOutputStage(lanes=lanes, channel_depth=channel_depth, tag_shape=16),
             name=f"serial_output_stage_{lanes}", test_module="verif.tb_output_stage",
             params={"lanes": lanes, "channel_depth": channel_depth, "serial": True,
                     "beats": 800}, seed=seed, waves=waves)


@pytest.mark.parametrize("lanes, circuits", [(4, 2)])
def test_add_stage_matches_golden(lanes, circuits, seed, waves):
    """The add mode (QLinearAdd) in front of the output stage, and its pass-through: each
    circuit computing two lanes of a beat in turn, the FIFO filled up."""
    depth = 16
    simulate(AddStage(lanes, circuits, depth, tag_shape=16), name=f"add_stage_{lanes}_{circuits}",
             test_module="verif.tb_add_stage",
             params={"lanes": lanes, "circuits": circuits, "depth": depth, "beats": 1500},
             seed=seed, waves=waves)
