# `make test-deployment`: the provider in a real Airflow deployment started from $(VENV): `airflow db
# migrate`, then api-server, scheduler (LocalExecutor), dag-processor and triggerer as separate processes on
# SQLite, and the AtScale emulator in its own process, all on 127.0.0.1. The example DAGs and
# tests/deployment/dags run through the REST API; a summary of each scenario's figures ends the output.
# Opt-in: plain `make test` skips tests/deployment. Needs nothing beyond `make install`.
#
# Every process's log stays in $(DEPLOYMENT_BASETEMP)/deployment/logs/, the task logs in
# $(DEPLOYMENT_BASETEMP)/deployment/airflow-home/logs/, until the next run; a failure prints their paths.
DEPLOYMENT_BASETEMP ?= $(CURDIR)/build/test-deployment
DEPLOYMENT_PYTEST_ARGS ?=

.PHONY: test-deployment

test-deployment: install
	@mkdir -p $(dir $(DEPLOYMENT_BASETEMP))
	ATSCALE_DEPLOYMENT_TESTS=1 $(BIN)/pytest tests/deployment --basetemp=$(DEPLOYMENT_BASETEMP) \
		-p no:cacheprovider $(DEPLOYMENT_PYTEST_ARGS)
