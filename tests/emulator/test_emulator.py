from __future__ import annotations

import asyncio
import email.utils
import fcntl
import math
import os
import queue
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
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
    DEFAULT_MODELER_CLIENT_SECRET,
    DEFAULT_PASSWORD,
    DEFAULT_PUBLIC_API_CLIENT_SECRET,
    DEFAULT_USERNAME,
    DEMO_TOKEN,
    FAILING_MODEL_ID,
    MODELER_CLIENT_ID,
    OTHER_BATCH_TYPE,
    PUBLIC_API_CLIENT_ID,
    SECOND_MODEL_ID,
    WIDE_MODEL_ID,
    ClientConfig,
    EmulatorConfig,
    EmulatorServer,
    EmulatorState,
    FaultConfig,
    FaultInjector,
    ManualClock,
    RequestLog,
    create_app,
    default_clients,
    run_emulator,
)
from airflow_provider_atscale.emulator.__main__ import build_parser, config_from_args

QUEUE_SECONDS = 10.0
BUILD_SECONDS = 30.0
HISTORY_PATH = "/wapi/p/aggregate/batch-history"
INSTANCES_PATH = "/v1/aggregates/instances"
OIDC_PATH = "/auth/realms/atscale/protocol/openid-connect/token"
ISO_MILLIS_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
REPO_ROOT = Path(__file__).resolve().parents[2]
NEST_CAUSES = {
    400: "BadRequestException",
    401: "UnauthorizedException",
    403: "ForbiddenException",
    404: "NotFoundException",
    405: "MethodNotAllowedException",
    429: "ThrottlerException",
    500: "InternalServerErrorException",
    503: "ServiceUnavailableException",
}
WIDE_MODEL_AGGREGATES = 14
ROW_LIMIT = 10


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
    """A client sending the raw API token, as the public API takes it."""
    with requests.Session() as client:
        client.headers["Authorization"] = f"Bearer {emu.token}"
        yield client


@pytest.fixture
def jwt_session(emu: EmulatorServer) -> Iterator[requests.Session]:
    """A client sending an access token (JWT) issued without a request, so the request log stays clean."""
    with requests.Session() as client:
        client.headers["Authorization"] = f"Bearer {emu.tokens.issue_access_token('tester', 86400)}"
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


def history_entry(session: requests.Session, emu: EmulatorServer, batch_id: str) -> dict[str, Any]:
    response = history(session, emu)
    assert response.status_code == 200, response.text
    (entry,) = [entry for entry in response.json()["data"] if entry["id"] == batch_id]
    return dict(entry)


def aggregate_entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for entry in body["data"] if entry["batchType"] == "aggregate_batch"]


