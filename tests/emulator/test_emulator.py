from __future__ import annotations

import asyncio
import email.utils
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import requests

from airflow_provider_atscale.emulator import (
    DEFAULT_CATALOG_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_MODEL_ID,
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    DEMO_TOKEN,
    FAILING_MODEL_ID,
    SECOND_MODEL_ID,
    EmulatorConfig,
    EmulatorServer,
    EmulatorState,
    FaultConfig,
    FaultInjector,
    ManualClock,
    RequestLog,
    create_app,
    run_emulator,
)

QUEUE_SECONDS = 10.0
BUILD_SECONDS = 30.0
HISTORY_PATH = "/wapi/p/aggregate/batch-history"
INSTANCES_PATH = "/v1/aggregates/instances"
OIDC_PATH = "/auth/realms/atscale/protocol/openid-connect/token"
ISO_MILLIS_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[EmulatorServer]:
    # One server per module, reset before each test: starting and stopping uvicorn costs ~0.2 s.
    config = EmulatorConfig(default_queue_seconds=QUEUE_SECONDS, default_build_seconds=BUILD_SECONDS)
    with run_emulator(config, clock=ManualClock()) as server:
        yield server


@pytest.fixture
def emu(shared_emulator: EmulatorServer) -> EmulatorServer:
    shared_emulator.reset()
    return shared_emulator


@pytest.fixture
def clock(emu: EmulatorServer) -> ManualClock:
    assert isinstance(emu.clock, ManualClock)
    return emu.clock


@pytest.fixture
def session(emu: EmulatorServer) -> Iterator[requests.Session]:
    with requests.Session() as client:
        client.headers["Authorization"] = f"Bearer {emu.token}"
        yield client


def batch_url(
    emu: EmulatorServer, catalog_id: str = DEFAULT_CATALOG_ID, model_id: str = DEFAULT_MODEL_ID
) -> str:
    return f"{emu.url}/v1/aggregates-batch/catalogs/{catalog_id}/models/{model_id}"


def trigger(
    session: requests.Session,
    emu: EmulatorServer,
    model_id: str = DEFAULT_MODEL_ID,
    *,
    full: str = "true",
    body: Any = None,
) -> requests.Response:
    return session.post(
        batch_url(emu, model_id=model_id), params={"isFullBuild": full}, json=body, timeout=10
    )


def history(session: requests.Session, emu: EmulatorServer, **params: Any) -> requests.Response:
    return session.get(f"{emu.url}{HISTORY_PATH}", params=params, timeout=10)


def instances(
    session: requests.Session, emu: EmulatorServer, path: str = INSTANCES_PATH, **params: Any
) -> Any:
    response = session.get(f"{emu.url}{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def assert_error(response: requests.Response | httpx.Response, code: int, *fragments: str) -> None:
    assert response.status_code == code, response.text
    body = response.json()
    assert body == {"success": False, "error": {"code": code, "message": body["error"]["message"]}}
    for fragment in fragments:
        assert fragment in body["error"]["message"]


# Server lifecycle


def test_server_serves_on_a_free_local_port_and_stops() -> None:
    server = EmulatorServer()
    server.start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
        assert server.port != 0
        assert requests.get(f"{server.url}/_emulator/health", timeout=10).json() == {"status": "ok"}
    finally:
        server.stop()
    assert not server.running
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/_emulator/health", timeout=2)


def test_two_emulators_run_side_by_side_on_different_ports() -> None:
    with run_emulator() as first, run_emulator() as second:
        assert first.port != second.port
        for server in (first, second):
            response = requests.get(
                f"{server.url}/v1/catalogs", headers={"Authorization": f"Bearer {DEMO_TOKEN}"}
            )
            assert response.status_code == 200


# Triggering a batch


def test_trigger_creates_a_batch_with_the_documented_shape(
    emu: EmulatorServer, session: requests.Session
) -> None:
    response = trigger(session, emu, body={"gracePeriodOverrides": {}})

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"batch", "success"}
    assert body["success"] is True
    batch = body["batch"]
    assert set(batch) == {
        "id",
        "catalogId",
        "modelId",
        "createDate",
        "status",
        "estimateTime",
        "isFullBuild",
        "batchType",
    }
    assert uuid.UUID(batch["id"]).version == 4
    assert batch["catalogId"] == DEFAULT_CATALOG_ID
    assert batch["modelId"] == DEFAULT_MODEL_ID
    assert ISO_MILLIS_UTC.match(batch["createDate"])
    assert batch["status"] == "new"
    assert batch["estimateTime"] == int(BUILD_SECONDS * 1000)
    assert batch["isFullBuild"] is True
    assert batch["batchType"] == "aggregate_batch"
    assert [created.id for created in emu.batches_created()] == [batch["id"]]


