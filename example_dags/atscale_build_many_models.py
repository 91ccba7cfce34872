"""
One deferred build per model through dynamic task mapping, and a sensor that waits on a batch started
elsewhere.

``build_models`` maps the operator over a list of model ids (``.partial().expand()``): each mapped task
starts its model's build and waits for it on the triggerer. ``start_elsewhere`` starts a build without
waiting, as another system might; ``wait_for_elsewhere`` picks its batch id from XCom and waits for it
with the sensor.

The default ids are those of the local emulator's demo models (``make demo``): use your own.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator
from airflow_provider_atscale.sensors.atscale import AtScaleAggregateBatchSensor

CATALOG_ID = "fdcdd3e1-13fc-54c2-93fe-57e681e1968e"
# How often to ask AtScale about the builds; the tests shorten it for the emulator's seconds-long builds.
POLL_INTERVAL = int(os.environ.get("ATSCALE_EXAMPLE_POLL_INTERVAL", "60"))
MODEL_IDS = ["0b44a9eb-8aa1-5aaa-8141-6d80ae5ce3bf", "c66d5407-9e52-5516-8ac5-114d82a00a76"]

with DAG(
    dag_id="atscale_build_many_models",
    description="Incremental builds of several AtScale models at once, waited on by the triggerer",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["atscale"],
):
    AtScaleAggregateBuildOperator.partial(
        task_id="build_models",
        catalog_id=CATALOG_ID,
        full_build=False,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    ).expand(model_id=MODEL_IDS)

    start_elsewhere = AtScaleAggregateBuildOperator(
        task_id="start_elsewhere",
        catalog_id=CATALOG_ID,
        model_id=MODEL_IDS[1],
        full_build=True,
        wait_for_completion=False,
    )

    wait_for_elsewhere = AtScaleAggregateBatchSensor(
        task_id="wait_for_elsewhere",
        catalog_id=CATALOG_ID,
        model_id=MODEL_IDS[1],
        batch_id="{{ ti.xcom_pull(task_ids='start_elsewhere', key='batch_id') }}",
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=3 * 60 * 60,
    )

    start_elsewhere >> wait_for_elsewhere
