"""The emulator over HTTP: what it serves and refuses, its clock, tokens, faults, control routes and CLI."""

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
    DEFAULT_MODEL_ID,
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    DEMO_TOKEN,
    FAILING_MODEL_ID,
    SECOND_MODEL_ID,
    WIDE_MODEL_ID,
    CatalogConfig,
    EmulatorConfig,
    EmulatorServer,
    FaultConfig,
    ManualClock,
    ModelConfig,
    run_emulator,
)
from airflow_provider_atscale.emulator.__main__ import build_parser, config_from_args
from airflow_provider_atscale.emulator.config import (
    DEFAULT_CLIENT_ID,
    DEFAULT_PUBLIC_API_CLIENT_SECRET,
    PUBLIC_API_CLIENT_ID,
)
from airflow_provider_atscale.emulator.state import OTHER_BATCH_TYPE, EmulatorState

QUEUE_SECONDS = 10.0
BUILD_SECONDS = 30.0
OTHER_TOKEN = "atscale-emulator-other-token"
"""A second configured API token, to show that rotating one leaves the others alone."""
HISTORY_PATH = "/wapi/p/aggregate/batch-history"
INSTANCES_PATH = "/v1/aggregates/instances"
OIDC_PATH = "/auth/realms/atscale/protocol/openid-connect/token"
ROTATE_PATH = "/_emulator/api-tokens/rotate"
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
BATCH_FIELDS = {
    "id",
    "catalogId",
    "modelId",
    "createDate",
    "status",
    "estimateTime",
    "isFullBuild",
    "batchType",
}
INSTANCE_FIELDS = {
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
WIDE_MODEL_AGGREGATES = 14
ROW_LIMIT = 10


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[EmulatorServer]:
    # One server per module, reset before each test: starting and stopping uvicorn costs ~0.2 s.
    config = EmulatorConfig(
        api_tokens=(DEMO_TOKEN, OTHER_TOKEN),
        default_queue_seconds=QUEUE_SECONDS,
        default_build_seconds=BUILD_SECONDS,
    )
    with run_emulator(config, clock=ManualClock()) as server:
        yield server


@pytest.fixture
def emu(shared_emulator: EmulatorServer) -> EmulatorServer:
    """The emulator, reset, on a manual clock (``emu.clock``)."""
    shared_emulator.reset()
    return shared_emulator


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def a_jwt(emu: EmulatorServer, ttl: float = 86400) -> str:
    """An access token issued without a request, so the request log stays clean."""
    return emu.tokens.issue_access_token("tester", ttl)


def get(emu: EmulatorServer, path: str, token: str | None, **params: Any) -> requests.Response:
    return requests.get(f"{emu.url}{path}", params=params, headers=bearer(token), timeout=10)


def status_of(emu: EmulatorServer, path: str, token: str | None) -> int:
    return get(emu, path, token).status_code


def batch_url(emu: EmulatorServer, model: str = DEFAULT_MODEL_ID, catalog: str = DEFAULT_CATALOG_ID) -> str:
    return f"{emu.url}/v1/aggregates-batch/catalogs/{catalog}/models/{model}"


def post_build(emu: EmulatorServer, model: str = DEFAULT_MODEL_ID, **kwargs: Any) -> requests.Response:
    """A full build posted with the raw API token (else ``full``, ``catalog``, ``headers``)."""
    url = batch_url(emu, model, kwargs.pop("catalog", DEFAULT_CATALOG_ID))
    params = {"isFullBuild": kwargs.pop("full", "true")}
    return requests.post(url, params=params, timeout=10, **{"headers": bearer(emu.token), **kwargs})


def build(emu: EmulatorServer, model: str = DEFAULT_MODEL_ID, **kwargs: Any) -> dict[str, Any]:
    """The batch object of a build posted."""
    return dict(post_build(emu, model, **kwargs).json()["batch"])


def history(emu: EmulatorServer, token: str | None = None, **params: Any) -> requests.Response:
    """Batch history, asked with a JWT unless told."""
    return get(emu, HISTORY_PATH, token or a_jwt(emu), **params)


def history_entry(emu: EmulatorServer, batch_id: str) -> dict[str, Any]:
    response = history(emu)
    assert response.status_code == 200, response.text
    (entry,) = [entry for entry in response.json()["data"] if entry["id"] == batch_id]
    return dict(entry)


def aggregate_entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for entry in body["data"] if entry["batchType"] == "aggregate_batch"]


def instances(emu: EmulatorServer, path: str = INSTANCES_PATH, **params: Any) -> Any:
    response = get(emu, path, emu.token, **params)
    assert response.status_code == 200, response.text
    return response.json()


def exchange(emu: EmulatorServer, api_token: str) -> str:
    response = requests.post(f"{emu.url}/v1/token", json={}, headers=bearer(api_token), timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["accessToken"])


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


def parse_iso(value: str) -> float:
    # strptime rather than fromisoformat: Python 3.10 refuses the trailing Z.
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def assert_error(response: requests.Response | httpx.Response, code: int, *fragments: str) -> None:
    """The response is an error of the public API, in NestJS's shape, naming every fragment."""
    assert response.status_code == code, response.text
    body = response.json()
    assert body == {"statusCode": code, "message": body["message"], "error": {"cause": NEST_CAUSES[code]}}
    assert all(fragment in body["message"] for fragment in fragments), body


def assert_design_center_error(response: requests.Response, code: int, reason: str, *fragments: str) -> None:
    assert response.status_code == code, response.text
    body = response.json()
    assert body == {"status": code, "error": reason, "message": body["message"], "path": HISTORY_PATH}
    assert all(fragment in body["message"] for fragment in fragments), body


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


