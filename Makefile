# The two set-up commands of the README:
#   make demo   install into .venv (once) and run the demo: SkyTwin on its embedded
#               PostgreSQL against a built-in fake Google (dashboard URL + token printed)
#   make test   install the test extras into .venv (once) and run the whole test suite
# Also: make run (the real service, configured by SKYTWIN_* variables), bench, lint.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo run test bench lint

$(VENV)/.stamp-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$*]'
	touch $@

demo: $(VENV)/.stamp-run
	$(PY) -m skytwin demo $(ARGS)

run: $(VENV)/.stamp-run
	$(PY) -m skytwin $(ARGS)

test: $(VENV)/.stamp-test
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.stamp-bench
	$(PY) bench/db.py
	$(PY) bench/primitives.py
	$(PY) bench/scale.py

lint: $(VENV)/.stamp-dev
	$(VENV)/bin/ruff check skytwin tests bench
	$(VENV)/bin/mypy skytwin
