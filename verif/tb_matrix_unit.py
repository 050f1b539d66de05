"""cocotb testbench of hw.matrix_unit.MatrixUnit: tiled GEMMs with requantization,
checked bit for bit against the NumPy golden models."""

import json

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from hw.config import NPUConfig
from hw.matrix_unit import MatrixUnit
from verif.golden import tile_gemm
from verif.runner import BUILD
from verif.stimulus import (channel_param_record, golden_requantize, int8_full_range,
                            random_channel_params)
from verif.tb_util import (collect_stream, drive_stream, pack, port, start_clock_and_reset,
                           tb_params, tb_rng, unpack)


class GemmProblem:
    """One GEMM ``requantize(A @ W)`` and its schedule through the matrix unit."""

    def __init__(self, a, w, params, channel_base, cols):
        self.a, self.w, self.params, self.channel_base = a, w, params, channel_base
        self.cols = cols

    @property
    def n_tiles(self):
        return -(-self.w.shape[1] // self.cols)

    def schedule(self, config, tag_base):
        """Weight beats, activation beats (as field dicts) and {tag: (m, n_tile)}."""
        R, C = config.rows, config.cols
        M, K = self.a.shape
        N = self.w.shape[1]
        k_tiles = -(-K // R)
        n_tiles = -(-N // C)
        a = np.zeros((M, k_tiles * R), np.int64)
        a[:, :K] = self.a
        w = np.zeros((k_tiles * R, n_tiles * C), np.int64)
        w[:K, :N] = self.w
        weights, acts, tags = [], [], {}
        tag = tag_base
        for nt in range(n_tiles):
            for kt in range(k_tiles):
                weights += [w[kt * R + r, nt * C:(nt + 1) * C] for r in range(R)]
                for row in range(M):
                    emit = kt == k_tiles - 1
                    acts.append({
                        "data": a[row, kt * R:(kt + 1) * R], "last": row == M - 1,
                        "first": kt == 0, "emit": emit, "acc_addr": row,
                        "channel": self.channel_base + nt, "tag": tag & 0xFFFF,
                    })
                    if emit:
                        tags[tag & 0xFFFF] = (row, nt)
                        tag += 1
        self.padded_w = w
        self.padded_a = a
        return weights, acts, tags, n_tiles * k_tiles

    def expected(self, row, nt):
        C = self.cols
        acc = tile_gemm(self.padded_a[row:row + 1], self.padded_w[:, nt * C:(nt + 1) * C])[0]
        lanes = slice(nt * C, (nt + 1) * C)
        q = golden_requantize(acc, {key: value[lanes] for key, value in self.params.items()})
        return acc, q & 0xFF


class MatrixUnitBench:
    def __init__(self, dut):
        self.dut = dut
        tb = tb_params()
        self.config = NPUConfig(**tb["config"])
        unit = MatrixUnit(self.config)
        self.weight_layout = unit.weights.p.shape()
        self.act_layout = unit.acts.p.shape()
        self.param_layout = unit.params.p.shape()
        self.result_layout = unit.results.p.shape()
        self.rng = tb_rng(dut._log)

    async def write_params(self, problems):
        beats = []
        for problem in problems:
            C = self.config.cols
            for nt in range(problem.n_tiles):
                records = [channel_param_record(problem.params, nt * C + c,
                                                int(self.rng.integers(256))) for c in range(C)]
                beats += [pack(self.param_layout, {"index": problem.channel_base + nt,
                                                   "byte": byte,
                                                   "data": [record[byte] for record in records]})
                          for byte in range(len(records[0]))]
        await drive_stream(self.dut.clk, port(self.dut, "params"), beats, self.rng)

    async def run_batch(self, problems, idle=0.0, stall=0.0, acts_after=0):
        """Stream every problem back to back, the activations from ``acts_after`` cycles
        on; return (tiles, cycles, accepted act beats). A result that never arrives fails
        the test after a bounded wait."""
        await self.write_params(problems)
        weights, acts, expected = [], [], {}
        tiles = 0
        for problem in problems:
            w, a, tags, n = problem.schedule(self.config, len(expected))
            weights += w
            acts += a
            expected.update({tag: (problem, *where) for tag, where in tags.items()})
            tiles += n
        dut = self.dut
        cocotb.start_soon(drive_stream(dut.clk, port(dut, "weights"),
                                       [pack(self.weight_layout, b) for b in weights],
                                       self.rng, idle))
        cocotb.start_soon(self._after(acts_after, drive_stream(
            dut.clk, port(dut, "acts"), [pack(self.act_layout, b) for b in acts], self.rng, idle)))
        counter = cocotb.start_soon(self.count_cycles())
        patience = 20 * (len(acts) + len(weights)) // max(1.0 - stall, 0.05) + 10_000
        try:
            received = await collect_stream(dut.clk, port(dut, "results"), len(expected),
                                            self.rng, stall, max_cycles=int(patience))
        except AssertionError as timeout:
            raise AssertionError(f"results lost: {timeout}") from None
        counter.cancel()
        self.check(received, expected)
        return tiles, self.cycles, self.accepted

    async def _after(self, cycles, coroutine):
        await ClockCycles(self.dut.clk, cycles)
        await coroutine

    async def count_cycles(self):
        """Cycles from the first accepted activation, and activations accepted."""
        self.cycles = self.accepted = 0
        self.accept_cycles = []
        started = False
        valid, _, ready = port(self.dut, "acts")
        while True:
            await FallingEdge(self.dut.clk)
            await ReadOnly()
            hit = bool(valid.value and ready.value)
            started |= hit
            self.cycles += started
            self.accepted += hit
            if hit:
                self.accept_cycles.append(self.cycles)

    def check(self, received, expected):
        mismatches = 0
        for bits in received:
            out = unpack(self.result_layout, bits)
            assert out["tag"] in expected, f"result with unknown tag {out['tag']}"
            problem, row, nt = expected.pop(out["tag"])
            acc, q = problem.expected(row, nt)
            if out["acc"] != [int(v) for v in acc] or out["q"] != [int(v) for v in q]:
                mismatches += 1
                if mismatches <= 5:
                    self.dut._log.error("row %d n-tile %d of a %s GEMM: rtl acc %s q %s, golden "
                                        "acc %s q %s", row, nt, problem.a.shape + problem.w.shape[1:],
                                        out["acc"], out["q"], list(acc), list(q))
        assert mismatches == 0, f"{mismatches} result vectors differ from the golden model"
        assert not expected, f"{len(expected)} results never arrived"


def random_problem(rng, config, channel_base, max_n_tiles):
    R, C = config.rows, config.cols
    M = int(rng.choice([rng.integers(1, 8), rng.integers(8, 40), rng.integers(1, config.acc_depth + 1)]))
    K = int(rng.integers(1, 5 * R + 1))
    N = int(rng.integers(1, max_n_tiles * C + 1))
    a = int8_full_range(rng, (M, K))
    w = int8_full_range(rng, (K, N))
    return GemmProblem(a, w, random_channel_params(rng, -(-N // C) * C), channel_base, C)


@cocotb.test()
async def random_gemm_tiles(dut):
    """Random GEMMs (K and N not multiples of the array), random stalls on every stream."""
    bench = MatrixUnitBench(dut)
    config, rng = bench.config, bench.rng
    await start_clock_and_reset(dut)
    total_tiles = 0
    while total_tiles < tb_params()["tiles"]:
        problems, used = [], 0
        while used < config.channel_depth - 3:
            problem = random_problem(rng, config, used, min(3, config.channel_depth - used))
            problems.append(problem)
            used += problem.n_tiles
        tiles, _, _ = await bench.run_batch(problems, idle=0.2, stall=0.2)
        total_tiles += tiles
    dut._log.info("%d weight tiles bit-exact against the golden model", total_tiles)


@cocotb.test()
async def back_to_back_accumulation(dut):
    """GEMMs of one to four rows whose two K-tiles enter back to back (both weight banks
    loaded before the activations start): each row of the second adds into its row one to
    four cycles after the first: before that sum is written, in the cycle it is written,
    and after (with ``registered_accumulators``, four cycles after). Without
    ``registered_accumulators`` the one-row GEMM's second tile waits one cycle."""
    bench = MatrixUnitBench(dut)
    config, rng = bench.config, bench.rng
    await start_clock_and_reset(dut)
    R, C = config.rows, config.cols
    for rows in (1, 2, 3, 4):
        for _ in range(20):
            a = int8_full_range(rng, (rows, 2 * R))
            w = int8_full_range(rng, (2 * R, C))
            problem = GemmProblem(a, w, random_channel_params(rng, C), 0, C)
            await bench.run_batch([problem], acts_after=4 * R)
            expected = list(range(1, 2 * rows + 1))
            if rows == 1 and not config.registered_accumulators:
                expected = [1, 3]
            assert bench.accept_cycles == expected, \
                f"the two K-tiles entered at cycles {bench.accept_cycles}, not {expected}"
    dut._log.info("back-to-back accumulations of 1 to 4 rows bit-exact, 20 each")


class AccumulatorSequence:
    """Weight tiles whose activations name accumulator rows at random among a few, with
    ``first`` and ``emit`` at random (a row's first use is ``first``): the same row one,
    two, three or more cycles behind in any mix. Its expected results come from a
    sequential model of the accumulators, beat by beat, in a :class:`GemmProblem`'s
    interface (one "row" per emitted result)."""

    def __init__(self, rng, config, tiles, rows_used):
        R, C = config.rows, config.cols
        self.cols, self.channel_base, self.n_tiles = C, 0, 1
        self.params = random_channel_params(rng, C)
        self.tiles = []
        for _ in range(tiles):
            beats = int(rng.integers(1, 13))
            self.tiles.append((int8_full_range(rng, (R, C)), int8_full_range(rng, (beats, R)),
                               rng.integers(0, rows_used, size=beats),
                               rng.random(beats) < 0.15, rng.random(beats) < 0.3))
        self.a = np.concatenate([a for _, a, _, _, _ in self.tiles])
        self.w = self.tiles[0][0]

    def schedule(self, config, tag_base):
        weights, acts, tags = [], [], {}
        accumulators, self.results = {}, []
        tag = tag_base
        for w, a, rows, first, emit in self.tiles:
            weights += list(w)
            for i, (vector, row) in enumerate(zip(a, rows)):
                row = int(row)
                starts = bool(first[i]) or row not in accumulators
                total = (0 if starts else accumulators[row]) + vector @ w
                acts.append({"data": vector, "last": i == len(a) - 1, "first": starts,
                             "emit": bool(emit[i]), "acc_addr": row, "channel": 0,
                             "tag": tag & 0xFFFF})
                if emit[i]:
                    tags[tag & 0xFFFF] = (len(self.results), 0)
                    self.results.append((total, golden_requantize(total, self.params) & 0xFF))
                    tag += 1
                else:
                    accumulators[row] = total
        return weights, acts, tags, len(self.tiles)

    def expected(self, index, nt):
        return self.results[index]


@cocotb.test()
async def random_accumulator_rows(dut):
    """Tiles whose activations name three accumulator rows at random, with random
    ``first`` and ``emit``, with and without gaps: every distance between two sums on a
    row, and every mix of them (a row one cycle behind and three behind, two and three,
    ...), against a sequential model of the accumulators."""
    bench = MatrixUnitBench(dut)
    config, rng = bench.config, bench.rng
    await start_clock_and_reset(dut)
    for idle in (0.0, 0.3, 0.6):
        sequence = AccumulatorSequence(rng, config, tiles=40, rows_used=3)
        await bench.run_batch([sequence], idle=idle, stall=idle / 2)
        dut._log.info("%d sums on 3 rows over 40 tiles (gaps %.0f%%) bit-exact",
                      len(sequence.a), 100 * idle)


@cocotb.test()
async def deep_accumulation(dut):
    """Hundreds of K-tiles of extreme values: accumulators beyond 2^24."""
    bench = MatrixUnitBench(dut)
    config, rng = bench.config, bench.rng
    await start_clock_and_reset(dut)
    K = 2048
    M = config.rows + config.cols
    a = rng.choice([-128, 127], size=(M, K))
    w = np.where(rng.random((K, config.cols)) < 0.9, np.sign(a[0])[:, None] * -128, 127)
    w = np.clip(w, -128, 127)
    params = random_channel_params(rng, config.cols)
    params["bias"][:] = 0
    params["multiplier"][:] = np.float32(2.0**-18)
    problem = GemmProblem(a, w, params, 0, config.cols)
    await bench.run_batch([problem])
    acc, _ = problem.expected(0, 0)
    assert np.abs(acc).max() > 2**24, "stimulus did not reach accumulators beyond 2^24"
    dut._log.info("deep accumulation bit-exact, |acc| up to %d", np.abs(acc).max())


@cocotb.test()
async def extreme_tile_sums(dut):
    """One K-tile whose columns sum rows x (-128 * -128) and rows x (-128 * 127): the
    array's partial sums at both ends of their range, exactly."""
    bench = MatrixUnitBench(dut)
    config, rng = bench.config, bench.rng
    await start_clock_and_reset(dut)
    R, C = config.rows, config.cols
    a = np.array([[-128] * R, [127] * R, *int8_full_range(rng, (2, R))])
    w = np.tile(np.where(np.arange(C) % 2 == 0, -128, 127), (R, 1))
    params = random_channel_params(rng, C)
    problem = GemmProblem(a, w, params, 0, C)
    await bench.run_batch([problem])
    sums = a @ w
    assert sums.max() == R * 2**14 and sums.min() == -R * 128 * 127, \
        "stimulus did not reach both ends of the partial sums' range"
    dut._log.info("tile sums %d and %d bit-exact", sums.max(), sums.min())


@cocotb.test()
async def results_held_back(dut):
    """Activations at full rate while the results are taken one cycle in ten: every
    buffer behind the array fills (the output stage to its capacity, then the results
    FIFO, then the activations wait), and no result is lost or reordered."""
    bench = MatrixUnitBench(dut)
    config, rng = bench.config, bench.rng
    await start_clock_and_reset(dut)
    R, C = config.rows, config.cols
    problems = [GemmProblem(int8_full_range(rng, (config.acc_depth, 2 * R)),
                            int8_full_range(rng, (2 * R, 2 * C)),
                            random_channel_params(rng, 2 * C), 2 * i, C) for i in range(2)]
    await bench.run_batch(problems, stall=0.9)
    dut._log.info("%d result rows held back and bit-exact", 4 * config.acc_depth)


@cocotb.test()
async def gemm_throughput(dut):
    """A GEMM at full rate: MACs, cycles and array utilization (the `make sim` workload)."""
    bench = MatrixUnitBench(dut)
    config, rng = bench.config, bench.rng
    M, K, N = tb_params().get("gemm", (64, 256, 64))
    await start_clock_and_reset(dut)
    slots = config.channel_depth
    assert -(-N // config.cols) <= slots, "N exceeds the channel-parameter table"
    problem = GemmProblem(int8_full_range(rng, (M, K)), int8_full_range(rng, (K, N)),
                          random_channel_params(rng, -(-N // config.cols) * config.cols), 0,
                          config.cols)
    tiles, cycles, accepted = await bench.run_batch([problem])
    macs = M * K * N
    peak = config.rows * config.cols
    report = {
        "gemm": [M, K, N], "array": [config.rows, config.cols], "weight_tiles": tiles,
        "macs": macs, "streaming_cycles": cycles, "activation_beats": accepted,
        "utilization": macs / (peak * cycles),
        "steady_state_utilization": accepted / cycles,
    }
    (BUILD / "sim").mkdir(parents=True, exist_ok=True)
    (BUILD / "sim" / "gemm_report.json").write_text(json.dumps(report, indent=2))
    dut._log.info("GEMM %dx%dx%d on %dx%d: %d MACs in %d cycles: utilization %.1f%% "
                  "(array busy %.1f%% of streaming cycles); bit-exact against NumPy",
                  M, K, N, config.rows, config.cols, macs, cycles,
                  100 * report["utilization"], 100 * report["steady_state_utilization"])