def test_trigger_without_body_is_accepted(emu: EmulatorServer, session: requests.Session) -> None:
    response = session.post(batch_url(emu), params={"isFullBuild": "false"}, timeout=10)

    assert response.status_code == 201
    assert response.json()["batch"]["isFullBuild"] is False


def test_incremental_build_keeps_grace_period_overrides(
    emu: EmulatorServer, session: requests.Session
) -> None:
    response = trigger(session, emu, full="false", body={"gracePeriodOverrides": {"factinternetsales": 30}})

    assert response.status_code == 201
    (created,) = emu.batches_created()
    assert created.is_full_build is False
    assert dict(created.grace_period_overrides) == {"factinternetsales": 30}


@pytest.mark.parametrize(
    ("params", "body", "fragment"),
    [
        ({}, None, "isFullBuild"),
        ({"isFullBuild": "True"}, None, "isFullBuild"),
        ({"isFullBuild": "1"}, None, "isFullBuild"),
        ({"isFullBuild": "false"}, "{not json", "not valid JSON"),
        ({"isFullBuild": "false"}, "[]", "JSON object"),
        ({"isFullBuild": "false"}, '{"gracePeriodOverrides": null}', "must be an object, got null"),
        ({"isFullBuild": "false"}, '{"gracePeriodOverrides": [1]}', "must be an object, got array"),
        ({"isFullBuild": "false"}, '{"gracePeriodOverrides": {"sales": -1}}', "sales"),
        ({"isFullBuild": "false"}, '{"gracePeriodOverrides": {"sales": "30"}}', "non-negative integer"),
        ({"isFullBuild": "false"}, '{"gracePeriodOverrides": {"sales": true}}', "non-negative integer"),
        ({"isFullBuild": "false"}, '{"gracePeriodOverrides": {"sales": 1.5}}', "non-negative integer"),
        ({"isFullBuild": "false"}, '{"gracePeriodOverrides": {" ": 30}}', "dataset names"),
        ({"isFullBuild": "true"}, '{"gracePeriodOverrides": {"sales": 30}}', "incremental builds only"),
    ],
)
def test_invalid_trigger_is_rejected_with_400_and_creates_nothing(
    emu: EmulatorServer, session: requests.Session, params: dict[str, str], body: str | None, fragment: str
) -> None:
    response = session.post(
        batch_url(emu), params=params, data=body, headers={"Content-Type": "application/json"}, timeout=10
    )

    assert_error(response, 400, fragment)
    assert emu.batches_created() == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {DEMO_TOKEN}"},
        {"Authorization": ""},
    ],
)
def test_missing_or_wrong_token_is_rejected_with_401(emu: EmulatorServer, headers: dict[str, str]) -> None:
    response = requests.post(batch_url(emu), params={"isFullBuild": "true"}, headers=headers, timeout=10)

    assert_error(response, 401, "bearer token")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert emu.batches_created() == []


