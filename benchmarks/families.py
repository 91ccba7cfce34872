"""
The three trigger families the comparison runs: ours, dbt Cloud's and Databricks'.

Each family says how its Airflow connection points at the fake server, how the task that deferred would have
built its trigger, which hook method answers a poll (so the benchmark can tell when every trigger has had
one answered), which modules the triggerer imports for it, and what a right event looks like.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.fake_server import ATSCALE, FakeServerInfo
from benchmarks.peer_apis import DATABRICKS, DBT, DBT_ACCOUNT_ID

TRIGGER_TIMEOUT_SECONDS = 3600.0


@dataclass(frozen=True)
class Job:
    """
    A job a trigger waits on, as the fake server made it.

    :param id: the run id (dbt Cloud, Databricks) or batch id (AtScale).
    :param created: when it was made, in seconds since the epoch (when the task would have deferred).
    :param ends: when it ends.
    :param model_id: the AtScale model.
    :param catalog_id: the AtScale catalog.
    """

    id: Any
    created: float
    ends: float
    model_id: str = ""
    catalog_id: str = ""


def jobs_from_answer(answer: dict[str, Any]) -> list[Job]:
    """
    The jobs of a ``POST /_fake/jobs`` answer.

    :param answer: the answer's JSON.
    """
    return [
        Job(job["id"], job["created"], job["ends"], job.get("model_id") or "", answer["catalog_id"])
        for job in answer["jobs"]
    ]


def make_atscale_trigger(job: Job, conn_id: str, poll_interval: float) -> Any:
    """
    Our trigger, as ``AtScaleAggregateBuildOperator`` defers with it right after starting a build.

    :param job: the batch.
    :param conn_id: the ``atscale`` connection.
    :param poll_interval: seconds between polls.
    """
    from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger

    return AtScaleAggregateBatchTrigger(
        atscale_conn_id=conn_id,
        catalog_id=job.catalog_id,
        model_id=job.model_id,
        batch_id=job.id,
        poll_interval=poll_interval,
        deadline=job.created + TRIGGER_TIMEOUT_SECONDS,
        timeout=TRIGGER_TIMEOUT_SECONDS,
        started_at=job.created,
        last_status="new",
    )


def make_dbt_trigger(job: Job, conn_id: str, poll_interval: float) -> Any:
    """
    ``DbtCloudRunJobTrigger``, as ``DbtCloudRunJobOperator(deferrable=True)`` defers with it.

    The operator passes its own ``account_id``, ``None`` unless set: the hook then reads it from the
    connection's login, as most DAGs have it.

    :param job: the run.
    :param conn_id: the ``dbt_cloud`` connection.
    :param poll_interval: seconds between polls.
    """
    from airflow.providers.dbt.cloud.triggers.dbt import DbtCloudRunJobTrigger

    return DbtCloudRunJobTrigger(
        conn_id=conn_id,
        run_id=job.id,
        end_time=job.created + TRIGGER_TIMEOUT_SECONDS,
        poll_interval=poll_interval,
        account_id=None,
    )


def make_databricks_trigger(job: Job, conn_id: str, poll_interval: float) -> Any:
    """
    ``DatabricksExecutionTrigger``, as ``DatabricksRunNowOperator(deferrable=True)`` defers with it.

    :param job: the run.
    :param conn_id: the ``databricks`` connection.
    :param poll_interval: seconds between polls.
    """
    from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger

    return DatabricksExecutionTrigger(
        run_id=job.id,
        databricks_conn_id=conn_id,
        polling_period_seconds=poll_interval,
        retry_limit=3,
        retry_delay=10,
        retry_args=None,
        run_page_url=f"https://example.azuredatabricks.net/#job/1/run/{job.id}",
        repair_run=False,
        caller="DatabricksRunNowOperator",
    )


def _atscale_succeeded(job: Job, payload: dict[str, Any]) -> bool:
    return payload.get("outcome") == "succeeded" and payload.get("batch_id") == job.id


def _dbt_succeeded(job: Job, payload: dict[str, Any]) -> bool:
    return payload.get("status") == "success" and payload.get("run_id") == job.id


def _databricks_succeeded(job: Job, payload: dict[str, Any]) -> bool:
    from airflow.providers.databricks.hooks.databricks import RunState

    try:
        state = RunState.from_json(payload["run_state"])
    except (KeyError, TypeError, ValueError):
        return False
    return state.is_successful and payload.get("run_id") == job.id and payload.get("errors") == []


def _atscale_connection(server: FakeServerInfo, tls: bool) -> dict[str, Any]:
    connection: dict[str, Any] = {"conn_type": "atscale", "host": server.url, "password": server.token}
    if tls:
        connection.update(host=server.tls_url, extra=json.dumps({"verify": server.ca_file}))
    return connection


def _dbt_connection(server: FakeServerInfo, tls: bool) -> dict[str, Any]:
    # The hook builds https://{host}/api/v2/accounts/...: the host ("Tenant") takes the port too, and the
    # process trusts the fake server's CA through SSL_CERT_FILE (see Family.connection_environment).
    host = f"127.0.0.1:{server.tls_port}"
    return {"conn_type": "dbt_cloud", "host": host, "login": str(DBT_ACCOUNT_ID), "password": server.token}


def _databricks_connection(server: FakeServerInfo, tls: bool) -> dict[str, Any]:
    # The hook builds {schema or "https"}://{host}{:port}/api/...: the schema field picks plain HTTP.
    return {
        "conn_type": "databricks",
        "host": "127.0.0.1",
        "port": server.tls_port if tls else server.port,
        "schema": "https" if tls else "http",
        "password": server.token,
    }


@dataclass(frozen=True)
class Family:
    """
    One provider's trigger, as the comparison runs it.

    :param key: its short name (``ours``, ``dbt``, ``databricks``).
    :param title: its name in the table.
    :param distribution: the package it comes from, for its version.
    :param api: the fake server API it polls.
    :param modules: its trigger and hook modules: what the triggerer imports to run it.
    :param hook_class: ``module:Class`` of the hook whose ``poll_method`` answers one poll.
    :param poll_method: that method.
    :param make_trigger: builds one trigger for a job.
    :param succeeded: whether an event payload is the right success event for a job.
    :param connection: the connection (Airflow's JSON form) pointing at the fake server.
    :param always_tls: whether its hook speaks only HTTPS.
    """

    key: str
    title: str
    distribution: str
    api: str
    modules: tuple[str, ...]
    hook_class: str
    poll_method: str
    make_trigger: Callable[[Job, str, float], Any]
    succeeded: Callable[[Job, dict[str, Any]], bool]
    connection: Callable[[FakeServerInfo, bool], dict[str, Any]]
    always_tls: bool = False

    @property
    def conn_id(self) -> str:
        """Its Airflow connection id."""
        return f"{self.key}_bench"

    def connection_environment(self, server: FakeServerInfo, tls: bool) -> dict[str, str]:
        """
        The environment that gives a fresh process this family's connection.

        ``SSL_CERT_FILE`` makes OpenSSL's default trust store the fake server's CA: the standard way to
        trust a private CA, read by the default TLS context of aiohttp (dbt Cloud, Databricks).

        :param server: the fake server.
        :param tls: whether to speak HTTPS even where plain HTTP is possible.
        """
        return {
            f"AIRFLOW_CONN_{self.conn_id.upper()}": json.dumps(self.connection(server, tls)),
            "SSL_CERT_FILE": server.ca_file,
        }

    def uses_tls(self, tls: bool) -> bool:
        """
        Whether this family's requests go over TLS in a run.

        :param tls: whether the run asked every family for HTTPS.
        """
        return tls or self.always_tls


OURS = Family(
    key="ours",
    title="ours",
    distribution="airflow-provider-atscale",
    api=ATSCALE,
    modules=("airflow_provider_atscale.triggers.atscale", "airflow_provider_atscale.hooks.atscale"),
    hook_class="airflow_provider_atscale.hooks.atscale:AtScaleHook",
    poll_method="aread_batch",
    make_trigger=make_atscale_trigger,
    succeeded=_atscale_succeeded,
    connection=_atscale_connection,
)
DBT_CLOUD = Family(
    key="dbt",
    title="dbt Cloud",
    distribution="apache-airflow-providers-dbt-cloud",
    api=DBT,
    modules=("airflow.providers.dbt.cloud.triggers.dbt", "airflow.providers.dbt.cloud.hooks.dbt"),
    hook_class="airflow.providers.dbt.cloud.hooks.dbt:DbtCloudHook",
    poll_method="get_job_status",
    make_trigger=make_dbt_trigger,
    succeeded=_dbt_succeeded,
    connection=_dbt_connection,
    always_tls=True,
)
DATABRICKS_JOBS = Family(
    key="databricks",
    title="Databricks",
    distribution="apache-airflow-providers-databricks",
    api=DATABRICKS,
    modules=(
        "airflow.providers.databricks.triggers.databricks",
        "airflow.providers.databricks.hooks.databricks",
    ),
    hook_class="airflow.providers.databricks.hooks.databricks:DatabricksHook",
    poll_method="a_get_run_state",
    make_trigger=make_databricks_trigger,
    succeeded=_databricks_succeeded,
    connection=_databricks_connection,
)
FAMILIES: dict[str, Family] = {family.key: family for family in (OURS, DBT_CLOUD, DATABRICKS_JOBS)}
PEERS = (DBT_CLOUD, DATABRICKS_JOBS)
