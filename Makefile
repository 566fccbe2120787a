# Phase one trains, phase two inspects. Every target can be rerun: finished work is kept.
PYTHON ?= python3
RUN ?= artifacts/thesis
DEMO ?= artifacts/demo

.PHONY: install test test-all demo train-all inspect-all bench clean-demo

install:  ## torch from the local wheel cache, then the package with test extras
	$(PYTHON) -m pip install "torch==2.14.1" "torchvision==0.29.1"
	$(PYTHON) -m pip install -e ".[dev]"

test:  ## the test suite (CPU, a few minutes)
	$(PYTHON) -m pytest -q tests

train-all:  ## the thesis grid: 4 setups x 30 seeds into $(RUN) (GPU box; resumes after a kill)
	train run --preset thesis --out $(RUN) --device auto

inspect-all:  ## every phase-two analysis and the HTML report for $(RUN)
	inspect all $(RUN)

demo:  ## the whole two-phase pipeline at demo scale on the embedded digits, on the CPU
	train run --preset demo --out $(DEMO) --device cpu
	inspect all $(DEMO) --device cpu --probes 512 --replays 5

bench:  ## throughput benchmarks on the current device (JSON under benchmarks/results/)
	$(PYTHON) benchmarks/bench_train.py
	$(PYTHON) benchmarks/bench_inspect.py

clean-demo:
	rm -rf $(DEMO)
