# Spot Optimizer — developer commands. Every target builds the virtualenv first if it is missing.
#   make demo     set everything up and run the demo (the README's main command)
#   make test     lint, then every test (unit, property, API, integration, local-mode end-to-end)
#   make serve    local mode: API on :8000, embedded AWS (moto) on :5000, Ctrl-C to stop
#   make package  chalice package + the packaging checks CI runs
#   make bench    API latency / DynamoDB-calls benchmark (results → docs/benchmarks.md by hand)
#   make backtest policy backtest (BACKTEST_ARGS=...; see docs/benchmarks.md)
#   make train    train the risk model → ml/artifacts/ (manifest with metrics and sha256)
#   make layer    build + size-check + smoke-test the scikit-learn layer

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Python 3.12 exactly (Lambda python3.12): PATH first, then pyenv installs, then system locations.
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 \
	/usr/local/bin/python3.12 /usr/bin/python3.12; do \
	if $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then \
	command -v $$p || echo $$p; break; fi; done)

.PHONY: venv demo test serve package bench backtest train layer lint clean check-python

check-python:
	@if [ -z "$(PYTHON312)" ]; then echo "error: Python 3.12 not found (install it or set PYTHON312=/path/to/python3.12)" >&2; exit 1; fi

$(STAMP): requirements.txt requirements-dev.txt | check-python
	@echo "==> creating $(VENV) with $(PYTHON312)"
	@test -x $(BIN)/python || $(PYTHON312) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m localmode.demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

serve: $(STAMP)
	$(BIN)/python -m localmode.server

package: $(STAMP)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} PATH=$(abspath $(BIN)):$$PATH bash .ci/package-check

bench: $(STAMP)
	$(BIN)/python -m bench.api_bench $(BENCH_ARGS)

backtest: $(STAMP)
	$(BIN)/python -m bench.backtest $(BACKTEST_ARGS)

train: $(STAMP)
	$(BIN)/python -m ml.train $(TRAIN_ARGS)

layer: $(STAMP)
	bash layers/ml/build.sh

clean:
	rm -rf build .chalice/deployments .pytest_cache .hypothesis
