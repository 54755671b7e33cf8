# `make run`: set up (if needed) and run the main job. `make test`: set up and pass the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-slow lint bench clean

$(STAMP): pyproject.toml .ci/install-torch
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	bash .ci/install-torch $(BIN)/pip
	$(BIN)/pip install -e ".[dev,scale]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m attnlab

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m attnlab.bench

clean:
	rm -rf outputs multirun wandb .pytest_cache .ruff_cache