# Triggering a batch


def test_trigger_creates_a_batch_with_the_documented_shape(emu: EmulatorServer) -> None:
    response = post_build(emu, json={"gracePeriodOverrides": {}})

    assert response.status_code == 201
    body = response.json()
    assert (set(body), body["success"]) == ({"batch", "success"}, True)
    batch = body["batch"]
    assert set(batch) == BATCH_FIELDS
    assert uuid.UUID(batch["id"]).version == 4
    assert (batch["catalogId"], batch["modelId"]) == (DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID)
    assert ISO_MILLIS_UTC.match(batch["createDate"])
    assert (batch["status"], batch["estimateTime"], batch["isFullBuild"]) == ("new", 30_000, True)
    assert batch["batchType"] == "aggregate_batch"
    assert [created.id for created in emu.state.batches()] == [batch["id"]]


@pytest.mark.parametrize(
    ("body", "overrides"),
    [(None, {}), ({"gracePeriodOverrides": {"factinternetsales": 30}}, {"factinternetsales": 30})],
    ids=["no body", "overrides"],
)
def test_incremental_build_keeps_its_grace_period_overrides(
    emu: EmulatorServer, body: Any, overrides: dict[str, int]
) -> None:
    assert post_build(emu, full="false", json=body).status_code == 201

    (created,) = emu.state.batches()
    assert (created.is_full_build, dict(created.grace_period_overrides)) == (False, overrides)


@pytest.mark.parametrize(
    ("full", "body", "fragment"),
    [
        (None, None, "isFullBuild"),
        ("True", None, "isFullBuild"),
        ("1", None, "isFullBuild"),
        ("false", "{not json", "not valid JSON"),
        ("false", "[]", "JSON object"),
        ("false", '{"gracePeriodOverrides": null}', "must be an object, got null"),
        ("false", '{"gracePeriodOverrides": [1]}', "must be an object, got array"),
        ("false", '{"gracePeriodOverrides": {"sales": -1}}', "sales"),
        ("false", '{"gracePeriodOverrides": {"sales": "30"}}', "non-negative integer"),
        ("false", '{"gracePeriodOverrides": {"sales": true}}', "non-negative integer"),
        ("false", '{"gracePeriodOverrides": {"sales": 1.5}}', "non-negative integer"),
        ("false", '{"gracePeriodOverrides": {" ": 30}}', "dataset names"),
        ("true", '{"gracePeriodOverrides": {"sales": 30}}', "incremental builds only"),
    ],
)
def test_invalid_trigger_is_rejected_with_400_and_creates_nothing(
    emu: EmulatorServer, full: str | None, body: str | None, fragment: str
) -> None:
    headers = {**bearer(emu.token), "Content-Type": "application/json"}

    assert_error(post_build(emu, full=full, data=body, headers=headers), 400, fragment)
    assert emu.state.batches() == []


@pytest.mark.parametrize(
    ("catalog_id", "model_id", "fragments"),
    [
        ("no-such-catalog", DEFAULT_MODEL_ID, ("Catalog 'no-such-catalog' not found",)),
        (DEFAULT_CATALOG_ID, "no-such-model", ("Model 'no-such-model' not found", DEFAULT_MODEL_ID)),
    ],
)
def test_unknown_catalog_or_model_is_404_naming_them(
    emu: EmulatorServer, catalog_id: str, model_id: str, fragments: tuple[str, ...]
) -> None:
    assert_error(post_build(emu, model_id, catalog=catalog_id), 404, *fragments)


# Who opens the public API and batch history


def token_of(kind: str, emu: EmulatorServer) -> str | None:
    """A bearer token of the kind named; ``None`` for no ``Authorization`` header at all."""
    if kind == "api token":
        return emu.token
    if kind == "exchanged jwt":
        return exchange(emu, emu.token)
    if kind in ("password grant jwt", "refresh token", "refreshed jwt"):
        grant = password_grant(emu).json()
        if kind == "refreshed jwt":
            return str(refresh_grant(emu, grant["refresh_token"]).json()["access_token"])
        return str(grant["access_token" if kind == "password grant jwt" else "refresh_token"])
    if kind == "expired jwt":
        token = a_jwt(emu, 60)
        emu.clock.advance(60)
        return token
    if kind == "jwt of another emulator":
        return EmulatorServer().tokens.issue_access_token("tester", 3600)
    return {"missing": None, "wrong": "wrong-token"}[kind]


JWTS = ["exchanged jwt", "password grant jwt", "refreshed jwt"]
REFUSED_EVERYWHERE = ["missing", "refresh token", "expired jwt", "jwt of another emulator"]


@pytest.mark.parametrize(
    ("kind", "code"),
    [("api token", 201), ("wrong", 401), *((k, 201) for k in JWTS), *((k, 401) for k in REFUSED_EVERYWHERE)],
)
def test_the_public_api_takes_an_api_token_or_a_valid_jwt(emu: EmulatorServer, kind: str, code: int) -> None:
    response = post_build(emu, headers=bearer(token_of(kind, emu)))

    assert response.status_code == code, response.text
    if code == 401:
        assert_error(response, 401, "bearer token")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert len(emu.state.batches()) == (code == 201)


