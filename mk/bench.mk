# `make bench`: the performance figures of benchmarks/README.md, each next to its target.
#
# The benchmarks run in a layer on top of the project's venv: a venv whose site-packages also reads
# $(VENV)'s (through a .pth file), plus what only the benchmarks need (the HTTP provider, the import-time
# reference). The test venv and pyproject.toml stay as they are, and the layer always sees exactly the
# Airflow and provider code the tests run. It lives in benchmarks/.venv, which git ignores (`.venv/`).
BENCH_VENV ?= benchmarks/.venv
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_READY := $(BENCH_VENV)/.installed
BENCH_REQUIREMENTS := apache-airflow-providers-http
BENCH_ARGS ?=

.PHONY: bench bench-venv bench-clean

bench: install $(BENCH_READY)
	$(BENCH_BIN)/python -m benchmarks $(BENCH_ARGS)

bench-venv: install $(BENCH_READY)

# Rebuilt when the project venv is (venv rewrites pyvenv.cfg) or when this layer's recipe changes.
$(BENCH_READY): $(wildcard $(VENV)/pyvenv.cfg) pyproject.toml mk/bench.mk benchmarks/layer_venv.py | install
	rm -rf $(BENCH_VENV)
	$(BIN)/python benchmarks/layer_venv.py $(BENCH_VENV)
	$(BIN)/python -m pip freeze --exclude-editable > $(BENCH_VENV)/constraints.txt
	$(BENCH_BIN)/python -m pip install --quiet --disable-pip-version-check \
		--constraint $(BENCH_VENV)/constraints.txt $(BENCH_REQUIREMENTS)
	touch $@

bench-clean:
	rm -rf $(BENCH_VENV) benchmarks/results
