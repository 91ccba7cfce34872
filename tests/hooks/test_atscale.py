"""The hook as its users meet it: the requests it sends, its connection, names, secrets (requests-mock)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import requests_mock as rm
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_atscale import __version__
from airflow_provider_atscale.errors import (
    AtScaleBadRequestError,
    AtScaleConfigurationError,
    AtScaleNotFoundError,
)
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from tests.helpers import (
    BASE_URL,
    BATCH_ID,
    CATALOG_ID,
    CATALOGS_URL,
    MODEL_ID,
    TOKEN,
    TOKEN_URL,
    TRIGGER_URL,
    FakeClock,
    batch_object,
    connection_uri,
)
from tests.helpers import use_connection as use

CREATED = {"status_code": 201, "json": {"batch": batch_object(), "success": True}}
CATALOGS = [
    {
        "id": CATALOG_ID,
        "name": "Sales Insights",
        "models": [
            {"id": MODEL_ID, "name": "Internet Sales"},
            {"id": "m-reseller", "name": "Reseller Sales"},
            {"id": "m-returns-1", "name": "Returns"},
            {"id": "m-returns-2", "name": "RETURNS"},
        ],
    },
    {"id": "c-finance", "name": "Finance", "models": [{"id": "m-ledger", "name": "Ledger"}]},
]


@pytest.fixture
def hook(atscale_conn: str, monkeypatch: pytest.MonkeyPatch, fake_clock: FakeClock) -> AtScaleHook:
    """No CA bundle from the environment (requests would put it in place of verify=True), no real waits."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return AtScaleHook(atscale_conn_id=atscale_conn)


# The requests


def test_a_build_is_exactly_the_documented_request(hook: AtScaleHook, requests_mock: rm.Mocker) -> None:
    requests_mock.post(TRIGGER_URL, **CREATED)

    batch = hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=True)

    (request,) = requests_mock.request_history
    assert (request.method, request.url) == ("POST", f"{TRIGGER_URL}?isFullBuild=true")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == f"airflow-provider-atscale/{__version__}"
    assert request.json() == {"gracePeriodOverrides": {}}
    assert (request.timeout, request.verify) == (30.0, True)
    assert batch.to_api() == batch_object(), "the batch as AtScale sent it"


@pytest.mark.parametrize("verify", ["bundle", False])
def test_each_request_carries_the_connections_timeout_and_tls_setting_over_the_environments(
    monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, tmp_path: Path, verify: str | bool
) -> None:
    # Set per request: requests lets REQUESTS_CA_BUNDLE override a session's verify, never a request's.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path))
    (bundle := tmp_path / "ca.pem").write_text("not read by the mock")
    use(monkeypatch, verify=str(bundle) if verify else False, timeout="7.5")
    requests_mock.get(CATALOGS_URL, json=[])

    AtScaleHook().list_catalogs()

    assert (requests_mock.last_request.timeout, requests_mock.last_request.verify) == (
        7.5,
        verify and str(bundle),
    )


