"""The hook's authentication modes and retries, request by request (requests-mock, a fake clock)."""

from __future__ import annotations

import base64
import json
import logging
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import requests_mock as rm
from urllib3.exceptions import NewConnectionError

from airflow_provider_atscale._compat import AirflowFailException
from airflow_provider_atscale.errors import (
    AtScaleAuthError,
    AtScaleConfigurationError,
    AtScaleHTTPError,
    AtScaleServerError,
    AtScaleTransportError,
)
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from tests.helpers import (
    ACCESS_TOKEN,
    BASE_URL,
    BATCH_ID,
    CATALOG_ID,
    HISTORY_URL,
    MODEL_ID,
    TOKEN,
    TOKEN_URL,
    TRIGGER_URL,
    FakeClock,
    batch_object,
    connection_uri,
    history_page,
)

GRANT_URL = f"{BASE_URL}/auth/realms/atscale/protocol/openid-connect/token"
CATALOGS_URL = f"{BASE_URL}/v1/catalogs"
CREATED = {"status_code": 201, "json": {"batch": batch_object(), "success": True}}


def jwt(exp: float) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'sub': 'svc', 'exp': int(exp)})}.sig"


def use_connection(monkeypatch: pytest.MonkeyPatch, *, login: str | None = None, **extra: Any) -> AtScaleHook:
    conn = json.loads(connection_uri(**extra))
    if login is not None:
        conn["login"] = login
    monkeypatch.setenv("AIRFLOW_CONN_ATSCALE_DEFAULT", json.dumps(conn))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return AtScaleHook()


def bearer(request: Any) -> str:
    return str(request.headers.get("Authorization", ""))


def calls(mock: rm.Mocker) -> list[str]:
    """Each request as ``METHOD /first-two-path-segments``."""
    return [
        f"{r.method} /{'/'.join(r.path.strip('/').split('/')[:2])}".replace(" /wapi/p", " /wapi")
        for r in mock.request_history
    ]


