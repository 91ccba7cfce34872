"""
A full AtScale rebuild after a large reload.

``atscale_sales_etl`` stands in for your ETL: when it finishes it updates the ``sales_warehouse`` Asset.
``atscale_post_etl_full_rebuild`` is scheduled on that Asset, so every successful reload is followed by a
full build of the model's aggregates, waited on to the end (deferred, so no worker slot is held).

The catalog and model names are those of the local emulator's demo model (``make demo``): use your own.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, task

from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator

# How often to ask AtScale about the build; the tests shorten it for the emulator's seconds-long builds.
POLL_INTERVAL = int(os.environ.get("ATSCALE_EXAMPLE_POLL_INTERVAL", "60"))

SALES_WAREHOUSE = Asset(name="sales_warehouse", uri="warehouse://analytics/sales/factinternetsales")

with DAG(
    dag_id="atscale_sales_etl",
    description="Reload the sales fact tables (a stand-in for your ETL)",
    schedule="@daily",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["atscale", "etl"],
):

    @task(outlets=[SALES_WAREHOUSE])
    def reload_sales_facts() -> int:
        """Pretend to reload the fact table; a real ETL writes the warehouse here."""
        rows_loaded = 125_000
        return rows_loaded

    reload_sales_facts()


with DAG(
    dag_id="atscale_post_etl_full_rebuild",
    description="Full AtScale aggregate rebuild whenever the sales warehouse is reloaded",
    schedule=[SALES_WAREHOUSE],
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["atscale"],
):
    AtScaleAggregateBuildOperator(
        task_id="full_rebuild",
        catalog_name="Sales Insights",
        model_name="Internet Sales",
        full_build=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(hours=6).total_seconds(),
        retries=2,
        retry_delay=timedelta(minutes=5),
    )
