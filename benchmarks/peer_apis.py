"""
The job-status APIs of the two peer providers, as their servers answer, for the trigger comparison.

- dbt Cloud: ``GET /api/v2/accounts/{account}/runs/{run}/``, the run object in its envelope (about 1.5 KB).
- Databricks: ``GET /api/2.1/jobs/runs/get`` (and ``/api/2.2/...``), the run id in the query string or, as
  the Databricks hook sends it, in a JSON body of the GET (about 1.2 KB).

The project has no other fake of these two APIs; AtScale's is the package's emulator. Jobs are made by
:meth:`PeerApis.create_jobs`, each ending (successfully) at the time given for it; every status a client
reads follows from the clock.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import formatdate
from typing import Any

DBT, DATABRICKS = "dbt", "databricks"
QUEUE_SECONDS = 1.0
"""Seconds each job stays queued once made (dbt ``Queued``, Databricks ``PENDING``)."""
DBT_ACCOUNT_ID = 70403103936
DBT_PROJECT_ID = 70403103931
DBT_ENVIRONMENT_ID = 70403103939
DBT_JOB_ID = 70403103950
DATABRICKS_JOB_ID = 734019875520611
DATABRICKS_HOST = "adb-2093848276451234.14.azuredatabricks.net"
FIRST_RUN_ID = {DBT: 70403110000000, DATABRICKS: 455644833000}


@dataclass(frozen=True)
class Job:
    """
    One run and when it ends.

    :param id: its run id.
    :param created: when it was made, in seconds since the epoch.
    :param ends: when it ends, successfully.
    """

    id: int
    created: float
    ends: float

    @property
    def started(self) -> float:
        """When it leaves the queue."""
        return min(self.created + QUEUE_SECONDS, self.ends)

    def phase(self, now: float) -> str:
        """``queued``, ``running`` or ``succeeded`` at ``now``."""
        if now >= self.ends:
            return "succeeded"
        return "running" if now >= self.started else "queued"


class PeerApis:
    """
    The ASGI application of both peer APIs.

    :param token: the API token both accept.
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.jobs: dict[str, dict[int, Job]] = {DBT: {}, DATABRICKS: {}}
        self._next_id = dict(FIRST_RUN_ID)

    def create_jobs(self, api: str, seconds: Sequence[float]) -> list[dict[str, Any]]:
        """
        Replace the jobs of one API by one per duration, made now; return their ids, creation and end times.

        :param api: ``dbt`` or ``databricks``.
        :param seconds: each job's duration.
        """
        now = time.time()
        self.jobs[api] = {}
        for duration in seconds:
            job = Job(self._next_id[api], now, now + duration)
            self._next_id[api] += 1
            self.jobs[api][job.id] = job
        return [{"id": job.id, "created": job.created, "ends": job.ends} for job in self.jobs[api].values()]

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        body = await read_body(receive)
        path, now = scope["path"], time.time()
        auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        status: int
        if path.startswith("/api/v2/accounts/") and "/runs/" in path:
            parts = path.strip("/").split("/")
            job = self._job(DBT, parts[5] if len(parts) > 5 else "")
            if auth != f"Token {self.token}":
                status, payload = 401, {"status": {"code": 401, "is_success": False}}
            elif job is None or parts[3] != str(DBT_ACCOUNT_ID):
                status, payload = 404, {"status": {"code": 404, "is_success": False}}
            else:
                status, payload = 200, _dbt_run(job, now)
        elif path in ("/api/2.1/jobs/runs/get", "/api/2.2/jobs/runs/get"):
            query = urllib.parse.parse_qs(scope["query_string"].decode("latin-1"))
            run_id = query.get("run_id", [None])[0] or (
                json.loads(body).get("run_id") if body.strip() else None
            )
            job = self._job(DATABRICKS, str(run_id))
            if auth != f"Bearer {self.token}":
                status, payload = 401, {"error_code": "UNAUTHENTICATED"}
            elif job is None:
                status, payload = 400, {"error_code": "INVALID_PARAMETER_VALUE"}
            else:
                status, payload = 200, _databricks_run(job, now)
        else:
            status, payload = 404, {"message": f"No endpoint {scope['method']} {path}"}
        raw = json.dumps(payload, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"date", formatdate(int(now), usegmt=True).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})

    def _job(self, api: str, key: str) -> Job | None:
        return self.jobs[api].get(int(key)) if key.isdigit() else None


# dbt Cloud's run object (API v2), with the fields its API returns for a run without include_related.

_DBT_STATUS = {"queued": (1, "Queued"), "running": (3, "Running"), "succeeded": (10, "Success")}


