"""
Who may call what. As on a real AtScale, an API token opens the public ``/v1`` API only; access tokens (HS256
JWTs from ``POST /v1/token`` or the password and refresh grants) open it and batch history; refresh tokens
serve only the refresh grant. An API token is single-active: minting a new one revokes it and signs out the
access tokens exchanged for it. ``iat`` and ``exp`` follow AtScale's clock.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import jwt

from airflow_provider_atscale.emulator.clock import Clock
from airflow_provider_atscale.emulator.config import (
    CLIENT_SECRETS,
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    PUBLIC_API_CLIENT_ID,
    REFRESH_TOKEN_TTL_SECONDS,
    EmulatorConfig,
)
from airflow_provider_atscale.emulator.errors import ApiError
from airflow_provider_atscale.emulator.faults import FaultInjector

ACCESS_TOKEN = "Bearer"
REFRESH_TOKEN = "Refresh"
_JWT_ALGORITHM = "HS256"


class TokenIssuer:
    """
    Checks bearer tokens and issues JWTs for one emulated AtScale.

    :param config: The API tokens accepted at first.
    :param clock: The emulator's clock.
    :param faults: Source of the access token lifetime and the clock offset in effect.
    """

    def __init__(self, config: EmulatorConfig, clock: Clock, faults: FaultInjector) -> None:
        self.config = config
        self.clock = clock
        self.faults = faults
        self._lock = threading.Lock()
        self._signing_key = b""
        self._sessions: dict[str, str] = {}
        self.reset()

    def reset(self) -> None:
        """Accept the configured API tokens again, and no token issued so far."""
        with self._lock:
            # A fresh key: the tokens of one run (or one emulator) are worthless to the next.
            self._signing_key = secrets.token_bytes(32)
            # Each API token's session: the access tokens exchanged for it carry its id, so revoking the
            # token signs them out.
            self._sessions = {token: str(uuid.uuid4()) for token in self.config.api_tokens}

    def api_tokens(self) -> list[str]:
        """Return the API tokens accepted now, in the configured order, a rotated one in its old place."""
        with self._lock:
            return list(self._sessions)

    def rotate_api_token(self, old: str | None = None) -> str:
        """
        Mint a new API token in place of ``old``, which stops working with its exchanged access tokens.

        :param old: The API token to replace; defaults to the first accepted one.
        :return: The new API token.
        :raises KeyError: When ``old`` is not an accepted API token.
        """
        new = f"atscale-emulator-{secrets.token_urlsafe(24)}"
        with self._lock:
            old = next(iter(self._sessions), None) if old is None else old
            if old not in self._sessions:
                raise KeyError("Not an accepted API token: nothing to rotate")
            self._sessions = {
                (new if token == old else token): (str(uuid.uuid4()) if token == old else session)
                for token, session in self._sessions.items()
            }
        return new

    def is_api_token(self, token: str | None) -> bool:
        """
        Tell whether a token is an accepted API token.

        :param token: Bearer token sent by a client.
        """
        with self._lock:
            return token is not None and token in self._sessions

    def access_claims(self, token: str | None) -> dict[str, Any] | None:
        """
        Return the claims of a valid, unexpired access token of this issuer, else ``None``.

        :param token: Bearer token sent by a client.
        """
        return self._decode(token, ACCESS_TOKEN)

    def issue_access_token(self, subject: str, ttl_seconds: float | None = None) -> str:
        """
        Issue an access token, as the password grant would, without a request.

        :param subject: Who the token is for.
        :param ttl_seconds: Lifetime in seconds; defaults to ``FaultConfig.token_ttl_seconds`` in effect.
        """
        ttl = ttl_seconds if ttl_seconds is not None else self.faults.config.token_ttl_seconds
        return self._encode(subject, ACCESS_TOKEN, ttl, PUBLIC_API_CLIENT_ID)

    def exchange_api_token(self, token: str | None) -> dict[str, str]:
        """
        Return the body of ``POST /v1/token``: an access token for an API token.

        :param token: Bearer token sent by the client.
        :raises ApiError: 401 when the token is not an accepted API token.
        """
        with self._lock:
            session = self._sessions.get(token or "")
        if session is None:
            raise ApiError(401, "A valid API token is required to request an access token")
        ttl = self.faults.config.token_ttl_seconds
        return {"accessToken": self._encode("api-token", ACCESS_TOKEN, ttl, PUBLIC_API_CLIENT_ID, session)}

    def token_grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        """
        Answer the identity broker's token endpoint for the ``password`` and ``refresh_token`` grants.

        :param form: Form fields of the request.
        :raises ApiError: For a missing field, an unknown client or grant, or invalid credentials.
        """
        grant_type, client_id = form.get("grant_type"), form.get("client_id")
        if not grant_type or not client_id:
            raise ApiError(400, "Missing parameter: grant_type or client_id", "invalid_request")
        # A public client's secret is None: it needs none, whatever it sends.
        if client_id not in CLIENT_SECRETS or CLIENT_SECRETS[client_id] not in (
            None,
            form.get("client_secret"),
        ):
            raise ApiError(401, "Invalid client or Invalid client credentials", "invalid_client")
        if grant_type == "password":
            if form.get("username") != DEFAULT_USERNAME or form.get("password") != DEFAULT_PASSWORD:
                raise ApiError(401, "Invalid user credentials", "invalid_grant")
            subject = DEFAULT_USERNAME
        elif grant_type == "refresh_token":
            claims = self._decode(form.get("refresh_token"), REFRESH_TOKEN)
            if claims is None:
                raise ApiError(400, "Invalid refresh token or token is not active", "invalid_grant")
            subject = str(claims["sub"])
        else:
            raise ApiError(400, f"Unsupported grant_type '{grant_type}'", "unsupported_grant_type")
        ttl = self.faults.config.token_ttl_seconds
        return {
            "access_token": self._encode(subject, ACCESS_TOKEN, ttl, client_id),
            "expires_in": int(ttl),
            "refresh_token": self._encode(subject, REFRESH_TOKEN, REFRESH_TOKEN_TTL_SECONDS, client_id),
            "refresh_expires_in": int(REFRESH_TOKEN_TTL_SECONDS),
            "token_type": "Bearer",
        }

    def _encode(
        self, subject: str, token_type: str, ttl: float, client_id: str, session: str | None = None
    ) -> str:
        now = self.clock.now() + self.faults.config.clock_offset_seconds
        claims = {
            "iss": "atscale-emulator",
            "sub": subject,
            "iat": int(now),
            # Rounded down so a token never outlives its lifetime.
            "exp": int(now + ttl),
            "jti": str(uuid.uuid4()),
            "typ": token_type,
            "azp": client_id,
            # The API token's session, for an exchanged token: revoking the API token signs it out.
            **({"sid": session} if session is not None else {}),
        }
        with self._lock:
            key = self._signing_key
        return jwt.encode(claims, key, algorithm=_JWT_ALGORITHM)

    def _decode(self, token: str | None, token_type: str) -> dict[str, Any] | None:
        if not token:
            return None
        with self._lock:
            key, sessions = self._signing_key, set(self._sessions.values())
        try:
            # Expiry is checked below on AtScale's clock, not on the wall clock pyjwt would use.
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[_JWT_ALGORITHM], options={"verify_exp": False, "verify_iat": False}
            )
        except jwt.PyJWTError:
            return None
        now = self.clock.now() + self.faults.config.clock_offset_seconds
        valid = claims.get("typ") == token_type and isinstance(claims.get("exp"), int) and now < claims["exp"]
        revoked = "sid" in claims and claims["sid"] not in sessions
        return claims if valid and not revoked else None