def test_one_session_serves_every_call_until_closed(hook: AtScaleHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(CATALOGS_URL, json=[])

    hook.list_catalogs()
    session = hook.get_conn()
    hook.list_catalogs()
    assert hook.get_conn() is session
    hook.close()
    hook.close()

    assert hook.get_conn() is not session


# Input


@pytest.mark.parametrize(
    "call",
    [
        lambda hook: hook.trigger_aggregate_build("", MODEL_ID, full_build=False),
        lambda hook: hook.trigger_aggregate_build(CATALOG_ID, "a/b", full_build=False),
        lambda hook: hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build="yes"),
        lambda hook: hook.trigger_aggregate_build(
            CATALOG_ID, MODEL_ID, full_build=True, grace_period_overrides={"s": 3}
        ),
        lambda hook: hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, "a b"),
        lambda hook: hook.list_batch_aggregates(CATALOG_ID, None, BATCH_ID),
        lambda hook: hook.find_running_batch(CATALOG_ID, "m?", full_build=False, created_since=None),
        lambda hook: hook.lookup_model(model_id=MODEL_ID),
        lambda hook: hook.lookup_model(catalog_id=CATALOG_ID, catalog_name="Sales", model_id=MODEL_ID),
        lambda hook: hook.lookup_model(catalog_id=CATALOG_ID, model_name="  "),
        lambda hook: AtScaleHook("atscale_bad").list_catalogs(),
        lambda hook: AtScaleHook("atscale_missing").list_catalogs(),
    ],
)
def test_bad_input_is_refused_before_any_request(
    hook: AtScaleHook, requests_mock: rm.Mocker, monkeypatch: pytest.MonkeyPatch, call: Any
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ATSCALE_BAD", connection_uri(timeout=-1))

    with pytest.raises(AtScaleConfigurationError) as excinfo:
        call(hook)

    assert requests_mock.call_count == 0
    assert isinstance(excinfo.value, AirflowFailException), "the same input fails again: no Airflow retries"


def test_an_unknown_connection_id_is_named_with_how_to_create_it(requests_mock: rm.Mocker) -> None:
    with pytest.raises(AtScaleConfigurationError) as excinfo:
        AtScaleHook("atscale_missing").reconnect()

    assert str(excinfo.value) == (
        "atscale_conn_id 'atscale_missing' names no Airflow connection: create it under Admin > Connections "
        "(type AtScale) or set AIRFLOW_CONN_ATSCALE_MISSING"
    )


# Errors


@pytest.mark.parametrize(
    ("catalogs", "hint"),
    [
        (
            {"json": CATALOGS},
            f"[models of catalog {CATALOG_ID}: {MODEL_ID} (Internet Sales), m-reseller (Reseller Sales),",
        ),
        (
            {"json": CATALOGS[1:]},
            f"[catalog {CATALOG_ID} is not among the catalogs this token sees: c-finance (Finance)]",
        ),
        ({"status_code": 500}, "[the list of known catalogs could not be read]"),
    ],
)
def test_an_unknown_model_is_a_not_found_error_listing_what_the_token_sees(
    hook: AtScaleHook,
    monkeypatch: pytest.MonkeyPatch,
    requests_mock: rm.Mocker,
    catalogs: dict[str, Any],
    hint: str,
) -> None:
    use(monkeypatch, max_retries=0)
    requests_mock.post(TRIGGER_URL, status_code=404, json={"message": "model not found"})
    requests_mock.get(CATALOGS_URL, **catalogs)

    with pytest.raises(AtScaleNotFoundError) as excinfo:
        hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

    assert str(excinfo.value).startswith(
        f"AtScale POST {TRIGGER_URL[len(BASE_URL) :]} failed with HTTP 404: model not found {hint}"
    )
    assert (excinfo.value.http_status, excinfo.value.atscale_message) == (404, "model not found")


def test_the_connection_test_counts_the_catalogs_or_says_what_failed(
    hook: AtScaleHook, requests_mock: rm.Mocker
) -> None:
    requests_mock.get(
        CATALOGS_URL,
        [{"json": [{"id": "c1"}, {"id": "c2"}]}, {"status_code": 401, "json": {"message": "Invalid token"}}],
    )

    assert hook.test_connection() == (
        True,
        "Connected to AtScale at https://atscale.test: 2 catalog(s) visible",
    )
    ok, message = hook.test_connection()
    assert not ok
    assert message.startswith(
        "AtScale GET /v1/catalogs failed with HTTP 401: Invalid token (connection 'atscale_default'"
    )


# Secrets


def test_the_token_is_in_no_repr_error_or_log_line(
    hook: AtScaleHook, requests_mock: rm.Mocker, caplog: pytest.LogCaptureFixture
) -> None:
    echoed = {"message": f"bad token {TOKEN}"}
    requests_mock.get(
        CATALOGS_URL, [{"status_code": 503, "json": echoed}, {"status_code": 400, "json": echoed}]
    )

    with caplog.at_level(logging.DEBUG), pytest.raises(AtScaleBadRequestError) as excinfo:
        hook.list_catalogs()

    assert "bad token ***" in caplog.text, "the retry was logged, scrubbed"
    for text in (repr(hook), repr(hook.settings), str(excinfo.value), caplog.text):
        assert TOKEN not in text


def test_each_secret_is_registered_with_the_masker_once_per_process(
    atscale_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_atscale.hooks import atscale

    registered: list[str] = []
    monkeypatch.setattr(atscale, "_masked", set())
    monkeypatch.setattr(atscale, "mask_secret", registered.append)

    for _ in range(3):
        AtScaleHook().reconnect()

    assert registered == [TOKEN], "a triggerer builds a hook per trigger; registering costs milliseconds"


# Catalogs and models by name


@pytest.mark.parametrize(
    ("names", "ids", "requests"),
    [
        ({"catalog_name": "Sales Insights", "model_name": "Internet Sales"}, (CATALOG_ID, MODEL_ID), 1),
        # Another case is taken where only one has the name so...
        ({"catalog_name": "sales insights", "model_name": "reseller sales"}, (CATALOG_ID, "m-reseller"), 1),
        # ...and the name as written wins over others in another case.
        ({"catalog_id": CATALOG_ID, "model_name": "RETURNS"}, (CATALOG_ID, "m-returns-2"), 1),
        ({"catalog_name": "Finance", "model_id": "m-given"}, ("c-finance", "m-given"), 1),
        ({"catalog_id": "c-given", "model_id": "m-given"}, ("c-given", "m-given"), 0),
    ],
)
def test_names_are_looked_up_in_one_request_ids_given_back_as_they_are(
    hook: AtScaleHook, requests_mock: rm.Mocker, names: dict[str, str], ids: tuple[str, str], requests: int
) -> None:
    requests_mock.get(CATALOGS_URL, json=CATALOGS)

    assert hook.lookup_model(**names) == ids
    assert requests_mock.call_count == requests


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            {"catalog_name": "Sales Insights", "model_name": "returns"},
            "2 models are named 'returns' among the models of catalog 'Sales Insights' (m-returns-1, "
            "m-returns-2): name it by model_id instead",
        ),
        (
            {"catalog_name": "Sales Insights", "model_name": "Web Sales"},
            "no model named 'Web Sales' among the models of catalog 'Sales Insights': 'Internet Sales', "
            "'RETURNS', 'Reseller Sales', 'Returns'",
        ),
        (
            {"catalog_name": "Sales", "model_id": MODEL_ID},
            "no catalog named 'Sales' among the catalogs this token sees: 'Finance', 'Sales Insights'",
        ),
        (
            {"catalog_id": "c-nope", "model_name": "Ledger"},
            f"catalog_id 'c-nope' is not among the catalogs this token sees: {CATALOG_ID} (Sales Insights), "
            "c-finance (Finance)",
        ),
    ],
)
def test_a_name_matching_no_catalog_or_model_or_several_is_refused_listing_the_names(
    hook: AtScaleHook, requests_mock: rm.Mocker, names: dict[str, str], message: str
) -> None:
    requests_mock.get(CATALOGS_URL, json=CATALOGS)

    with pytest.raises(AtScaleConfigurationError) as excinfo:
        hook.lookup_model(**names)

    assert str(excinfo.value) == message


