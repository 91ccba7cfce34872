"""
Nightly incremental build of an AtScale model's aggregates, at 02:00.

Grace-period overrides come from the DAG's params, so a manual run can widen them from the trigger form
(e.g. after late-arriving data). AtScale applies them only where its
``aggregate.batch.gracePeriodOverrides.enabled`` settings are on.

The catalog and model are named as AtScale shows them; the defaults are the local emulator's demo model
(``make demo``): put your own here, or pass them as params.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator

# How often to ask AtScale about the build; `make demo` shortens it for its seconds-long builds.
POLL_INTERVAL = int(os.environ.get("ATSCALE_EXAMPLE_POLL_INTERVAL", "60"))

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
    )
