"""OpenLineage through Airflow's own listener: `airflow dags test` of a build, with the OpenLineage provider's
file transport, in a process of its own (the provider reads its configuration once per process) against the
emulator on 127.0.0.1 with builds of a second, on the real clock; and the events it wrote."""

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

from airflow_provider_atscale.emulator import FAILING_MODEL_ID, EmulatorConfig, run_emulator
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
    assert "failing_build" in run.stdout + run.stderr, run.stdout[-3000:] + run.stderr[-3000:]
    return [json.loads(line) for line in events.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return lineage_events(tmp_path_factory.mktemp("lineage"))


def of_task(events: list[dict[str, Any]], event_type: str, task_id: str) -> dict[str, Any]:
    (event,) = [
        e for e in events if e["eventType"] == event_type and e["job"]["name"].endswith(f".{task_id}")
    ]
    return event


def test_a_task_start_names_the_model_as_its_input(events: list[dict[str, Any]]) -> None:
    start = of_task(events, "START", "build")

    ((namespace, name),) = [(d["namespace"], d["name"]) for d in start["inputs"]]
    assert namespace.startswith("atscale://127.0.0.1:")
    assert name == "Sales Insights/Internet Sales"


def test_a_finished_build_reports_the_aggregate_tables_it_wrote(events: list[dict[str, Any]]) -> None:
    complete = of_task(events, "COMPLETE", "build")

    outputs = {(d["namespace"], d["name"]): d.get("outputFacets", {}) for d in complete["outputs"]}
    assert set(outputs) == {
        ("snowflake://acme-xy12345", "ANALYTICS.atscale_aggs.as_agg_internet_sales_by_day"),
        ("snowflake://acme-xy12345", "ANALYTICS.atscale_aggs.as_agg_internet_sales_by_product"),
        ("snowflake://acme-xy12345", "ANALYTICS.atscale_aggs.as_agg_internet_sales_by_customer_geo"),
    }
    rows = outputs[("snowflake://acme-xy12345", "ANALYTICS.atscale_aggs.as_agg_internet_sales_by_day")]
    assert rows["outputStatistics"]["rowCount"] == 1826
    (model,) = complete["inputs"]
    assert model["name"] == "fdcdd3e1-13fc-54c2-93fe-57e681e1968e/0b44a9eb-8aa1-5aaa-8141-6d80ae5ce3bf"
    facet = complete["run"]["facets"]["atscale_aggregate_batch"]
    assert (facet["buildType"], facet["status"]) == ("full", "done")
    assert (facet["modelId"], len(facet["batchId"])) == ("0b44a9eb-8aa1-5aaa-8141-6d80ae5ce3bf", 36)
    assert facet["_producer"]
    assert facet["_schemaURL"].endswith("#AtScaleAggregateBatchRunFacet")


def test_a_failed_build_reports_its_batch_and_the_failing_aggregates(events: list[dict[str, Any]]) -> None:
    fail = of_task(events, "FAIL", "failing_build")

    assert fail["outputs"] == []
    facets = fail["run"]["facets"]
    batch = facets["atscale_aggregate_batch"]
    assert (batch["status"], batch["modelId"]) == ("failed", FAILING_MODEL_ID)
    message = facets["errorMessage"]["message"]
    assert "ended in status 'failed'" in message
    assert (
        "as_agg_broken_sales_by_product (invalid): Table 'as_agg_broken_sales_by_product' could not"
        in message
    )


def test_an_unmapped_warehouse_connection_is_named_after_the_atscale_host_and_failures_are_left_out() -> None:
    from airflow_provider_atscale._inputs import ConnectionSettings
    from airflow_provider_atscale._lineage import build_lineage
    from airflow_provider_atscale.batches import AggregateBatch, AggregateInstance

    settings = ConnectionSettings(conn_id="atscale_default", base_url="https://atscale.test:8443", token="t")
    built = AggregateInstance("1", "active", "agg_ok", "atscale_aggs", connection_id="wh-1")
    failed = AggregateInstance("2", "invalid", "agg_bad", "atscale_aggs", "denied")
    batch = AggregateBatch(id="b", catalog_id="c", model_id="m", status="failed")

    lineage = build_lineage(settings, ("c", "m"), batch, build_type="incremental", aggregates=[built, failed])

    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("atscale://atscale.test:8443/wh-1", "atscale_aggs.agg_ok")
    ]
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("atscale://atscale.test:8443", "c/m")]
    facet = lineage.run_facets["atscale_aggregate_batch"]
    assert (facet.status, facet.buildType) == ("failed", "incremental")
