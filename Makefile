# Everything a fresh machine with Python, pip, make and git needs, installed into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := install
.PHONY: install lint typecheck test demo clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(INSTALLED)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/deptry airflow_provider_atscale

typecheck: install
	$(BIN)/mypy

# The suite, with the package's line and branch coverage reported (files at 100% left out of the table).
test: lint typecheck
	$(BIN)/pytest --cov=airflow_provider_atscale --cov-branch --cov-report=term-missing:skip-covered

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist

# Further targets (benchmarks, version matrix, packaging, browser tests) live in mk/, one file each.
-include mk/*.mk