@pytest.mark.parametrize(
    ("kind", "code", "fragments"),
    [
        ("api token", 401, ("needs a JWT", "POST /v1/token")),
        *((kind, 200, ()) for kind in JWTS),
        *((kind, 401, ()) for kind in REFUSED_EVERYWHERE),
    ],
)
def test_history_takes_only_a_valid_jwt(
    emu: EmulatorServer, kind: str, code: int, fragments: tuple[str]
) -> None:
    response = get(emu, HISTORY_PATH, token_of(kind, emu))

    assert response.status_code == code, response.text
    if code == 401:
        assert_design_center_error(response, 401, "Unauthorized", *fragments)
        assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("who", ["nobody", "api token", "jwt"])
def test_history_turned_off_answers_403_to_everyone(emu: EmulatorServer, who: str) -> None:
    token = {"nobody": None, "api token": emu.token, "jwt": a_jwt(emu)}[who]
    emu.state.set_batch_history_enabled(False)

    assert_design_center_error(get(emu, HISTORY_PATH, token), 403, "Forbidden", "turned off")


def test_history_accepts_raw_api_tokens_when_told_to(emu: EmulatorServer) -> None:
    emu.state.set_batch_history_accepts_api_tokens(True)

    assert history(emu, emu.token).status_code == 200


# Error shapes and faults


@pytest.mark.parametrize(
    ("method", "path", "code", "fragment"),
    [
        ("GET", "/v1/no-such-thing", 404, "Cannot GET /v1/no-such-thing"),
        ("DELETE", "/v1/catalogs", 405, "DELETE"),
    ],
)
def test_unknown_paths_and_methods_answer_in_the_nest_shape(
    emu: EmulatorServer, method: str, path: str, code: int, fragment: str
) -> None:
    response = requests.request(method, f"{emu.url}{path}", headers=bearer(emu.token), timeout=10)

    assert_error(response, code, fragment)


@pytest.mark.parametrize(("fault", "code", "created"), [("503", 503, 0), ("429", 429, 0), ("500", 500, 1)])
def test_an_injected_error_answers_in_the_nest_shape_before_processing_but_a_500_after(
    emu: EmulatorServer, fault: str, code: int, created: int
) -> None:
    emu.faults.configure(FaultConfig(**{f"rate_{fault}": 1.0}))

    assert_error(post_build(emu), code)
    assert len(emu.state.batches()) == created
    assert emu.request_log.count("POST", fault=fault, status=code) == 1


def test_injected_fault_on_batch_history_answers_in_the_design_center_shape(emu: EmulatorServer) -> None:
    emu.faults.configure(FaultConfig(rate_503=1.0))

    assert_design_center_error(history(emu), 503, "Service Unavailable")


def test_injected_fault_on_the_token_endpoint_answers_oauth_style(emu: EmulatorServer) -> None:
    emu.faults.configure(FaultConfig(rate_503=1.0))

    response = password_grant(emu)

    assert response.status_code == 503
    assert set(response.json()) == {"error", "error_description"}
    assert response.json()["error"] == "temporarily_unavailable"
    assert response.json()["error_description"]


@pytest.mark.parametrize(("as_date", "offset"), [(False, 0), (True, 0), (True, -900)])
def test_a_429_carries_retry_after_in_seconds_or_as_a_date_by_atscale_clock(
    emu: EmulatorServer, as_date: bool, offset: float
) -> None:
    emu.faults.configure(
        FaultConfig(rate_429=1.0, retry_after=7, retry_after_http_date=as_date, clock_offset_seconds=offset)
    )

    response = post_build(emu)

    assert emu.state.batches() == []
    if not as_date:
        assert response.headers["Retry-After"] == "7"
        return
    announced = email.utils.parsedate_to_datetime(response.headers["Retry-After"]).timestamp()
    dated = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
    assert announced - dated == pytest.approx(7, abs=1)
    assert 0 <= announced - (time.time() + offset) <= 8


@pytest.mark.parametrize(("fault", "created"), [("drop_before", 0), ("drop_after", 2)])
def test_a_dropped_connection_closes_without_a_byte_of_an_answer(
    emu: EmulatorServer, fault: str, created: int
) -> None:
    emu.faults.configure(FaultConfig(**{f"rate_{fault}": 1.0}))

    with pytest.raises(requests.ConnectionError, match="without response"):
        post_build(emu)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        httpx.post(batch_url(emu), params={"isFullBuild": "true"}, headers=bearer(emu.token))

    assert len(emu.state.batches()) == created
    assert [(entry.status, entry.fault) for entry in emu.request_log.entries()] == [(None, fault)] * 2


@pytest.mark.parametrize(
    "faults",
    [FaultConfig(latency_seconds=0.2), FaultConfig(rate_slow=1.0, slow_seconds=0.2)],
    ids=["latency", "slow"],
)
def test_latency_and_slow_answers_are_delayed(emu: EmulatorServer, faults: FaultConfig) -> None:
    emu.faults.configure(faults)
    started = time.monotonic()

    assert status_of(emu, "/v1/catalogs", emu.token) == 200
    assert time.monotonic() - started >= 0.2


def test_seeded_faults_repeat_exactly(emu: EmulatorServer) -> None:
    def run() -> list[int]:
        emu.faults.configure(FaultConfig(seed=42, rate_503=0.3, rate_429=0.2, rate_500=0.2))
        return [status_of(emu, "/v1/catalogs", emu.token) for _ in range(30)]

    first, second = run(), run()

    assert first == second
    assert {200, 429, 500, 503} <= set(first)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"rate_503": 1.5}, "rate_503"),
        ({"rate_503": 0.6, "rate_500": 0.6}, "add up"),
        ({"latency_seconds": -1}, "latency_seconds"),
        ({"token_ttl_seconds": 0}, "token_ttl_seconds"),
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
        ({"api_tokens": ("a", "a")}, "API tokens"),
        ({"catalogs": (CatalogConfig("c", "C"), CatalogConfig("c", "D"))}, "unique"),
        ({"catalogs": (CatalogConfig("c", "C", (ModelConfig("m", "M"), ModelConfig("m", "N"))),)}, "unique"),
        ({"default_build_seconds": -1}, "default_build_seconds"),
    ],
)
def test_invalid_emulator_configuration_is_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        EmulatorConfig(**kwargs)


