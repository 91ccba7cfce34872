"""Constants, builders and fakes shared by the tests."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

BASE_URL = "https://atscale.test"
TOKEN = "tok-3f9c2b7e-secret-api-token"
CATALOG_ID = "c0ffee00-0000-4000-8000-000000000001"
MODEL_ID = "c0ffee00-0000-4000-8000-000000000002"
BATCH_ID = "5b9f7a1e-1111-4222-8333-944455556666"
HISTORY_URL = f"{BASE_URL}/wapi/p/aggregate/batch-history"
TOKEN_URL = f"{BASE_URL}/v1/token"
"""The exchange of the API token for a JWT, which batch history wants."""
INSTANCES_URL = f"{BASE_URL}/v1/aggregates/instances"
TRIGGER_URL = f"{BASE_URL}/v1/aggregates-batch/catalogs/{CATALOG_ID}/models/{MODEL_ID}"
CATALOGS_URL = f"{BASE_URL}/v1/catalogs"
GRANT_URL = f"{BASE_URL}/auth/realms/atscale/protocol/openid-connect/token"
"""The Identity Broker's token endpoint (password and refresh grants) in the default realm."""


def connection_uri(
    host: str = BASE_URL, password: str | None = TOKEN, login: str | None = None, **extra: object
) -> str:
    """An ``atscale`` connection in Airflow's JSON form, for an ``AIRFLOW_CONN_*`` variable."""
    conn: dict[str, object] = {"conn_type": "atscale", "host": host}
    fields = {"login": login, "password": password, "extra": extra or None}
    conn.update((name, value) for name, value in fields.items() if value is not None)
    return json.dumps(conn)


def use_connection(monkeypatch: pytest.MonkeyPatch, *args: str | None, **fields: object) -> None:
    """Make ``atscale_default`` this connection (:func:`connection_uri`'s arguments)."""
    monkeypatch.setenv("AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(*args, **fields))


def batch_object(**overrides: object) -> dict[str, object]:
    """A batch object as AtScale's trigger answer carries it."""
    batch: dict[str, object] = {
        "id": BATCH_ID,
        "catalogId": CATALOG_ID,
        "modelId": MODEL_ID,
        "createDate": "2025-02-27T09:53:22.654Z",
        "status": "new",
        "estimateTime": 1053,
        "isFullBuild": False,
        "batchType": "aggregate_batch",
    }
    return {**batch, **overrides}


def history_page(*batches: dict[str, object], total: int | None = None) -> dict[str, object]:
    """A batch history answer holding the given batches."""
    return {
        "data": list(batches),
        "total": len(batches) if total is None else total,
        "limit": 50,
        "offset": 0,
    }


def instance_object(status: str, table: str, batch_id: str = BATCH_ID) -> dict[str, object]:
    """An aggregate instance as AtScale's instances endpoint lists it."""
    return {
        "id": f"inst-{table}",
        "status": status,
        "message": None,
        "tableName": table,
        "tableSchema": "atscale_aggs",
        "batchId": batch_id,
        "stats": {"buildDuration": 1200, "numberOfRows": 42},
        "catalogId": CATALOG_ID,
        "modelId": MODEL_ID,
    }


def iso(timestamp: float) -> str:
    """A time as AtScale writes dates: ``2025-02-27T09:53:22.000Z``."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def jwt(exp: float, iat: float | None = None) -> str:
    """An unsigned JWT as AtScale issues: expiring at ``exp``, issued at ``iat`` (by AtScale's clock)."""
    claims = {"sub": "svc", "exp": int(exp), **({} if iat is None else {"iat": int(iat)})}

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


class FakeClock:
    """Drives the provider's waiting code: ``time`` is now, and sleeping moves it forward at once."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self.time = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> float:
        self.time += seconds
        return self.now()

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


class DrivenClock(FakeClock):
    """
    One clock for the emulator and the provider in integration tests: ``time`` is how far it runs ahead of
    real time, so batch dates compare sensibly with Airflow's own timestamps.
    """

    def __init__(self) -> None:
        super().__init__(start=0.0)

    def now(self) -> float:
        return time.time() + self.time

    def rewind(self) -> None:
        """Back to real time, forgetting the waits of earlier tests."""
        self.time = 0.0
        self.sleeps.clear()


class RecordingTaskInstance:
    """The slice of a task instance an operator's execute() uses, recording XCom pushes."""

    def __init__(self, try_number: int = 1, start_date: object = None) -> None:
        self.xcom: dict[str, list[object]] = {}
        self.try_number = try_number
        self.start_date = start_date

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom.setdefault(key, []).append(value)


class FakeStateStore:
    """Airflow 3.3's ``task_state_store`` as a task sees it: JSON values by key, kept across tries."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.writes: list[object] = []

    def get(self, key: str, default: object = None) -> object:
        return json.loads(json.dumps(self.values[key])) if key in self.values else default

    def set(self, key: str, value: object) -> None:
        self.values[key] = json.loads(json.dumps(value))
        self.writes.append(self.values[key])