def instances(
    session: requests.Session, emu: EmulatorServer, path: str = INSTANCES_PATH, **params: Any
) -> Any:
    response = session.get(f"{emu.url}{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def parse_iso(value: str) -> float:
    # strptime rather than fromisoformat: Python 3.10 refuses the trailing Z.
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def assert_error(response: requests.Response | httpx.Response, code: int, *fragments: str) -> None:
    """The response is an error of the public API, in NestJS's shape, naming every fragment."""
    assert response.status_code == code, response.text
    body = response.json()
    assert body == {"statusCode": code, "message": body["message"], "error": {"cause": NEST_CAUSES[code]}}
    for fragment in fragments:
        assert fragment in body["message"]


def assert_design_center_error(response: requests.Response, code: int, reason: str, *fragments: str) -> None:
    assert response.status_code == code, response.text
    body = response.json()
    assert body == {"status": code, "error": reason, "message": body["message"], "path": HISTORY_PATH}
    for fragment in fragments:
        assert fragment in body["message"]


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
            response = requests.get(f"{server.url}/v1/catalogs", headers=bearer(DEMO_TOKEN), timeout=10)
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
    assert [created.id for created in emu.state.batches()] == [batch["id"]]


def test_trigger_without_body_is_accepted(emu: EmulatorServer, session: requests.Session) -> None:
    response = session.post(batch_url(emu), params={"isFullBuild": "false"}, timeout=10)

    assert response.status_code == 201
    assert response.json()["batch"]["isFullBuild"] is False


def test_trigger_accepts_an_access_token_too(emu: EmulatorServer, jwt_session: requests.Session) -> None:
    assert trigger(jwt_session, emu).status_code == 201


def test_incremental_build_keeps_grace_period_overrides(
    emu: EmulatorServer, session: requests.Session
) -> None:
    response = trigger(session, emu, full="false", body={"gracePeriodOverrides": {"factinternetsales": 30}})

    assert response.status_code == 201
    (created,) = emu.state.batches()
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
    assert emu.state.batches() == []


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
    assert emu.state.batches() == []


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


# Error shapes


def test_unknown_v1_path_answers_404_in_the_nest_shape(
    emu: EmulatorServer, session: requests.Session
) -> None:
    assert_error(session.get(f"{emu.url}/v1/no-such-thing", timeout=10), 404, "GET /v1/no-such-thing")


def test_wrong_method_answers_405_in_the_nest_shape(emu: EmulatorServer, session: requests.Session) -> None:
    assert_error(session.delete(f"{emu.url}/v1/catalogs", timeout=10), 405, "DELETE")


@pytest.mark.parametrize(
    ("faults", "code"),
    [
        (FaultConfig(rate_503=1.0), 503),
        (FaultConfig(rate_429=1.0), 429),
        (FaultConfig(rate_500=1.0), 500),
    ],
)
def test_injected_faults_on_v1_paths_answer_in_the_nest_shape(
    emu: EmulatorServer, session: requests.Session, faults: FaultConfig, code: int
) -> None:
    emu.faults.configure(faults)

    assert_error(session.get(f"{emu.url}/v1/catalogs", timeout=10), code)


def test_design_center_errors_have_a_shape_of_their_own(
    emu: EmulatorServer, session: requests.Session
) -> None:
    assert_design_center_error(history(session, emu), 401, "Unauthorized", "API token")


def test_injected_fault_on_batch_history_answers_in_the_design_center_shape(
    emu: EmulatorServer, jwt_session: requests.Session
) -> None:
    emu.faults.configure(FaultConfig(rate_503=1.0))

    assert_design_center_error(history(jwt_session, emu), 503, "Service Unavailable")


def test_injected_fault_on_the_token_endpoint_answers_oauth_style(emu: EmulatorServer) -> None:
    emu.faults.configure(FaultConfig(rate_503=1.0))

    response = password_grant(emu)

    assert response.status_code == 503
    assert response.json() == {
        "error": "temporarily_unavailable",
        "error_description": response.json()["error_description"],
    }


# Batch lifecycle


def test_batch_goes_new_inprogress_done_as_the_clock_advances(
    emu: EmulatorServer, session: requests.Session, jwt_session: requests.Session, clock: ManualClock
) -> None:
    batch_id = trigger(session, emu).json()["batch"]["id"]

    def current() -> dict[str, Any]:
        return history_entry(jwt_session, emu, batch_id)

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
    assert emu.state.batch_status(batch_id) == "done"


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


def test_failing_model_ends_failed_with_per_aggregate_messages(
    emu: EmulatorServer, session: requests.Session, jwt_session: requests.Session, clock: ManualClock
) -> None:
    batch_id = trigger(session, emu, FAILING_MODEL_ID).json()["batch"]["id"]
    clock.advance(QUEUE_SECONDS + BUILD_SECONDS)

    assert history_entry(jwt_session, emu, batch_id)["status"] == "failed"
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
    emu.state.configure_model(DEFAULT_MODEL_ID, fail=True, queue_seconds=0, build_seconds=1)
    after = trigger(session, emu).json()["batch"]["id"]
    clock.advance(1)

    assert emu.state.batch_status(after) == "failed"
    assert emu.state.batch_status(before) == "new"
    assert "could not be built" in instances(session, emu, batchId=after)["data"][0]["message"]


# Batch history: who may read it


def test_history_refuses_a_raw_api_token_with_401(emu: EmulatorServer, session: requests.Session) -> None:
    response = history(session, emu)

    assert_design_center_error(response, 401, "Unauthorized", "needs a JWT", "POST /v1/token")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_history_accepts_the_access_token_of_the_token_exchange(
    emu: EmulatorServer, session: requests.Session
) -> None:
    access_token = session.post(f"{emu.url}/v1/token", json={}, timeout=10).json()["accessToken"]

    response = requests.get(f"{emu.url}{HISTORY_PATH}", headers=bearer(access_token), timeout=10)

    assert response.status_code == 200, response.text


def test_history_accepts_access_tokens_of_the_password_and_refresh_grants(emu: EmulatorServer) -> None:
    tokens = password_grant(emu).json()
    refreshed = refresh_grant(emu, tokens["refresh_token"]).json()

    for access_token in (tokens["access_token"], refreshed["access_token"]):
        response = requests.get(f"{emu.url}{HISTORY_PATH}", headers=bearer(access_token), timeout=10)
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "kind", ["expired", "garbage", "refresh token", "signed by another emulator", "none"]
)
def test_history_refuses_a_token_that_is_not_a_valid_jwt_with_401(
    emu: EmulatorServer, clock: ManualClock, kind: str
) -> None:
    if kind == "expired":
        token: str | None = emu.tokens.issue_access_token("tester", 60)
        clock.advance(60)
    elif kind == "garbage":
        token = "eyJhbGciOiJIUzI1NiJ9.not-a.jwt"
    elif kind == "refresh token":
        token = password_grant(emu).json()["refresh_token"]
    elif kind == "signed by another emulator":
        token = EmulatorServer().tokens.issue_access_token("tester", 3600)
    else:
        token = None

    headers = bearer(token) if token is not None else {}
    response = requests.get(f"{emu.url}{HISTORY_PATH}", headers=headers, timeout=10)

    assert_design_center_error(response, 401, "Unauthorized")


