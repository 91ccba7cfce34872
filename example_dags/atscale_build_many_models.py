"""
One deferred build per model through dynamic task mapping, and a sensor that waits on a batch started
elsewhere.

``build_models`` maps the operator over a list of model ids (``.partial().expand()``): each mapped task
starts its model's build and waits for it on the triggerer. ``start_elsewhere`` starts a build without
waiting, as another system might; ``wait_for_elsewhere`` picks its batch id from XCom and waits for it
with the sensor.

The catalog and model names are those of the local emulator's demo models (``make demo``): use your own.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator
from airflow_provider_atscale.sensors.atscale import AtScaleAggregateBatchSensor

CATALOG = "Sales Insights"
# How often to ask AtScale about the builds; the tests shorten it for the emulator's seconds-long builds.
POLL_INTERVAL = int(os.environ.get("ATSCALE_EXAMPLE_POLL_INTERVAL", "60"))
MODELS = ["Internet Sales", "Reseller Sales"]

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
        catalog_name=CATALOG,
        full_build=False,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    ).expand(model_name=MODELS)

    start_elsewhere = AtScaleAggregateBuildOperator(
        task_id="start_elsewhere",
        catalog_name=CATALOG,
        model_name=MODELS[1],
        full_build=True,
        wait_for_completion=False,
    )

    # The ids the build pushed, with its batch id: no second lookup of the names.
    wait_for_elsewhere = AtScaleAggregateBatchSensor(
        task_id="wait_for_elsewhere",
        catalog_id="{{ ti.xcom_pull(task_ids='start_elsewhere', key='catalog_id') }}",
        model_id="{{ ti.xcom_pull(task_ids='start_elsewhere', key='model_id') }}",
        batch_id="{{ ti.xcom_pull(task_ids='start_elsewhere', key='batch_id') }}",
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=3 * 60 * 60,
    )

    start_elsewhere >> wait_for_elsewhere