def test_faults_can_be_changed_over_http(emu: EmulatorServer) -> None:
    url = f"{emu.url}/_emulator/faults"

    assert requests.put(url, json={"rate_429": 1.0, "retry_after": 3}, timeout=10).status_code == 200
    assert get(emu, "/v1/catalogs", emu.token).headers["Retry-After"] == "3"
    assert_error(requests.put(url, json={"rate_429": 2}, timeout=10), 400, "rate_429")


# Batch lifecycle


def test_batch_goes_new_inprogress_done_as_the_clock_advances(emu: EmulatorServer) -> None:
    batch_id = build(emu)["id"]

    def current() -> dict[str, Any]:
        return history_entry(emu, batch_id)

    assert (current()["status"], current()["startTime"], current()["endTime"]) == ("new", None, None)
    emu.clock.advance(QUEUE_SECONDS)
    started = current()
    assert (started["status"], started["endTime"]) == ("inprogress", None)
    assert ISO_MILLIS_UTC.match(started["startTime"])
    emu.clock.advance(BUILD_SECONDS - 0.001)
    assert current()["status"] == "inprogress"
    emu.clock.advance(0.001)
    done = current()
    assert done["status"] == "done"
    assert ISO_MILLIS_UTC.match(done["endTime"])


def test_instances_follow_the_batch_from_pending_to_active(emu: EmulatorServer) -> None:
    batch_id = build(emu)["id"]

    def statuses() -> list[str]:
        return [item["status"] for item in instances(emu, batchId=batch_id)["data"]]

    assert statuses() == ["pending", "pending", "pending"]
    emu.clock.advance(QUEUE_SECONDS + 1)
    assert statuses() == ["inprogress", "pending", "pending"]
    emu.clock.advance(BUILD_SECONDS)
    data = instances(emu, batchId=batch_id)["data"]
    assert [item["status"] for item in data] == ["active", "active", "active"]
    assert set(data[0]) == INSTANCE_FIELDS
    assert (data[0]["tableName"], data[0]["batchId"], data[0]["message"]) == (
        "as_agg_internet_sales_by_day",
        batch_id,
        None,
    )
    assert data[0]["stats"]["buildDuration"] == 10_000
    assert data[0]["stats"]["numberOfRows"] > 0


def test_failing_model_ends_failed_with_per_aggregate_messages(emu: EmulatorServer) -> None:
    batch_id = build(emu, FAILING_MODEL_ID)["id"]
    emu.clock.advance(QUEUE_SECONDS + BUILD_SECONDS)

    assert history_entry(emu, batch_id)["status"] == "failed"
    data = instances(emu, batchId=batch_id)["data"]
    assert [item["status"] for item in data] == ["active", "invalid", "invalid"]
    assert data[0]["message"] is None
    assert data[1]["message"] == (
        "Table 'as_agg_broken_sales_by_product' could not be created: "
        "permission denied on schema 'atscale_aggs'"
    )
    assert "invalid identifier" in data[2]["message"]
    assert data[1]["stats"]["numberOfRows"] is None


def test_configure_model_changes_new_batches_only(emu: EmulatorServer) -> None:
    before = build(emu)["id"]
    emu.state.configure_model(DEFAULT_MODEL_ID, fail=True, queue_seconds=0, build_seconds=1)
    after = build(emu)["id"]
    emu.clock.advance(1)

    assert history_entry(emu, after)["status"] == "failed"
    assert history_entry(emu, before)["status"] == "new"
    assert "could not be built" in instances(emu, batchId=after)["data"][0]["message"]


# Batch history: what it holds


def test_history_is_newest_first_filtered_and_paged(emu: EmulatorServer) -> None:
    ids = []
    for model_id in (DEFAULT_MODEL_ID, SECOND_MODEL_ID, DEFAULT_MODEL_ID, DEFAULT_MODEL_ID, SECOND_MODEL_ID):
        ids.append((model_id, build(emu, model_id)["id"]))
        emu.clock.advance(1)
    default_ids = [batch_id for model_id, batch_id in reversed(ids) if model_id == DEFAULT_MODEL_ID]

    everything = history(emu).json()
    assert [entry["id"] for entry in aggregate_entries(everything)] == [
        batch_id for _, batch_id in reversed(ids)
    ]
    assert everything["total"] == 10, "each build brings a batch of another type along"
    ours = {"catalogId": DEFAULT_CATALOG_ID, "modelId": DEFAULT_MODEL_ID}
    pages = [history(emu, **ours, page=page, limit=4).json() for page in (1, 2)]
    assert [entry["id"] for page in pages for entry in aggregate_entries(page)] == default_ids
    assert [(page["total"], page["limit"], page["offset"]) for page in pages] == [(6, 4, 0), (6, 4, 4)]
    assert history(emu, catalogId="other").json()["data"] == []


@pytest.mark.parametrize(
    ("name", "value"), [("page", "0"), ("limit", "-1"), ("limit", "abc"), ("limit", "1001")]
)
def test_history_rejects_bad_paging(emu: EmulatorServer, name: str, value: str) -> None:
    assert_design_center_error(history(emu, **{name: value}), 400, "Bad Request", name)