@pytest.mark.parametrize("who", ["nobody", "api token", "jwt"])
def test_history_turned_off_answers_403_to_everyone(who: str) -> None:
    with run_emulator(EmulatorConfig(serve_batch_history=False)) as server:
        headers = {
            "nobody": {},
            "api token": bearer(server.token),
            "jwt": bearer(server.tokens.issue_access_token("tester", 3600)),
        }[who]

        response = requests.get(f"{server.url}{HISTORY_PATH}", headers=headers, timeout=10)

        assert_design_center_error(response, 403, "Forbidden", "turned off")


def test_history_can_be_turned_off_and_on_while_running(
    emu: EmulatorServer, jwt_session: requests.Session
) -> None:
    emu.state.set_batch_history_enabled(False)
    assert history(jwt_session, emu).status_code == 403

    emu.state.set_batch_history_enabled(True)
    assert history(jwt_session, emu).status_code == 200


def test_history_accepts_raw_api_tokens_when_configured_to() -> None:
    with run_emulator(EmulatorConfig(batch_history_accepts_api_tokens=True)) as lenient:
        response = requests.get(f"{lenient.url}{HISTORY_PATH}", headers=bearer(lenient.token), timeout=10)

        assert response.status_code == 200, response.text


def test_history_accepts_raw_api_tokens_when_told_to_while_running(
    emu: EmulatorServer, session: requests.Session
) -> None:
    emu.state.set_batch_history_accepts_api_tokens(True)

    assert history(session, emu).status_code == 200


# Batch history: what it holds


def test_history_is_newest_first_filtered_and_paged(
    emu: EmulatorServer, session: requests.Session, jwt_session: requests.Session, clock: ManualClock
) -> None:
    ids = []
    for model_id in (DEFAULT_MODEL_ID, SECOND_MODEL_ID, DEFAULT_MODEL_ID, DEFAULT_MODEL_ID, SECOND_MODEL_ID):
        ids.append((model_id, trigger(session, emu, model_id).json()["batch"]["id"]))
        clock.advance(1)
    default_ids = [batch_id for model_id, batch_id in reversed(ids) if model_id == DEFAULT_MODEL_ID]

    everything = history(jwt_session, emu).json()
    assert [entry["id"] for entry in aggregate_entries(everything)] == [
        batch_id for _, batch_id in reversed(ids)
    ]
    # Each build brings a batch of another type along.
    assert everything["total"] == 10
    pages = [
        history(
            jwt_session, emu, catalogId=DEFAULT_CATALOG_ID, modelId=DEFAULT_MODEL_ID, page=page, limit=4
        ).json()
        for page in (1, 2)
    ]
    assert [entry["id"] for page in pages for entry in aggregate_entries(page)] == default_ids
    assert [(page["total"], page["limit"], page["offset"]) for page in pages] == [(6, 4, 0), (6, 4, 4)]
    assert history(jwt_session, emu, catalogId="other").json()["data"] == []


@pytest.mark.parametrize(("name", "value"), [("page", "0"), ("limit", "-1"), ("limit", "abc")])
def test_history_rejects_bad_paging(
    emu: EmulatorServer, jwt_session: requests.Session, name: str, value: str
) -> None:
    assert_design_center_error(history(jwt_session, emu, **{name: value}), 400, "Bad Request", name)


def test_history_shows_a_newer_running_batch_of_another_type_beside_each_build(
    emu: EmulatorServer, session: requests.Session, jwt_session: requests.Session, clock: ManualClock
) -> None:
    created = trigger(session, emu, full="false").json()["batch"]
    clock.advance(1)

    newest, build = history(jwt_session, emu, modelId=DEFAULT_MODEL_ID).json()["data"]

    assert build["id"] == created["id"]
    assert newest["batchType"] == OTHER_BATCH_TYPE != "aggregate_batch"
    assert newest["id"] != created["id"]
    assert (newest["catalogId"], newest["modelId"], newest["isFullBuild"]) == (
        DEFAULT_CATALOG_ID,
        DEFAULT_MODEL_ID,
        False,
    )
    assert parse_iso(newest["createDate"]) - parse_iso(build["createDate"]) == pytest.approx(0.001, abs=1e-4)
    assert newest["status"] == "inprogress"


def test_other_batch_finishes_while_the_build_still_runs(
    emu: EmulatorServer, session: requests.Session, jwt_session: requests.Session, clock: ManualClock
) -> None:
    batch_id = trigger(session, emu).json()["batch"]["id"]
    clock.advance(QUEUE_SECONDS + BUILD_SECONDS / 2 + 1)

    newest, build = history(jwt_session, emu).json()["data"]

    assert (newest["batchType"], newest["status"]) == (OTHER_BATCH_TYPE, "done")
    assert (build["id"], build["status"]) == (batch_id, "inprogress")


def test_other_batches_are_neither_created_batches_nor_requests_nor_instances(
    emu: EmulatorServer, session: requests.Session, jwt_session: requests.Session
) -> None:
    batch_id = trigger(session, emu).json()["batch"]["id"]
    other_id = history(jwt_session, emu).json()["data"][0]["id"]

    assert [batch.id for batch in emu.state.batches()] == [batch_id]
    assert [batch.id for batch in emu.state.batches()] == [batch_id]
    assert emu.request_log.count("POST") == 1
    assert instances(session, emu, batchId=other_id)["data"] == []
    assert emu.state.batch_status(other_id) == "new"