@pytest.mark.parametrize(
    ("catalog_id", "model_id", "fragments"),
    [
        ("no-such-catalog", DEFAULT_MODEL_ID, ("Catalog 'no-such-catalog' not found",)),
        (
            DEFAULT_CATALOG_ID,
            "no-such-model",
            ("Model 'no-such-model' not found", DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID),
        ),
    ],
)
def test_unknown_catalog_or_model_is_404_naming_them(
    emu: EmulatorServer, session: requests.Session, catalog_id: str, model_id: str, fragments: tuple[str, ...]
) -> None:
    response = session.post(batch_url(emu, catalog_id, model_id), params={"isFullBuild": "true"}, timeout=10)

    assert_error(response, 404, *fragments)


def test_unknown_path_answers_404_with_the_same_error_shape(
    emu: EmulatorServer, session: requests.Session
) -> None:
    assert_error(session.get(f"{emu.url}/v1/no-such-thing", timeout=10), 404, "/v1/no-such-thing")


def test_wrong_method_answers_405_with_the_same_error_shape(
    emu: EmulatorServer, session: requests.Session
) -> None:
    assert_error(session.delete(f"{emu.url}/v1/catalogs", timeout=10), 405, "DELETE")


# Batch lifecycle


def test_batch_goes_new_inprogress_done_as_the_clock_advances(
    emu: EmulatorServer, session: requests.Session, clock: ManualClock
) -> None:
    batch_id = trigger(session, emu).json()["batch"]["id"]

    def current() -> dict[str, Any]:
        (entry,) = history(session, emu, modelId=DEFAULT_MODEL_ID).json()["data"]
        assert entry["id"] == batch_id
        return dict(entry)

    assert (current()["status"], current()["startTime"], current()["endTime"]) == ("new", None, None)
    clock.advance(QUEUE_SECONDS)
    started = current()
    assert started["status"] == "inprogress"
    assert ISO_MILLIS_UTC.match(started["startTime"])
    assert started["endTime"] is None
    clock.advance(BUILD_SECONDS - 0.001)
    assert current()["status"] == "inprogress"
    clock.advance(0.001)
    done = current()
    assert done["status"] == "done"
    assert ISO_MILLIS_UTC.match(done["endTime"])
    assert emu.batch_status(batch_id) == "done"


def test_instances_follow_the_batch_from_pending_to_active(
    emu: EmulatorServer, session: requests.Session, clock: ManualClock
) -> None:
    batch_id = trigger(session, emu).json()["batch"]["id"]

    def statuses() -> list[str]:
        return [item["status"] for item in instances(session, emu, batchId=batch_id)["data"]]

    assert statuses() == ["pending", "pending", "pending"]
    clock.advance(QUEUE_SECONDS + 1)
    assert statuses() == ["inprogress", "pending", "pending"]
    clock.advance(BUILD_SECONDS)
    body = instances(session, emu, batchId=batch_id)
    assert [item["status"] for item in body["data"]] == ["active", "active", "active"]
    first = body["data"][0]
    assert set(first) == {
        "id",
        "status",
        "message",
        "tableName",
        "tableSchema",
        "batchId",
        "stats",
        "catalogId",
        "modelId",
        "definitionId",
        "connectionId",
    }
    assert first["tableName"] == "as_agg_internet_sales_by_day"
    assert first["batchId"] == batch_id
    assert first["message"] is None
    assert first["stats"]["buildDuration"] == 10_000
    assert first["stats"]["numberOfRows"] > 0
    assert ISO_MILLIS_UTC.match(first["stats"]["materializationStartTime"])
    assert ISO_MILLIS_UTC.match(first["stats"]["materializationEndTime"])


def test_failing_model_ends_failed_with_per_aggregate_messages(
    emu: EmulatorServer, session: requests.Session, clock: ManualClock
) -> None:
    batch_id = trigger(session, emu, FAILING_MODEL_ID).json()["batch"]["id"]
    clock.advance(QUEUE_SECONDS + BUILD_SECONDS)

    assert history(session, emu, modelId=FAILING_MODEL_ID).json()["data"][0]["status"] == "failed"
    data = instances(session, emu, batchId=batch_id)["data"]
    assert [item["status"] for item in data] == ["active", "invalid", "invalid"]
    assert data[0]["message"] is None
    assert data[1]["message"] == (
        "Table 'as_agg_broken_sales_by_product' could not be created: "
        "permission denied on schema 'atscale_aggs'"
    )
    assert "invalid identifier" in data[2]["message"]
    assert data[1]["stats"]["numberOfRows"] is None