def test_history_shows_a_newer_batch_of_another_type_that_ends_while_the_build_runs(
    emu: EmulatorServer,
) -> None:
    created = build(emu, full="false")
    emu.clock.advance(1)

    newest, ours = history(emu, modelId=DEFAULT_MODEL_ID).json()["data"]

    assert ours["id"] == created["id"]
    assert (newest["batchType"], newest["status"]) == (OTHER_BATCH_TYPE, "inprogress")
    assert newest["id"] != created["id"]
    assert (newest["catalogId"], newest["modelId"], newest["isFullBuild"]) == (
        DEFAULT_CATALOG_ID,
        DEFAULT_MODEL_ID,
        False,
    )
    assert parse_iso(newest["createDate"]) - parse_iso(ours["createDate"]) == pytest.approx(0.001, abs=1e-4)
    emu.clock.advance(QUEUE_SECONDS + BUILD_SECONDS / 2)
    newest, ours = history(emu).json()["data"]
    assert (newest["status"], ours["status"]) == ("done", "inprogress")


def test_other_batches_are_neither_created_batches_nor_requests_nor_instances(emu: EmulatorServer) -> None:
    batch_id = build(emu)["id"]
    other_id = history(emu).json()["data"][0]["id"]

    assert other_id != batch_id
    assert [batch.id for batch in emu.state.batches()] == [batch_id]
    assert emu.request_log.count("POST") == 1
    assert instances(emu, batchId=other_id)["data"] == []


# Aggregate instances and catalogs


def test_instances_are_served_on_both_documented_paths_as_data_only(emu: EmulatorServer) -> None:
    batch_id = build(emu)["id"]

    public = instances(emu, "/v1/public/aggregates/instances", batchId=batch_id)
    plain = instances(emu, INSTANCES_PATH, batchId=batch_id)

    assert public == plain
    assert (set(plain), len(plain["data"])) == ({"data"}, 3)


def test_instances_ignore_page_and_size(emu: EmulatorServer) -> None:
    build(emu, DEFAULT_MODEL_ID)
    build(emu, SECOND_MODEL_ID)

    unpaged = instances(emu)

    assert instances(emu, page=2, size=2) == unpaged
    assert instances(emu, page="x", size="-1") == unpaged
    assert len(unpaged["data"]) == 6


def test_one_answer_lists_ten_instances_of_a_wide_batch_and_no_total(emu: EmulatorServer) -> None:
    batch_id = build(emu, WIDE_MODEL_ID)["id"]
    (batch,) = emu.state.batches()
    assert len(batch.aggregates) == WIDE_MODEL_AGGREGATES

    body = instances(emu, batchId=batch_id, size=100)

    assert set(body) == {"data"}
    assert [item["tableName"] for item in body["data"]] == [
        a.table_name for a in batch.aggregates[:ROW_LIMIT]
    ]


def test_status_filter_finds_the_unfinished_instances_a_cut_list_hides(emu: EmulatorServer) -> None:
    batch_id = build(emu, WIDE_MODEL_ID)["id"]
    step = BUILD_SECONDS / WIDE_MODEL_AGGREGATES
    # Ten aggregates built, the eleventh building, three waiting.
    emu.clock.advance(QUEUE_SECONDS + ROW_LIMIT * step + step / 2)

    assert {item["status"] for item in instances(emu, batchId=batch_id)["data"]} == {"active"}
    pending = instances(emu, batchId=batch_id, status="pending")["data"]
    assert [item["tableName"] for item in pending] == [
        "as_agg_sales_detail_by_currency",
        "as_agg_sales_detail_by_sales_territory",
        "as_agg_sales_detail_by_ship_date",
    ]
    unfinished = instances(emu, batchId=batch_id, status="pending,inprogress")["data"]
    assert [item["status"] for item in unfinished] == ["inprogress", "pending", "pending", "pending"]
    assert instances(emu, batchId=batch_id, status="invalid")["data"] == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"modelId": SECOND_MODEL_ID}, ["reseller"] * 3),
        ({"catalogId": DEFAULT_CATALOG_ID, "modelId": DEFAULT_MODEL_ID}, ["internet"] * 3),
        ({"tableName": "as_agg_reseller_sales_by_month"}, ["reseller"]),
        ({"definitionId": "18655da6-9977-5b69-9bfd-3ee5c9306093"}, ["internet"]),
        ({"catalogId": "no-such-catalog"}, []),
    ],
)
def test_instances_filter_by_catalog_model_table_and_definition(
    emu: EmulatorServer, params: dict[str, str], expected: list[str]
) -> None:
    build(emu, DEFAULT_MODEL_ID)
    build(emu, SECOND_MODEL_ID)

    data = instances(emu, **params)["data"]

    assert [item["tableName"].split("_")[2] for item in data] == expected


def test_instances_list_every_row_when_the_limit_is_none() -> None:
    with run_emulator(EmulatorConfig(instances_row_limit=None)) as server:
        batch = server.state.create_batch(DEFAULT_CATALOG_ID, WIDE_MODEL_ID, is_full_build=True)

        assert len(instances(server, batchId=batch.id)["data"]) == WIDE_MODEL_AGGREGATES


def test_catalogs_list_models(emu: EmulatorServer) -> None:
    response = get(emu, "/v1/catalogs", emu.token)

    assert response.status_code == 200
    (catalog,) = response.json()
    assert {"id", "name", "caption", "publishedAt", "publishedBy", "models"} <= set(catalog)
    assert catalog["id"] == DEFAULT_CATALOG_ID
    models = [DEFAULT_MODEL_ID, FAILING_MODEL_ID, SECOND_MODEL_ID, WIDE_MODEL_ID]
    assert [model["id"] for model in catalog["models"]] == models


