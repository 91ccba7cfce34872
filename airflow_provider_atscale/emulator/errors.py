"""
Errors raised by the emulator and the error bodies of the three services it imitates.

AtScale is several services behind one host, and each answers errors in its own shape:

- the public ``/v1`` API (a NestJS service), as seen on a live host::

      {"statusCode": 404, "message": "Model 'x' not found ...", "error": {"cause": "NotFoundException"}}

- the identity broker (Keycloak, ``/auth/...``), OAuth style::

      {"error": "invalid_grant", "error_description": "Invalid user credentials"}

- the Design Center's private API (``/wapi/...``): no public material shows its error bodies. The emulator
  answers in the shape of a Spring Boot service, which is a guess, chosen to differ from the other two::

      {"status": 401, "error": "Unauthorized", "message": "...", "path": "/wapi/p/aggregate/batch-history"}
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

SERVICE_UNAVAILABLE_MESSAGE = "Service temporarily unavailable, try again later"
TOO_MANY_REQUESTS_MESSAGE = "ThrottlerException: Too Many Requests"
INTERNAL_ERROR_MESSAGE = "Internal server error"

DESIGN_CENTER_PREFIX = "/wapi/"
IDENTITY_BROKER_PREFIX = "/auth/"

# NestJS's built-in exception classes; 429 comes from its rate limiter, @nestjs/throttler.
NEST_EXCEPTIONS = {
    400: "BadRequestException",
    401: "UnauthorizedException",
    403: "ForbiddenException",
    404: "NotFoundException",
    405: "MethodNotAllowedException",
    409: "ConflictException",
    429: "ThrottlerException",
    500: "InternalServerErrorException",
    503: "ServiceUnavailableException",
}
# RFC 6749 error codes for failures that are not about the grant itself.
_OAUTH_ERRORS = {429: "temporarily_unavailable", 500: "server_error", 503: "temporarily_unavailable"}


def error_body(code: int, message: str) -> dict[str, Any]:
    """
    Build an error body of the public ``/v1`` API:
    ``{"statusCode": 404, "message": "...", "error": {"cause": "NotFoundException"}}``.

    :param code: HTTP status code, repeated in the body.
    :param message: What went wrong, naming the offending value.
    """
    return {
        "statusCode": code,
        "message": message,
        "error": {"cause": NEST_EXCEPTIONS.get(code, "HttpException")},
    }


def design_center_error_body(code: int, message: str, path: str) -> dict[str, Any]:
    """
    Build an error body of the Design Center API (``/wapi/...``). Its real shape is undocumented: this
    Spring Boot shape is a guess.

    :param code: HTTP status code, repeated in the body.
    :param message: What went wrong.
    :param path: The request path, repeated in the body.
    """
    return {"status": code, "error": _reason(code), "message": message, "path": path}


def oauth_error_body(error: str, description: str) -> dict[str, str]:
    """
    Build an error body of the identity broker: ``{"error": ..., "error_description": ...}``.

    :param error: OAuth error code, e.g. ``invalid_grant``.
    :param description: Human-readable reason.
    """
    return {"error": error, "error_description": description}


def error_body_for_path(path: str, code: int, message: str) -> dict[str, Any]:
    """
    Build the error body the service serving ``path`` answers with.

    :param path: The request path; it decides the service.
    :param code: HTTP status code.
    :param message: What went wrong.
    """
    if path.startswith(DESIGN_CENTER_PREFIX):
        return design_center_error_body(code, message, path)
    if path.startswith(IDENTITY_BROKER_PREFIX):
        return oauth_error_body(_OAUTH_ERRORS.get(code, "invalid_request"), message)
    return error_body(code, message)


def _reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"


class ApiError(Exception):
    """
    A request the API refuses; rendered in the shape of the service that was asked
    (:func:`error_body_for_path`).

    :param code: HTTP status code.
    :param message: Human-readable reason, naming the offending value.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class OAuthError(Exception):
    """
    A refused request to the identity broker token endpoint, rendered OAuth style.

    :param code: HTTP status code.
    :param error: OAuth error code, e.g. ``invalid_grant``.
    :param description: Human-readable reason.
    """

    def __init__(self, code: int, error: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        """Return the OAuth error body."""
        return oauth_error_body(self.error, self.description)
