"""Constants and builders shared by the tests."""

from __future__ import annotations

import json

BASE_URL = "https://atscale.test"
TOKEN = "tok-3f9c2b7e-secret-api-token"
CATALOG_ID = "c0ffee00-0000-4000-8000-000000000001"
MODEL_ID = "c0ffee00-0000-4000-8000-000000000002"


def connection_uri(host: str = BASE_URL, password: str | None = TOKEN, **extra: object) -> str:
    """An ``atscale`` connection in Airflow's JSON form, for an ``AIRFLOW_CONN_*`` variable."""
    conn: dict[str, object] = {"conn_type": "atscale", "host": host}
    if password is not None:
        conn["password"] = password
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


def batch_object(**overrides: object) -> dict[str, object]:
    """A batch object as AtScale's trigger answer carries it."""
    batch: dict[str, object] = {
        "id": "5b9f7a1e-1111-4222-8333-944455556666",
        "catalogId": CATALOG_ID,
        "modelId": MODEL_ID,
        "createDate": "2025-02-27T09:53:22.654Z",
        "status": "new",
        "estimateTime": 1053,
        "isFullBuild": False,
        "batchType": "aggregate_batch",
    }
    batch.update(overrides)
    return batch