# Timestamps and AtScale's clock


def test_every_timestamp_is_iso_utc_with_milliseconds(emu: EmulatorServer) -> None:
    # A quarter past a whole second: milliseconds must be kept, not rounded away.
    emu.clock.set(math.floor(emu.clock.now()) + 1.25)
    created = build(emu)
    emu.clock.advance(QUEUE_SECONDS + BUILD_SECONDS)
    entry = history_entry(emu, created["id"])
    stats = [item["stats"] for item in instances(emu, batchId=created["id"])["data"]]

    written = [
        created["createDate"],
        entry["createDate"],
        entry["startTime"],
        entry["endTime"],
        *(stat[name] for stat in stats for name in ("materializationStartTime", "materializationEndTime")),
    ]

    assert all(ISO_MILLIS_UTC.match(value) for value in written), written
    assert created["createDate"].endswith(".250Z")


def test_clock_offset_shifts_every_timestamp_written(emu: EmulatorServer) -> None:
    offset = 3600.5
    emu.faults.configure(FaultConfig(clock_offset_seconds=offset))
    created_at = emu.clock.now()
    response = post_build(emu)
    batch_id = response.json()["batch"]["id"]
    exchanged = exchange(emu, emu.token)
    emu.clock.advance(QUEUE_SECONDS + BUILD_SECONDS)
    entry = history_entry(emu, batch_id)
    first = instances(emu, batchId=batch_id)["data"][0]["stats"]

    assert parse_iso(response.json()["batch"]["createDate"]) == pytest.approx(created_at + offset)
    assert parse_iso(entry["createDate"]) == pytest.approx(created_at + offset)
    assert parse_iso(entry["startTime"]) == pytest.approx(created_at + QUEUE_SECONDS + offset)
    assert parse_iso(entry["endTime"]) == pytest.approx(created_at + QUEUE_SECONDS + BUILD_SECONDS + offset)
    assert parse_iso(first["materializationStartTime"]) == pytest.approx(created_at + QUEUE_SECONDS + offset)
    claims = jwt.decode(exchanged, options={"verify_signature": False})
    assert (claims["iat"], claims["exp"]) == (int(created_at + offset), int(created_at + offset + 300))
    date_header = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
    assert abs(date_header - (time.time() + offset)) < 5


def test_batches_progress_on_the_emulators_clock_whatever_the_offset(emu: EmulatorServer) -> None:
    emu.faults.configure(FaultConfig(clock_offset_seconds=-7200))
    batch_id = build(emu)["id"]

    emu.clock.advance(QUEUE_SECONDS - 0.001)
    assert history_entry(emu, batch_id)["status"] == "new"
    emu.clock.advance(0.001)
    assert history_entry(emu, batch_id)["status"] == "inprogress"


@pytest.mark.parametrize(
    ("faults", "lifetime"),
    [
        (FaultConfig(), 300),
        (FaultConfig(token_ttl_seconds=5), 5),
        (FaultConfig(clock_offset_seconds=-600), 300),
        (FaultConfig(clock_offset_seconds=600), 300),
    ],
    ids=["default", "short-lived", "clock behind", "clock ahead"],
)
def test_an_exchanged_jwt_works_for_its_lifetime_whatever_the_offset(
    emu: EmulatorServer, faults: FaultConfig, lifetime: int
) -> None:
    emu.faults.configure(faults)
    access_token = exchange(emu, DEMO_TOKEN)
    claims = jwt.decode(access_token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == lifetime

    emu.clock.advance(lifetime - 1)
    assert status_of(emu, "/v1/catalogs", access_token) == 200
    emu.clock.advance(1)
    assert_error(get(emu, "/v1/catalogs", access_token), 401)


# Tokens and grants


def test_token_exchange_requires_an_api_token(emu: EmulatorServer) -> None:
    response = requests.post(f"{emu.url}/v1/token", json={}, headers=bearer(a_jwt(emu, 60)), timeout=10)

    assert_error(response, 401, "API token")


def test_password_grant_of_the_public_client_and_refresh_issue_working_tokens(emu: EmulatorServer) -> None:
    response = password_grant(emu)
    assert (response.status_code, response.headers["Cache-Control"]) == (200, "no-store")
    tokens = response.json()
    assert set(tokens) == {"access_token", "expires_in", "refresh_token", "refresh_expires_in", "token_type"}
    assert (tokens["expires_in"], tokens["refresh_expires_in"], tokens["token_type"]) == (300, 1800, "Bearer")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert (claims["sub"], claims["azp"]) == (DEFAULT_USERNAME, "atscale-ai-link")
    emu.clock.advance(600)
    assert status_of(emu, "/v1/catalogs", tokens["access_token"]) == 401

    refreshed = refresh_grant(emu, tokens["refresh_token"])

    assert refreshed.status_code == 200
    assert status_of(emu, "/v1/catalogs", refreshed.json()["access_token"]) == 200


def test_expired_refresh_token_is_refused(emu: EmulatorServer) -> None:
    refresh_token = password_grant(emu).json()["refresh_token"]
    emu.clock.advance(1800)

    response = refresh_grant(emu, refresh_token)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"password": "wrong"}, 401, "invalid_grant"),
        ({"username": "nobody"}, 401, "invalid_grant"),
        ({"client_id": "other-client"}, 401, "invalid_client"),
        ({"client_id": "atscale-modeler"}, 401, "invalid_client"),
        ({"client_id": "atscale-api"}, 401, "invalid_client"),
        ({"client_id": PUBLIC_API_CLIENT_ID}, 401, "invalid_client"),
        ({"client_id": PUBLIC_API_CLIENT_ID, "client_secret": "wrong"}, 401, "invalid_client"),
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


