"""fpga.board.AXI4Memory in Amaranth's simulator, in block RAM and in iCE40 SPRAM (its
stand-in model): byte-port writes and reads, and AXI4 write and read bursts with strobes
(read beats taken at random, with RRESP and RLAST checked), against a Python model of the
memory."""

import random

from amaranth.sim import Simulator
import pytest

from fpga.board import AXI4Memory
from hw.axi import Resp


MEMORY_BYTES = 64 * 1024


async def host_write(ctx, port, addr, value):
    ctx.set(port.addr, addr)
    ctx.set(port.write, 1)
    ctx.set(port.wdata, value)
    ctx.set(port.valid, 1)
    await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def host_read(ctx, port, addr):
    ctx.set(port.addr, addr)
    ctx.set(port.write, 0)
    ctx.set(port.valid, 1)
    await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)
    return ctx.get(port.rdata)


async def axi_write(ctx, axi, word, beats, rng, model, word_bytes):
    ctx.set(axi.awaddr, word * word_bytes)
    ctx.set(axi.awlen, len(beats) - 1)
    ctx.set(axi.awvalid, 1)
    await ctx.tick().until(axi.awready)
    ctx.set(axi.awvalid, 0)
    for i, (data, strb) in enumerate(beats):
        ctx.set(axi.wdata, data)
        ctx.set(axi.wstrb, strb)
        ctx.set(axi.wlast, i == len(beats) - 1)
        ctx.set(axi.wvalid, 1)
        await ctx.tick().until(axi.wready)
        for b in range(word_bytes):
            if strb >> b & 1:
                model[(word + i) * word_bytes + b] = data >> (8 * b) & 0xFF
    ctx.set(axi.wvalid, 0)
    ctx.set(axi.bready, 1)
    await ctx.tick().until(axi.bvalid)
    ctx.set(axi.bready, 0)


async def axi_read(ctx, axi, word, length, rng, word_bytes):
    ctx.set(axi.araddr, word * word_bytes)
    ctx.set(axi.arlen, length - 1)
    ctx.set(axi.arvalid, 1)
    await ctx.tick().until(axi.arready)
    ctx.set(axi.arvalid, 0)
    words = []
    while len(words) < length:
        ready = rng.random() < 0.7
        ctx.set(axi.rready, ready)
        _, _, valid, data, resp, last = await ctx.tick().sample(
            axi.rvalid, axi.rdata, axi.rresp, axi.rlast)
        if valid and ready:
            assert resp == Resp.OKAY and last == (len(words) == length - 1), (resp, last, len(words))
            words.append(data)
    ctx.set(axi.rready, 0)
    return words


@pytest.mark.parametrize("width, spram", [(32, False), (32, True), (16, True)],
                         ids=["bram", "spram", "spram_16"])
def test_axi4_memory(width, spram):
    """The 16-bit SPRAM memory is the iCEBreaker's (two SPRAMs one above the other)."""
    dut = AXI4Memory(width, MEMORY_BYTES, spram=spram)
    word_bytes = width // 8
    rng = random.Random(1)
    model = {}

    async def testbench(ctx):
        for _ in range(40):
            addr, value = rng.randrange(MEMORY_BYTES), rng.randrange(256)
            await host_write(ctx, dut.host, addr, value)
            model[addr] = value
        for addr in rng.sample(sorted(model), 20):
            assert await host_read(ctx, dut.host, addr) == model[addr]
        for _ in range(10):
            word = rng.randrange(MEMORY_BYTES // word_bytes - 16)
            beats = [(rng.randrange(1 << width), rng.randrange(1 << word_bytes))
                     for _ in range(rng.randint(1, 8))]
            await axi_write(ctx, dut.axi, word, beats, rng, model, word_bytes)
            length = rng.randint(1, 12)
            got = await axi_read(ctx, dut.axi, word, length, rng, word_bytes)
            for i, data in enumerate(got):
                for b in range(word_bytes):
                    addr = (word + i) * word_bytes + b
                    if addr in model:
                        assert data >> (8 * b) & 0xFF == model[addr], hex(addr)
        for addr in rng.sample(sorted(model), 30):
            assert await host_read(ctx, dut.host, addr) == model[addr]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
