# One task runner for the README and CI. `make demo` and `make test` set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck docs unit bench aiida-engine-tests clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,zstd,fast,postgres,bench,docs,aiida]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/loopaware-persist demo

lint: $(STAMP)
	$(BIN)/ruff check loopaware_persist benchmarks tests docs
	$(BIN)/ruff format --check loopaware_persist benchmarks tests docs

typecheck: $(STAMP)
	$(BIN)/mypy --strict loopaware_persist benchmarks tests

# Two pytest-xdist workers: the server-backed tests (daemon crash campaigns, requeues,
# workers) mostly wait on their subprocesses and servers, and the rest keeps the other
# core busy meanwhile. Session fixtures are made once per worker (the benchmark tests'
# smoke run too: --dist loadgroup does not group on pytest 9.2, pytest-xdist#1386).
# TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

unit: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --cov=loopaware_persist --cov-branch --cov-report=term $(PYTEST_ARGS)

DOCS_OUT ?= docs/_build/html

docs: $(STAMP)  # the Sphinx site, read afresh (-E); any warning fails the build
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs $(DOCS_OUT)

test: lint typecheck docs unit

BENCH_OUT ?= benchmarks/results
BENCH_ARGS ?=

bench: $(STAMP)  # make bench BENCH_ARGS=--quick BENCH_OUT=/tmp/b
	$(BIN)/python -m benchmarks --out $(BENCH_OUT) $(BENCH_ARGS)

# aiida-core's own engine tests, with AiiDA's persister and with ours (README, "AiiDA's own
# engine tests"); AIIDA_CORE_GIT=/path/to/aiida-core clone.
aiida-engine-tests: $(STAMP)
	PYTHON=$(BIN)/python bash .ci/aiida-engine-tests.sh

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
