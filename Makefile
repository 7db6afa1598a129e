# One task runner for the README and CI. `make demo` and `make test` set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,zstd,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/loopaware-persist demo

lint: $(STAMP)
	$(BIN)/ruff check loopaware_persist tests benchmarks
	$(BIN)/ruff format --check loopaware_persist tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict loopaware_persist

unit: $(STAMP)
	$(BIN)/python -m pytest --cov=loopaware_persist --cov-branch --cov-report=term $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/loopaware-persist bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
