# h2k task runner. `make help` lists the targets.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help setup proto proto-check lint test test-fast test-processes test-unit demo bench \
	deploy-check clean

# `make test` runs in two stages so that a broken unit shows in a minute, not after the real
# processes: the in-process folders first, then everything else under tests/ (so a new folder
# lands in the second stage, and no test is run twice or skipped). A folder not created yet is
# left out of the first stage.
FAST_TEST_DIRS := tests/unit tests/component tests/store tests/client
PYTEST := $(VENV)/bin/pytest -q -ra
define run_fast_tests
	@echo "== test-fast: $(wildcard $(FAST_TEST_DIRS))"
	@$(PYTEST) $(wildcard $(FAST_TEST_DIRS))
endef
define run_process_tests
	@echo "== test-processes: tests/ except $(FAST_TEST_DIRS)"
	@$(PYTEST) tests $(addprefix --ignore=,$(FAST_TEST_DIRS))
endef

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

setup:  ## install Debian packages, the Python venv (.venv) and buf (.tools)
	@bash scripts/setup.sh

proto: setup  ## regenerate protocol/gen from proto/
	@$(PY) scripts/gen_proto.py

proto-check: proto  ## fail when the committed generated code is stale
	@git diff --exit-code --stat -- protocol/gen || (echo "protocol/gen is stale: run make proto and commit" && exit 1)
	@test -z "$$(git status --porcelain -- protocol/gen)" || (echo "protocol/gen has untracked files: run make proto and commit" && exit 1)

lint: setup  ## ruff, mypy, buf lint + breaking on proto/, no import cycle
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy protocol runtime migration controlplane agent cli client devsupport intake
	@bash scripts/check_proto.sh
	@$(PY) scripts/check_import_cycles.py

test: setup proto-check lint  ## everything: lint, then test-fast's tests, then test-processes'
	$(run_fast_tests)
	$(run_process_tests)

test-fast: setup proto-check lint  ## lint, then unit, component, store and client tests (in-process)
	$(run_fast_tests)

test-processes: setup proto-check  ## the rest: real processes (integration, ha, privileged, bench, ...)
	$(run_process_tests)

test-unit: setup  ## unit tests only
	@$(VENV)/bin/pytest -q tests/unit

demo: setup  ## control plane + agent on loopback, convert a sample VMDK with live progress
	@$(PY) scripts/demo.py

bench: setup  ## run the benchmarks by hand (see BENCHMARKS.md)
	@$(PY) -m bench

deploy-check: setup  ## validate deploy/ (schema, properties, alerts vs exported metrics), lint Dockerfiles
	@$(VENV)/bin/pytest -q tests/deploy

clean:  ## remove the venv, .tools and caches
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache build *.egg-info
