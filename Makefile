# Two commands for a fresh clone: `make demo` and `make test`. Each creates/updates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch 2.13.0 is installed first so that no dependency pulls a CUDA build.
# On a CUDA machine: make TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>" ...
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
BENCH_STAMP := $(VENV)/.installed-bench
TVAE_EPOCHS ?= 300
TRAIN_ROWS ?= 1000000

.PHONY: demo test test-fast lint bench bench-anomaly bench-embedding bench-synthetic bench-variants bench-scale bench-gpu clean

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

# The inner loop: the unit tests of vae_core, serving and the CLI, no Ray or MLflow started.
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not integration"

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,bench]"
	touch $@

# Speed, synthesis, training, serving and batch figures, each beside its reference from the
# same run (< 30 min on 2 cores); the anomaly and embedding suites have targets of their own.
bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run.py --out benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_synthetic.py --tvae-epochs $(TVAE_EPOCHS) --out benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_training.py --rows $(TRAIN_ROWS) --epochs 2 --out benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_serving.py --seconds 10 --out benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_batch.py --score-rows 300000 --embed-rows 500000,5000000 --out benchmarks/RESULTS.md

# The anomaly preset against five detectors on 19 ADBench tables and cardio, 5 seeds each.
bench-anomaly: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_anomaly.py --seeds 0,1,2,3,4 --out benchmarks/RESULTS.md

# The embedding preset against PCA on Adult, digits and 13 ADBench tables at d = 2, 8, 16
# (~30 min), then on the 6 small ADBench tables no setting was chosen on (~5 min).
bench-embedding: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_embedding.py --suite main --dims 2,8,16 --seeds 0,1,2 --out benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_embedding.py --suite held-out --dims 2,8,16 --seeds 0,1,2 --out benchmarks/RESULTS.md

# Synthesis beyond Adult (issue 19): the diamonds table against TVAE and GaussianCopula,
# and conditions on any column against TVAE's rejection sampling (~25 min on 2 cores).
bench-synthetic: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_synthetic.py --table diamonds --tvae-epochs $(TVAE_EPOCHS) --out benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_conditions.py --tvae-epochs $(TVAE_EPOCHS) --out benchmarks/RESULTS.md

# The model variants' figures (issue 8): disentanglement and the hierarchical VAE.
bench-variants: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_disentanglement.py --out benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_hierarchical.py --out benchmarks/RESULTS.md

# Training on Parquet larger than memory (issue 22): local mode at 1M, 10M and 30M Adult rows,
# the object store capped at 3 GB so that 10M and 30M stream (~30 min on 2 cores; the data,
# ~0.3 GB, is written once to ~/.cache/vae-bench).
bench-scale: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_training.py --rows 1M,10M,30M --epochs 1 --object-store-gb 3 --out benchmarks/RESULTS.md

# The CUDA paths on one GPU (training, inference, batch jobs, serving), each beside its
# reference from the same run (~5 min on an H200; a CUDA build of torch: see TORCH_SPEC).
bench-gpu: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_gpu.py --seconds 4 --out benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