def test_other_batches_in_history_can_be_turned_off() -> None:
    with run_emulator(EmulatorConfig(history_includes_other_batches=False)) as server:
        token = server.tokens.issue_access_token("tester", 3600)
        server.state.create_batch(DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, is_full_build=True)

        body = requests.get(f"{server.url}{HISTORY_PATH}", headers=bearer(token), timeout=10).json()

        assert [entry["batchType"] for entry in body["data"]] == ["aggregate_batch"]


# Aggregate instances


def test_instances_are_served_on_both_documented_paths_as_data_only(
    emu: EmulatorServer, session: requests.Session
) -> None:
    batch_id = trigger(session, emu).json()["batch"]["id"]

    public = instances(session, emu, "/v1/public/aggregates/instances", batchId=batch_id)
    plain = instances(session, emu, INSTANCES_PATH, batchId=batch_id)

    assert public == plain
    assert set(plain) == {"data"}
    assert len(plain["data"]) == 3


def test_instances_ignore_page_and_size(emu: EmulatorServer, session: requests.Session) -> None:
    trigger(session, emu, DEFAULT_MODEL_ID)
    trigger(session, emu, SECOND_MODEL_ID)

    unpaged = instances(session, emu)
    assert instances(session, emu, page=2, size=2) == unpaged
    assert instances(session, emu, page="x", size="-1") == unpaged
    assert len(unpaged["data"]) == 6


def test_one_answer_lists_ten_instances_of_a_wide_batch_and_no_total(
    emu: EmulatorServer, session: requests.Session
) -> None:
    batch_id = trigger(session, emu, WIDE_MODEL_ID).json()["batch"]["id"]
    (batch,) = emu.state.batches()
    assert len(batch.aggregates) == WIDE_MODEL_AGGREGATES

    body = instances(session, emu, batchId=batch_id, size=100)

    assert set(body) == {"data"}
    assert [item["tableName"] for item in body["data"]] == [
        aggregate.table_name for aggregate in batch.aggregates[:ROW_LIMIT]
    ]


def test_status_filter_finds_the_unfinished_instances_a_cut_list_hides(
    emu: EmulatorServer, session: requests.Session, clock: ManualClock
) -> None:
    batch_id = trigger(session, emu, WIDE_MODEL_ID).json()["batch"]["id"]
    step = BUILD_SECONDS / WIDE_MODEL_AGGREGATES
    # Ten aggregates built, the eleventh building, three waiting.
    clock.advance(QUEUE_SECONDS + ROW_LIMIT * step + step / 2)

    listed = instances(session, emu, batchId=batch_id)["data"]
    assert {item["status"] for item in listed} == {"active"}
    pending = instances(session, emu, batchId=batch_id, status="pending")["data"]
    assert [item["tableName"] for item in pending] == [
        "as_agg_sales_detail_by_currency",
        "as_agg_sales_detail_by_sales_territory",
        "as_agg_sales_detail_by_ship_date",
    ]
    unfinished = instances(session, emu, batchId=batch_id, status="pending,inprogress")["data"]
    assert [item["status"] for item in unfinished] == ["inprogress", "pending", "pending", "pending"]
    assert instances(session, emu, batchId=batch_id, status="invalid")["data"] == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"modelId": SECOND_MODEL_ID}, ["reseller"] * 3),
        ({"catalogId": DEFAULT_CATALOG_ID, "modelId": DEFAULT_MODEL_ID}, ["internet"] * 3),
        ({"tableName": "as_agg_reseller_sales_by_month"}, ["reseller"]),
        ({"catalogId": "no-such-catalog"}, []),
    ],
)
def test_instances_filter_by_catalog_model_and_table(
    emu: EmulatorServer, session: requests.Session, params: dict[str, str], expected: list[str]
) -> None:
    trigger(session, emu, DEFAULT_MODEL_ID)
    trigger(session, emu, SECOND_MODEL_ID)

    data = instances(session, emu, **params)["data"]

    assert [item["tableName"].split("_")[2] for item in data] == expected


def test_instances_list_every_row_when_the_limit_is_none() -> None:
    with run_emulator(EmulatorConfig(instances_row_limit=None)) as server:
        batch = server.state.create_batch(DEFAULT_CATALOG_ID, WIDE_MODEL_ID, is_full_build=True)

        response = requests.get(
            f"{server.url}{INSTANCES_PATH}",
            params={"batchId": batch.id},
            headers=bearer(server.token),
            timeout=10,
        )

        assert len(response.json()["data"]) == WIDE_MODEL_AGGREGATES


# Catalogs


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
        WIDE_MODEL_ID,
    ]


# Timestamps and AtScale's clock


