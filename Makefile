# Phase one trains, phase two inspects. Every target can be rerun: finished work is kept.
# `make demo` and `make test` install what is missing first (once, behind the stamp file).
PYTHON ?= python3
STAMP := .installed
TRAIN := $(PYTHON) -m ssl_dynamics.train.cli
INSPECT := $(PYTHON) -m ssl_dynamics.inspect.cli
RUN ?= artifacts/thesis
DEMO ?= artifacts/demo
DEVICES ?=
# cluster submissions (docs/cluster.md); override e.g. `make submit-all PARTITION=a100 TIME=8h`
EXECUTOR ?= slurm
PARTITION ?= gpu
TIME ?= 4h
GPUS ?= 1
MEM ?= 32G
RUNS_PER_JOB ?=  # empty: the pack each job trains (4 with a GPU)
SHARDS ?= 32
SUBMIT_EXTRA ?=

.PHONY: install test demo train-all inspect-all submit-all submit-inspect bench clean-demo

$(STAMP): setup.py  ## torch (unless one is installed already), then the package with test extras
	$(PYTHON) -c "import torch, torchvision" 2>/dev/null || \
		$(PYTHON) -m pip install "torch==2.14.1" "torchvision==0.29.1"
	$(PYTHON) -m pip install -e ".[dev]"
	@touch $(STAMP)

install:  ## (re)install now
	rm -f $(STAMP)
	$(MAKE) $(STAMP)

test: $(STAMP)  ## the test suite (CPU, about eleven minutes on 2 cores)
	$(PYTHON) -m pytest -q tests

train-all:  ## the thesis grid: 4 setups x 30 seeds into $(RUN) (GPU box; resumes after a kill; DEVICES=all: every GPU)
	$(TRAIN) run --preset thesis --out $(RUN) $(if $(DEVICES),--devices $(DEVICES),--device auto)

submit-all:  ## the thesis grid as SLURM jobs into $(RUN) (a shared path); rerun to resubmit what is incomplete
	$(TRAIN) submit --preset thesis --out $(RUN) --executor $(EXECUTOR) --partition $(PARTITION) \
		--time $(TIME) --gpus-per-job $(GPUS) --mem $(MEM) $(if $(RUNS_PER_JOB),--runs-per-job $(RUNS_PER_JOB)) $(SUBMIT_EXTRA)

submit-inspect:  ## the r_t evaluation of $(RUN) as $(SHARDS) SLURM jobs; then `make inspect-all`
	$(INSPECT) submit rt $(RUN) --shards $(SHARDS) --executor $(EXECUTOR) --partition $(PARTITION) \
		--time $(TIME) --gpus-per-job $(GPUS) --mem $(MEM) $(SUBMIT_EXTRA)

inspect-all:  ## every phase-two analysis and the HTML report for $(RUN)
	$(INSPECT) all $(RUN)

demo: $(STAMP)  ## the whole two-phase pipeline at demo scale on the embedded digits, on the CPU
	$(TRAIN) run --preset demo --out $(DEMO) --devices cpu,cpu --channels-last
	$(INSPECT) all $(DEMO) --device cpu --probes 256 --replays 3 --steps 64 --p0 range

bench: $(STAMP)  ## throughput benchmarks on the current device (JSON under benchmarks/results/bench_*.json)
	$(PYTHON) benchmarks/bench_train.py --out benchmarks/results/bench_train.json
	$(PYTHON) benchmarks/bench_inspect.py --out benchmarks/results/bench_inspect.json

clean-demo:
	rm -rf $(DEMO)
