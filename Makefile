# Bentley Budget Bot. `make pipeline` and `make test` set everything up on first use.
# docs/ARCHITECTURE.md §13 says what each test target runs and why.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= default
OUTPUTS ?= outputs
ARGS ?=
# pytest-xdist workers for `make test` and `make test-fast` (auto: one per core; 0: no xdist).
TEST_WORKERS ?= auto
XDIST := -n $(TEST_WORKERS) --dist loadgroup
# JupyterLab refuses to run as root without --allow-root (containers, CI machines).
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: setup airflow-env pipeline test test-fast lint format bench lab mlflow-ui report clean distclean

setup: $(STAMP)

# Reinstall whenever the project's dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name bentley --display-name "Python (bentley)" >/dev/null
	touch $(STAMP)

# The Apache Airflow environment (.venv-airflow) the Airflow tests run the exported DAG in
# (tests/airflow_env.py). Those tests build it when it is missing; .ci/run builds it while lint runs.
airflow-env: $(STAMP)
	$(PY) -m tests.airflow_env

pipeline: $(STAMP)
	$(PY) -m runner run --profile $(PROFILE) --outputs $(OUTPUTS) $(ARGS)

# The whole suite, as CI runs it: every module is one xdist group (tests/conftest.py).
# The suite starts hundreds of kernels and runner processes that import lib/ and runner/:
# compile them once first, so none of them compiles the project again (with
# PYTHONDONTWRITEBYTECODE set, each one would; compileall writes the bytecode regardless).
test: $(STAMP)
	$(PY) -m compileall -q lib runner
	$(PY) -m pytest $(XDIST) --durations=25 $(ARGS)

# The loop while you edit: unit tests and quick checks; no notebook, no model training,
# no database server (tests/conftest.py marks what is slow).
test-fast: $(STAMP)
	$(PY) -m compileall -q lib runner
	$(PY) -m pytest $(XDIST) -m "not slow and not servers" --durations=10 $(ARGS)

# ruff check and ruff format --check (rules in pyproject.toml, notebooks included) and mypy on
# lib/ and runner/; all always run, so one pass shows every finding.
lint: $(STAMP)
	@status=0; $(VENV)/bin/ruff check $(ARGS) || status=1; $(VENV)/bin/ruff format --check $(ARGS) || status=1; \
		$(VENV)/bin/mypy || status=1; exit $$status

# Rewrites files to the format `make lint` checks.
format: $(STAMP)
	$(VENV)/bin/ruff format $(ARGS)

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]' || echo "vectorbt did not install: the backtest bench skips its ratio"
	$(PY) -m bench.run $(ARGS)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(LAB_ROOT) notebooks/ $(ARGS)

mlflow-ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(OUTPUTS)/mlflow/mlflow.db --host 127.0.0.1 --port 5000

report: $(STAMP)
	@$(PY) -m runner report --outputs $(OUTPUTS)

clean:
	find $(OUTPUTS) -mindepth 1 ! -name .gitkeep -delete 2>/dev/null || true
	rm -rf .pytest_cache bench/results/*.tmp

distclean: clean
	rm -rf $(VENV)
