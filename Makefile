# Bentley Budget Bot. `make pipeline` and `make test` set everything up on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= default
OUTPUTS ?= outputs
ARGS ?=

.PHONY: setup pipeline test bench lab mlflow-ui report clean distclean

setup: $(STAMP)

# Reinstall whenever the project's dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name bentley --display-name "Python (bentley)" >/dev/null
	touch $(STAMP)

pipeline: $(STAMP)
	$(PY) -m runner run --profile $(PROFILE) --outputs $(OUTPUTS) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]' || echo "vectorbt did not install: the backtest bench skips its ratio"
	$(PY) -m bench.run $(ARGS)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

mlflow-ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(OUTPUTS)/mlflow/mlflow.db --host 127.0.0.1 --port 5000

report: $(STAMP)
	@$(PY) -m runner report --outputs $(OUTPUTS)

clean:
	find $(OUTPUTS) -mindepth 1 ! -name .gitkeep -delete 2>/dev/null || true
	rm -rf .pytest_cache bench/results/*.tmp

distclean: clean
	rm -rf $(VENV)
