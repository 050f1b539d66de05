"""pytest options shared by the entry points: a printed, reproducible random seed."""

import os
import random

import pytest


def pytest_addoption(parser):
    parser.addoption("--seed", type=int, default=None,
                     help="random seed for every randomized test (default: a new one, printed)")
    parser.addoption("--waves", action="store_true", help="write FST waveforms under build/sim")


@pytest.fixture
def seed(request):
    value = request.config.getoption("--seed")
    if value is None:
        value = int(os.environ.get("NPU_SEED", random.SystemRandom().randrange(2**31)))
    print(f"random seed {value} (rerun with --seed {value})")
    return value


@pytest.fixture
def waves(request):
    return request.config.getoption("--waves")
