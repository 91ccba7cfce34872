"""DAGs that only the test suite runs: each templating form of the overrides, and a retried build."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow_provider_atscale.assets import model_asset
from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator
from tests.compat import DAG

CATALOG_ID = "fdcdd3e1-13fc-54c2-93fe-57e681e1968e"
MODEL_ID = "0b44a9eb-8aa1-5aaa-8141-6d80ae5ce3bf"
FAILING_MODEL_ID = "8f37d9fd-6fa7-5d83-96b9-84a0e17ddda3"
START = datetime(2025, 1, 1)

with DAG("atscale_test_overrides_dict", schedule=None, start_date=START, params={"grace": 30}):
    AtScaleAggregateBuildOperator(
        task_id="build",
        catalog_id="{{ dag_run.conf.get('catalog_id', '" + CATALOG_ID + "') }}",
        model_id=MODEL_ID,
        full_build="{{ 'FALSE' }}",
        grace_period_overrides={"factinternetsales": "{{ params.grace }}", "factresellersales": 0},
        wait_for_completion=False,
    )

with DAG("atscale_test_overrides_json", schedule=None, start_date=START):
    AtScaleAggregateBuildOperator(
        task_id="build",
        catalog_id=CATALOG_ID,
        model_id=MODEL_ID,
        grace_period_overrides="{{ var.value.atscale_grace }}",
        wait_for_completion=False,
    )

with DAG(
    "atscale_test_overrides_native",
    schedule=None,
    start_date=START,
    render_template_as_native_obj=True,
    params={"overrides": {"factinternetsales": 15}},
):
    AtScaleAggregateBuildOperator(
        task_id="build",
        catalog_id=CATALOG_ID,
        model_id=MODEL_ID,
        grace_period_overrides="{{ params.overrides }}",
        wait_for_completion=False,
    )

with DAG("atscale_test_bad_overrides", schedule=None, start_date=START, params={"grace": -4}):
    AtScaleAggregateBuildOperator(
        task_id="build",
        catalog_id=CATALOG_ID,
        model_id=MODEL_ID,
        grace_period_overrides={"factinternetsales": "{{ params.grace }}"},
    )

for deferrable in (False, True):
    with DAG(
        f"atscale_test_full_build_{'deferrable' if deferrable else 'sync'}", schedule=None, start_date=START
    ):
        AtScaleAggregateBuildOperator(
            task_id="build",
            catalog_id=CATALOG_ID,
            model_id=MODEL_ID,
            full_build=True,
            poll_interval=30,
            deferrable=deferrable,
        )

ATSCALE_URL = os.environ.get("ATSCALE_URL", "https://atscale.test")
FAILING_MODEL = model_asset(ATSCALE_URL, catalog_id=CATALOG_ID, model_id=FAILING_MODEL_ID)

with DAG("atscale_test_asset", schedule=None, start_date=START):
    AtScaleAggregateBuildOperator(
        task_id="build",
        catalog_id=CATALOG_ID,
        model_id=MODEL_ID,
        full_build=True,
        poll_interval=30,
        outlets=[model_asset(ATSCALE_URL, catalog_id=CATALOG_ID, model_id=MODEL_ID)],
    )

with DAG("atscale_test_failing_model", schedule=None, start_date=START):
    AtScaleAggregateBuildOperator(
        task_id="build",
        catalog_id=CATALOG_ID,
        model_id=FAILING_MODEL_ID,
        full_build=True,
        poll_interval=30,
        outlets=[FAILING_MODEL],
    )

with DAG("atscale_test_retry", schedule=None, start_date=START):
    AtScaleAggregateBuildOperator(
        task_id="build",
        catalog_id=CATALOG_ID,
        model_id=MODEL_ID,
        full_build=True,
        poll_interval=30,
        retries=1,
        retry_delay=timedelta(0),
    )

with DAG("atscale_test_timeout_retry", schedule=None, start_date=START):
    # Builds take 110 s in the emulator: the first try times out, the retry resumes the same batch.
    AtScaleAggregateBuildOperator(
        task_id="build",
        catalog_id=CATALOG_ID,
        model_id=MODEL_ID,
        full_build=True,
        poll_interval=30,
        timeout=60,
        retries=1,
        retry_delay=timedelta(0),
    )

with DAG("atscale_test_beside_another_build", schedule=None, start_date=START):
    # Another task starts a build of the same model first, without overrides, and leaves it running.
    other = AtScaleAggregateBuildOperator(
        task_id="other", catalog_id=CATALOG_ID, model_id=MODEL_ID, wait_for_completion=False
    )
    ours = AtScaleAggregateBuildOperator(
        task_id="ours",
        catalog_id=CATALOG_ID,
        model_id=MODEL_ID,
        grace_period_overrides={"factinternetsales": 30},
        poll_interval=30,
    )
    other >> ours

with DAG("atscale_test_lineage", schedule=None, start_date=START):
    # Run by `airflow dags test` in a process of its own, against an emulator whose builds take a second:
    # one build that succeeds, one that fails.
    AtScaleAggregateBuildOperator(
        task_id="build",
        catalog_name="Sales Insights",
        model_name="Internet Sales",
        full_build=True,
        poll_interval=1,
        timeout=120,
    )
    AtScaleAggregateBuildOperator(
        task_id="failing_build",
        catalog_id=CATALOG_ID,
        model_id=FAILING_MODEL_ID,
        poll_interval=1,
        timeout=120,
    )
