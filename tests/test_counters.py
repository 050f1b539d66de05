"""hw.counters.CounterFile in Amaranth's simulator against a model that counts in Python:
random events on every counter (none, some, every cycle), clears, and reads as often as
the register file can make them."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.counters import READ_LATENCY, CounterFile


CYCLES = 20_000


@pytest.mark.parametrize("widths", [(1, 1), (1, 1, 2, 2, 1, 1, 1, 1), (4, 1, 3)],
                         ids=["2_events", "iCEBreaker", "wide"])
def test_counter_file_counts_every_event(widths, seed):
    """Increments of one event, or of up to 2**width - 1 (bytes), per cycle."""
    rng = np.random.default_rng(seed)
    count = len(widths)
    # Per counter a rate of non-zero increments: never, always, or in between.
    rates = rng.choice([0.0, 1.0, 0.5, 0.1], size=count)
    dut = CounterFile(widths)
    offsets = np.cumsum((0,) + widths[:-1])
    model = [0] * count
    reads = mismatches = 0

    async def testbench(ctx):
        nonlocal reads, mismatches
        asked = {}              # cycle of a read: its counter
        next_read = 0
        for cycle in range(CYCLES):
            # Full range: the largest increment half of the time.
            events = [0 if rng.random() >= rate else
                      2**width - 1 if rng.random() < 0.5 else int(rng.integers(1, 2**width))
                      for rate, width in zip(rates, widths)]
            clear = int(rng.random() < 0.002)
            read = cycle >= next_read and rng.random() < 0.5
            ctx.set(dut.increments, sum(e << int(o) for e, o in zip(events, offsets)))
            ctx.set(dut.clear, clear)
            ctx.set(dut.read, read)
            if read:
                index = int(rng.integers(0, count))
                ctx.set(dut.index, index)
                asked[cycle] = index
                # The fastest a register file waits for each answer.
                next_read = cycle + READ_LATENCY + 2
            if cycle - READ_LATENCY in asked:
                index = asked.pop(cycle - READ_LATENCY)
                reads += 1
                got = ctx.get(dut.value)
                if got != model[index]:
                    mismatches += 1
                    if mismatches <= 5:
                        print(f"cycle {cycle}: counter {index} reads {got}, counted "
                              f"{model[index]}")
            model[:] = [0] * count if clear else \
                [(value + e) % 2**32 for value, e in zip(model, events)]
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    print(f"{reads} reads of {count} counters at rates {[float(r) for r in rates]}")
    assert reads > CYCLES // 10
    assert mismatches == 0, f"{mismatches} of {reads} reads differ"