def test_configure_model_changes_new_batches_only(
    emu: EmulatorServer, session: requests.Session, clock: ManualClock
) -> None:
    before = trigger(session, emu).json()["batch"]["id"]
    emu.configure_model(DEFAULT_MODEL_ID, fail=True, queue_seconds=0, build_seconds=1)
    after = trigger(session, emu).json()["batch"]["id"]
    clock.advance(1)

    assert emu.batch_status(after) == "failed"
    assert emu.batch_status(before) == "new"
    assert "could not be built" in instances(session, emu, batchId=after)["data"][0]["message"]


# Batch history


def test_history_is_newest_first_filtered_and_paged(
    emu: EmulatorServer, session: requests.Session, clock: ManualClock
) -> None:
    ids = []
    for model_id in (DEFAULT_MODEL_ID, SECOND_MODEL_ID, DEFAULT_MODEL_ID, DEFAULT_MODEL_ID, SECOND_MODEL_ID):
        ids.append((model_id, trigger(session, emu, model_id).json()["batch"]["id"]))
        clock.advance(1)
    default_ids = [batch_id for model_id, batch_id in reversed(ids) if model_id == DEFAULT_MODEL_ID]

    everything = history(session, emu).json()
    assert [entry["id"] for entry in everything["data"]] == [batch_id for _, batch_id in reversed(ids)]
    assert everything["total"] == 5
    page_1 = history(
        session, emu, catalogId=DEFAULT_CATALOG_ID, modelId=DEFAULT_MODEL_ID, page=1, limit=2
    ).json()
    page_2 = history(
        session, emu, catalogId=DEFAULT_CATALOG_ID, modelId=DEFAULT_MODEL_ID, page=2, limit=2
    ).json()
    assert [entry["id"] for entry in page_1["data"] + page_2["data"]] == default_ids
    assert (page_1["total"], page_1["limit"], page_1["offset"]) == (3, 2, 0)
    assert (page_2["total"], page_2["limit"], page_2["offset"]) == (3, 2, 2)
    assert history(session, emu, catalogId="other").json()["data"] == []


@pytest.mark.parametrize(("name", "value"), [("page", "0"), ("limit", "-1"), ("limit", "abc")])
def test_history_rejects_bad_paging(
    emu: EmulatorServer, session: requests.Session, name: str, value: str
) -> None:
    assert_error(history(session, emu, **{name: value}), 400, name)


def test_disabled_history_answers_404_like_an_unknown_path() -> None:
    with run_emulator(EmulatorConfig(serve_batch_history=False)) as server:
        response = requests.get(
            f"{server.url}{HISTORY_PATH}", headers={"Authorization": f"Bearer {server.token}"}, timeout=10
        )
        assert_error(response, 404, HISTORY_PATH)
        server.set_batch_history_enabled(True)
        response = requests.get(
            f"{server.url}{HISTORY_PATH}", headers={"Authorization": f"Bearer {server.token}"}, timeout=10
        )
        assert response.status_code == 200


# Instances and catalogs


def test_instances_are_served_on_both_documented_paths(
    emu: EmulatorServer, session: requests.Session
) -> None:
    batch_id = trigger(session, emu).json()["batch"]["id"]

    public = instances(session, emu, "/v1/public/aggregates/instances", batchId=batch_id)
    plain = instances(session, emu, INSTANCES_PATH, batchId=batch_id)
    assert public == plain
    assert (plain["total"], plain["size"], plain["page"]) == (3, 20, 1)


