# Fresh Debian machine as root with Python 3.11: `make test` and `make demo` install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= sensor,inference,bridge,train,dashboards,broker,dev
STAMP := $(VENV)/.installed-$(shell echo $(EXTRAS) | tr ',' '-')

.PHONY: help system-deps venv test test-fast lint demo bench clean

help:
	@echo "make test   - install everything (apt packages, .venv) and run the test suite"
	@echo "make demo   - run the local demo (broker, simulated devices, inference, bridge)"
	@echo "make lint   - ruff and mypy"

system-deps:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "make: Python 3.11+ is required (set PYTHON=...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

venv: $(STAMP)

test: system-deps venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

demo: system-deps venv
	$(VENV)/bin/thermoscreen demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
