"""DAGs that only the test suite runs: each templating form of the overrides, waits, failures and retries."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_atscale.assets import model_asset
from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator
from tests.compat import DAG

CATALOG_ID = "fdcdd3e1-13fc-54c2-93fe-57e681e1968e"
MODEL_ID = "0b44a9eb-8aa1-5aaa-8141-6d80ae5ce3bf"
FAILING_MODEL_ID = "8f37d9fd-6fa7-5d83-96b9-84a0e17ddda3"
START = datetime(2025, 1, 1)
RETRY = {"retries": 1, "retry_delay": timedelta(0)}


def build(task_id: str = "build", **kwargs: Any) -> AtScaleAggregateBuildOperator:
    """A build of the emulator's model, polling every 30 s unless told."""
    arguments = {"catalog_id": CATALOG_ID, "model_id": MODEL_ID, "poll_interval": 30, **kwargs}
    return AtScaleAggregateBuildOperator(task_id=task_id, **arguments)


def dag(dag_id: str, **kwargs: Any) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, **kwargs)


with dag("atscale_test_overrides_dict", params={"grace": 30}):
    build(
        catalog_id="{{ dag_run.conf.get('catalog_id', '" + CATALOG_ID + "') }}",
        full_build="{{ 'FALSE' }}",
        grace_period_overrides={"factinternetsales": "{{ params.grace }}", "factresellersales": 0},
        wait_for_completion=False,
    )

with dag("atscale_test_overrides_json"):
    build(grace_period_overrides="{{ var.value.atscale_grace }}", wait_for_completion=False)

with dag(
    "atscale_test_overrides_native",
    render_template_as_native_obj=True,
    params={"overrides": {"factinternetsales": 15}},
):
    build(grace_period_overrides="{{ params.overrides }}", wait_for_completion=False)

with dag("atscale_test_bad_overrides", params={"grace": -4}):
    build(grace_period_overrides={"factinternetsales": "{{ params.grace }}"})

for deferrable in (False, True):
    with dag(f"atscale_test_full_build_{'deferrable' if deferrable else 'sync'}"):
        build(full_build=True, deferrable=deferrable)

ATSCALE_URL = os.environ.get("ATSCALE_URL", "https://atscale.test")

with dag("atscale_test_asset"):
    build(full_build=True, outlets=[model_asset(ATSCALE_URL, catalog_id=CATALOG_ID, model_id=MODEL_ID)])

with dag("atscale_test_failing_model"):
    build(
        model_id=FAILING_MODEL_ID,
        full_build=True,
        outlets=[model_asset(ATSCALE_URL, catalog_id=CATALOG_ID, model_id=FAILING_MODEL_ID)],
    )

with dag("atscale_test_retry"):
    build(full_build=True, **RETRY)

with dag("atscale_test_timeout_retry"):
    # Builds take 110 s in the emulator: the first try times out, the retry resumes the same batch.
    build(full_build=True, timeout=60, **RETRY)

with dag("atscale_test_beside_another_build"):
    # Another task starts a build of the same model first, without overrides, and leaves it running.
    build("other", wait_for_completion=False) >> build(
        "ours", grace_period_overrides={"factinternetsales": 30}
    )

with dag("atscale_test_lineage"):
    # Run by `airflow dags test` in a process of its own, against an emulator whose builds take a second:
    # one build that succeeds, one that fails.
    build(
        catalog_id=None,
        model_id=None,
        catalog_name="Sales Insights",
        model_name="Internet Sales",
        full_build=True,
        poll_interval=1,
        timeout=120,
    )
    build("failing_build", model_id=FAILING_MODEL_ID, poll_interval=1, timeout=120)