def test_instances_filter_by_model_and_page(emu: EmulatorServer, session: requests.Session) -> None:
    trigger(session, emu, DEFAULT_MODEL_ID)
    second = trigger(session, emu, SECOND_MODEL_ID).json()["batch"]["id"]

    body = instances(session, emu, modelId=SECOND_MODEL_ID, page=2, size=2)
    assert (body["total"], body["size"], body["page"]) == (3, 2, 2)
    assert [item["batchId"] for item in body["data"]] == [second]
    assert body["data"][0]["tableName"] == "as_agg_reseller_sales_by_employee"


def test_catalogs_list_models(emu: EmulatorServer, session: requests.Session) -> None:
    response = session.get(f"{emu.url}/v1/catalogs", timeout=10)

    assert response.status_code == 200
    (catalog,) = response.json()
    assert {"id", "name", "caption", "publishedAt", "publishedBy", "models"} <= set(catalog)
    assert catalog["id"] == DEFAULT_CATALOG_ID
    assert [model["id"] for model in catalog["models"]] == [
        DEFAULT_MODEL_ID,
        FAILING_MODEL_ID,
        SECOND_MODEL_ID,
    ]


# Authentication


def test_exchanged_token_is_a_jwt_that_works_until_it_expires(
    emu: EmulatorServer, clock: ManualClock
) -> None:
    response = requests.post(
        f"{emu.url}/v1/token", json={}, headers={"Authorization": f"Bearer {DEMO_TOKEN}"}, timeout=10
    )
    assert response.status_code == 200
    access_token = response.json()["accessToken"]
    claims = jwt.decode(access_token, options={"verify_signature": False})
    assert claims["exp"] == int(clock.now() + 300)
    headers = {"Authorization": f"Bearer {access_token}"}

    assert requests.get(f"{emu.url}/v1/catalogs", headers=headers, timeout=10).status_code == 200
    clock.advance(299)
    assert requests.get(f"{emu.url}/v1/catalogs", headers=headers, timeout=10).status_code == 200
    clock.advance(1)
    assert_error(requests.get(f"{emu.url}/v1/catalogs", headers=headers, timeout=10), 401)


def test_token_lifetime_follows_the_fault_configuration(emu: EmulatorServer, clock: ManualClock) -> None:
    emu.set_faults(FaultConfig(token_ttl_seconds=5))
    access_token = requests.post(
        f"{emu.url}/v1/token", json={}, headers={"Authorization": f"Bearer {DEMO_TOKEN}"}, timeout=10
    ).json()["accessToken"]
    clock.advance(5)

    response = requests.get(f"{emu.url}/v1/catalogs", headers={"Authorization": f"Bearer {access_token}"})
    assert_error(response, 401)


def test_token_exchange_requires_an_api_token(emu: EmulatorServer) -> None:
    access_token = emu.state.issue_access_token("someone", 60)

    response = requests.post(
        f"{emu.url}/v1/token", json={}, headers={"Authorization": f"Bearer {access_token}"}
    )
    assert_error(response, 401, "API token")


def password_grant(emu: EmulatorServer, **overrides: str) -> requests.Response:
    form = {
        "grant_type": "password",
        "client_id": DEFAULT_CLIENT_ID,
        "username": DEFAULT_USERNAME,
        "password": DEFAULT_PASSWORD,
        "scope": "openid",
        **overrides,
    }
    return requests.post(f"{emu.url}{OIDC_PATH}", data=form, timeout=10)


def test_password_grant_and_refresh_issue_working_tokens(emu: EmulatorServer, clock: ManualClock) -> None:
    response = password_grant(emu)
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access_token", "expires_in", "refresh_token", "refresh_expires_in", "token_type"}
    assert (tokens["expires_in"], tokens["refresh_expires_in"], tokens["token_type"]) == (300, 1800, "Bearer")
    assert jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"] == DEFAULT_USERNAME
    clock.advance(600)
    expired = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert requests.get(f"{emu.url}/v1/catalogs", headers=expired, timeout=10).status_code == 401

    refreshed = requests.post(
        f"{emu.url}{OIDC_PATH}",
        data={
            "grant_type": "refresh_token",
            "client_id": DEFAULT_CLIENT_ID,
            "refresh_token": tokens["refresh_token"],
        },
        timeout=10,
    )

    assert refreshed.status_code == 200
    fresh = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    assert requests.get(f"{emu.url}/v1/catalogs", headers=fresh, timeout=10).status_code == 200


