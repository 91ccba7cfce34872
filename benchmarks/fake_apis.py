"""
One ASGI application answering the three job-status APIs the trigger comparison polls, as their servers do.

- dbt Cloud: ``GET /api/v2/accounts/{account}/runs/{run}/``, the run object in its envelope (about 1.5 KB).
- Databricks: ``GET /api/2.1/jobs/runs/get`` (and ``/api/2.2/...``), the run id in the query string or, as
  the Databricks hook sends it, in a JSON body of the GET (about 1.2 KB).
- AtScale: ``GET /wapi/p/aggregate/batch-history?catalogId&modelId&page&limit``, newest first, ``limit`` and
  ``page`` honoured, each entry the batch object of ``atscale-api.md`` section 3a, for a JWT only (401 for
  the API token itself, as AtScale's private API is expected to answer); ``POST /v1/token`` (the API token
  exchanged for a JWT with an ``exp`` claim); ``GET /v1/aggregates/instances`` (and ``/v1/public/...``),
  ``{"data": [...]}``, for the API token or a JWT.

Jobs are created through the control path ``POST /_fake/jobs``: each ends (successfully) at a time drawn
for it, and every status a client reads follows from the clock. The application counts, per API, the
requests, the bytes of each response (status line, headers and body: what crossed the socket before any
TLS), the distinct client ports, and the connections accepted on each listener; ``GET /_fake/stats`` reads
the counts and ``POST /_fake/reset`` clears them together with every job.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate
from typing import Any

DBT, DATABRICKS, ATSCALE = "dbt", "databricks", "atscale"
APIS = (DBT, DATABRICKS, ATSCALE)
CONTROL_PREFIX = "/_fake/"
QUEUE_SECONDS = 1.0
"""Seconds each job stays queued once made (dbt ``Queued``, Databricks ``PENDING``, AtScale ``new``)."""
HISTORY_ENTRIES = 60
"""Finished batches each AtScale model already has in its history, older than the batch a trigger waits on."""
AGGREGATES_PER_BATCH = 4
TOKEN_LIFETIME_SECONDS = 3600
DBT_ACCOUNT_ID = 70403103936
DBT_PROJECT_ID = 70403103931
DBT_ENVIRONMENT_ID = 70403103939
DBT_JOB_ID = 70403103950
DBT_FIRST_RUN_ID = 70403110000000
DATABRICKS_JOB_ID = 734019875520611
DATABRICKS_FIRST_RUN_ID = 455644833000
DATABRICKS_HOST = "adb-2093848276451234.14.azuredatabricks.net"
ATSCALE_CATALOG_ID = "3f0c1b6e-5a4d-4b8e-9c1a-7d2e6f8a9b01"
_NEVER = "0001-01-01T00:00:00Z"

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class Job:
    """
    One job, run or batch, and when it ends.

    :param api: the API it belongs to.
    :param id: its id in that API (an int for dbt and Databricks, a UUID for AtScale).
    :param created: when it was made, in seconds since the epoch.
    :param ends: when it ends, successfully.
    :param model_id: the AtScale model it builds.
    :param number: its position among the jobs made together.
    """

    api: str
    id: int | str
    created: float
    ends: float
    model_id: str | None = None
    number: int = 0

    @property
    def started(self) -> float:
        """When it leaves the queue."""
        return min(self.created + QUEUE_SECONDS, self.ends)

    def phase(self, now: float) -> str:
        """``queued``, ``running`` or ``succeeded`` at ``now``."""
        if now >= self.ends:
            return "succeeded"
        return "running" if now >= self.started else "queued"


@dataclass
class ApiCounts:
    """
    What one API served since the last reset.

    :param requests: requests answered.
    :param wire_bytes: bytes of the answers: status line, headers and body.
    :param body_bytes: bytes of the answers' bodies.
    :param ports: the distinct client ports the requests came from.
    :param statuses: answers by HTTP status.
    :param routes: answers by route.
    :param polled: the distinct jobs asked about.
    """

    requests: int = 0
    wire_bytes: int = 0
    body_bytes: int = 0
    ports: set[int] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    polled: set[int | str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        """The counts as JSON."""
        return {
            "requests": self.requests,
            "wire_bytes": self.wire_bytes,
            "body_bytes": self.body_bytes,
            "ports": len(self.ports),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "routes": dict(self.routes),
            "polled_jobs": len(self.polled),
        }


class FakeApis:
    """
    The ASGI application: the three APIs, their jobs, and the counts.

    :param token: the one API token every API accepts.
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.jobs: dict[str, dict[int | str, Job]] = {api: {} for api in APIS}
        self.counts: dict[str, ApiCounts] = {api: ApiCounts() for api in APIS}
        self.connections: Counter[str] = Counter()
        self._histories: dict[str, list[bytes]] = {}
        self._model_batches: dict[str, list[Job]] = {}
        self._jwt_key = secrets.token_bytes(32)
        self._issued: dict[str, float] = {}
        self._next_id = {DBT: DBT_FIRST_RUN_ID, DATABRICKS: DATABRICKS_FIRST_RUN_ID}
        self._date = (0, b"")

    # Counting

    def connection_made(self, listener: str) -> None:
        """
        Count a connection accepted on a listener (called by the server's protocol).

        :param listener: the listener's name.
        """
        self.connections[listener] += 1

    def reset(self) -> None:
        """Forget every job and every count (tokens issued stay valid, as a real server's do)."""
        for api in APIS:
            self.jobs[api].clear()
            self.counts[api] = ApiCounts()
        self.connections.clear()
        self._histories.clear()
        self._model_batches.clear()

    def stats(self) -> dict[str, Any]:
        """The counts since the last reset."""
        return {
            "apis": {api: counts.to_json() for api, counts in self.counts.items()},
            "connections": dict(self.connections),
        }

    # Jobs

    def create_jobs(self, api: str, count: int, seconds: tuple[float, float], seed: int) -> dict[str, Any]:
        """
        Make ``count`` jobs of one API, each ending at a time drawn from ``seconds`` after now.

        The same seed draws the same durations for every API, so the families of one round wait alike.

        :param api: ``dbt``, ``databricks`` or ``atscale``.
        :param count: how many.
        :param seconds: the range the durations are drawn from.
        :param seed: seed of the draw.
        """
        if api not in APIS:
            raise ValueError(f"unknown API {api!r}")
        draw = random.Random(seed)
        ids = random.Random(seed ^ 0x5EED)
        now = time.time()
        made = []
        for number in range(count):
            ends = now + draw.uniform(*seconds)
            if api == ATSCALE:
                model_id = str(uuid.UUID(int=ids.getrandbits(128), version=4))
                job = Job(
                    api, str(uuid.UUID(int=ids.getrandbits(128), version=4)), now, ends, model_id, number
                )
                self._add_batch(job, ids)
            else:
                job = Job(api, self._next_id[api], now, ends, None, number)
                self._next_id[api] += 1
            self.jobs[api][job.id] = job
            made.append({"id": job.id, "model_id": job.model_id, "ends": job.ends})
        return {
            "jobs": made,
            "created": now,
            "catalog_id": ATSCALE_CATALOG_ID,
            "account_id": DBT_ACCOUNT_ID,
        }

    def _add_batch(self, job: Job, ids: random.Random) -> None:
        assert job.model_id is not None
        if job.model_id not in self._histories:
            self._histories[job.model_id] = [
                _dumps(_older_batch(job.model_id, age, ids)) for age in range(1, HISTORY_ENTRIES + 1)
            ]
        self._model_batches.setdefault(job.model_id, []).insert(0, job)

    # The application

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith(CONTROL_PREFIX):
            await self._control(scope, receive, send)
            return
        api, route, handler = _route(scope["method"], path)
        body = await _read_body(receive) if scope["method"] in ("GET", "POST") else b""
        status: int
        payload: Any
        if handler is None:
            status, payload = 404, {"message": f"No endpoint {scope['method']} {path}"}
        else:
            status, payload = handler(self, scope, body)
        raw = payload if isinstance(payload, bytes) else _dumps(payload)
        wire = await self._respond(send, status, raw)
        counts = self.counts[api] if api is not None else None
        if counts is not None:
            counts.requests += 1
            counts.wire_bytes += wire
            counts.body_bytes += len(raw)
            counts.ports.add((scope.get("client") or ("", 0))[1])
            counts.statuses[status] += 1
            counts.routes[route] += 1

    async def _respond(self, send: Send, status: int, body: bytes) -> int:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"date", self._http_date()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        status_line = len(f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n")
        return status_line + sum(len(name) + len(value) + 4 for name, value in headers) + 2 + len(body)

    def _http_date(self) -> bytes:
        second = int(time.time())
        if self._date[0] != second:
            self._date = (second, formatdate(second, usegmt=True).encode())
        return self._date[1]

    async def _control(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        action = scope["path"][len(CONTROL_PREFIX) :]
        status: int = 200
        payload: Any
        try:
            if action == "jobs" and scope["method"] == "POST":
                request = json.loads(body)
                payload = self.create_jobs(
                    request["api"],
                    int(request["count"]),
                    (float(request["min_seconds"]), float(request["max_seconds"])),
                    int(request["seed"]),
                )
            elif action == "stats":
                payload = self.stats()
            elif action == "reset" and scope["method"] == "POST":
                self.reset()
                payload = {"reset": True}
            elif action == "health":
                payload = {"status": "ok"}
            else:
                status, payload = 404, {"message": f"No control endpoint {scope['method']} {scope['path']}"}
        except (KeyError, TypeError, ValueError) as error:
            status, payload = 400, {"message": f"{type(error).__name__}: {error}"}
        await self._respond(send, status, _dumps(payload))

    # Authentication

    def _bearer(self, scope: dict[str, Any], scheme: bytes = b"bearer") -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                given, _, token = value.partition(b" ")
                return token.strip().decode("latin-1") if given.lower() == scheme else None
        return None

    def _issue_jwt(self) -> str:
        now = int(time.time())
        header = _b64(b'{"alg":"HS256","typ":"JWT"}')
        claims = _b64(
            _dumps({"sub": "bench", "iat": now, "exp": now + TOKEN_LIFETIME_SECONDS, "n": len(self._issued)})
        )
        signature = _b64(hmac.new(self._jwt_key, f"{header}.{claims}".encode(), hashlib.sha256).digest())
        token = f"{header}.{claims}.{signature}"
        self._issued[token] = now + TOKEN_LIFETIME_SECONDS
        return token

    def _is_jwt(self, token: str | None) -> bool:
        return token is not None and self._issued.get(token, 0.0) > time.time()

    # dbt Cloud

    def dbt_run(self, scope: dict[str, Any], body: bytes) -> tuple[int, Any]:
        """``GET /api/v2/accounts/{account}/runs/{run}/``."""
        if self._bearer(scope, b"token") != self.token:
            return 401, {"status": {"code": 401, "is_success": False, "user_message": "Invalid token."}}
        parts = scope["path"].strip("/").split("/")
        job = self._job(DBT, parts[5] if len(parts) > 5 else "")
        if job is None or parts[3] != str(DBT_ACCOUNT_ID):
            return 404, {"status": {"code": 404, "is_success": False, "user_message": "Run not found."}}
        return 200, _dbt_run(job, time.time())

    # Databricks

    def databricks_run(self, scope: dict[str, Any], body: bytes) -> tuple[int, Any]:
        """``GET /api/2.x/jobs/runs/get``: the run id from the query string or from a JSON body."""
        if self._bearer(scope) != self.token:
            return 401, {"error_code": "UNAUTHENTICATED", "message": "Invalid access token."}
        query = urllib.parse.parse_qs(scope["query_string"].decode("latin-1"))
        run_id: Any = query.get("run_id", [None])[0]
        if run_id is None and body.strip():
            run_id = json.loads(body).get("run_id")
        job = self._job(DATABRICKS, str(run_id))
        if job is None:
            return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": f"Run {run_id} does not exist."}
        return 200, _databricks_run(job, time.time())

    # AtScale

    def atscale_token(self, scope: dict[str, Any], body: bytes) -> tuple[int, Any]:
        """``POST /v1/token``: the API token for a JWT."""
        if self._bearer(scope) != self.token:
            return 401, {"statusCode": 401, "message": "Unauthorized"}
        return 200, {"accessToken": self._issue_jwt()}

    def atscale_history(self, scope: dict[str, Any], body: bytes) -> tuple[int, Any]:
        """
        ``GET /wapi/p/aggregate/batch-history``: one page of a model's batches, newest first.

        A private API: it wants the JWT of ``POST /v1/token`` and refuses the API token itself.
        """
        if not self._is_jwt(self._bearer(scope)):
            return 401, {"statusCode": 401, "message": "Unauthorized"}
        query = dict(urllib.parse.parse_qsl(scope["query_string"].decode("latin-1")))
        model_id = query.get("modelId", "")
        try:
            page, limit = int(query.get("page", "1")), int(query.get("limit", "20"))
        except ValueError:
            page = limit = 0
        if page < 1 or not 1 <= limit <= 1000:
            return 400, {"statusCode": 400, "message": "page and limit must be positive integers"}
        now = time.time()
        live = [_dumps(_live_batch(job, now)) for job in self._model_batches.get(model_id, [])]
        for job in self._model_batches.get(model_id, []):
            self.counts[ATSCALE].polled.add(job.id)
        entries = live + self._histories.get(model_id, [])
        offset = (page - 1) * limit
        return 200, (
            b'{"data":['
            + b",".join(entries[offset : offset + limit])
            + f'],"total":{len(entries)},"limit":{limit},"offset":{offset}}}'.encode()
        )

    def atscale_instances(self, scope: dict[str, Any], body: bytes) -> tuple[int, Any]:
        """``GET /v1/aggregates/instances``: a batch's aggregate instances, ``{"data": [...]}``."""
        token = self._bearer(scope)
        if token != self.token and not self._is_jwt(token):
            return 401, {"statusCode": 401, "message": "Unauthorized"}
        query = dict(urllib.parse.parse_qsl(scope["query_string"].decode("latin-1")))
        job = self._job(ATSCALE, query.get("batchId", ""))
        if job is None:
            return 200, {"data": []}
        return 200, {"data": [_instance(job, index, time.time()) for index in range(AGGREGATES_PER_BATCH)]}

    def _job(self, api: str, key: str) -> Job | None:
        jobs = self.jobs[api]
        job = jobs.get(int(key)) if key.isdigit() else jobs.get(key)
        if job is not None:
            self.counts[api].polled.add(job.id)
        return job


Handler = Callable[[FakeApis, dict[str, Any], bytes], tuple[int, Any]]

_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}


def _route(method: str, path: str) -> tuple[str | None, str, Handler | None]:
    """The API, route name and handler of a request (``None`` for a path no API serves)."""
    if method == "GET" and path.startswith("/api/v2/accounts/") and "/runs/" in path:
        return DBT, "GET runs/{run}", FakeApis.dbt_run
    if method == "GET" and path in ("/api/2.1/jobs/runs/get", "/api/2.2/jobs/runs/get"):
        return DATABRICKS, f"GET {path}", FakeApis.databricks_run
    if method == "GET" and path == "/wapi/p/aggregate/batch-history":
        return ATSCALE, "GET batch-history", FakeApis.atscale_history
    if method == "POST" and path == "/v1/token":
        return ATSCALE, "POST token", FakeApis.atscale_token
    if method == "GET" and path in ("/v1/aggregates/instances", "/v1/public/aggregates/instances"):
        return ATSCALE, f"GET {path}", FakeApis.atscale_instances
    return None, f"{method} {path}", None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# dbt Cloud's run object (API v2), with the fields its API returns for a run without include_related.

_DBT_STATUS = {"queued": (1, "Queued"), "running": (3, "Running"), "succeeded": (10, "Success")}


def _dbt_time(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(sep=" ")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _ago(now: float, moment: float | None) -> str:
    return f"{int(now - moment)} seconds ago" if moment is not None else "0 minutes from now"


def _dbt_run(job: Job, now: float) -> dict[str, Any]:
    phase = job.phase(now)
    code, humanized = _DBT_STATUS[phase]
    started = job.started if phase != "queued" else None
    finished = job.ends if phase == "succeeded" else None
    last = finished or now
    run_id = int(job.id)
    return {
        "status": {"code": 200, "is_success": True, "user_message": "Success!", "developer_message": ""},
        "data": {
            "id": run_id,
            "trigger_id": run_id - 1_000_000,
            "account_id": DBT_ACCOUNT_ID,
            "environment_id": DBT_ENVIRONMENT_ID,
            "project_id": DBT_PROJECT_ID,
            "job_definition_id": DBT_JOB_ID,
            "status": code,
            "dbt_version": "versionless",
            "git_branch": "main",
            "git_sha": hashlib.sha1(str(run_id).encode()).hexdigest(),
            "status_message": None,
            "deferring_run_id": None,
            "artifacts_saved": phase == "succeeded",
            "artifact_s3_path": f"prod-us-c1/runs/{run_id}/artifacts/target",
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
            "queued_duration": _duration((started or last) - job.created),
            "run_duration": _duration(last - started if started else 0),
            "duration_humanized": f"{int(last - job.created)} seconds",
            "queued_duration_humanized": f"{int((started or last) - job.created)} seconds",
            "run_duration_humanized": f"{int(last - started) if started else 0} seconds",
            "created_at_humanized": f"{int(now - job.created)} seconds ago",
            "finished_at_humanized": _ago(now, finished),
            "retrying_run_id": None,
            "can_retry": False,
            "retry_not_supported_reason": "RETRY_NOT_FAILED_RUN",
            "job_id": DBT_JOB_ID,
            "is_running": phase == "running",
            "href": f"https://cloud.getdbt.com/deploy/{DBT_ACCOUNT_ID}/projects/{DBT_PROJECT_ID}/runs/{run_id}/",
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
    status: dict[str, Any] = {"state": _DATABRICKS_STATUS[phase]}
    run_id = int(job.id)
    start_ms = int(job.created * 1000)
    end_ms = int(job.ends * 1000) if phase == "succeeded" else 0
    run_ms = (end_ms or int(now * 1000)) - start_ms
    page = f"https://{DATABRICKS_HOST}/?o=2093848276451234#job/{DATABRICKS_JOB_ID}/run/{run_id}"
    return {
        "job_id": DATABRICKS_JOB_ID,
        "run_id": run_id,
        "creator_user_name": "airflow-service@example.com",
        "number_in_job": run_id,
        "original_attempt_run_id": run_id,
        "state": state,
        "status": status,
        "tasks": [
            {
                "run_id": run_id + 1,
                "task_key": "transform_orders",
                "notebook_task": {"notebook_path": "/Repos/etl/transform_orders", "source": "WORKSPACE"},
                "existing_cluster_id": "0923-164208-meows279",
                "state": state,
                "start_time": start_ms,
                "setup_duration": 0,
                "execution_duration": run_ms if end_ms else 0,
                "cleanup_duration": 0,
                "end_time": end_ms,
                "attempt_number": 0,
            }
        ],
        "cluster_instance": {"cluster_id": "0923-164208-meows279", "spark_context_id": "6072566940133547891"},
        "start_time": start_ms,
        "setup_duration": 0,
        "execution_duration": run_ms if end_ms else 0,
        "cleanup_duration": 0,
        "end_time": end_ms,
        "run_duration": run_ms,
        "trigger": "ONE_TIME",
        "run_name": "airflow_nightly_transform_orders",
        "run_page_url": page,
        "run_type": "JOB_RUN",
        "attempt_number": 0,
        "format": "MULTI_TASK",
    }


# AtScale's batch history entries (atscale-api.md, section 3a) and aggregate instances (section 3b).

_ATSCALE_STATUS = {"queued": "new", "running": "inprogress", "succeeded": "done"}


def _iso(moment: float) -> str:
    stamp = datetime.fromtimestamp(moment, timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _build_time(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def _live_batch(job: Job, now: float) -> dict[str, Any]:
    phase = job.phase(now)
    return {
        "id": job.id,
        "catalogId": ATSCALE_CATALOG_ID,
        "modelId": job.model_id,
        "createDate": _iso(job.created),
        "status": _ATSCALE_STATUS[phase],
        "estimateTime": int((job.ends - job.started) * 1000),
        "isFullBuild": True,
        "batchType": "aggregate_batch",
        "startTime": _iso(job.started) if phase != "queued" else _NEVER,
        "endTime": _iso(job.ends) if phase == "succeeded" else None,
        "sumOfInstanceBuildTimes": _build_time(job.ends - job.started) if phase == "succeeded" else None,
    }


def _older_batch(model_id: str, age_days: int, ids: random.Random) -> dict[str, Any]:
    created = time.time() - age_days * 86400.0
    seconds = 20.0 + ids.random() * 40.0
    return {
        "id": str(uuid.UUID(int=ids.getrandbits(128), version=4)),
        "catalogId": ATSCALE_CATALOG_ID,
        "modelId": model_id,
        "createDate": _iso(created),
        "status": "done",
        "estimateTime": int(seconds * 1000),
        "isFullBuild": age_days % 7 == 0,
        "batchType": "aggregate_batch",
        "startTime": _iso(created + QUEUE_SECONDS),
        "endTime": _iso(created + QUEUE_SECONDS + seconds),
        "sumOfInstanceBuildTimes": _build_time(seconds * 0.93),
    }


def _instance(job: Job, index: int, now: float) -> dict[str, Any]:
    span = (job.ends - job.started) / AGGREGATES_PER_BATCH
    start, end = job.started + index * span, job.started + (index + 1) * span
    status = "active" if now >= end else ("inprogress" if now >= start else "pending")
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{job.id}/{index}")),
        "status": status,
        "message": None,
        "tableName": f"as_agg_internet_sales_{index}",
        "tableSchema": "atscale_aggregates",
        "batchId": job.id,
        "stats": {
            "materializationStartTime": _iso(start) if now >= start else None,
            "materializationEndTime": _iso(end) if now >= end else None,
            "buildDuration": int(span * 1000) if now >= end else None,
            "numberOfRows": 18_484 * (index + 1) if now >= end else None,
        },
        "catalogId": ATSCALE_CATALOG_ID,
        "modelId": job.model_id,
        "definitionId": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{job.model_id}/{index}")),
        "connectionId": "snowflake-prod",
    }
