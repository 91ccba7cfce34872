"""Errors raised by the emulator state and the one error body shape every API endpoint answers with."""

from __future__ import annotations

from typing import Any

SERVICE_UNAVAILABLE_MESSAGE = "Service temporarily unavailable, try again later"
TOO_MANY_REQUESTS_MESSAGE = "Too many requests, slow down"
INTERNAL_ERROR_MESSAGE = "Internal server error"


def error_body(code: int, message: str) -> dict[str, Any]:
    """
    Build the error body of the API endpoints: ``{"success": false, "error": {"code": ..., "message": ...}}``.

    :param code: HTTP status code, repeated in the body.
    :param message: What went wrong, naming the offending value.
    """
    return {"success": False, "error": {"code": code, "message": message}}


class ApiError(Exception):
    """
    A request the API refuses; rendered with :func:`error_body`.

    :param code: HTTP status code.
    :param message: Human-readable reason.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class OAuthError(Exception):
    """
    A refused request to the identity broker token endpoint, rendered OAuth style:
    ``{"error": ..., "error_description": ...}``.

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
        return {"error": self.error, "error_description": self.description}
