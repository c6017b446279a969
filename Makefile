# Spot Optimizer — developer commands. Every target builds the virtualenv first if it is missing.
#   make demo     set everything up and run the demo (the README's main command)
#   make test     lint, then every test (unit, property, API, integration, local-mode end-to-end, and the
#                 web console in headless Chromium: `make browser` installs Debian's chromium when it can)
#   make serve    local mode: API on :8000, embedded AWS (moto) on :5000, Ctrl-C to stop
#   make package  chalice package + the packaging checks CI runs
#   make web-vendor  re-fetch the console's pinned third-party files (web/SOURCES.md) from the npm registry
#   make screenshots  the console's screenshots in docs/images/ (a short demo replay, headless Chromium)
#   make bench    API latency / DynamoDB-calls benchmark (results → docs/benchmarks.md by hand)
#   make backtest policy backtest (BACKTEST_ARGS=...; see docs/benchmarks.md)
#   make validate leave-one-source-out + time-split validation of ours' parameters (VALIDATE_ARGS=--quick)
#   make train    train the risk model → ml/artifacts/ (manifest with metrics and sha256)
#   make layer    build + size-check + smoke-test the scikit-learn layer
#   make infra    synth the CDK app (infra/) for dev and prod into infra/cdk.out/<stage>, cfn-lint both
#   make policies regenerate the per-function IAM policies, their config.json wiring and the client role template
#   make deploy   STAGE=dev: cdk deploy infra/, wire its outputs into .chalice/config.json, chalice deploy,
#                 then API Gateway stage throttling

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APP_NAME := spot-optimizer

# Python 3.12 exactly (Lambda python3.12): PATH first, then pyenv installs, then system locations.
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 \
	/usr/local/bin/python3.12 /usr/bin/python3.12; do \
	if $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then \
	command -v $$p || echo $$p; break; fi; done)

# infra/ (CDK): the CLI is only needed by `make deploy` (npm registry); `make infra` synthesises with Python.
STAGE ?= dev
CDK_VERSION := 2.1148.1
CDK := npx --yes aws-cdk@$(CDK_VERSION)
LAYER_READY := layers/ml/build/python/sklearn/__init__.py

.PHONY: venv demo test browser web-vendor screenshots serve package bench backtest validate attack-walk train layer infra policies deploy lint clean check-python

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

# One worker per core (pytest-xdist); TEST_WORKERS=0 runs in this process (pdb, -x).
TEST_WORKERS ?= auto
test: $(STAMP) browser
	$(BIN)/ruff check .
	SPOT_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

# The console's browser tests drive Debian's Chromium through Playwright (never Playwright's own download).
# Installed here when this runs as root with apt (as CI does); otherwise stop and name the package.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "==> installing Debian's chromium for the console's browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
	  echo "error: the web console's browser tests need Chromium at $(CHROMIUM): install the Debian package 'chromium' (sudo apt-get install chromium), or set CHROMIUM=/path/to/chromium" >&2; exit 1; \
	fi; \
	test -x $(CHROMIUM) || { echo "error: $(CHROMIUM) still missing after installing 'chromium'" >&2; exit 1; }

web-vendor: $(STAMP)
	$(BIN)/python web/fetch_vendor.py

screenshots: $(STAMP) browser
	PYTHONPATH=agent SPOT_CHROMIUM=$(CHROMIUM) $(BIN)/python -m localmode.screenshots $(SCREENSHOT_ARGS)

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

validate: $(STAMP)
	$(BIN)/python -m bench.backtest.validate $(VALIDATE_ARGS)

attack-walk: $(STAMP)  ## local mode walked as an attacker with a valid client token (issue #12)
	$(BIN)/python -m localmode.attack_walk

train: $(STAMP)
	$(BIN)/python -m ml.train $(TRAIN_ARGS)

layer: $(STAMP)
	bash layers/ml/build.sh

# Synth both stages offline and lint the templates. Without a built layer (make layer) the synth uses
# -c skip_layer=true and says so: such a template is not deployable.
infra: $(STAMP)
	@set -euo pipefail; skip=""; \
	if [ ! -f $(LAYER_READY) ]; then \
	  echo "WARNING: the ML layer is not built ($(LAYER_READY) missing): synthesising with -c skip_layer=true; run 'make layer' before deploying" >&2; \
	  skip="-c skip_layer=true"; \
	fi; \
	cd infra && rm -rf cdk.out; \
	for stage in dev prod; do \
	  echo "==> cdk synth (stage $$stage) -> infra/cdk.out/$$stage"; \
	  AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} CDK_OUTDIR=cdk.out/$$stage ../$(BIN)/python main.py -c stage=$$stage $$skip; \
	  echo "==> cfn-lint infra/cdk.out/$$stage/$(APP_NAME)-$$stage-infra.template.json"; \
	  ../$(BIN)/cfn-lint cdk.out/$$stage/$(APP_NAME)-$$stage-infra.template.json; \
	done; \
	echo "infra checks passed"

# infra/policies.py + infra/throttling.py → .chalice/policies/<stage>/<function>.json, .chalice/config.json
# (iam_policy_file, reserved_concurrency) and infra/client-account-role.yaml; tests fail when they are stale.
policies: $(STAMP)
	$(BIN)/python -m infra.chalice_policies

# One stage, end to end (needs AWS credentials, a bootstrapped account/region and node/npx; see infra/README.md).
deploy: $(STAMP)
	$(BIN)/python infra/wire_outputs.py --check --stage $(STAGE)
	$(BIN)/python -m infra.chalice_policies --check
	@test -f $(LAYER_READY) || $(MAKE) layer
	@mkdir -p build
	cd infra && PATH=$(abspath $(BIN)):$$PATH CDK_DISABLE_CLI_TELEMETRY=true $(CDK) deploy $(APP_NAME)-$(STAGE)-infra \
	  -c stage=$(STAGE) --output cdk.out/$(STAGE) --outputs-file ../build/cdk-outputs-$(STAGE).json \
	  --no-notices $(CDK_DEPLOY_ARGS)
	$(BIN)/python infra/wire_outputs.py --stage $(STAGE) --outputs build/cdk-outputs-$(STAGE).json
	$(BIN)/python infra/bytecode.py  # ship .pyc files: Lambda compiles whatever has none at every cold start
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/chalice deploy --stage $(STAGE)
	$(BIN)/python infra/throttling.py --stage $(STAGE)

clean:
	rm -rf build .chalice/deployments .pytest_cache .hypothesis
