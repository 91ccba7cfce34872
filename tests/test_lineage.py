"""
OpenLineage through Airflow's own listener: `airflow dags test` of a build, in a process of its own with the
OpenLineage provider's file transport, and the events it wrote.

A process of its own, because the OpenLineage provider reads its configuration once per process; the
emulator serves it on 127.0.0.1 with builds of a second, on the real clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "airflow.providers.openlineage", reason="apache-airflow-providers-openlineage is not installed"
)

from airflow_provider_atscale.emulator import EmulatorConfig, run_emulator
from tests.conftest import _ROOT
from tests.helpers import connection_uri

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG_ID = "atscale_test_lineage"
NAMESPACES = {"snowflake-warehouse": {"namespace": "snowflake://acme-xy12345", "database": "ANALYTICS"}}


def lineage_events(tmp_path: Path) -> list[dict[str, Any]]:
    """Run the DAG with OpenLineage writing to a file; return the events it wrote."""
    events = tmp_path / "openlineage.jsonl"
    with run_emulator(EmulatorConfig(default_queue_seconds=0.2, default_build_seconds=1.0)) as emulator:
        env = {
            **os.environ,
            "PYTHONPATH": str(_ROOT),
            # Where Airflow 2, which has no DAG bundles, looks for the DAG.
            "AIRFLOW__CORE__DAGS_FOLDER": str(_ROOT / "tests" / "dags"),
            "AIRFLOW_CONN_ATSCALE_DEFAULT": connection_uri(
                host=emulator.url, password=emulator.token, lineage_namespaces=NAMESPACES
            ),
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(events), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "atscale-tests",
            # Emit from a thread the task waits for, rather than a forked process: the events are in the
            # file when `airflow dags test` returns.
            "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
        }
        run = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", DAG_ID],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return [json.loads(line) for line in events.read_text().splitlines() if line.strip()]


def test_a_finished_build_reports_the_aggregate_tables_it_wrote(tmp_path: Path) -> None:
    events = lineage_events(tmp_path)

    (complete,) = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith(".build")]
    outputs = {(d["namespace"], d["name"]): d.get("outputFacets", {}) for d in complete["outputs"]}
    assert set(outputs) == {
        ("snowflake://acme-xy12345", "ANALYTICS.atscale_aggs.as_agg_internet_sales_by_day"),
        ("snowflake://acme-xy12345", "ANALYTICS.atscale_aggs.as_agg_internet_sales_by_product"),
        ("snowflake://acme-xy12345", "ANALYTICS.atscale_aggs.as_agg_internet_sales_by_customer_geo"),
    }
    rows = outputs[("snowflake://acme-xy12345", "ANALYTICS.atscale_aggs.as_agg_internet_sales_by_day")]
    assert rows["outputStatistics"]["rowCount"] == 1826
    facet = complete["run"]["facets"]["atscale_aggregate_batch"]
    assert facet["buildType"] == "full"
    assert facet["status"] == "done"
    assert facet["modelId"] == "0b44a9eb-8aa1-5aaa-8141-6d80ae5ce3bf"
    assert len(facet["batchId"]) == 36
    assert facet["_producer"]
    assert facet["_schemaURL"].endswith("#AtScaleAggregateBatchRunFacet")


def test_an_unmapped_warehouse_connection_is_named_after_the_atscale_host_and_failures_are_left_out(
    atscale_conn: str, requests_mock: Any
) -> None:
    from airflow_provider_atscale._lineage import aggregate_build_lineage
    from airflow_provider_atscale.batches import AggregateBatch
    from airflow_provider_atscale.hooks.atscale import AtScaleHook
    from tests.helpers import BATCH_ID, CATALOG_ID, INSTANCES_URL, MODEL_ID, instance_object

    built, failed = instance_object("active", "agg_ok"), instance_object("invalid", "agg_bad", "denied")
    requests_mock.get(INSTANCES_URL, json={"data": [dict(built, connectionId="wh-1"), failed]})
    batch = AggregateBatch(id=BATCH_ID, catalog_id=CATALOG_ID, model_id=MODEL_ID, status="failed")

    lineage = aggregate_build_lineage(AtScaleHook(), batch, full_build=False)

    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("atscale://atscale.test/wh-1", "atscale_aggs.agg_ok")
    ]
    assert lineage.run_facets["atscale_aggregate_batch"].status == "failed"
    assert lineage.run_facets["atscale_aggregate_batch"].buildType == "incremental"
