# One place for the commands: `make run` (the local stack) and `make test` (lint, types, tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SAM_VENV ?= .venv-sam
SAM := $(SAM_VENV)/bin/sam
# sam build needs the Lambda runtime's Python on PATH; pyenv provides it on dev machines and CI.
SAM_PYTHON ?= 3.13.0
PORT ?= 3000

.PHONY: venv run test lint typecheck unit validate build check-arch bench prices clean

$(VENV)/.installed: requirements-dev.txt layers/claude/requirements.txt functions/stream/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
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

test: lint typecheck
	$(PY) -m pytest

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

bench: venv
	$(PY) -m benchmarks.run

# Regenerate the layer's price rows from the pinned genai-prices (after bumping it in requirements-dev.txt).
prices: venv
	$(PY) -m local.prices

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .mypy_cache .ruff_cache .pytest_cache
