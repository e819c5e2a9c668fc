# The two commands: `make demo` runs the main job on the local stack, `make test` runs every check.
# Both install what they need from nothing (Python 3.11+, pip and git are assumed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
export SAM_CLI_TELEMETRY := 0
export PYTHONPATH := $(CURDIR)/layers/relay:$(CURDIR)

.PHONY: demo test lint typecheck validate build unit sandbox-tier integration bench sandbox stack-up stack-down stack-status clean

$(VENV)/.installed: requirements/dev.txt layers/relay/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $@

$(SAM_VENV)/.installed: requirements/sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/sam.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) -m devstack.demo

test: lint typecheck validate build unit sandbox-tier integration

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

validate: $(SAM_VENV)/.installed
	$(SAM) validate --lint

# The layer's Makefile runs pip with --platform; any pip will do, so use the project's.
build: $(SAM_VENV)/.installed $(VENV)/.installed
	PIP="$(CURDIR)/$(VENV)/bin/python -m pip" $(SAM) build

# pytest exits 5 when it collected nothing: that is a broken suite, never a pass.
# The unit tier alone must cover the flow and its AWS adapters: the figure is printed, and under 90% fails.
COVERAGE := --cov=relay.flows.s3_to_itwin --cov=relay.aws --cov-report=term --cov-fail-under=90

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit -q -p no:cacheprovider $(COVERAGE); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no unit tests were collected"; exit 1; fi; exit $$rc

# The sandbox checked against itself (fault shapes, webhook signing, its command line): no relay code.
sandbox-tier: $(VENV)/.installed
	$(PY) -m pytest tests/sandbox -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no sandbox tests were collected"; exit 1; fi; exit $$rc

integration: $(VENV)/.installed
	$(PY) -m pytest tests/integration -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no integration tests were collected"; exit 1; fi; exit $$rc

bench: $(VENV)/.installed
	$(PY) bench/sandbox_put_memory.py
	$(PY) bench/relay_throughput.py

sandbox: $(VENV)/.installed
	$(PY) -m sandbox --port 8900 --verbose

stack-up: $(VENV)/.installed
	$(PY) -m devstack up

stack-down: $(VENV)/.installed
	$(PY) -m devstack down

stack-status: $(VENV)/.installed
	$(PY) -m devstack status

clean:
	rm -rf .aws-sam .local .pytest_cache .mypy_cache .ruff_cache
