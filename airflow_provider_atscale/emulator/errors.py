"""
Errors the emulator answers, in the shape of whichever of AtScale's services serves the path:

- the public ``/v1`` API (NestJS), as seen on a live host:
  ``{"statusCode": 404, "message": "...", "error": {"cause": "NotFoundException"}}``;
- the identity broker (Keycloak, ``/auth/...``), OAuth style:
  ``{"error": "invalid_grant", "error_description": "Invalid user credentials"}``;
- the Design Center's private API (``/wapi/...``), whose error bodies no public material shows: a Spring Boot
  shape, which is a guess chosen to differ from the other two:
  ``{"status": 401, "error": "Unauthorized", "message": "...", "path": "/wapi/..."}``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

FAULT_MESSAGES = {
    429: "ThrottlerException: Too Many Requests",
    500: "Internal server error",
    503: "Service temporarily unavailable, try again later",
}
# RFC 6749 error codes for failures that are not about the grant itself.
_OAUTH_ERRORS = {429: "temporarily_unavailable", 500: "server_error", 503: "temporarily_unavailable"}


def error_body_for_path(path: str, code: int, message: str, oauth_error: str | None = None) -> dict[str, Any]:
    """
    Build the error body the service serving ``path`` answers with.

    :param path: The request path; it decides the service.
    :param code: HTTP status code.
    :param message: What went wrong, naming the offending value.
    :param oauth_error: The identity broker's OAuth error code, e.g. ``invalid_grant``; by default one
        that fits ``code``.
    """
    if path.startswith("/wapi/"):
        return {"status": code, "error": HTTPStatus(code).phrase, "message": message, "path": path}
    if path.startswith("/auth/"):
        return {
            "error": oauth_error or _OAUTH_ERRORS.get(code, "invalid_request"),
            "error_description": message,
        }
    # NestJS names its exceptions after the status (NotFoundException), but for its rate limiter's.
    cause = HTTPStatus(code).phrase.title().replace(" ", "") + "Exception"
    return {
        "statusCode": code,
        "message": message,
        "error": {"cause": "ThrottlerException" if code == 429 else cause},
    }


class ApiError(Exception):
    """
    A request the emulated AtScale refuses, answered in the shape of the service that was asked.

    :param code: HTTP status code.
    :param message: Human-readable reason, naming the offending value.
    :param oauth_error: For the identity broker, the OAuth error code, e.g. ``invalid_grant``.
    """

    def __init__(self, code: int, message: str, oauth_error: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.oauth_error = oauth_error
