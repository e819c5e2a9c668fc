# The two commands: `make demo` runs the main job on the local stack, `make test` runs every check.
# Both install what they need from nothing (Python 3.11+, pip and git are assumed).
# `make help` lists every target: the "## target: what it does" line above each rule is its entry.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
SCAN_VENV := .venv-scan
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
export SAM_CLI_TELEMETRY := 0
export PYTHONPATH := $(CURDIR)/layers/relay:$(CURDIR)
SANDBOX_PORT ?= 8900

.PHONY: help demo test lint typecheck validate scan build unit sandbox-tier integration bench sandbox stack-up stack-down stack-status openapi api clean

## help: list the targets, one line each
help:
	@sed -n 's/^## \([a-z-]*\): \(.*\)/\1|\2/p' $(firstword $(MAKEFILE_LIST)) | awk -F'|' '{ printf "  make %-13s %s\n", $$1, $$2 }'

$(VENV)/.installed: requirements/dev.txt layers/relay/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $@

$(SAM_VENV)/.installed: requirements/sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/sam.txt
	touch $@

$(SCAN_VENV)/.installed: requirements/scan.txt
	$(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/scan.txt
	touch $@

## demo: run the S3 → iTwin flow end to end on a fresh local stack and check every outcome
demo: $(VENV)/.installed
	$(PY) -m devstack.demo

## test: every check: lint, typecheck, validate, scan, build, unit (with coverage), sandbox tier, integration
test: lint typecheck validate scan build unit sandbox-tier integration

## lint: ruff check and ruff format --check
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## typecheck: mypy (strict)
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

## validate: sam validate --lint
validate: $(SAM_VENV)/.installed
	$(SAM) validate --lint

# Any failed check fails the scan; each skip is written beside its resource in template.yaml, with its reason, and
# each bandit exception (# nosec BXXX) at its line. --skip-download: checkov asks no server for guidance or policies.
## scan: checkov on template.yaml, bandit on the shipped code (the layer's package and functions/)
scan: $(SCAN_VENV)/.installed
	$(SCAN_VENV)/bin/checkov --file template.yaml --framework cloudformation --skip-download --compact --quiet
	$(SCAN_VENV)/bin/bandit --recursive layers/relay/relay functions

# The layer's Makefile runs pip with --platform; any pip will do, so use the project's.
## build: sam build (the layer for python3.13/arm64, with pip --platform)
build: $(SAM_VENV)/.installed $(VENV)/.installed
	PIP="$(CURDIR)/$(VENV)/bin/python -m pip" $(SAM) build

# The tiers run in parallel under pytest-xdist, each test file on one worker (each integration worker starts its
# own moto server, sandbox and gateway on free ports). PYTEST_WORKERS=N sets the workers of every tier; unset,
# the unit and sandbox tiers (CPU-bound) take 2 and the integration tier (mostly waiting on I/O) takes 3.
# PYTEST_WORKERS=0 runs serially, in one process, as before; PYTEST_WORKERS=auto uses one worker per core.
PYTEST_WORKERS ?=
xdist = $(if $(filter 0,$(1)),-p no:xdist,-n $(1) --dist loadfile)
XDIST = $(call xdist,$(or $(PYTEST_WORKERS),2))
XDIST_INTEGRATION = $(call xdist,$(or $(PYTEST_WORKERS),3))

# pytest exits 5 when it collected nothing: that is a broken suite, never a pass.
# The unit tier alone must cover the flows and their AWS adapters: the figure is printed, and under 90% fails.
COVERAGE := --cov=relay.flows --cov=relay.aws --cov-report=term --cov-fail-under=90

## unit: unit tests (no network), printing the flows' and adapters' coverage
unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit -q -p no:cacheprovider $(XDIST) $(COVERAGE); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no unit tests were collected"; exit 1; fi; exit $$rc

## sandbox-tier: the sandbox checked against itself (fault shapes, webhook signing, its command line)
sandbox-tier: $(VENV)/.installed
	$(PY) -m pytest tests/sandbox -q -p no:cacheprovider $(XDIST); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no sandbox tests were collected"; exit 1; fi; exit $$rc

## integration: integration tests against moto server and the sandbox, 3 workers (about 3 minutes; PYTEST_WORKERS=0 serial)
integration: $(VENV)/.installed
	$(PY) -m pytest tests/integration -q -p no:cacheprovider $(XDIST_INTEGRATION); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no integration tests were collected"; exit 1; fi; exit $$rc

## bench: memory, throughput, cold-start, soak under faults and burst drain measurements (bench/)
bench: $(VENV)/.installed
	$(PY) bench/sandbox_put_memory.py
	$(PY) bench/relay_throughput.py
	$(PY) bench/attachments_api.py
	$(PY) bench/itwin_webhooks.py
	$(PY) bench/s3_to_rfi.py
	$(PY) bench/cold_start.py
	$(PY) bench/soak.py
	$(PY) bench/burst.py

# devstack checks first that the local stack's own sandbox (or anything else) is not on the port.
## sandbox: run the platform sandbox alone, on port 8900 (SANDBOX_PORT=8901 moves it)
sandbox: $(VENV)/.installed
	$(PY) -m devstack sandbox --port $(SANDBOX_PORT) --verbose

## stack-up: start the local stack: moto on 5055, sandbox on 8900 (RELAY_LOCAL_MOTO_PORT=, RELAY_LOCAL_SANDBOX_PORT=)
stack-up: $(VENV)/.installed
	$(PY) -m devstack up

## api: serve the template's API routes on port 3000 against the running stack, SigV4 checked (like sam local start-api)
api: $(VENV)/.installed
	$(PY) -m devstack api

## stack-down: stop the local stack
stack-down: $(VENV)/.installed
	$(PY) -m devstack down

## stack-status: show what the local stack runs and holds
stack-status: $(VENV)/.installed
	$(PY) -m devstack status

## openapi: write docs/openapi.json from the API's routes (a unit test fails when it is out of date)
openapi: $(VENV)/.installed
	$(PY) -m devstack.openapi

## clean: remove build output, caches and .local (the stack's state and logs: stop it first)
clean:
	rm -rf .aws-sam .local .pytest_cache .mypy_cache .ruff_cache