def test_the_confidential_client_is_let_in_with_its_secret(emu: EmulatorServer) -> None:
    response = password_grant(
        emu, client_id=PUBLIC_API_CLIENT_ID, client_secret=DEFAULT_PUBLIC_API_CLIENT_SECRET
    )

    assert response.status_code == 200
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["azp"] == PUBLIC_API_CLIENT_ID


# API token rotation


def test_rotating_an_api_token_refuses_it_and_its_jwts_and_leaves_other_tokens_alone(
    emu: EmulatorServer,
) -> None:
    old_jwt, other_jwt = exchange(emu, DEMO_TOKEN), exchange(emu, OTHER_TOKEN)
    password_jwt = str(password_grant(emu).json()["access_token"])

    new = emu.rotate_api_token()

    assert new not in (DEMO_TOKEN, OTHER_TOKEN)
    assert emu.token == new
    assert emu.tokens.api_tokens() == [new, OTHER_TOKEN]
    for refused in (DEMO_TOKEN, old_jwt):
        assert_error(get(emu, "/v1/catalogs", refused), 401)
    assert status_of(emu, HISTORY_PATH, old_jwt) == 401
    assert requests.post(f"{emu.url}/v1/token", headers=bearer(DEMO_TOKEN), timeout=10).status_code == 401
    for accepted in (new, OTHER_TOKEN, other_jwt, password_jwt):
        assert status_of(emu, "/v1/catalogs", accepted) == 200
    for jwt_token in (exchange(emu, new), other_jwt, password_jwt):
        assert status_of(emu, HISTORY_PATH, jwt_token) == 200
    with pytest.raises(KeyError):
        emu.rotate_api_token(DEMO_TOKEN)


def test_api_tokens_rotate_over_http_unrecorded_and_fault_free(emu: EmulatorServer) -> None:
    other_jwt = exchange(emu, OTHER_TOKEN)
    emu.request_log.clear()
    emu.faults.configure(FaultConfig(rate_drop_before=1.0))

    rotated = requests.post(f"{emu.url}{ROTATE_PATH}", json={"token": OTHER_TOKEN}, timeout=10)
    first = requests.post(f"{emu.url}{ROTATE_PATH}", timeout=10)
    unknown = requests.post(f"{emu.url}{ROTATE_PATH}", json={"token": OTHER_TOKEN}, timeout=10)

    assert rotated.status_code == first.status_code == 200
    new_other, new_first = rotated.json()["token"], first.json()["token"]
    assert emu.tokens.api_tokens() == [new_first, new_other]
    assert_error(unknown, 404, "not (or no longer) an accepted API token")
    assert emu.request_log.entries() == []
    emu.faults.configure(FaultConfig())
    refused = [status_of(emu, "/v1/catalogs", token) for token in (OTHER_TOKEN, other_jwt, DEMO_TOKEN)]
    accepted = [status_of(emu, "/v1/catalogs", token) for token in (new_other, new_first)]
    assert (refused, accepted) == ([401, 401, 401], [200, 200])


# Request log, control routes, concurrency and reset


def test_request_log_records_requests_and_counts_them(emu: EmulatorServer) -> None:
    post_build(emu, full="false", json={"gracePeriodOverrides": {"sales": 1}})
    history(emu, modelId=DEFAULT_MODEL_ID)
    password_grant(emu)

    post, _, grant = emu.request_log.entries()
    assert (post.method, post.status, post.fault) == ("POST", 201, None)
    assert post.path == f"/v1/aggregates-batch/catalogs/{DEFAULT_CATALOG_ID}/models/{DEFAULT_MODEL_ID}"
    assert post.query == {"isFullBuild": "false"}
    assert post.headers["authorization"] == f"Bearer {DEMO_TOKEN}"
    assert post.body == {"gracePeriodOverrides": {"sales": 1}}
    assert "grant_type=password" in grant.body, "a form body is kept as text"
    assert emu.request_log.count() == 3
    assert emu.request_log.count("post", "/v1/aggregates-batch") == 1
    assert emu.request_log.count("GET", status=200) == 1
    emu.request_log.clear()
    assert emu.request_log.count() == 0


def test_control_routes_serve_requests_and_batches_fault_free_and_unrecorded(emu: EmulatorServer) -> None:
    post_build(emu, full="false", json={"gracePeriodOverrides": {"sales": 1}})
    emu.clock.advance(QUEUE_SECONDS)
    emu.faults.configure(FaultConfig(rate_503=1.0))

    (batch,) = requests.get(f"{emu.url}/_emulator/batches", timeout=10).json()
    (request,) = requests.get(f"{emu.url}/_emulator/requests", timeout=10).json()
    cleared = requests.delete(f"{emu.url}/_emulator/requests", timeout=10)

    assert (batch["status"], batch["gracePeriodOverrides"], batch["endTime"]) == (
        "inprogress",
        {"sales": 1},
        None,
    )
    assert ISO_MILLIS_UTC.match(batch["startTime"])
    assert (request["method"], request["status"], request["query"]) == ("POST", 201, {"isFullBuild": "false"})
    assert cleared.status_code == 204
    assert requests.get(f"{emu.url}/_emulator/health", timeout=10).json() == {"status": "ok"}
    assert emu.request_log.entries() == []


