"""The hook's authentication modes, request by request (requests-mock, a fake clock)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests_mock as rm

from airflow_provider_atscale._inputs import ConnectionSettings
from airflow_provider_atscale.errors import AtScaleAuthError, AtScaleResponseError
from airflow_provider_atscale.hooks import _auth
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from tests.helpers import BASE_URL, CATALOGS_URL, GRANT_URL, TOKEN, TOKEN_URL, FakeClock, jwt, use_connection


def hook_of(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> AtScaleHook:
    use_connection(monkeypatch, **fields)
    return AtScaleHook()


def bearers(mock: rm.Mocker, path: str = "/v1/catalogs") -> list[str]:
    return [r.headers.get("Authorization", "") for r in mock.request_history if r.path == path]


def form(request: Any) -> dict[str, str]:
    return dict(parse_qsl(request.text))


@pytest.fixture(autouse=True)
def _catalogs(requests_mock: rm.Mocker, fake_clock: FakeClock) -> None:
    requests_mock.get(CATALOGS_URL, json=[])


# Token exchange


def test_the_api_token_is_exchanged_once_and_the_access_token_sent(
    monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
) -> None:
    access = jwt(fake_clock.now() + 600)
    requests_mock.post(TOKEN_URL, json={"accessToken": access})
    hook = hook_of(monkeypatch, auth_type="token_exchange")

    hook.list_catalogs()
    hook.list_catalogs()

    exchange = requests_mock.request_history[0]
    assert (exchange.method, exchange.path, exchange.json()) == ("POST", "/v1/token", {})
    assert bearers(requests_mock, "/v1/token") == [f"Bearer {TOKEN}"]
    assert bearers(requests_mock) == [f"Bearer {access}"] * 2


HOUR = (3500, 3560)
"""A token that says nothing of its expiry is kept an hour: still fresh after 3500 s, renewed after 3560 s."""


@pytest.mark.parametrize(
    ("token", "fresh_at", "renewed_at"),
    [
        pytest.param(lambda now: jwt(now + 600), 530, 550, id="a JWT, a minute before it expires"),
        # AtScale's clock may run behind Airflow's: a JWT lasts exp - iat.
        pytest.param(lambda now: jwt(now - 3000, iat=now - 3600), 530, 550, id="a JWT by its own lifetime"),
        pytest.param(lambda now: "opaque", *HOUR, id="an opaque token"),
        pytest.param(lambda now: "a.bm90IGpzb24.c", *HOUR, id="claims not JSON"),
        pytest.param(lambda now: "a.WzFd.c", *HOUR, id="claims not an object"),  # [1]
        pytest.param(lambda now: "a.eyJleHAiOiAic29vbiJ9.c", *HOUR, id="exp not a number"),  # {"exp": "soon"}
    ],
)
def test_an_access_token_is_renewed_shortly_before_it_expires(
    monkeypatch: pytest.MonkeyPatch,
    requests_mock: rm.Mocker,
    fake_clock: FakeClock,
    token: Any,
    fresh_at: float,
    renewed_at: float,
) -> None:
    start = fake_clock.now()
    first = token(start)
    requests_mock.post(TOKEN_URL, [{"json": {"accessToken": first}}, {"json": {"accessToken": "second"}}])
    hook = hook_of(monkeypatch, auth_type="token_exchange")

    for moment in (start, start + fresh_at, start + renewed_at):
        fake_clock.time = moment
        hook.list_catalogs()

    assert bearers(requests_mock) == [f"Bearer {first}", f"Bearer {first}", "Bearer second"]


# Password grant


@pytest.mark.parametrize(
    "client",
    [{"client_id": "atscale-ai-link"}, {"client_id": "airflow", "client_secret": "s3cr3t-c"}],
    ids=["AtScale's public client by default, without a secret", "a confidential client"],
)
def test_the_user_logs_in_with_the_password_grant_then_uses_the_refresh_token(
    monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock, client: dict[str, str]
) -> None:
    grant = {"expires_in": 300, "refresh_expires_in": 1800, "token_type": "Bearer"}
    requests_mock.post(
        GRANT_URL,
        [
            {"json": {**grant, "access_token": "access-1", "refresh_token": "refresh-1"}},
            {"json": {**grant, "access_token": "access-2", "refresh_token": "refresh-2"}},
        ],
    )
    extras = client if "client_secret" in client else {}
    hook = hook_of(monkeypatch, login="svc-airflow", auth_type="password", **extras)

    hook.list_catalogs()
    fake_clock.time += 280  # past 300 - 30 (a tenth of the lifetime): renew
    hook.list_catalogs()

    login, _, refresh, _ = requests_mock.request_history
    assert login.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in login.headers
    assert login.qs == {}
    assert form(login) == {
        "grant_type": "password",
        **client,
        "username": "svc-airflow",
        "password": TOKEN,
        "scope": "openid",
    }
    assert form(refresh) == {"grant_type": "refresh_token", **client, "refresh_token": "refresh-1"}
    assert bearers(requests_mock) == ["Bearer access-1", "Bearer access-2"]


def test_the_user_logs_in_again_when_the_refresh_token_is_refused(
    monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, fake_clock: FakeClock
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
    hook = hook_of(monkeypatch, login="svc", auth_type="password")

    hook.list_catalogs()
    fake_clock.time += 290
    hook.list_catalogs()

    grants = [form(r)["grant_type"] for r in requests_mock.request_history if r.path.startswith("/auth/")]
    assert grants == ["password", "refresh_token", "password"]
    assert bearers(requests_mock) == ["Bearer access-1", "Bearer access-2"]


def test_refused_credentials_are_an_auth_error_naming_the_connection_without_secrets(
    monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker
) -> None:
    requests_mock.post(
        GRANT_URL,
        status_code=401,
        json={"error": "invalid_grant", "error_description": "Invalid user credentials"},
    )
    hook = hook_of(monkeypatch, login="svc", auth_type="password", client_secret="s3cr3t-c")

    with pytest.raises(AtScaleAuthError) as excinfo:
        hook.list_catalogs()

    assert str(excinfo.value).startswith(
        "AtScale refused to authenticate connection 'atscale_default' (auth_type 'password'): AtScale POST "
        "/auth/realms/atscale/protocol/openid-connect/token failed with HTTP 401: Invalid user credentials"
    )
    for text in (str(excinfo.value), repr(hook.settings), repr(_auth.Credentials(hook.settings))):
        assert TOKEN not in text
        assert "s3cr3t-c" not in text


@pytest.mark.parametrize(
    ("auth_type", "url", "answer", "key"),
    [
        ("token_exchange", TOKEN_URL, {"token": "x"}, "accessToken"),
        ("password", GRANT_URL, {}, "access_token"),
    ],
)
def test_a_token_answer_without_the_token_is_a_response_error(
    monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, auth_type: str, url: str, answer: Any, key: str
) -> None:
    requests_mock.post(url, json=answer)

    with pytest.raises(AtScaleResponseError, match=f"answered HTTP 200 without {key!r}"):
        hook_of(monkeypatch, auth_type=auth_type, login="svc").list_catalogs()


# A 401


@pytest.mark.parametrize("auth_type", ["token_exchange", "password"])
def test_a_401_authenticates_again_and_sends_once_more(
    monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, auth_type: str
) -> None:
    requests_mock.post(TOKEN_URL, [{"json": {"accessToken": "a-1"}}, {"json": {"accessToken": "a-2"}}])
    requests_mock.post(GRANT_URL, [{"json": {"access_token": "a-1"}}, {"json": {"access_token": "a-2"}}])
    requests_mock.get(
        CATALOGS_URL, [{"status_code": 401, "json": {"message": "Token expired"}}, {"json": [{"id": "c"}]}]
    )

    assert hook_of(monkeypatch, auth_type=auth_type, login="analyst").list_catalogs() == [{"id": "c"}]

    assert bearers(requests_mock) == ["Bearer a-1", "Bearer a-2"]


def test_a_second_401_is_an_auth_error_naming_the_connection_and_auth_type(
    monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker
) -> None:
    requests_mock.post(TOKEN_URL, [{"json": {"accessToken": "a-1"}}, {"json": {"accessToken": "a-2"}}])
    requests_mock.get(CATALOGS_URL, status_code=401, json={"message": "Invalid token"})

    with pytest.raises(AtScaleAuthError, match="HTTP 401: Invalid token") as excinfo:
        hook_of(monkeypatch, auth_type="token_exchange").list_catalogs()

    assert [r.path for r in requests_mock.request_history] == ["/v1/token", "/v1/catalogs"] * 2
    assert "(connection 'atscale_default', auth_type 'token_exchange'" in str(excinfo.value)


# Tokens as state


def test_the_process_keeps_the_tokens_of_a_bounded_number_of_credentials() -> None:
    first = ConnectionSettings(conn_id="c", base_url=BASE_URL, token="token-0", auth_type="token_exchange")
    _auth.Credentials(first).accept(
        _auth.Credentials(first).token_request(), 201, {"accessToken": "access-0"}
    )
    assert _auth.Credentials(first).bearer(private=False) == "access-0", "shared by every hook of the process"

    for n in range(1, _auth.MAX_CREDENTIALS + 1):
        _auth.Credentials(ConnectionSettings(conn_id="c", base_url=BASE_URL, token=f"token-{n}"))

    assert _auth.Credentials(first).bearer(private=False) is None, (
        "the oldest credentials' tokens are forgotten"
    )


def test_tokens_held_show_in_no_repr() -> None:
    settings = ConnectionSettings(conn_id="c", base_url=BASE_URL, token=TOKEN, auth_type="token_exchange")
    credentials = _auth.Credentials(settings)
    credentials.accept(credentials.token_request(), 201, {"accessToken": "access-0"})

    assert repr(credentials) == "Credentials(auth_type='token_exchange')"
    assert "access-0" not in repr(credentials._held)
