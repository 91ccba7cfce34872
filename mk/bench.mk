# `make bench`: the performance figures of benchmarks/README.md, each next to its target.
#
# The benchmarks run in a layer on top of the project's venv: a venv whose site-packages also reads
# $(VENV)'s (through a .pth file), plus what only the benchmarks need (the HTTP provider, the import-time
# reference, and the two peer providers whose triggers the comparison runs beside ours). The test venv and
# pyproject.toml stay as they are, and the layer always sees exactly the Airflow and provider code the tests
# run. It lives in benchmarks/.venv, which git ignores (`.venv/`).
#
# The peers are pinned, so a comparison is repeatable. Everything installed here is constrained to $(VENV)'s
# freeze: dbt Cloud 4.11.1 is the newest there is; Databricks 7.18.0 is the newest whose
# databricks-sql-connector (4.0.0) accepts $(VENV)'s python-dateutil 4 (7.18.1 on want connector >= 4.4,
# and every connector from 4.0.5 on wants python-dateutil < 3). Its job-run trigger polls as 7.23.0's does.
BENCH_VENV ?= benchmarks/.venv
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_READY := $(BENCH_VENV)/.installed
BENCH_REQUIREMENTS := apache-airflow-providers-http apache-airflow-providers-dbt-cloud==4.11.1 \
	apache-airflow-providers-databricks==7.18.0
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
