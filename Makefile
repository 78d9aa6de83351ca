# The two set-up commands of the README:
#   make run    install into .venv (once) and run SkyTwin on the embedded PostgreSQL
#   make test   install the test extras into .venv (once) and run the whole test suite
# Everything else (bench, lint) is optional.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test bench lint

$(VENV)/.stamp-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$*]'
	touch $@

run: $(VENV)/.stamp-run
	$(PY) -m skytwin $(ARGS)

test: $(VENV)/.stamp-test
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.stamp-bench
	$(PY) bench/db.py
	$(PY) bench/primitives.py

lint: $(VENV)/.stamp-dev
	$(VENV)/bin/ruff check skytwin tests bench
	$(VENV)/bin/mypy skytwin