def test_every_timestamp_is_iso_utc_with_milliseconds(
    emu: EmulatorServer, session: requests.Session, jwt_session: requests.Session, clock: ManualClock
) -> None:
    # A quarter past a whole second: milliseconds must be kept, not rounded away.
    clock.set(math.floor(clock.now()) + 1.25)
    created = trigger(session, emu).json()["batch"]
    clock.advance(QUEUE_SECONDS + BUILD_SECONDS)
    entry = history_entry(jwt_session, emu, created["id"])
    stats = [item["stats"] for item in instances(session, emu, batchId=created["id"])["data"]]

    written = [
        created["createDate"],
        entry["createDate"],
        entry["startTime"],
        entry["endTime"],
        *(stat[name] for stat in stats for name in ("materializationStartTime", "materializationEndTime")),
    ]

    assert all(ISO_MILLIS_UTC.match(value) for value in written), written
    assert created["createDate"].endswith(".250Z")


def test_clock_offset_shifts_every_timestamp_written(
    emu: EmulatorServer, session: requests.Session, jwt_session: requests.Session, clock: ManualClock
) -> None:
    offset = 3600.5
    emu.faults.configure(FaultConfig(clock_offset_seconds=offset))
    created_at = clock.now()
    response = trigger(session, emu)
    batch_id = response.json()["batch"]["id"]
    exchanged = session.post(f"{emu.url}/v1/token", json={}, timeout=10).json()["accessToken"]
    clock.advance(QUEUE_SECONDS + BUILD_SECONDS)
    entry = history_entry(jwt_session, emu, batch_id)
    first = instances(session, emu, batchId=batch_id)["data"][0]["stats"]

    assert parse_iso(response.json()["batch"]["createDate"]) == pytest.approx(created_at + offset)
    assert parse_iso(entry["createDate"]) == pytest.approx(created_at + offset)
    assert parse_iso(entry["startTime"]) == pytest.approx(created_at + QUEUE_SECONDS + offset)
    assert parse_iso(entry["endTime"]) == pytest.approx(created_at + QUEUE_SECONDS + BUILD_SECONDS + offset)
    assert parse_iso(first["materializationStartTime"]) == pytest.approx(created_at + QUEUE_SECONDS + offset)
    claims = jwt.decode(exchanged, options={"verify_signature": False})
    assert claims["iat"] == int(created_at + offset)
    assert claims["exp"] == int(created_at + offset + 300)
    date_header = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
    assert abs(date_header - (time.time() + offset)) < 5


def test_batches_progress_on_the_emulators_clock_whatever_the_offset(
    emu: EmulatorServer, session: requests.Session, clock: ManualClock
) -> None:
    emu.faults.configure(FaultConfig(clock_offset_seconds=-7200))
    batch_id = trigger(session, emu).json()["batch"]["id"]

    clock.advance(QUEUE_SECONDS - 0.001)
    assert emu.state.batch_status(batch_id) == "new"
    clock.advance(0.001)
    assert emu.state.batch_status(batch_id) == "inprogress"


@pytest.mark.parametrize("offset", [-600.0, 600.0])
def test_access_tokens_live_their_lifetime_whatever_the_offset(
    emu: EmulatorServer, clock: ManualClock, offset: float
) -> None:
    emu.faults.configure(FaultConfig(clock_offset_seconds=offset))
    access_token = requests.post(
        f"{emu.url}/v1/token", json={}, headers=bearer(DEMO_TOKEN), timeout=10
    ).json()["accessToken"]

    clock.advance(299)
    assert requests.get(f"{emu.url}/v1/catalogs", headers=bearer(access_token), timeout=10).status_code == 200
    clock.advance(1)
    assert requests.get(f"{emu.url}/v1/catalogs", headers=bearer(access_token), timeout=10).status_code == 401


def test_retry_after_date_follows_the_clock_offset(emu: EmulatorServer, session: requests.Session) -> None:
    emu.faults.configure(
        FaultConfig(rate_429=1.0, retry_after=7, retry_after_http_date=True, clock_offset_seconds=-900)
    )

    response = session.get(f"{emu.url}/v1/catalogs", timeout=10)

    announced = email.utils.parsedate_to_datetime(response.headers["Retry-After"]).timestamp()
    dated = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
    assert announced - dated == pytest.approx(7, abs=1)
    assert abs(announced - (time.time() - 900 + 7)) < 5


def test_clock_offset_can_be_set_over_http(emu: EmulatorServer, session: requests.Session) -> None:
    response = requests.put(f"{emu.url}/_emulator/faults", json={"clock_offset_seconds": -30}, timeout=10)
    assert response.status_code == 200

    created = trigger(session, emu).json()["batch"]
    assert parse_iso(created["createDate"]) == pytest.approx(emu.clock.now() - 30)


# Authentication


def test_exchanged_token_is_a_jwt_that_works_until_it_expires(
    emu: EmulatorServer, clock: ManualClock
) -> None:
    response = requests.post(f"{emu.url}/v1/token", json={}, headers=bearer(DEMO_TOKEN), timeout=10)
    assert response.status_code == 200
    access_token = response.json()["accessToken"]
    claims = jwt.decode(access_token, options={"verify_signature": False})
    assert claims["exp"] == int(clock.now() + 300)
    headers = bearer(access_token)

    assert requests.get(f"{emu.url}/v1/catalogs", headers=headers, timeout=10).status_code == 200
    clock.advance(299)
    assert requests.get(f"{emu.url}/v1/catalogs", headers=headers, timeout=10).status_code == 200
    clock.advance(1)
    assert_error(requests.get(f"{emu.url}/v1/catalogs", headers=headers, timeout=10), 401)


