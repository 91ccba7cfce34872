"""
The bearer tokens of a connection in each ``auth_type`` — which token to send, which request obtains one, what
a token answer means — as pure state (:func:`~._calls.send` sends the requests):

- ``token``: the API token is the bearer of the public ``/v1`` API (some of whose endpoints refuse a JWT); the
  private Design Center API (``/wapi``: batch history) refuses it, so there it is exchanged for a JWT.
- ``token_exchange``: the API token is exchanged (``POST /v1/token``) for a short-lived access token, renewed
  shortly before it expires (its JWT ``exp``, else an hour after it was issued).
- ``password``: the Identity Broker's password grant with the connection's login and password; its refresh
  token while it lasts, then a login again.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any, NamedTuple

from airflow_provider_atscale import _clock
from airflow_provider_atscale._inputs import ConnectionSettings
from airflow_provider_atscale.errors import AtScaleAuthError, AtScaleHTTPError
from airflow_provider_atscale.hooks._http import ApiRequest

TOKEN_EXCHANGE_PATH = "/v1/token"
IDENTITY_GRANT_PATH = "/auth/realms/{realm}/protocol/openid-connect/token"
MAX_CREDENTIALS = 64
"""Sets of credentials whose tokens the process keeps: a rotated API token leaves its old tokens behind."""

DEFAULT_TOKEN_LIFETIME = 3600.0
"""Seconds an exchanged token is taken to last when it says nothing of its expiry."""
RENEW_BEFORE_EXPIRY = 60.0
"""Seconds before expiry at which a cached token is renewed (at most a tenth of its lifetime)."""

log = logging.getLogger(__name__)


class _Token(NamedTuple):
    value: str
    renew_at: float

    def __repr__(self) -> str:
        return f"_Token(renew_at={self.renew_at})"

    @classmethod
    def issued(cls, value: str, now: float, lifetime: float) -> _Token:
        # Short-lived tokens are not registered with Airflow's secret masker: no code path logs them, and
        # the masker keeps every pattern for the life of the process, so a triggerer renewing tokens for
        # thousands of waits would grow it (and slow every log line) without bound.
        lifetime = max(0.0, lifetime)
        return cls(value, now + lifetime - min(RENEW_BEFORE_EXPIRY, lifetime / 10))

    def fresh(self) -> bool:
        return _clock.now() < self.renew_at


_tokens: dict[tuple[Any, ...], dict[str, _Token]] = {}
"""Access and refresh tokens by the credentials they were issued for, shared by every hook of the process: a
triggerer's thousand waiting triggers, each with a hook of its own, exchange the API token once, not each.
Keyed by the credentials themselves, so a connection edited in Airflow (a rotated token) never meets the
tokens of its old credentials."""


def forget_tokens() -> None:
    """Forget every token this process holds (the next request of each hook obtains a new one)."""
    _tokens.clear()


class Credentials:
    """The tokens of one connection's settings: shared by the hooks of the process with the same credentials,
    renewed before they expire."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self._settings = settings
        s = settings
        key = (s.base_url, s.auth_type, s.token, s.login, s.client_id, s.client_secret, s.realm)
        if key not in _tokens and len(_tokens) >= MAX_CREDENTIALS:
            del _tokens[next(iter(_tokens))]
        self._held = _tokens.setdefault(key, {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(auth_type={self._settings.auth_type!r})"

    def bearer(self, *, private: bool) -> str | None:
        """The token to send now (to the private ``/wapi`` API: a JWT), or ``None`` until one is obtained."""
        if self._settings.auth_type == "token" and not private:
            return self._settings.token
        access = self._held.get("access")
        return access.value if access is not None and access.fresh() else None

    def token_request(self) -> ApiRequest:
        """The request that obtains an access token now: an exchange, a refresh or a login."""
        settings = self._settings
        if settings.auth_type != "password":
            return ApiRequest(
                "POST",
                TOKEN_EXCHANGE_PATH,
                json_body={},
                headers={"Authorization": f"Bearer {settings.token}"},
                authenticated=False,
            )
        form = {"client_id": settings.client_id}
        if settings.client_secret:
            form["client_secret"] = settings.client_secret
        refresh = self._held.get("refresh")
        if refresh is not None and refresh.fresh():
            form.update(grant_type="refresh_token", refresh_token=refresh.value)
        else:
            form.update(grant_type="password", username=settings.login or "", password=settings.token)
            form["scope"] = "openid"
        path = IDENTITY_GRANT_PATH.format(realm=settings.realm)
        return ApiRequest("POST", path, form=form, authenticated=False)

    def accept(self, request: ApiRequest, status_code: int, data: Any) -> None:
        """Keep the tokens of an answer to :meth:`token_request`."""
        now = _clock.now()
        if request.form is None:
            token = _read_token(request, status_code, data, "accessToken")
            claims = _jwt_claims(token)
            expiry, issued = _seconds(claims.get("exp"), None), _seconds(claims.get("iat"), now)
            # The lifetime by AtScale's own clock (exp - iat): AtScale's clock may run behind Airflow's.
            lifetime = DEFAULT_TOKEN_LIFETIME if expiry is None else expiry - issued
            self._held["access"] = _Token.issued(token, now, lifetime)
            return
        token = _read_token(request, status_code, data, "access_token")
        refresh = data.get("refresh_token")
        if isinstance(refresh, str) and refresh:
            self._held["refresh"] = _Token.issued(refresh, now, _seconds(data.get("refresh_expires_in"), 0.0))
        self._held["access"] = _Token.issued(
            token, now, _seconds(data.get("expires_in"), DEFAULT_TOKEN_LIFETIME)
        )

    def refused(self, request: ApiRequest, error: AtScaleHTTPError) -> None:
        """
        Take in the refusal of a :meth:`token_request`: a refused refresh token is forgotten (the next
        request logs in); a refused exchange or login is an :class:`AtScaleAuthError` naming the connection.
        """
        if request.form is not None and request.form.get("grant_type") == "refresh_token":
            log.info("AtScale refused the refresh token (HTTP %s); logging in again", error.http_status)
            self._held.pop("refresh", None)
            return
        if error.http_status not in (400, 401, 403):
            raise error
        raise AtScaleAuthError(
            f"AtScale refused to authenticate connection {self._settings.conn_id!r} "
            f"(auth_type {self._settings.auth_type!r}): {error}",
            method=error.method,
            path=error.path,
            status_code=error.http_status,
            atscale_message=error.atscale_message,
        ) from None

    def renews(self, *, private: bool) -> bool:
        """Whether authenticating again can change the token sent, so a 401 is worth one more try."""
        return self._settings.auth_type != "token" or private

    def invalidate(self) -> None:
        """Forget the access token (after a 401): the next request obtains a new one."""
        self._held.pop("access", None)


def _jwt_claims(token: str) -> dict[str, Any]:
    # The signature is not checked: the provider only reads when to renew a token AtScale gave it.
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def _read_token(request: ApiRequest, status_code: int, data: Any, key: str) -> str:
    token = data.get(key) if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise request.unexpected_answer(status_code, f"without {key!r}")
    return token


def _seconds(value: Any, default: float | None) -> Any:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default