def test_refresh_token_is_not_an_access_token(emu: EmulatorServer) -> None:
    refresh_token = password_grant(emu).json()["refresh_token"]

    response = requests.get(f"{emu.url}/v1/catalogs", headers={"Authorization": f"Bearer {refresh_token}"})
    assert response.status_code == 401


def test_expired_refresh_token_is_refused(emu: EmulatorServer, clock: ManualClock) -> None:
    refresh_token = password_grant(emu).json()["refresh_token"]
    clock.advance(1800)

    response = requests.post(
        f"{emu.url}{OIDC_PATH}",
        data={"grant_type": "refresh_token", "client_id": DEFAULT_CLIENT_ID, "refresh_token": refresh_token},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"password": "wrong"}, 401, "invalid_grant"),
        ({"username": "nobody"}, 401, "invalid_grant"),
        ({"client_id": "other-client"}, 401, "invalid_client"),
        ({"client_id": ""}, 400, "invalid_request"),
        ({"grant_type": ""}, 400, "invalid_request"),
        ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
    ],
)
def test_password_grant_refusals_use_oauth_error_bodies(
    emu: EmulatorServer, overrides: dict[str, str], status: int, error: str
) -> None:
    response = password_grant(emu, **overrides)

    assert response.status_code == status
    assert set(response.json()) == {"error", "error_description"}
    assert response.json()["error"] == error


def test_client_secret_is_checked_only_when_configured() -> None:
    with run_emulator(EmulatorConfig(client_secret="s3cret")) as server:
        assert password_grant(server).status_code == 401
        assert password_grant(server, client_secret="wrong").status_code == 401
        assert password_grant(server, client_secret="s3cret").status_code == 200


# Faults


def test_503_fault_answers_before_processing(emu: EmulatorServer, session: requests.Session) -> None:
    emu.set_faults(FaultConfig(rate_503=1.0))

    assert_error(trigger(session, emu), 503)
    assert emu.batches_created() == []
    assert emu.count_requests("POST", fault="503", status=503) == 1


@pytest.mark.parametrize("as_date", [False, True])
def test_429_fault_carries_retry_after(emu: EmulatorServer, session: requests.Session, as_date: bool) -> None:
    emu.set_faults(FaultConfig(rate_429=1.0, retry_after=7, retry_after_http_date=as_date))

    response = trigger(session, emu)

    assert_error(response, 429)
    assert emu.batches_created() == []
    if as_date:
        announced = email.utils.parsedate_to_datetime(response.headers["Retry-After"]).timestamp()
        assert 0 <= announced - time.time() <= 8
    else:
        assert response.headers["Retry-After"] == "7"


def test_500_fault_creates_the_batch_then_fails(emu: EmulatorServer, session: requests.Session) -> None:
    emu.set_faults(FaultConfig(rate_500=1.0))

    assert_error(trigger(session, emu), 500)
    assert len(emu.batches_created()) == 1


def test_drop_before_fault_creates_nothing_and_breaks_the_connection(
    emu: EmulatorServer, session: requests.Session
) -> None:
    emu.set_faults(FaultConfig(rate_drop_before=1.0))

    with pytest.raises(requests.ConnectionError):
        trigger(session, emu)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(
            batch_url(emu), params={"isFullBuild": "true"}, headers={"Authorization": f"Bearer {emu.token}"}
        )
    assert emu.batches_created() == []
    assert emu.count_requests("POST", fault="drop_before") == 2
    assert [entry.status for entry in emu.requests] == [None, None]


def test_drop_after_fault_creates_the_batch_but_the_client_gets_a_connection_error(
    emu: EmulatorServer, session: requests.Session
) -> None:
    emu.set_faults(FaultConfig(rate_drop_after=1.0))

    with pytest.raises(requests.ConnectionError):
        trigger(session, emu)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(
            batch_url(emu), params={"isFullBuild": "true"}, headers={"Authorization": f"Bearer {emu.token}"}
        )
    assert len(emu.batches_created()) == 2