def test_token_lifetime_follows_the_fault_configuration(emu: EmulatorServer, clock: ManualClock) -> None:
    emu.faults.configure(FaultConfig(token_ttl_seconds=5))
    access_token = requests.post(
        f"{emu.url}/v1/token", json={}, headers=bearer(DEMO_TOKEN), timeout=10
    ).json()["accessToken"]
    clock.advance(5)

    assert_error(requests.get(f"{emu.url}/v1/catalogs", headers=bearer(access_token), timeout=10), 401)


def test_token_exchange_requires_an_api_token(emu: EmulatorServer) -> None:
    access_token = emu.tokens.issue_access_token("someone", 60)

    response = requests.post(f"{emu.url}/v1/token", json={}, headers=bearer(access_token), timeout=10)
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


def refresh_grant(emu: EmulatorServer, refresh_token: str) -> requests.Response:
    form = {"grant_type": "refresh_token", "client_id": DEFAULT_CLIENT_ID, "refresh_token": refresh_token}
    return requests.post(f"{emu.url}{OIDC_PATH}", data=form, timeout=10)


def test_password_grant_and_refresh_issue_working_tokens(emu: EmulatorServer, clock: ManualClock) -> None:
    response = password_grant(emu)
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access_token", "expires_in", "refresh_token", "refresh_expires_in", "token_type"}
    assert (tokens["expires_in"], tokens["refresh_expires_in"], tokens["token_type"]) == (300, 1800, "Bearer")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert (claims["sub"], claims["azp"]) == (DEFAULT_USERNAME, DEFAULT_CLIENT_ID)
    clock.advance(600)
    expired = bearer(tokens["access_token"])
    assert requests.get(f"{emu.url}/v1/catalogs", headers=expired, timeout=10).status_code == 401

    refreshed = refresh_grant(emu, tokens["refresh_token"])

    assert refreshed.status_code == 200
    fresh = bearer(refreshed.json()["access_token"])
    assert requests.get(f"{emu.url}/v1/catalogs", headers=fresh, timeout=10).status_code == 200


def test_refresh_token_is_not_an_access_token(emu: EmulatorServer) -> None:
    refresh_token = password_grant(emu).json()["refresh_token"]

    response = requests.get(f"{emu.url}/v1/catalogs", headers=bearer(refresh_token), timeout=10)
    assert response.status_code == 401


def test_expired_refresh_token_is_refused(emu: EmulatorServer, clock: ManualClock) -> None:
    refresh_token = password_grant(emu).json()["refresh_token"]
    clock.advance(1800)

    response = refresh_grant(emu, refresh_token)
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


def test_public_client_needs_no_secret(emu: EmulatorServer) -> None:
    assert DEFAULT_CLIENT_ID == "atscale-ai-link"
    assert password_grant(emu).status_code == 200


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        (MODELER_CLIENT_ID, DEFAULT_MODELER_CLIENT_SECRET),
        (PUBLIC_API_CLIENT_ID, DEFAULT_PUBLIC_API_CLIENT_SECRET),
    ],
)
def test_confidential_clients_need_their_secret(emu: EmulatorServer, client_id: str, secret: str) -> None:
    without = password_grant(emu, client_id=client_id)
    wrong = password_grant(emu, client_id=client_id, client_secret="wrong")
    right = password_grant(emu, client_id=client_id, client_secret=secret)

    assert (without.status_code, without.json()["error"]) == (401, "invalid_client")
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    assert right.status_code == 200


def test_the_old_atscale_api_client_is_unknown(emu: EmulatorServer) -> None:
    response = password_grant(emu, client_id="atscale-api")

    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


# Faults


def test_503_fault_answers_before_processing(emu: EmulatorServer, session: requests.Session) -> None:
    emu.faults.configure(FaultConfig(rate_503=1.0))

    assert_error(trigger(session, emu), 503)
    assert emu.state.batches() == []
    assert emu.request_log.count("POST", fault="503", status=503) == 1


@pytest.mark.parametrize("as_date", [False, True])
def test_429_fault_carries_retry_after(emu: EmulatorServer, session: requests.Session, as_date: bool) -> None:
    emu.faults.configure(FaultConfig(rate_429=1.0, retry_after=7, retry_after_http_date=as_date))

    response = trigger(session, emu)

    assert_error(response, 429)
    assert emu.state.batches() == []
    if as_date:
        announced = email.utils.parsedate_to_datetime(response.headers["Retry-After"]).timestamp()
        assert 0 <= announced - time.time() <= 8
    else:
        assert response.headers["Retry-After"] == "7"


def test_500_fault_creates_the_batch_then_fails(emu: EmulatorServer, session: requests.Session) -> None:
    emu.faults.configure(FaultConfig(rate_500=1.0))

    assert_error(trigger(session, emu), 500)
    assert len(emu.state.batches()) == 1