def _dbt_time(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, timezone.utc).isoformat(sep=" ")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _dbt_run(job: Job, now: float) -> dict[str, Any]:
    phase = job.phase(now)
    code, humanized = _DBT_STATUS[phase]
    started = job.started if phase != "queued" else None
    finished = job.ends if phase == "succeeded" else None
    last = finished or now
    queued = (started or last) - job.created
    ran = last - started if started else 0
    return {
        "status": {"code": 200, "is_success": True, "user_message": "Success!", "developer_message": ""},
        "data": {
            "id": job.id,
            "trigger_id": job.id - 1_000_000,
            "account_id": DBT_ACCOUNT_ID,
            "environment_id": DBT_ENVIRONMENT_ID,
            "project_id": DBT_PROJECT_ID,
            "job_definition_id": DBT_JOB_ID,
            "status": code,
            "dbt_version": "versionless",
            "git_branch": "main",
            "git_sha": hashlib.sha1(str(job.id).encode()).hexdigest(),
            "status_message": None,
            "deferring_run_id": None,
            "artifacts_saved": phase == "succeeded",
            "artifact_s3_path": f"prod-us-c1/runs/{job.id}/artifacts/target",
            "has_docs_generated": False,
            "has_sources_generated": False,
            "notifications_sent": phase == "succeeded",
            "blocked_by": [],
            "created_at": _dbt_time(job.created),
            "updated_at": _dbt_time(last),
            "dequeued_at": _dbt_time(started),
            "started_at": _dbt_time(started),
            "finished_at": _dbt_time(finished),
            "last_heartbeat_at": _dbt_time(last if started else None),
            "trigger": None,
            "job": None,
            "environment": None,
            "run_steps": [],
            "status_humanized": humanized,
            "in_progress": phase != "succeeded",
            "is_complete": phase == "succeeded",
            "is_success": phase == "succeeded",
            "is_error": False,
            "is_cancelled": False,
            "duration": _duration(last - job.created),
            "queued_duration": _duration(queued),
            "run_duration": _duration(ran),
            "duration_humanized": f"{int(last - job.created)} seconds",
            "queued_duration_humanized": f"{int(queued)} seconds",
            "run_duration_humanized": f"{int(ran)} seconds",
            "created_at_humanized": f"{int(now - job.created)} seconds ago",
            "finished_at_humanized": f"{int(now - finished)} seconds ago"
            if finished
            else "0 minutes from now",
            "retrying_run_id": None,
            "can_retry": False,
            "retry_not_supported_reason": "RETRY_NOT_FAILED_RUN",
            "job_id": DBT_JOB_ID,
            "is_running": phase == "running",
            "href": f"https://cloud.getdbt.com/deploy/{DBT_ACCOUNT_ID}/projects/{DBT_PROJECT_ID}/runs/{job.id}/",
        },
    }


# Databricks' run (Jobs API 2.1/2.2 runs/get) of a one-task job on an existing cluster.

_DATABRICKS_STATE = {
    "queued": {"life_cycle_state": "PENDING", "state_message": "Waiting for cluster"},
    "running": {"life_cycle_state": "RUNNING", "state_message": "In run"},
    "succeeded": {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS", "state_message": ""},
}
_DATABRICKS_STATUS = {"queued": "PENDING", "running": "RUNNING", "succeeded": "TERMINATED"}


def _databricks_run(job: Job, now: float) -> dict[str, Any]:
    phase = job.phase(now)
    state = {**_DATABRICKS_STATE[phase], "user_cancelled_or_timedout": False}
    start_ms = int(job.created * 1000)
    end_ms = int(job.ends * 1000) if phase == "succeeded" else 0
    run_ms = (end_ms or int(now * 1000)) - start_ms
    durations = {"setup_duration": 0, "execution_duration": run_ms if end_ms else 0, "cleanup_duration": 0}
    task = {
        "run_id": job.id + 1,
        "task_key": "transform_orders",
        "notebook_task": {"notebook_path": "/Repos/etl/transform_orders", "source": "WORKSPACE"},
        "existing_cluster_id": "0923-164208-meows279",
        "state": state,
        "start_time": start_ms,
        **durations,
        "end_time": end_ms,
        "attempt_number": 0,
    }
    return {
        "job_id": DATABRICKS_JOB_ID,
        "run_id": job.id,
        "creator_user_name": "airflow-service@example.com",
        "number_in_job": job.id,
        "original_attempt_run_id": job.id,
        "state": state,
        "status": {"state": _DATABRICKS_STATUS[phase]},
        "tasks": [task],
        "cluster_instance": {"cluster_id": "0923-164208-meows279", "spark_context_id": "6072566940133547891"},
        "start_time": start_ms,
        **durations,
        "end_time": end_ms,
        "run_duration": run_ms,
        "trigger": "ONE_TIME",
        "run_name": "airflow_nightly_transform_orders",
        "run_page_url": f"https://{DATABRICKS_HOST}/?o=2093848276451234#job/{DATABRICKS_JOB_ID}/run/{job.id}",
        "run_type": "JOB_RUN",
        "attempt_number": 0,
        "format": "MULTI_TASK",
    }


async def read_body(receive: Callable[[], Awaitable[dict[str, Any]]]) -> bytes:
    """The whole body of an ASGI request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body