def test_truncating_drop_sends_headers_then_a_short_body(
    emu: EmulatorServer, session: requests.Session
) -> None:
    emu.set_faults(FaultConfig(rate_drop_after=1.0, drop_mode="truncate"))

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        trigger(session, emu)
    with pytest.raises(httpx.RemoteProtocolError, match=r"complete message body"):
        httpx.post(
            batch_url(emu), params={"isFullBuild": "true"}, headers={"Authorization": f"Bearer {emu.token}"}
        )
    assert len(emu.batches_created()) == 2


def test_client_recovers_on_a_new_request_after_a_drop(
    emu: EmulatorServer, session: requests.Session
) -> None:
    emu.set_faults(FaultConfig(rate_drop_before=1.0))
    with pytest.raises(requests.ConnectionError):
        trigger(session, emu)
    emu.set_faults(None)

    assert trigger(session, emu).status_code == 201


def test_latency_delays_answers(emu: EmulatorServer, session: requests.Session) -> None:
    emu.set_faults(FaultConfig(latency_seconds=0.2))
    started = time.monotonic()

    assert session.get(f"{emu.url}/v1/catalogs", timeout=10).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_seeded_faults_repeat_exactly(emu: EmulatorServer, session: requests.Session) -> None:
    config = FaultConfig(seed=42, rate_503=0.3, rate_429=0.2, rate_500=0.2)

    def run() -> list[int]:
        emu.set_faults(config)
        return [session.get(f"{emu.url}/v1/catalogs", timeout=10).status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert {200, 429, 500, 503} <= set(first)


def test_fault_injectors_with_the_same_seed_draw_the_same_faults() -> None:
    config = FaultConfig(seed=3, rate_503=0.25, rate_drop_after=0.25)

    first, second = FaultInjector(config), FaultInjector(config)

    assert [first.draw() for _ in range(50)] == [second.draw() for _ in range(50)]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"rate_503": 1.5}, "rate_503"),
        ({"rate_503": 0.6, "rate_500": 0.6}, "add up"),
        ({"latency_seconds": -1}, "latency_seconds"),
        ({"drop_mode": "explode"}, "drop_mode"),
    ],
)
def test_invalid_fault_configuration_is_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        FaultConfig(**kwargs)


def test_control_endpoints_are_fault_free_and_unrecorded(emu: EmulatorServer) -> None:
    emu.set_faults(FaultConfig(rate_503=1.0))

    assert requests.get(f"{emu.url}/_emulator/health", timeout=10).status_code == 200
    assert emu.requests == []


def test_faults_can_be_changed_over_http(emu: EmulatorServer, session: requests.Session) -> None:
    response = requests.put(
        f"{emu.url}/_emulator/faults", json={"rate_429": 1.0, "retry_after": 3}, timeout=10
    )
    assert response.status_code == 200
    assert session.get(f"{emu.url}/v1/catalogs", timeout=10).headers["Retry-After"] == "3"

    refused = requests.put(f"{emu.url}/_emulator/faults", json={"rate_429": 2}, timeout=10)
    assert_error(refused, 400, "rate_429")


# Request log


def test_request_log_records_requests_and_counts_them(emu: EmulatorServer, session: requests.Session) -> None:
    trigger(session, emu, full="false", body={"gracePeriodOverrides": {"sales": 1}})
    history(session, emu, modelId=DEFAULT_MODEL_ID)
    session.get(f"{emu.url}/v1/catalogs", timeout=10)

    post = emu.requests[0]
    assert (post.method, post.status, post.fault) == ("POST", 201, None)
    assert post.path == f"/v1/aggregates-batch/catalogs/{DEFAULT_CATALOG_ID}/models/{DEFAULT_MODEL_ID}"
    assert post.query == {"isFullBuild": "false"}
    assert post.headers["authorization"] == f"Bearer {DEMO_TOKEN}"
    assert post.body == {"gracePeriodOverrides": {"sales": 1}}
    assert emu.count_requests() == 3
    assert emu.count_requests("post", "/v1/aggregates-batch") == 1
    assert emu.count_requests("GET", status=200) == 2
    emu.clear_requests()
    assert emu.count_requests() == 0