def test_drop_before_fault_creates_nothing_and_breaks_the_connection(
    emu: EmulatorServer, session: requests.Session
) -> None:
    emu.faults.configure(FaultConfig(rate_drop_before=1.0))

    with pytest.raises(requests.ConnectionError):
        trigger(session, emu)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(batch_url(emu), params={"isFullBuild": "true"}, headers=bearer(emu.token))
    assert emu.state.batches() == []
    assert emu.request_log.count("POST", fault="drop_before") == 2
    assert [entry.status for entry in emu.request_log.entries()] == [None, None]


def test_drop_after_fault_creates_the_batch_but_the_client_gets_a_connection_error(
    emu: EmulatorServer, session: requests.Session
) -> None:
    emu.faults.configure(FaultConfig(rate_drop_after=1.0))

    with pytest.raises(requests.ConnectionError):
        trigger(session, emu)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(batch_url(emu), params={"isFullBuild": "true"}, headers=bearer(emu.token))
    assert len(emu.state.batches()) == 2


def test_truncating_drop_sends_headers_then_a_short_body(
    emu: EmulatorServer, session: requests.Session
) -> None:
    emu.faults.configure(FaultConfig(rate_drop_after=1.0, drop_mode="truncate"))

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        trigger(session, emu)
    with pytest.raises(httpx.RemoteProtocolError, match=r"complete message body"):
        httpx.post(batch_url(emu), params={"isFullBuild": "true"}, headers=bearer(emu.token))
    assert len(emu.state.batches()) == 2


def test_client_recovers_on_a_new_request_after_a_drop(
    emu: EmulatorServer, session: requests.Session
) -> None:
    emu.faults.configure(FaultConfig(rate_drop_before=1.0))
    with pytest.raises(requests.ConnectionError):
        trigger(session, emu)
    emu.faults.configure(FaultConfig())

    assert trigger(session, emu).status_code == 201


def test_latency_delays_answers(emu: EmulatorServer, session: requests.Session) -> None:
    emu.faults.configure(FaultConfig(latency_seconds=0.2))
    started = time.monotonic()

    assert session.get(f"{emu.url}/v1/catalogs", timeout=10).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_seeded_faults_repeat_exactly(emu: EmulatorServer, session: requests.Session) -> None:
    config = FaultConfig(seed=42, rate_503=0.3, rate_429=0.2, rate_500=0.2)

    def run() -> list[int]:
        emu.faults.configure(config)
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
        ({"clock_offset_seconds": float("nan")}, "clock_offset_seconds"),
    ],
)
def test_invalid_fault_configuration_is_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        FaultConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"instances_row_limit": 0}, "instances_row_limit"),
        ({"clients": (ClientConfig("a"), ClientConfig("a", "s"))}, "Client ids"),
    ],
)
def test_invalid_emulator_configuration_is_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        EmulatorConfig(**kwargs)


def test_control_endpoints_are_fault_free_and_unrecorded(emu: EmulatorServer) -> None:
    emu.faults.configure(FaultConfig(rate_503=1.0))

    assert requests.get(f"{emu.url}/_emulator/health", timeout=10).status_code == 200
    assert emu.request_log.entries() == []


def test_faults_can_be_changed_over_http(emu: EmulatorServer, session: requests.Session) -> None:
    response = requests.put(
        f"{emu.url}/_emulator/faults", json={"rate_429": 1.0, "retry_after": 3}, timeout=10
    )
    assert response.status_code == 200
    assert session.get(f"{emu.url}/v1/catalogs", timeout=10).headers["Retry-After"] == "3"

    refused = requests.put(f"{emu.url}/_emulator/faults", json={"rate_429": 2}, timeout=10)
    assert_error(refused, 400, "rate_429")


# Request log


def test_request_log_records_requests_and_counts_them(
    emu: EmulatorServer, session: requests.Session, jwt_session: requests.Session
) -> None:
    trigger(session, emu, full="false", body={"gracePeriodOverrides": {"sales": 1}})
    history(jwt_session, emu, modelId=DEFAULT_MODEL_ID)
    session.get(f"{emu.url}/v1/catalogs", timeout=10)

    post = emu.request_log.entries()[0]
    assert (post.method, post.status, post.fault) == ("POST", 201, None)
    assert post.path == f"/v1/aggregates-batch/catalogs/{DEFAULT_CATALOG_ID}/models/{DEFAULT_MODEL_ID}"
    assert post.query == {"isFullBuild": "false"}
    assert post.headers["authorization"] == f"Bearer {DEMO_TOKEN}"
    assert post.body == {"gracePeriodOverrides": {"sales": 1}}
    assert emu.request_log.count() == 3
    assert emu.request_log.count("post", "/v1/aggregates-batch") == 1
    assert emu.request_log.count("GET", status=200) == 2
    emu.request_log.clear()
    assert emu.request_log.count() == 0


def test_form_bodies_are_logged_as_text(emu: EmulatorServer) -> None:
    password_grant(emu)

    assert "grant_type=password" in emu.request_log.entries()[0].body


# Concurrency