def test_many_concurrent_pollers_are_served(emu: EmulatorServer) -> None:
    batch_id = emu.state.create_batch(DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, is_full_build=True).id

    async def poll_all() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=emu.url, headers=bearer(emu.token), limits=limits) as client:
            calls = (client.get(INSTANCES_PATH, params={"batchId": batch_id}, timeout=30) for _ in range(200))
            return [response.status_code for response in await asyncio.gather(*calls)]

    assert asyncio.run(poll_all()) == [200] * 200


def test_reset_forgets_batches_requests_faults_models_tokens_and_history_settings(
    emu: EmulatorServer,
) -> None:
    post_build(emu)
    access_token, issued_before = a_jwt(emu, 60), a_jwt(emu)
    emu.state.configure_model(DEFAULT_MODEL_ID, fail=True)
    emu.state.set_batch_history_enabled(False)
    emu.state.set_batch_history_accepts_api_tokens(True)
    emu.faults.configure(FaultConfig(rate_503=1.0))
    emu.rotate_api_token()

    emu.reset()

    assert emu.state.batches() == []
    assert emu.request_log.entries() == []
    assert emu.tokens.access_claims(access_token) is None
    assert emu.token == DEMO_TOKEN
    assert history(emu, emu.token).status_code == 401
    assert history(emu, issued_before).status_code == 401
    assert emu.tokens.api_tokens() == [DEMO_TOKEN, OTHER_TOKEN]
    post_build(emu)
    assert [batch.fail for batch in emu.state.batches()] == [False]


def test_manual_clock_refuses_to_go_back() -> None:
    with pytest.raises(ValueError, match="back in time"):
        ManualClock().advance(-1)


# Command line


def test_cli_defaults_are_the_config_defaults() -> None:
    assert config_from_args(build_parser().parse_args([])) == EmulatorConfig()


def test_cli_flags_set_the_config() -> None:
    args = build_parser().parse_args(
        [
            "--queue-seconds=2",
            "--build-seconds=3.5",
            "--no-batch-history",
            "--instances-row-limit=0",
            '--faults={"clock_offset_seconds": -30, "rate_503": 0.5, "seed": 7}',
        ]
    )

    config = config_from_args(args)

    assert (config.default_queue_seconds, config.default_build_seconds) == (2, 3.5)
    assert (config.serve_batch_history, config.instances_row_limit) == (False, None)
    assert config.faults == FaultConfig(clock_offset_seconds=-30, rate_503=0.5, seed=7)
    assert EmulatorState(config).batch_history_enabled is False


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (['--faults={"rate_503": 2}'], "rate_503"),
        (['--faults={"no_such_fault": 1}'], "no_such_fault"),
        (["--faults=[1]"], "JSON object"),
        (["--faults=not json"], "JSON object"),
        (["--instances-row-limit=-1"], "instances_row_limit"),
        (["--queue-seconds=-1"], "default_queue_seconds"),
    ],
)
def test_cli_refuses_invalid_values(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises((SystemExit, ValueError)) as refused:
        config_from_args(build_parser().parse_args(argv))

    assert fragment in str(refused.value) + capsys.readouterr().err


# A harness's own launcher: the emulator's main, with a catalog of its own beside the demo catalog.
EXTRA_MAIN = """
import sys
from airflow_provider_atscale.emulator import CatalogConfig, ModelConfig
from airflow_provider_atscale.emulator.__main__ import main
extra = CatalogConfig("c-extra", "Extra", (ModelConfig("m-x", "X"),))
sys.exit(main(sys.argv[1:], extra_catalogs=(extra,)))
"""
LAUNCHERS = {
    "module": ["-m", "airflow_provider_atscale.emulator"],
    "main with an extra catalog": ["-c", EXTRA_MAIN],
}


def start_cli(launcher: str, stdout: Any, stderr: Any) -> subprocess.Popen[Any]:
    command = [sys.executable, *LAUNCHERS[launcher], "--port", "0", "--log-level", "warning"]
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, env=env, cwd=REPO_ROOT)


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_cli_prints_its_url_token_and_models_serves_and_stops_on_sigterm(
    tmp_path: Path, launcher: str
) -> None:
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = start_cli(launcher, subprocess.PIPE, stderr)
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        for line in process.stdout or ():
            lines.put(line)

    threading.Thread(target=read_lines, daemon=True).start()
    try:
        first = lines.get(timeout=60)
        match = re.fullmatch(r"AtScale emulator listening on (http://127\.0\.0\.1:\d+)\n", first)
        assert match, (first, stderr_path.read_text())
        printed = [lines.get(timeout=10) for _ in range(5)]
        assert printed[:2] == [
            f"Demo API token: {DEMO_TOKEN}\n",
            f"Catalog {DEFAULT_CATALOG_ID} model {DEFAULT_MODEL_ID} (Internet Sales, builds)\n",
        ]
        if launcher != "module":
            assert lines.get(timeout=10) == "Catalog c-extra model m-x (X, builds)\n"
        response = requests.get(f"{match.group(1)}/v1/catalogs", headers=bearer(DEMO_TOKEN), timeout=10)
        assert [catalog["id"] for catalog in response.json()][1:] == (
            [] if launcher == "module" else ["c-extra"]
        )

        process.send_signal(signal.SIGTERM)

        assert process.wait(timeout=20) == 0, stderr_path.read_text()
    finally:
        stop(process)


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
        process = start_cli("module", write_end, stderr)
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
        stop(process)