def test_form_bodies_are_logged_as_text(emu: EmulatorServer) -> None:
    password_grant(emu)

    assert "grant_type=password" in emu.requests[0].body


# Concurrency


def test_many_concurrent_pollers_are_served(emu: EmulatorServer) -> None:
    batch_id = emu.state.create_batch(DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, is_full_build=True).id

    async def poll_all() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        headers = {"Authorization": f"Bearer {emu.token}"}
        async with httpx.AsyncClient(base_url=emu.url, headers=headers, limits=limits, timeout=30) as client:
            responses = await asyncio.gather(
                *(client.get(INSTANCES_PATH, params={"batchId": batch_id}) for _ in range(200))
            )
        return [response.status_code for response in responses]

    assert asyncio.run(poll_all()) == [200] * 200


def test_reset_forgets_batches_requests_faults_models_and_tokens(
    emu: EmulatorServer, session: requests.Session
) -> None:
    trigger(session, emu)
    access_token = emu.state.issue_access_token("someone", 60)
    emu.configure_model(DEFAULT_MODEL_ID, fail=True)
    emu.set_batch_history_enabled(False)
    emu.set_faults(FaultConfig(rate_503=1.0))

    emu.reset()

    assert emu.batches_created() == []
    assert emu.requests == []
    assert not emu.state.is_authorized(access_token)
    assert history(session, emu).status_code == 200
    batch_id = trigger(session, emu).json()["batch"]["id"]
    batch = emu.state.get_batch(batch_id)
    assert batch is not None
    assert batch.fail is False


# State without HTTP


def test_state_computes_status_from_the_clock() -> None:
    clock = ManualClock(start=1_700_000_000)
    state = EmulatorState(EmulatorConfig(default_queue_seconds=1, default_build_seconds=2), clock)
    batch = state.create_batch(DEFAULT_CATALOG_ID, SECOND_MODEL_ID, is_full_build=False)

    seen = []
    for _ in range(4):
        seen.append(state.batch_status(batch.id))
        clock.advance(1)
    assert seen == ["new", "inprogress", "inprogress", "done"]
    assert state.batch_payload(batch)["createDate"] == "2023-11-14T22:13:20.000Z"


def test_manual_clock_refuses_to_go_back() -> None:
    with pytest.raises(ValueError, match="back in time"):
        ManualClock().advance(-1)


# Command line


def test_cli_prints_its_url_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow_provider_atscale.emulator",
                "--port",
                "0",
                "--log-level",
                "warning",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read_lines() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read_lines, daemon=True).start()
    try:
        first = lines.get(timeout=60)
        second = lines.get(timeout=10)
        match = re.fullmatch(r"AtScale emulator listening on (http://127\.0\.0\.1:\d+)\n", first)
        assert match, (first, stderr_path.read_text())
        assert second == f"Demo API token: {DEMO_TOKEN}\n"
        response = requests.get(
            f"{match.group(1)}/v1/catalogs", headers={"Authorization": f"Bearer {DEMO_TOKEN}"}, timeout=10
        )
        assert response.status_code == 200

        process.send_signal(signal.SIGTERM)

        assert process.wait(timeout=20) == 0, stderr_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_drop_without_a_reachable_transport_falls_back_to_a_truncated_response() -> None:
    state = EmulatorState()
    faults = FaultInjector(FaultConfig(rate_drop_before=1.0))
    app = create_app(state, faults, RequestLog())
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "GET", "path": "/v1/catalogs", "query_string": b"", "headers": []}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]

    start, body = sent
    declared = int(dict(start["headers"])[b"content-length"])
    assert len(body["body"]) < declared
    assert body["more_body"] is True
