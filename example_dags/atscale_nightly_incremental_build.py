"""
Nightly incremental build of an AtScale model's aggregates, at 02:00, and a dashboard refresh after it.

Grace-period overrides come from the DAG's params, so a manual run can widen them from the trigger form
(e.g. after late-arriving data). AtScale applies them only where its
``aggregate.batch.gracePeriodOverrides.enabled`` settings are on.

The build names the model's asset in its ``outlets``: each successful build emits an asset event carrying
the batch id, build type, status and aggregate tables, and ``atscale_refresh_sales_dashboard``, scheduled on
that asset, runs after it and reads them. A failed build emits no event.

The catalog and model are named as AtScale shows them; the defaults are the local emulator's demo model
(``make demo``): put your own here, and your AtScale URL, as the connection names it, in ``ATSCALE_URL``.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_provider_atscale.assets import model_asset
from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator

# How often to ask AtScale about the build; `make demo` shortens it for its seconds-long builds.
POLL_INTERVAL = int(os.environ.get("ATSCALE_EXAMPLE_POLL_INTERVAL", "60"))
# The model's asset names the AtScale server as the connection does: an asset is fixed when the DAG is
# parsed, so it cannot read the connection. `make demo` and the tests point it at the local emulator.
ATSCALE_URL = os.environ.get("ATSCALE_URL", "https://atscale.example.com")
log = logging.getLogger(__name__)
SALES_MODEL = model_asset(ATSCALE_URL, catalog_name="Sales Insights", model_name="Internet Sales")

with DAG(
    dag_id="atscale_nightly_incremental_build",
    description="Incremental AtScale aggregate build every night at 02:00",
    schedule="0 2 * * *",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "catalog": Param("Sales Insights", type="string", minLength=1),
        "model": Param("Internet Sales", type="string", minLength=1),
        "factinternetsales_grace": Param(30, type="integer", minimum=0),
        "factresellersales_grace": Param(7, type="integer", minimum=0),
    },
    tags=["atscale"],
) as dag:
    AtScaleAggregateBuildOperator(
        task_id="incremental_build",
        catalog_name="{{ params.catalog }}",
        model_name="{{ params.model }}",
        full_build=False,
        grace_period_overrides={
            "factinternetsales": "{{ params.factinternetsales_grace }}",
            "factresellersales": "{{ params.factresellersales_grace }}",
        },
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(hours=4).total_seconds(),
        outlets=[SALES_MODEL],
    )


with DAG(
    dag_id="atscale_refresh_sales_dashboard",
    description="Refresh the sales dashboard after each successful build of its AtScale model",
    schedule=[SALES_MODEL],
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["atscale"],
):

    @task
    def refresh_dashboard(triggering_asset_events: dict | None = None) -> str | None:
        """Refresh the dashboard's extract (a stand-in): the build that triggered the run is in the event."""
        events = (triggering_asset_events or {}).get(SALES_MODEL, [])
        if not events:
            log.info("No build triggered this run: nothing to refresh")
            return None
        build = events[-1].extra
        log.info(
            "Refreshing the sales dashboard after %s build %s (%s; tables %s)",
            build["build_type"],
            build["batch_id"],
            build["status"],
            ", ".join(build["aggregate_tables"]),
        )
        return str(build["batch_id"])

    refresh_dashboard()
