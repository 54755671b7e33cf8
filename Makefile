# `make run`: set up (if needed) and run the main job. `make test`: set up and pass the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-no-c test-slow lint gpu-check bench bench-targets bench-c-passes bench-ceiling bench-reference test-fla-reference clean

$(STAMP): pyproject.toml .ci/install-torch
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	bash .ci/install-torch $(BIN)/pip
	$(BIN)/pip install -e ".[dev,scale,hf]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m attnlab

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -m "not slow"

# The conformance suite again with the C passes off (ATTNLAB_FUSED_CPU=0): every variant's PyTorch
# path held to the same tests as the default run's C path.
test-no-c: $(STAMP)
	ATTNLAB_FUSED_CPU=0 $(BIN)/python -m pytest -q -m "not slow" tests/test_conformance.py

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# On a CUDA machine (about 8 minutes on one H100): conformance on CUDA, a 50-step trainer=gpu run per
# task, the bench at 16K against SDPA. Without CUDA: one line, exit 0 (attnlab/check/gpu.py).
gpu-check: $(STAMP)
	$(BIN)/python -m attnlab.check.gpu

bench: $(STAMP)
	$(BIN)/python -m attnlab.bench

# The speed targets (README "Measured results"): one side-by-side sweep, then PASS/FAIL per target.
bench-targets: $(STAMP)
	$(BIN)/python benchmarks/speed_targets.py

# Each C pass against the best PyTorch form, torch.compile included (docs/c-passes.md: kept or not).
bench-c-passes: $(STAMP)
	$(BIN)/python benchmarks/c_passes.py

# How far causal linear can get ahead of causal multihead with this machine's matmuls (README).
bench-ceiling: $(STAMP)
	$(BIN)/python benchmarks/causal_linear_ceiling.py

# Ours against the well-known pure-PyTorch implementations. The references are pinned to the versions
# compared in the README and installed --no-deps, so they can never swap the installed torch.
REFERENCES := performer-pytorch==1.1.4 linformer==0.2.3 nystrom-attention==0.0.14 local-attention==1.11.2 \
	einops==0.8.2 hyper-connections==0.4.11 axial-positional-embedding==0.3.12
bench-reference: $(STAMP)
	$(BIN)/pip install --no-deps $(REFERENCES)
	$(BIN)/python benchmarks/compare_reference.py

# retention/gla/deltanet/gated_deltanet/based against flash-linear-attention's naive.py files (pinned,
# installed --no-deps: fla-core's own dependencies would bring Triton and another torch).
FLA_REFERENCE := fla-core==0.5.2 einops==0.8.2
test-fla-reference: $(STAMP)
	$(BIN)/python -m pip install --no-deps $(FLA_REFERENCE)
	$(BIN)/python -m pytest -q tests/attention/test_fla_reference.py

clean:
	rm -rf outputs multirun wandb .pytest_cache .ruff_cache
