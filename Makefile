# h2k task runner. `make help` lists the targets.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help setup proto proto-check lint test test-unit demo bench deploy-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup:  ## install Debian disk tools and the Python venv (.venv)
	@bash scripts/setup.sh

proto: setup  ## regenerate protocol/gen from proto/
	@$(PY) scripts/gen_proto.py

proto-check: proto  ## fail when the committed generated code is stale
	@git diff --exit-code --stat -- protocol/gen || (echo "protocol/gen is stale: run make proto and commit" && exit 1)
	@test -z "$$(git status --porcelain -- protocol/gen)" || (echo "protocol/gen has untracked files: run make proto and commit" && exit 1)

lint: setup  ## ruff (lint + format check) and mypy on hand-written code
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy protocol controlplane agent cli client devsupport

test: setup proto-check lint  ## install what the tests need, then run them all
	@$(VENV)/bin/pytest -q -ra tests

test-unit: setup  ## unit tests only
	@$(VENV)/bin/pytest -q tests/unit

demo: setup  ## control plane + agent on loopback, convert a sample VMDK with live progress
	@$(PY) scripts/demo.py

bench: setup  ## run the benchmarks by hand (see BENCHMARKS.md)
	@$(PY) -m bench

deploy-check: setup  ## validate deploy/ (schema, properties, alerts vs exported metrics), lint Dockerfiles
	@$(VENV)/bin/pytest -q tests/deploy

clean:  ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