def test_many_concurrent_pollers_are_served(emu: EmulatorServer) -> None:
    batch_id = emu.state.create_batch(DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, is_full_build=True).id

    async def poll_all() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(
            base_url=emu.url, headers=bearer(emu.token), limits=limits, timeout=30
        ) as client:
            responses = await asyncio.gather(
                *(client.get(INSTANCES_PATH, params={"batchId": batch_id}) for _ in range(200))
            )
        return [response.status_code for response in responses]

    assert asyncio.run(poll_all()) == [200] * 200


def test_reset_forgets_batches_requests_faults_models_tokens_and_history_settings(
    emu: EmulatorServer, session: requests.Session, jwt_session: requests.Session
) -> None:
    trigger(session, emu)
    access_token = emu.tokens.issue_access_token("someone", 60)
    emu.state.configure_model(DEFAULT_MODEL_ID, fail=True)
    emu.state.set_batch_history_enabled(False)
    emu.state.set_batch_history_accepts_api_tokens(True)
    emu.faults.configure(FaultConfig(rate_503=1.0))

    emu.reset()

    assert emu.state.batches() == []
    assert emu.state.history_batches() == []
    assert emu.request_log.entries() == []
    assert not emu.tokens.grants_public_api(access_token)
    assert history(session, emu).status_code == 401
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


# Command line


def test_cli_defaults_are_the_config_defaults() -> None:
    assert config_from_args(build_parser().parse_args([])) == EmulatorConfig()


def test_cli_flags_set_the_config_fields_they_are_named_after() -> None:
    args = build_parser().parse_args(
        [
            "--queue-seconds=2",
            "--no-batch-history",
            "--batch-history-accepts-api-tokens",
            "--no-history-includes-other-batches",
            "--instances-row-limit=none",
            "--clock-offset-seconds=-30",
            "--rate-503=0.5",
            "--drop-mode=truncate",
            f"--client-secret={MODELER_CLIENT_ID}=other-secret",
            f"--fail-model={SECOND_MODEL_ID}",
        ]
    )

    config = config_from_args(args)

    assert config.default_queue_seconds == 2
    assert (config.serve_batch_history, config.batch_history_accepts_api_tokens) == (False, True)
    assert config.history_includes_other_batches is False
    assert config.instances_row_limit is None
    assert (config.faults.clock_offset_seconds, config.faults.rate_503) == (-30, 0.5)
    assert config.faults.drop_mode == "truncate"
    assert ClientConfig(MODELER_CLIENT_ID, "other-secret") in config.clients
    assert len(config.clients) == len(default_clients())
    assert [model.fail for model in config.catalogs[0].models] == [False, True, True, False]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--rate-503=2"], "rate_503"),
        (["--instances-row-limit=0"], "instances_row_limit"),
        (["--fail-model=no-such-model"], "no-such-model"),
    ],
)
def test_cli_refuses_invalid_values(argv: list[str], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        config_from_args(build_parser().parse_args(argv))


def test_cli_refuses_a_client_secret_without_its_client(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--client-secret=no-client-named"])

    assert exited.value.code == 2
    assert "CLIENT_ID=SECRET" in capsys.readouterr().err


def cli_command(*options: str) -> list[str]:
    return [sys.executable, "-m", "airflow_provider_atscale.emulator", "--port", "0", *options]


def cli_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }


def test_cli_prints_its_url_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            cli_command("--log-level", "warning"),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=cli_env(),
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
        response = requests.get(f"{match.group(1)}/v1/catalogs", headers=bearer(DEMO_TOKEN), timeout=10)
        assert response.status_code == 200

        process.send_signal(signal.SIGTERM)

        assert process.wait(timeout=20) == 0, stderr_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


# Room left in the emulator's stdout pipe: its first line fits, its second does not.
PIPE_ROOM = 64


def pipe_bytes(fd: int) -> int:
    (count,) = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))
    return int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sizes a pipe the Linux way")
def test_cli_stops_cleanly_on_sigterm_sent_while_stalled_right_after_its_first_line(tmp_path: Path) -> None:
    # A loaded machine may stop running the emulator just after it writes its first line, and a supervisor
    # signals it as soon as it reads that line. A nearly full stdout pipe reproduces that at will: the
    # emulator writes its first line, then blocks on the second until the pipe is drained.
    read_end, write_end = os.pipe()
    filler = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ) - PIPE_ROOM
    os.write(write_end, b"\0" * filler)
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            cli_command("--log-level", "warning"),
            stdout=write_end,
            stderr=stderr,
            env=cli_env(),
            cwd=REPO_ROOT,
        )
    os.close(write_end)
    try:
        deadline = time.monotonic() + 60
        while pipe_bytes(read_end) <= filler and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pipe_bytes(read_end) > filler, ("no first line", process.poll(), stderr_path.read_text())

        process.send_signal(signal.SIGTERM)

        output = b""
        while chunk := os.read(read_end, 65536):
            output += chunk
        assert process.wait(timeout=20) == 0, stderr_path.read_text()
        assert b"AtScale emulator listening on http://127.0.0.1:" in output
    finally:
        os.close(read_end)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
