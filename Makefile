# Two commands do all the set-up: `make demo` and `make test` (see README.md).
# SQLFluff runs inside pytest (python/tests/test_sql_style.py): its dbt templater needs a
# Postgres connection, and the tests have one.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint unit bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cohortcast run --demo

lint: $(STAMP)
	$(BIN)/ruff format --check python
	$(BIN)/ruff check python
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint unit

bench: $(STAMP)
	$(BIN)/python python/bench/run.py

clean:
	rm -rf $(VENV) target logs .cohortcast
