"""pytest options shared by the entry points: a printed, reproducible random seed."""

import os
import random

import pytest


def pytest_addoption(parser):
    parser.addoption("--seed", type=int, default=None,
                     help="random seed for every randomized test (default: a new one, printed)")
    parser.addoption("--waves", action="store_true", help="write VCD waveforms under build/sim")


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


#: The longest simulations (minutes each), in this order before every other test, so that
#: the parallel workers finish together instead of one of them ending the run alone. The
#: workers take one test at a time (``make test`` passes ``--maxschedchunk 1``): with
#: pytest-xdist's default chunks, the first worker got all of these at once.
LONGEST_FIRST = ("test_host_link.py", "test_npu.py", "test_rtl_runtime.py", "test_dma.py",
                 "test_matrix_unit.py", "test_output_stage.py", "test_small_npu.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)