class TestTokenExchange:
    def test_exchanges_the_api_token_once_and_sends_the_access_token(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        access = jwt(fake_clock.now() + 600)
        requests_mock.post(TOKEN_URL, json={"accessToken": access})
        requests_mock.get(CATALOGS_URL, json=[])
        hook = use_connection(monkeypatch, auth_type="token_exchange")

        hook.list_catalogs()
        hook.list_catalogs()

        exchange, first, second = requests_mock.request_history
        assert (exchange.method, exchange.path) == ("POST", "/v1/token")
        assert bearer(exchange) == f"Bearer {TOKEN}"
        assert exchange.json() == {}
        assert bearer(first) == bearer(second) == f"Bearer {access}"

    def test_renews_shortly_before_the_jwt_expires(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        first, second = jwt(fake_clock.now() + 600), jwt(fake_clock.now() + 1200)
        requests_mock.post(TOKEN_URL, [{"json": {"accessToken": first}}, {"json": {"accessToken": second}}])
        requests_mock.get(CATALOGS_URL, json=[])
        hook = use_connection(monkeypatch, auth_type="token_exchange")

        hook.list_catalogs()
        fake_clock.time += 530  # 70 s before expiry: still fresh
        hook.list_catalogs()
        fake_clock.time += 20  # 50 s before expiry: renewed before use
        hook.list_catalogs()

        sent = [bearer(r) for r in requests_mock.request_history if r.path == "/v1/catalogs"]
        assert sent == [f"Bearer {first}", f"Bearer {first}", f"Bearer {second}"]
        assert sum(r.path == "/v1/token" for r in requests_mock.request_history) == 2

    def test_a_token_without_expiry_is_kept_for_an_hour(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        requests_mock.post(
            TOKEN_URL, [{"json": {"accessToken": "opaque-1"}}, {"json": {"accessToken": "opaque-2"}}]
        )
        requests_mock.get(CATALOGS_URL, json=[])
        hook = use_connection(monkeypatch, auth_type="token_exchange")

        hook.list_catalogs()
        fake_clock.time += 3500
        hook.list_catalogs()
        fake_clock.time += 60
        hook.list_catalogs()

        sent = [bearer(r) for r in requests_mock.request_history if r.path == "/v1/catalogs"]
        assert sent == ["Bearer opaque-1", "Bearer opaque-1", "Bearer opaque-2"]


class TestPasswordGrant:
    def test_the_default_client_is_atscales_public_client_without_a_secret(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker
    ) -> None:
        requests_mock.post(GRANT_URL, json={"access_token": "access-1", "expires_in": 300})
        requests_mock.get(CATALOGS_URL, json=[])

        use_connection(monkeypatch, login="svc", auth_type="password").list_catalogs()

        form = _form(requests_mock.request_history[0])
        assert form["client_id"] == "atscale-ai-link"
        assert "client_secret" not in form

    def test_logs_in_with_the_password_grant_then_uses_the_refresh_token(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        grant = {"expires_in": 300, "refresh_expires_in": 1800, "token_type": "Bearer"}
        requests_mock.post(
            GRANT_URL,
            [
                {"json": {**grant, "access_token": "access-1", "refresh_token": "refresh-1"}},
                {"json": {**grant, "access_token": "access-2", "refresh_token": "refresh-2"}},
            ],
        )
        requests_mock.get(CATALOGS_URL, json=[])
        hook = use_connection(
            monkeypatch,
            login="svc-airflow",
            auth_type="password",
            client_id="airflow",
            client_secret="s3cr3t-c",
        )

        hook.list_catalogs()
        fake_clock.time += 280  # past 300 - 30 (a tenth of the lifetime): renew
        hook.list_catalogs()

        login, _, refresh, _ = requests_mock.request_history
        assert login.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert "Authorization" not in login.headers
        assert dict(login.qs) == {}
        assert _form(login) == {
            "grant_type": "password",
            "client_id": "airflow",
            "client_secret": "s3cr3t-c",
            "username": "svc-airflow",
            "password": TOKEN,
            "scope": "openid",
        }
        assert _form(refresh) == {
            "grant_type": "refresh_token",
            "client_id": "airflow",
            "client_secret": "s3cr3t-c",
            "refresh_token": "refresh-1",
        }
        sent = [bearer(r) for r in requests_mock.request_history if r.path == "/v1/catalogs"]
        assert sent == ["Bearer access-1", "Bearer access-2"]

    def test_logs_in_again_when_the_refresh_token_is_refused(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        grant = {"expires_in": 300, "refresh_expires_in": 1800}
        requests_mock.post(
            GRANT_URL,
            [
                {"json": {**grant, "access_token": "access-1", "refresh_token": "refresh-1"}},
                {
                    "status_code": 400,
                    "json": {"error": "invalid_grant", "error_description": "Token is not active"},
                },
                {"json": {**grant, "access_token": "access-2", "refresh_token": "refresh-2"}},
            ],
        )
        requests_mock.get(CATALOGS_URL, json=[])
        hook = use_connection(monkeypatch, login="svc", auth_type="password")

        hook.list_catalogs()
        fake_clock.time += 290
        hook.list_catalogs()

        grants = [
            _form(r)["grant_type"] for r in requests_mock.request_history if r.path.startswith("/auth/")
        ]
        assert grants == ["password", "refresh_token", "password"]
        assert bearer(requests_mock.last_request) == "Bearer access-2"

    def test_wrong_credentials_are_a_clear_auth_error_without_secrets(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker
    ) -> None:
        requests_mock.post(
            GRANT_URL,
            status_code=401,
            json={"error": "invalid_grant", "error_description": "Invalid user credentials"},
        )
        hook = use_connection(monkeypatch, login="svc", auth_type="password", client_secret="s3cr3t-c")

        with pytest.raises(AtScaleAuthError) as excinfo:
            hook.list_catalogs()

        message = str(excinfo.value)
        assert "refused to authenticate connection 'atscale_default' (auth_type 'password')" in message
        assert "Invalid user credentials" in message
        for secret in (TOKEN, "s3cr3t-c"):
            assert secret not in message
            assert secret not in repr(hook.settings)


class TestUnauthorized:
    @pytest.mark.parametrize("auth_type", ["token_exchange", "password"])
    def test_a_401_authenticates_again_and_retries_once(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, auth_type: str
    ) -> None:
        requests_mock.post(TOKEN_URL, [{"json": {"accessToken": "a-1"}}, {"json": {"accessToken": "a-2"}}])
        requests_mock.post(GRANT_URL, [{"json": {"access_token": "a-1"}}, {"json": {"access_token": "a-2"}}])
        requests_mock.get(
            CATALOGS_URL,
            [{"status_code": 401, "json": {"message": "Token expired"}}, {"json": [{"id": "c"}]}],
        )
        hook = use_connection(monkeypatch, auth_type=auth_type, login="analyst")

        assert hook.list_catalogs() == [{"id": "c"}]

        catalog_calls = [r for r in requests_mock.request_history if r.path == "/v1/catalogs"]
        assert [bearer(r) for r in catalog_calls] == ["Bearer a-1", "Bearer a-2"]

    def test_a_401_on_the_raw_api_token_fails_at_once_naming_the_connection_and_the_likely_causes(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker
    ) -> None:
        requests_mock.get(CATALOGS_URL, status_code=401, json={"message": "Invalid token"})
        hook = use_connection(monkeypatch)

        with pytest.raises(AtScaleAuthError, match="HTTP 401: Invalid token") as excinfo:
            hook.list_catalogs()

        # Sending the same raw token again could not change the answer.
        assert requests_mock.call_count == 1
        assert isinstance(excinfo.value, AirflowFailException), "the same token fails again: no retries"
        message = str(excinfo.value)
        assert "connection 'atscale_default'" in message
        assert "expire after 90 days" in message
        assert "minting a new token for the same user revokes the previous one" in message
        assert "signed its session out" in message
        assert TOKEN not in message

    def test_a_second_401_is_a_clear_auth_error(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker
    ) -> None:
        requests_mock.post(TOKEN_URL, [{"json": {"accessToken": "a-1"}}, {"json": {"accessToken": "a-2"}}])
        requests_mock.get(CATALOGS_URL, status_code=401, json={"message": "Invalid token"})
        hook = use_connection(monkeypatch, auth_type="token_exchange")

        with pytest.raises(AtScaleAuthError, match="HTTP 401: Invalid token") as excinfo:
            hook.list_catalogs()

        assert [r.path for r in requests_mock.request_history] == [
            "/v1/token",
            "/v1/catalogs",
            "/v1/token",
            "/v1/catalogs",
        ]
        assert "connection 'atscale_default', auth_type 'token_exchange'" in str(excinfo.value)
        assert TOKEN not in str(excinfo.value)


class TestRetries:
    @pytest.mark.parametrize("status", [429, 502, 503, 504, 500])
    def test_get_is_retried_on_passing_failures(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock, status: int
    ) -> None:
        requests_mock.get(
            CATALOGS_URL, [{"status_code": status, "json": {}}, {"status_code": status}, {"json": []}]
        )

        assert use_connection(monkeypatch).list_catalogs() == []

        assert requests_mock.call_count == 3
        assert len(fake_clock.sleeps) == 2
        assert 0 < fake_clock.sleeps[0] <= fake_clock.sleeps[1] + 1.0, "exponential backoff with jitter"

    def test_each_retry_is_one_warning_naming_the_request_once(
        self,
        monkeypatch: pytest.MonkeyPatch,
        requests_mock: rm.Mocker,
        fake_clock: FakeClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        requests_mock.get(CATALOGS_URL, [{"status_code": 503, "json": {"message": "busy"}}, {"json": []}])

        with caplog.at_level(logging.WARNING):
            use_connection(monkeypatch).list_catalogs()

        (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warning.startswith("AtScale GET /v1/catalogs failed with HTTP 503: busy; attempt 2 of 6 in ")
        assert warning.count("/v1/catalogs") == 1

    def test_retry_after_in_seconds_is_honoured(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        requests_mock.get(
            CATALOGS_URL, [{"status_code": 429, "headers": {"Retry-After": "17"}}, {"json": []}]
        )

        use_connection(monkeypatch).list_catalogs()

        assert fake_clock.sleeps == [17.0]

    def test_retry_after_as_an_http_date_is_honoured(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        when = datetime.fromtimestamp(fake_clock.now() + 42, tz=timezone.utc)
        requests_mock.get(
            CATALOGS_URL,
            [
                {"status_code": 503, "headers": {"Retry-After": format_datetime(when, usegmt=True)}},
                {"json": []},
            ],
        )

        use_connection(monkeypatch).list_catalogs()

        assert fake_clock.sleeps == [pytest.approx(42.0, abs=1.0)]

    def test_retries_are_bounded_by_count(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        requests_mock.get(CATALOGS_URL, status_code=503, json={"message": "restarting"})

        with pytest.raises(AtScaleServerError, match="HTTP 503: restarting"):
            use_connection(monkeypatch, max_retries=3).list_catalogs()

        assert requests_mock.call_count == 4

    def test_retries_are_bounded_by_total_wait(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        requests_mock.get(CATALOGS_URL, status_code=429, headers={"Retry-After": "40"})

        with pytest.raises(AtScaleHTTPError):
            use_connection(monkeypatch, max_retries=50, retry_max_wait=100).list_catalogs()

        assert fake_clock.sleeps == [40.0, 40.0], "a third wait would pass 100 s in all"

    def test_400_is_not_retried(self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker) -> None:
        requests_mock.get(CATALOGS_URL, status_code=400, json={"message": "bad"})

        with pytest.raises(AtScaleHTTPError):
            use_connection(monkeypatch).list_catalogs()

        assert requests_mock.call_count == 1

    def test_a_connection_that_never_opened_is_retried(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        refused = requests.ConnectionError(NewConnectionError(None, "Connection refused"))  # type: ignore[arg-type]
        requests_mock.get(CATALOGS_URL, [{"exc": refused}, {"json": []}])

        assert use_connection(monkeypatch).list_catalogs() == []
        assert requests_mock.call_count == 2


class TestPostNeverStartsTwoBuilds:
    @pytest.mark.parametrize(
        "failure",
        [
            {"status_code": 503, "json": {"message": "restarting"}},
            {"status_code": 429, "headers": {"Retry-After": "3"}},
            {"exc": requests.ConnectTimeout("connect timed out")},
            {"exc": requests.ConnectionError(NewConnectionError(None, "Connection refused"))},  # type: ignore[arg-type]
        ],
    )
    def test_post_is_retried_when_atscale_surely_started_nothing(
        self,
        monkeypatch: pytest.MonkeyPatch,
        requests_mock: rm.Mocker,
        fake_clock: FakeClock,
        failure: dict[str, Any],
    ) -> None:
        requests_mock.post(TRIGGER_URL, [failure, CREATED])
        requests_mock.get(HISTORY_URL, json=history_page())

        batch = use_connection(monkeypatch).trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

        assert batch.id == BATCH_ID
        assert [r.method for r in requests_mock.request_history] == ["POST", "POST"], (
            "no history check needed"
        )

    @pytest.mark.parametrize(
        "failure",
        [
            {"status_code": 500, "json": {"message": "internal"}},
            {"status_code": 502, "text": "Bad Gateway"},
            {"status_code": 504, "text": "Gateway Timeout"},
            {"exc": requests.ReadTimeout("read timed out")},
            {"exc": requests.ConnectionError("Connection aborted: RemoteDisconnected")},
        ],
    )
    def test_after_an_ambiguous_failure_history_is_checked_and_the_started_batch_attached(
        self,
        monkeypatch: pytest.MonkeyPatch,
        requests_mock: rm.Mocker,
        fake_clock: FakeClock,
        failure: dict[str, Any],
    ) -> None:
        started = batch_object(id="started-anyway", status="new", createDate=_iso(fake_clock.now() + 1))
        requests_mock.post(TRIGGER_URL, [failure, CREATED])
        requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
        requests_mock.get(HISTORY_URL, json=history_page(started))

        batch = use_connection(monkeypatch).trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

        assert batch.id == "started-anyway"
        post, exchange, check = requests_mock.request_history
        assert calls(requests_mock) == ["POST /v1/aggregates-batch", "POST /v1/token", "GET /wapi"]
        # The public API takes the raw API token; the private history API a JWT exchanged for it.
        assert (bearer(post), bearer(exchange), bearer(check)) == (
            f"Bearer {TOKEN}",
            f"Bearer {TOKEN}",
            f"Bearer {ACCESS_TOKEN}",
        )

    def test_after_an_ambiguous_failure_with_nothing_started_the_build_is_posted_again(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        older = batch_object(id="older", status="inprogress", createDate=_iso(fake_clock.now() - 3600))
        other_type = batch_object(
            id="full", status="new", isFullBuild=True, createDate=_iso(fake_clock.now())
        )
        another_kind = batch_object(
            id="cleanup",
            status="inprogress",
            batchType="aggregate_cleanup",
            createDate=_iso(fake_clock.now()),
        )
        requests_mock.post(TRIGGER_URL, [{"status_code": 500, "json": {}}, CREATED])
        requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
        requests_mock.get(HISTORY_URL, json=history_page(another_kind, other_type, older))

        batch = use_connection(monkeypatch).trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

        assert batch.id == BATCH_ID
        assert calls(requests_mock) == [
            "POST /v1/aggregates-batch",
            "POST /v1/token",
            "GET /wapi",
            "POST /v1/aggregates-batch",
        ]

    @pytest.mark.parametrize(
        "history",
        [
            {"status_code": 404, "json": {"message": "Not Found"}},
            {"status_code": 401, "json": {"message": "Unauthorized"}},
            {"status_code": 503, "json": {"message": "down"}},
        ],
    )
    def test_when_history_cannot_be_read_an_ambiguous_post_is_not_repeated_blindly(
        self,
        monkeypatch: pytest.MonkeyPatch,
        requests_mock: rm.Mocker,
        fake_clock: FakeClock,
        history: dict[str, Any],
    ) -> None:
        requests_mock.post(TRIGGER_URL, [{"status_code": 500, "json": {}}, CREATED])
        requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
        requests_mock.get(HISTORY_URL, **history)

        with pytest.raises(AtScaleServerError, match="HTTP 500"):
            use_connection(monkeypatch, max_retries=1).trigger_aggregate_build(
                CATALOG_ID, MODEL_ID, full_build=False
            )

        assert calls(requests_mock).count("POST /v1/aggregates-batch") == 1


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (
            {"auth_type": "kerberos"},
            "extra 'auth_type' must be one of token, token_exchange, password, got 'kerberos'",
        ),
        ({"max_retries": -1}, "extra 'max_retries' must be a whole number from 0 to 100, got -1"),
        ({"max_retries": 2.5}, "got 2.5"),
        (
            {"retry_max_wait": "long"},
            "extra 'retry_max_wait' must be a number of seconds, 0 or more, got 'long'",
        ),
        ({"realm": "a/b"}, "extra 'realm' must be a non-empty string without '/'"),
        ({"auth_type": "password"}, "auth_type 'password' but no login"),
    ],
)
def test_bad_auth_and_retry_settings_are_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, extra: dict[str, Any], match: str
) -> None:
    with pytest.raises(AtScaleConfigurationError, match=match):
        use_connection(monkeypatch, **extra).trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

    assert requests_mock.call_count == 0


def test_transport_errors_say_whether_the_connection_opened(
    monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
) -> None:
    requests_mock.get(CATALOGS_URL, exc=requests.ReadTimeout("read timed out"))

    with pytest.raises(AtScaleTransportError) as excinfo:
        use_connection(monkeypatch, max_retries=0).list_catalogs()

    assert excinfo.value.connection_opened is True


def _form(request: Any) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(request.text))


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
