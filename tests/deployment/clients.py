"""
HTTP clients of the deployment tests: Airflow's REST API (``/api/v2``) and the emulator's control endpoints.

Plain ``urllib``, so the tests need nothing the project's venv lacks. Every request has a timeout.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

REQUEST_TIMEOUT_SECONDS = 30.0
BUILD_PATH_PREFIX = "/v1/aggregates-batch/"


class HttpError(Exception):
    """An HTTP error answer, with its status and body."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} answered {status}: {body[:500]}")
        self.status = status


def request_json(method: str, url: str, body: Any = None, *, headers: dict[str, str] | None = None) -> Any:
    """
    Send one request and return its JSON answer (``None`` for an empty one).

    :param method: the HTTP method.
    :param url: the full URL.
    :param body: a JSON body, if any.
    :param headers: further headers.
    :raises HttpError: on an HTTP error status.
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        raise HttpError(method, url, error.code, error.read().decode(errors="replace")) from None
    return json.loads(raw) if raw.strip() else None


@dataclass(frozen=True)
class AirflowApi:
    """
    Airflow's public REST API. The simple auth manager lets every caller in as admin
    (``[core] simple_auth_manager_all_admins``), so no token is sent.

    :param url: the api-server's base URL, e.g. ``http://127.0.0.1:8080``.
    """

    url: str

    def get(self, path: str, **params: Any) -> Any:
        """
        GET ``/api/v2<path>``.

        :param path: the path under ``/api/v2``.
        :param params: query parameters.
        """
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return request_json("GET", f"{self.url}/api/v2{path}{query}")

    def health(self) -> dict[str, Any]:
        """The monitor's health report: metadatabase, scheduler, triggerer and dag processor."""
        health: dict[str, Any] = request_json("GET", f"{self.url}/api/v2/monitor/health")
        return health

    def execution_api_health(self, execution_api_url: str) -> dict[str, Any]:
        """
        The execution API's health answer, at the URL task workers use.

        :param execution_api_url: ``[core] execution_api_server_url``.
        """
        health: dict[str, Any] = request_json("GET", f"{execution_api_url.rstrip('/')}/health")
        return health

    def dag_ids(self) -> set[str]:
        """Every DAG the dag processor has parsed."""
        dags = self.get("/dags", limit=1000)["dags"]
        return {dag["dag_id"] for dag in dags}

    def import_errors(self) -> list[dict[str, Any]]:
        """DAG files that failed to import."""
        errors: list[dict[str, Any]] = self.get("/importErrors", limit=1000)["import_errors"]
        return errors

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """
        Pause or unpause a DAG.

        :param dag_id: the DAG.
        :param paused: pause it (True) or let it run (False).
        """
        path = f"/api/v2/dags/{urllib.parse.quote(dag_id)}"
        request_json("PATCH", f"{self.url}{path}", {"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """
        Start a manual run of a DAG now; return its run id.

        :param dag_id: the DAG.
        :param conf: the run's conf.
        """
        path = f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns"
        run = request_json("POST", f"{self.url}{path}", {"logical_date": None, "conf": conf or {}})
        run_id: str = run["dag_run_id"]
        return run_id

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """
        Every run of a DAG, oldest first.

        :param dag_id: the DAG.
        """
        runs: list[dict[str, Any]] = self.get(
            f"/dags/{urllib.parse.quote(dag_id)}/dagRuns", limit=100, order_by="run_after"
        )["dag_runs"]
        return runs

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """
        One DAG run.

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        run: dict[str, Any] = self.get(f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")
        return run

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """
        Every task instance of a DAG run (mapped ones one by one).

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        tis: list[dict[str, Any]] = self.get(
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances", limit=1000
        )["task_instances"]
        return tis

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1) -> Any:
        """
        An XCom value, or ``None`` when there is none.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param key: the XCom key.
        :param map_index: the mapped task's index; -1 for an unmapped task.
        """
        path = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{_q(key)}"
        try:
            return self.get(path, map_index=map_index)["value"]
        except HttpError as error:
            if error.status == 404:
                return None
            raise

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """
        One try's whole log as the UI shows it (the worker's and the triggerer's lines), one event a line.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param try_number: the try.
        :param map_index: the mapped task's index; -1 for an unmapped task.
        """
        path = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/{try_number}"
        answer = self.get(path, map_index=map_index, full_content="true")
        lines = []
        for entry in answer.get("content", []):
            if isinstance(entry, dict):
                lines.append(json.dumps(entry, default=str))
            else:
                lines.append(str(entry))
        return "\n".join(lines)

    def upstream_asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """
        The asset events that triggered a DAG run (none for a run not triggered by assets).

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        events: list[dict[str, Any]] = self.get(
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/upstreamAssetEvents"
        )["asset_events"]
        return events

    def create_connection(self, conn_id: str, conn_type: str, **fields: Any) -> None:
        """
        Create a connection in Airflow's database.

        :param conn_id: the connection id.
        :param conn_type: its type.
        :param fields: its other fields: ``host``, ``password``, ``extra`` (a JSON string), ...
        """
        body = {"connection_id": conn_id, "conn_type": conn_type, **fields}
        request_json("POST", f"{self.url}/api/v2/connections", body)

    def patch_connection(self, conn_id: str, conn_type: str, **fields: Any) -> None:
        """
        Change some fields of a connection in Airflow's database, leaving the others as they are.

        :param conn_id: the connection id.
        :param conn_type: its type, which the API wants in every body (left as it is).
        :param fields: the fields to change, e.g. ``password``.
        """
        body = {"connection_id": conn_id, "conn_type": conn_type, **fields}
        query = urllib.parse.urlencode({"update_mask": list(fields)}, doseq=True)
        request_json("PATCH", f"{self.url}/api/v2/connections/{_q(conn_id)}?{query}", body)

    def delete_connection(self, conn_id: str) -> None:
        """
        Delete a connection from Airflow's database.

        :param conn_id: the connection id.
        """
        request_json("DELETE", f"{self.url}/api/v2/connections/{_q(conn_id)}")

    def jobs(self, job_type: str) -> list[dict[str, Any]]:
        """
        Every job of a type (``TriggererJob``, ``SchedulerJob``, ``DagProcessorJob``).

        :param job_type: the job type.
        """
        jobs: list[dict[str, Any]] = self.get("/jobs", job_type=job_type, limit=100)["jobs"]
        return jobs


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


@dataclass(frozen=True)
class EmulatorControl:
    """
    The emulator's control endpoints (``/_emulator``): its request log, its batches, its faults and its API
    tokens.

    The request log holds every request's headers, API tokens included: it is read here and never written
    to a file.

    :param url: the emulator's base URL.
    """

    url: str

    def health(self) -> dict[str, Any]:
        """The emulator's own health answer."""
        health: dict[str, Any] = request_json("GET", f"{self.url}/_emulator/health")
        return health

    def requests(self) -> list[dict[str, Any]]:
        """Every API request received since the log was last cleared, oldest first."""
        requests: list[dict[str, Any]] = request_json("GET", f"{self.url}/_emulator/requests")
        return requests

    def clear_requests(self) -> None:
        """Forget every recorded request."""
        request_json("DELETE", f"{self.url}/_emulator/requests")

    def batches(self) -> list[dict[str, Any]]:
        """Every batch created since the emulator started, as batch history shows them."""
        batches: list[dict[str, Any]] = request_json("GET", f"{self.url}/_emulator/batches")
        return batches

    def rotate_api_token(self, old: str) -> str:
        """
        Mint a new API token in place of ``old``, as AtScale does when its user creates one: ``old`` and every
        access token exchanged for it are refused from then on. Return the new token.

        :param old: an API token the emulator accepts.
        """
        answer: dict[str, str] = request_json(
            "POST", f"{self.url}/_emulator/api-tokens/rotate", {"token": old}
        )
        return answer["token"]

    def set_faults(self, **faults: Any) -> None:
        """
        Replace the faults: ``FaultConfig`` fields; none at all clears every fault.

        :param faults: the new faults, e.g. ``rate_503=1.0``.
        """
        request_json("PUT", f"{self.url}/_emulator/faults", faults)


def is_build_post(request: dict[str, Any]) -> bool:
    """
    Whether a recorded request is a POST that asks AtScale to start a build.

    :param request: an entry of the emulator's request log.
    """
    return request["method"] == "POST" and str(request["path"]).startswith(BUILD_PATH_PREFIX)


def model_of(request: dict[str, Any]) -> str | None:
    """
    The model a recorded request is about: from a build POST's path, else the ``modelId`` query parameter.

    :param request: an entry of the emulator's request log.
    """
    if is_build_post(request):
        return str(request["path"]).rstrip("/").rsplit("/", 1)[-1]
    model_id = request.get("query", {}).get("modelId")
    return str(model_id) if model_id else None