# A changed connection


@pytest.mark.parametrize(
    ("change", "url", "authorization"),
    [
        ({"host": "https://moved.test"}, "https://moved.test/v1/catalogs", f"Bearer {TOKEN}"),
        ({"password": "rotated-token"}, CATALOGS_URL, "Bearer rotated-token"),
    ],
    ids=["host", "token"],
)
def test_reconnect_says_whether_the_connection_changed_and_the_next_request_uses_it(
    hook: AtScaleHook,
    monkeypatch: pytest.MonkeyPatch,
    requests_mock: rm.Mocker,
    caplog: pytest.LogCaptureFixture,
    change: dict[str, str],
    url: str,
    authorization: str,
) -> None:
    requests_mock.get(CATALOGS_URL, json=[])
    requests_mock.get("https://moved.test/v1/catalogs", json=[])
    hook.list_catalogs()

    assert hook.reconnect() is False
    use(monkeypatch, **change)
    with caplog.at_level(logging.WARNING):
        assert hook.reconnect() is True
    assert hook.reconnect() is False
    hook.list_catalogs()

    assert (requests_mock.last_request.url, requests_mock.last_request.headers["Authorization"]) == (
        url,
        authorization,
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"Connection 'atscale_default' changed (now {change.get('host', BASE_URL)}, auth_type token): "
        "using it from now on"
    ]


def test_a_rotated_api_token_is_exchanged_anew_after_reconnect(
    monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker
) -> None:
    use(monkeypatch, auth_type="token_exchange")
    requests_mock.post(
        TOKEN_URL, [{"json": {"accessToken": "access-1"}}, {"json": {"accessToken": "access-2"}}]
    )
    requests_mock.get(CATALOGS_URL, json=[])
    hook = AtScaleHook()
    hook.list_catalogs()

    use(monkeypatch, auth_type="token_exchange", password="rotated-token")
    assert hook.reconnect() is True
    hook.list_catalogs()

    assert [(r.path, r.headers["Authorization"]) for r in requests_mock.request_history] == [
        ("/v1/token", f"Bearer {TOKEN}"),
        ("/v1/catalogs", "Bearer access-1"),
        ("/v1/token", "Bearer rotated-token"),
        ("/v1/catalogs", "Bearer access-2"),
    ]


def test_a_hook_reads_its_connection_when_it_starts(
    atscale_conn: str, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker
) -> None:
    requests_mock.get(CATALOGS_URL, json=[])
    requests_mock.get("https://moved.test/v1/catalogs", json=[])

    AtScaleHook().list_catalogs()
    use(monkeypatch, host="https://moved.test")
    AtScaleHook().list_catalogs()

    assert [r.netloc for r in requests_mock.request_history] == ["atscale.test", "moved.test"]
