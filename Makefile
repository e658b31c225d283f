# One place for the commands: `make run` (the local stack) and `make test` (lint, types, tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SAM_VENV ?= .venv-sam
SAM := $(SAM_VENV)/bin/sam
# The template scanners live apart: checkov pins more of the world than the project should follow.
SCAN_VENV ?= .venv-scan
# The smoke build: the same template for this machine's CPU, started from its artifact.
SMOKE_ARCH ?= $(shell uname -m | sed 's/aarch64/arm64/')
SMOKE_BUILD := .aws-sam/build-$(SMOKE_ARCH)
# sam build needs the Lambda runtime's Python on PATH; pyenv provides it on dev machines and CI.
SAM_PYTHON ?= 3.13.0
PORT ?= 3000

.PHONY: venv run test lint typecheck scan unit lock prices validate build check-arch smoke-build smoke bench clean openapi

# The runtime locks first (hash-checked, exactly what sam build ships), then the dev tools.
$(VENV)/.installed: requirements-dev.txt layers/claude/requirements.txt functions/stream/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r layers/claude/requirements.txt
	$(VENV)/bin/pip install -q -r functions/stream/requirements.txt
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

run: venv
	PORT=$(PORT) $(PY) -m local.stack

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

test: lint typecheck scan
	$(PY) -m pytest

# Every runtime import is in a lock; the template passes cfn-lint (+ serverless rules) and checkov.
scan: venv $(SCAN_VENV)/.installed
	$(PY) -m local.deps check
	$(SCAN_VENV)/bin/cfn-lint --append-rules cfn_lint_serverless.rules -- template.yaml
	$(SCAN_VENV)/bin/checkov -f template.yaml --config-file .checkov.yaml --compact --quiet --skip-download

$(SCAN_VENV)/.installed:
	$(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install -q --upgrade pip
	$(SCAN_VENV)/bin/pip install -q cfn-lint==1.58.0 cfn-lint-serverless==0.3.6 checkov==3.3.30
	touch $@

# Regenerate the OpenAPI document (layers/claude/claudekit/http/openapi.json) from the code and the template.
openapi: venv
	$(PY) -m local.openapi

# Recompile the hash-locked runtime requirements from their requirements.in files.
lock: venv
	$(PY) -m local.deps lock

unit: venv
	$(PY) -m pytest tests/unit

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q --upgrade pip
	$(SAM_VENV)/bin/pip install -q aws-sam-cli==1.170.0
	touch $@

validate: $(SAM_VENV)/.installed
	$(SAM) validate --lint --region us-east-1

build: validate
	PYENV_VERSION=$(SAM_PYTHON) $(SAM) build --region us-east-1
	# Ship bytecode: Lambda's /opt and /var/task are read-only, so without .pyc files every cold
	# start compiles the SDKs again (see docs/benchmarks.md). unchecked-hash: zip mtimes do not matter.
	PYENV_VERSION=$(SAM_PYTHON) python3.13 -m compileall -q -j 0 --invalidation-mode unchecked-hash .aws-sam/build
	$(MAKE) check-arch

check-arch: venv
	$(PY) -m local.check_arch .aws-sam/build

# The artifact as Lambda runs it: built for this machine's CPU, each function started from its build
# folder in a clean Python 3.13 with only boto3 besides, invoked with its events/ file.
smoke-build: validate venv
	PYENV_VERSION=$(SAM_PYTHON) $(SAM) build --region us-east-1 --build-dir $(SMOKE_BUILD) \
		--parameter-overrides Architecture=$(SMOKE_ARCH)
	PYENV_VERSION=$(SAM_PYTHON) python3.13 -m compileall -q -j 0 --invalidation-mode unchecked-hash $(SMOKE_BUILD)
	$(PY) -m local.check_arch $(SMOKE_BUILD) --arch $(SMOKE_ARCH)

smoke: smoke-build
	SMOKE_BUILD_DIR=$(SMOKE_BUILD) SMOKE_PYTHON=$$(PYENV_VERSION=$(SAM_PYTHON) pyenv which python3.13) \
		$(PY) -m pytest tests/artifact -p no:cacheprovider

# Issue 15's targets side by side (prints them, writes benchmarks/results.json: commit it when a
# figure moves). Cold start is measured on the smoke build (the artifact, for this machine's CPU).
# Not part of `make test`: timings are never asserted.
bench: venv smoke-build
	SMOKE_PYTHON=$$(PYENV_VERSION=$(SAM_PYTHON) pyenv which python3.13) $(PY) -m benchmarks.run

# Regenerate the layer's price rows from the pinned genai-prices (after bumping it in requirements-dev.txt).
prices: venv
	$(PY) -m local.prices

clean:
	rm -rf $(VENV) $(SAM_VENV) $(SCAN_VENV) .aws-sam .mypy_cache .ruff_cache .pytest_cache
