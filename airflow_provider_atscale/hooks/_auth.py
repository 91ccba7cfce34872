"""
The bearer tokens of a connection, in each ``auth_type``: which token to send, which request obtains one,
and what a token answer means. Pure state, no transport: :class:`~._session.ApiSession` sends the requests.

- ``token``: the connection's API token is the bearer token of the public ``/v1`` API. The private Design
  Center API (``/wapi``: batch history) refuses raw API tokens, so for it the API token is exchanged for a
  short-lived JWT, as in ``token_exchange`` (some ``/v1`` endpoints refuse that JWT, so ``/v1`` keeps the
  raw token).
- ``token_exchange``: the API token is exchanged (``POST /v1/token``) for a short-lived access token, cached
  and renewed shortly before it expires (its JWT ``exp``, else an hour after it was issued).
- ``password``: the Identity Broker's password grant with the connection's login and password; its refresh
  token is used while it lasts, then the user logs in again.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any, NamedTuple

from airflow_provider_atscale import _clock
from airflow_provider_atscale._flow import ApiRequest
from airflow_provider_atscale.errors import AtScaleAuthError, AtScaleHTTPError
from airflow_provider_atscale.hooks import _endpoints
from airflow_provider_atscale.hooks._settings import ConnectionSettings

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
triggerer's thousand waiting triggers, each with a hook of its own, exchange the API token once, not each."""


def forget_tokens() -> None:
    """Forget every token this process holds (the next request of each hook obtains a new one)."""
    _tokens.clear()


class Credentials:
    """
    The tokens of one connection: shared by the hooks of the process with the same credentials, renewed
    before they expire.

    :param settings: the connection's settings.
    """

    def __init__(self, settings: ConnectionSettings) -> None:
        self._settings = settings
        key = (
            settings.base_url,
            settings.auth_type,
            settings.token,
            settings.login,
            settings.client_id,
            settings.client_secret,
            settings.realm,
        )
        self._held = _tokens.setdefault(key, {})

    @property
    def _access(self) -> _Token | None:
        return self._held.get("access")

    @_access.setter
    def _access(self, token: _Token | None) -> None:
        self._set("access", token)

    @property
    def _refresh(self) -> _Token | None:
        return self._held.get("refresh")

    @_refresh.setter
    def _refresh(self, token: _Token | None) -> None:
        self._set("refresh", token)

    def _set(self, kind: str, token: _Token | None) -> None:
        if token is None:
            self._held.pop(kind, None)
        else:
            self._held[kind] = token

    def __repr__(self) -> str:
        return f"{type(self).__name__}(auth_type={self._settings.auth_type!r})"

    def bearer(self, *, private: bool) -> str | None:
        """
        The token to send now, or ``None`` when one must be obtained first (:meth:`token_request`).

        :param private: the request goes to the private ``/wapi`` API, which wants a JWT.
        """
        if self._settings.auth_type == "token" and not private:
            return self._settings.token
        return self._access.value if self._access is not None and self._access.fresh() else None

    def token_request(self) -> ApiRequest:
        """The request that obtains an access token now: an exchange, a refresh or a login."""
        settings = self._settings
        if settings.auth_type != "password":
            return _endpoints.token_exchange(settings.token)
        form = {"client_id": settings.client_id}
        if settings.client_secret:
            form["client_secret"] = settings.client_secret
        if self._refresh is not None and self._refresh.fresh():
            return _endpoints.identity_grant(
                settings.realm, {**form, "grant_type": "refresh_token", "refresh_token": self._refresh.value}
            )
        return _endpoints.identity_grant(
            settings.realm,
            {
                **form,
                "grant_type": "password",
                "username": settings.login or "",
                "password": settings.token,
                "scope": "openid",
            },
        )

    def accept(self, request: ApiRequest, status_code: int, data: Any) -> None:
        """Keep the tokens of an answer to :meth:`token_request`."""
        now = _clock.now()
        if request.form is None:
            token = _endpoints.read_token(request, status_code, data, "accessToken")
            expiry = jwt_expiry(token)
            self._access = _Token.issued(
                token, now, DEFAULT_TOKEN_LIFETIME if expiry is None else expiry - now
            )
            return
        token = _endpoints.read_token(request, status_code, data, "access_token")
        refresh = data.get("refresh_token")
        if isinstance(refresh, str) and refresh:
            self._refresh = _Token.issued(refresh, now, _seconds(data.get("refresh_expires_in"), 0.0))
        self._access = _Token.issued(token, now, _seconds(data.get("expires_in"), DEFAULT_TOKEN_LIFETIME))

    def refused(self, request: ApiRequest, error: AtScaleHTTPError) -> None:
        """
        Take in the refusal of a :meth:`token_request`: a refused refresh token is forgotten (the next
        request logs in); a refused exchange or login is an :class:`AtScaleAuthError` naming the connection.
        """
        if request.form is not None and request.form.get("grant_type") == "refresh_token":
            log.info("AtScale refused the refresh token (HTTP %s); logging in again", error.http_status)
            self._refresh = None
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
        self._access = None


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
