# Two commands for a fresh clone: `make demo` and `make test`. Each creates/updates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch 2.13.0 is installed first so that no dependency pulls a CUDA build.
# On a CUDA machine: make TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>" ...
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/vae demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,bench]"
	touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run.py --out benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_training.py --rows 1000000 --epochs 2 --out benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_serving.py --seconds 15 --out benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_batch.py --score-rows 300000 --embed-rows 500000,5000000 --out benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_disentanglement.py --seeds 0,1,2 --out benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
