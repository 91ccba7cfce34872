"""
Who may call what: API tokens, the JWTs the emulator issues, and the identity broker's grants.

Three kinds of bearer token exist, as on a real AtScale:

- **API tokens** (``EmulatorConfig.api_tokens``): accepted by the public ``/v1`` API only.
- **Access tokens**: HS256 JWTs issued by ``POST /v1/token`` (for an API token) and by the identity broker's
  password and refresh grants. Accepted by the public API and by the Design Center's batch history.
- **Refresh tokens**: JWTs the grants issue beside access tokens; good only for the refresh grant.

Token lifetimes and ``iat``/``exp`` follow the emulator's clock shifted by
``FaultConfig.clock_offset_seconds``, as a server whose clock is off would write and check them.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import jwt

from airflow_provider_atscale.emulator.clock import Clock
from airflow_provider_atscale.emulator.config import PUBLIC_API_CLIENT_ID, ClientConfig, EmulatorConfig
from airflow_provider_atscale.emulator.errors import ApiError, OAuthError
from airflow_provider_atscale.emulator.faults import FaultInjector

TOKEN_ISSUER = "atscale-emulator"
ACCESS_TOKEN = "Bearer"
REFRESH_TOKEN = "Refresh"
API_TOKEN_SUBJECT = "api-token"
_JWT_ALGORITHM = "HS256"


class TokenIssuer:
    """
    Checks bearer tokens and issues JWTs for one emulated AtScale.

    :param config: The API tokens, users and clients accepted, and the refresh token lifetime.
    :param clock: The emulator's clock.
    :param faults: Source of the access token lifetime and the clock offset in effect.
    """

    def __init__(self, config: EmulatorConfig, clock: Clock, faults: FaultInjector) -> None:
        self.config = config
        self.clock = clock
        self.faults = faults
        self._lock = threading.Lock()
        # A fresh key per issuer (and per reset): tokens of one emulator run are worthless to another.
        self._signing_key = secrets.token_bytes(32)

    def reset(self) -> None:
        """Invalidate every token issued so far."""
        with self._lock:
            self._signing_key = secrets.token_bytes(32)

    def atscale_now(self) -> float:
        """Return the time on AtScale's clock: the emulator's clock shifted by the configured offset."""
        return self.clock.now() + self.faults.config.clock_offset_seconds

    # Checking tokens

    def is_api_token(self, token: str | None) -> bool:
        """
        Tell whether a token is one of the configured API tokens.

        :param token: Bearer token sent by a client.
        """
        if not token:
            return False
        return any(hmac.compare_digest(token, known) for known in self.config.api_tokens)

    def access_claims(self, token: str | None) -> dict[str, Any] | None:
        """
        Return the claims of a valid, unexpired access token this issuer made, else ``None``.

        :param token: Bearer token sent by a client.
        """
        return self._decode(token, ACCESS_TOKEN)

    def grants_public_api(self, token: str | None) -> bool:
        """
        Tell whether a token opens the public ``/v1`` API: an API token or an unexpired access token.

        :param token: Bearer token sent by a client.
        """
        return self.is_api_token(token) or self.access_claims(token) is not None

    # Issuing tokens

    def issue_access_token(
        self, subject: str, ttl_seconds: float | None = None, *, client_id: str = PUBLIC_API_CLIENT_ID
    ) -> str:
        """
        Issue an access token (a HS256 JWT with ``iat`` and ``exp`` claims).

        :param subject: Who the token is for.
        :param ttl_seconds: Lifetime in seconds; defaults to ``FaultConfig.token_ttl_seconds`` in effect.
        :param client_id: Client the token is issued to (its ``azp`` claim).
        """
        ttl = ttl_seconds if ttl_seconds is not None else self.faults.config.token_ttl_seconds
        return self._encode(subject, ACCESS_TOKEN, ttl, client_id)

    def exchange_api_token(self, token: str | None) -> dict[str, str]:
        """
        Return the body of ``POST /v1/token``: a short-lived access token for an API token.

        :param token: Bearer token sent by the client; must be an API token.
        :raises ApiError: 401 when the token is not an API token.
        """
        if not self.is_api_token(token):
            raise ApiError(401, "A valid API token is required to request an access token")
        return {"accessToken": self.issue_access_token(API_TOKEN_SUBJECT)}

    def token_grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        """
        Answer the identity broker token endpoint for the ``password`` and ``refresh_token`` grants.

        :param form: Form fields of the request.
        :raises OAuthError: For a missing field, an unknown client or grant, or invalid credentials.
        """
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
        client = self._check_client(form)
        if grant_type == "password":
            subject = self._check_password(form)
        elif grant_type == "refresh_token":
            subject = self._check_refresh_token(form)
        else:
            raise OAuthError(400, "unsupported_grant_type", f"Unsupported grant_type '{grant_type}'")
        ttl = self.faults.config.token_ttl_seconds
        refresh_ttl = self.config.refresh_token_ttl_seconds
        return {
            "access_token": self._encode(subject, ACCESS_TOKEN, ttl, client.id),
            "expires_in": int(ttl),
            "refresh_token": self._encode(subject, REFRESH_TOKEN, refresh_ttl, client.id),
            "refresh_expires_in": int(refresh_ttl),
            "token_type": "Bearer",
        }

    def _check_client(self, form: Mapping[str, str]) -> ClientConfig:
        client_id = form.get("client_id")
        if not client_id:
            raise OAuthError(400, "invalid_request", "Missing parameter: client_id")
        sent_secret = form.get("client_secret")
        for client in self.config.clients:
            if client.id != client_id:
                continue
            if client.secret is None or (
                sent_secret is not None and hmac.compare_digest(sent_secret, client.secret)
            ):
                return client
            break
        raise OAuthError(401, "invalid_client", "Invalid client or Invalid client credentials")

    def _check_password(self, form: Mapping[str, str]) -> str:
        username, password = form.get("username"), form.get("password")
        if not username or password is None:
            raise OAuthError(400, "invalid_request", "Missing parameter: username or password")
        for user in self.config.users:
            if user.username == username and hmac.compare_digest(user.password, password):
                return username
        raise OAuthError(401, "invalid_grant", "Invalid user credentials")

    def _check_refresh_token(self, form: Mapping[str, str]) -> str:
        token = form.get("refresh_token")
        if not token:
            raise OAuthError(400, "invalid_request", "Missing parameter: refresh_token")
        claims = self._decode(token, REFRESH_TOKEN)
        if claims is None:
            raise OAuthError(400, "invalid_grant", "Invalid refresh token or token is not active")
        return str(claims["sub"])

    def _encode(self, subject: str, token_type: str, ttl_seconds: float, client_id: str) -> str:
        now = self.atscale_now()
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "iat": int(now),
            # Rounded down so a token never outlives its configured lifetime.
            "exp": int(now + ttl_seconds),
            "jti": str(uuid.uuid4()),
            "typ": token_type,
            "azp": client_id,
        }
        with self._lock:
            key = self._signing_key
        return jwt.encode(claims, key, algorithm=_JWT_ALGORITHM)

    def _decode(self, token: str | None, token_type: str) -> dict[str, Any] | None:
        if not token:
            return None
        with self._lock:
            key = self._signing_key
        try:
            # Expiry is checked against AtScale's clock below, not the wall clock pyjwt would use.
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[_JWT_ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            return None
        if claims.get("typ") != token_type or not isinstance(claims.get("exp"), int):
            return None
        if self.atscale_now() >= claims["exp"]:
            return None
        return claims
