# One task runner for the README and CI. `make demo` and `make test` set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench aiida-engine-tests clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,zstd,postgres,bench,aiida]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/loopaware-persist demo

lint: $(STAMP)
	$(BIN)/ruff check loopaware_persist benchmarks tests
	$(BIN)/ruff format --check loopaware_persist benchmarks tests

typecheck: $(STAMP)
	$(BIN)/mypy --strict loopaware_persist benchmarks

unit: $(STAMP)
	$(BIN)/python -m pytest --cov=loopaware_persist --cov-branch --cov-report=term $(PYTEST_ARGS)

test: lint typecheck unit

BENCH_OUT ?= benchmarks/results
BENCH_ARGS ?=

bench: $(STAMP)  # make bench BENCH_ARGS=--quick BENCH_OUT=/tmp/b
	$(BIN)/python -m benchmarks --out $(BENCH_OUT) $(BENCH_ARGS)

# aiida-core's own engine tests, with AiiDA's persister and with ours (README, "AiiDA's own
# engine tests"); AIIDA_CORE_GIT=/path/to/aiida-core clone.
aiida-engine-tests: $(STAMP)
	PYTHON=$(BIN)/python bash .ci/aiida-engine-tests.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
