"""
How requests authenticate, in each ``auth_type`` (API page, section 5). No transport here.

- ``token``: the connection's API token is the bearer token of the public ``/v1`` API. The private Design
  Center API (``/wapi``: batch history) refuses raw API tokens, so for it the API token is exchanged for a
  short-lived JWT, as in ``token_exchange`` (some ``/v1`` endpoints refuse that JWT, so ``/v1`` keeps the
  raw token).
- ``token_exchange``: the API token is exchanged (``POST /v1/token``) for a short-lived access token, cached
  and renewed shortly before it expires (its JWT ``exp``, else an hour after it was issued).
- ``password``: the Identity Broker's password grant with the connection's login and password; its refresh
  token is used while it lasts, then the user logs in again.

A 401 makes the caller drop the cached token (:meth:`Authenticator.invalidate`) and authenticate again, once.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_atscale import _clock
from airflow_provider_atscale.errors import AtScaleAuthError, AtScaleHTTPError
from airflow_provider_atscale.hooks._protocol import ApiRequest, unexpected_answer
from airflow_provider_atscale.hooks._settings import ConnectionSettings

TOKEN_EXCHANGE_PATH = "/v1/token"
PASSWORD_GRANT_PATH = "/auth/realms/{realm}/protocol/openid-connect/token"
DEFAULT_TOKEN_LIFETIME = 3600.0
"""Seconds an exchanged token is taken to last when it says nothing of its expiry."""
RENEW_BEFORE_EXPIRY = 60.0
"""Seconds before expiry at which a cached token is renewed (at most a tenth of its lifetime)."""

log = logging.getLogger(__name__)

Call = Callable[[ApiRequest], Generator[Any, Any, tuple[int, Any]]]


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    renew_at: float
    expires_at: float

    @classmethod
    def issued(cls, value: str, now: float, lifetime: float) -> _Token:
        # Short-lived tokens are not registered with Airflow's secret masker: no code path logs them, and
        # the masker keeps every pattern for the life of the process, so a triggerer renewing tokens for
        # thousands of waits would grow it (and slow every log line) without bound.
        lifetime = max(0.0, lifetime)
        return cls(value, now + lifetime - min(RENEW_BEFORE_EXPIRY, lifetime / 10), now + lifetime)


class Authenticator:
    """
    The bearer token for a connection's requests, obtained and renewed as its ``auth_type`` says.

    :param settings: the connection's settings.
    """

    def __init__(self, settings: ConnectionSettings) -> None:
        self._settings = settings
        self._access: _Token | None = None
        self._refresh: _Token | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(auth_type={self._settings.auth_type!r})"

    def renews(self, *, private: bool) -> bool:
        """
        Whether authenticating again can change the token sent (so a 401 is worth one more try).

        :param private: the request goes to the private ``/wapi`` API.
        """
        return self._settings.auth_type != "token" or private

    def invalidate(self) -> None:
        """Forget the cached access token (after a 401): the next request authenticates again."""
        self._access = None

    def bearer_token(self, call: Call, *, private: bool = False) -> Generator[Any, Any, str]:
        """
        The token to send now: cached while fresh, else obtained through ``call`` (a flow sending a request).

        :param call: sends one unauthenticated request, with retries, and returns ``(status, json)``.
        :param private: the request goes to the private ``/wapi`` API, which wants a JWT.
        """
        settings = self._settings
        if settings.auth_type == "token" and not private:
            return settings.token
        if self._access is not None and _clock.now() < self._access.renew_at:
            return self._access.value
        if settings.auth_type in ("token", "token_exchange"):
            self._access = yield from self._exchange(call)
        else:
            self._access = yield from self._password_grant(call)
        return self._access.value

    def _exchange(self, call: Call) -> Generator[Any, Any, _Token]:
        request = ApiRequest(
            method="POST",
            path=TOKEN_EXCHANGE_PATH,
            json_body={},
            headers={"Authorization": f"Bearer {self._settings.token}"},
            authenticated=False,
        )
        status_code, data = yield from self._authenticate(call, request)
        token = _required_token(request, status_code, data, "accessToken")
        now = _clock.now()
        expiry = jwt_expiry(token)
        return _Token.issued(token, now, DEFAULT_TOKEN_LIFETIME if expiry is None else expiry - now)

    def _password_grant(self, call: Call) -> Generator[Any, Any, _Token]:
        settings = self._settings
        form = {"client_id": settings.client_id}
        if settings.client_secret:
            form["client_secret"] = settings.client_secret
        if self._refresh is not None and _clock.now() < self._refresh.renew_at:
            refresh = self._request(
                {**form, "grant_type": "refresh_token", "refresh_token": self._refresh.value}
            )
            try:
                return (yield from self._read_grant(call, refresh))
            except AtScaleHTTPError as error:
                # An expired or revoked refresh token: log in again below.
                log.info("AtScale refresh token refused (HTTP %s); logging in again", error.http_status)
                self._refresh = None
        login = self._request(
            {
                **form,
                "grant_type": "password",
                "username": settings.login or "",
                "password": settings.token,
                "scope": "openid",
            }
        )
        return (yield from self._read_grant(call, login))

    def _request(self, form: dict[str, str]) -> ApiRequest:
        return ApiRequest(
            method="POST",
            path=PASSWORD_GRANT_PATH.format(realm=self._settings.realm),
            form=form,
            authenticated=False,
        )

    def _read_grant(self, call: Call, request: ApiRequest) -> Generator[Any, Any, _Token]:
        status_code, data = yield from self._authenticate(call, request)
        token = _required_token(request, status_code, data, "access_token")
        now = _clock.now()
        refresh = data.get("refresh_token")
        if isinstance(refresh, str) and refresh:
            self._refresh = _Token.issued(refresh, now, _seconds(data.get("refresh_expires_in"), 0.0))
        return _Token.issued(token, now, _seconds(data.get("expires_in"), DEFAULT_TOKEN_LIFETIME))

    def _authenticate(self, call: Call, request: ApiRequest) -> Generator[Any, Any, tuple[int, Any]]:
        try:
            return (yield from call(request))
        except AtScaleHTTPError as error:
            if error.http_status not in (400, 401, 403):
                raise
            raise AtScaleAuthError(
                f"AtScale refused to authenticate connection {self._settings.conn_id!r} "
                f"(auth_type {self._settings.auth_type!r}): {error}",
                method=error.method,
                path=error.path,
                status_code=error.http_status,
                atscale_message=error.atscale_message,
            ) from None


def _required_token(request: ApiRequest, status_code: int, data: Any, key: str) -> str:
    token = data.get(key) if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise unexpected_answer(request, status_code, f"without {key!r}")
    return token


def jwt_expiry(token: str) -> float | None:
    """
    The ``exp`` claim of a JWT, in seconds since the epoch, or ``None`` if it is not a JWT with one.

    The signature is not checked: the provider only reads when to renew a token AtScale gave it.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


def _seconds(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default
