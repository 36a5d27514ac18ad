# Fresh Debian machine as root with Python 3.11: `make test` and `make demo` install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= sensor,inference,bridge,train,dashboards,broker,clinic,bench,dev
# `make demo` gets its own lean environment: what the demo runs, no TensorFlow, no test tools.
DEMO_VENV ?= .venv-demo
DEMO_EXTRAS ?= sensor,inference,bridge,broker
STAMP := $(VENV)/.installed-$(shell echo $(EXTRAS) | tr ',' '-')

.PHONY: help system-deps demo-system-deps venv test test-fast lint demo clean

help:
	@echo "make test   - install everything (apt packages, .venv) and run the test suite"
	@echo "make demo   - run the local demo (broker, simulated devices, inference, bridge)"
	@echo "make test-fast - the tests that need no server and no training (no root, no apt; under a minute)"
	@echo "make lint   - ruff, mypy and the import rules (import-linter)"

system-deps:
	@bash scripts/system-deps.sh all

demo-system-deps:
	@bash scripts/system-deps.sh demo

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "make: Python 3.11+ is required (set PYTHON=...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $@

venv: $(STAMP)

test: system-deps venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

# No apt, no root: servers and training are left out (markers set in conftest.py); both cores.
test-fast: venv
	$(PY) -m pytest -q -n 2 -m "not server and not slow" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

# Times itself: the demo prints how long a fresh clone took from `make demo` to the first verdict.
demo: export THERMOSCREEN_DEMO_T0 := $(shell date +%s.%N)
demo: demo-system-deps
	@$(MAKE) --no-print-directory venv VENV=$(DEMO_VENV) EXTRAS=$(DEMO_EXTRAS)
	$(DEMO_VENV)/bin/thermoscreen demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_VENV) .mypy_cache .ruff_cache .pytest_cache
