"""
The errors this provider raises.

One base, :class:`AtScaleError`, and beneath it one class for each kind of failure a caller would handle
differently::

    AtScaleError (AirflowException)
    ├── AtScaleConfigurationError   bad argument or connection setting; found before any request
    ├── AtScaleTransportError       no HTTP answer at all: refused, reset, timed out, TLS
    ├── AtScaleResponseError        an answer that is not what the API promises, or "success": false
    ├── AtScaleHTTPError            an HTTP error status
    │   ├── AtScaleBadRequestError      400
    │   ├── AtScaleAuthError            401, 403 (no Airflow retries)
    │   ├── AtScaleNotFoundError        404
    │   ├── AtScaleRateLimitError       429
    │   └── AtScaleServerError          5xx
    ├── AtScaleBuildFailedError     the batch ended failed, or in a status this provider does not know
    └── AtScaleWaitTimeoutError     the batch did not finish within the time allowed

No message ever carries a token: the hook builds them from the method, the API path, the status and
AtScale's own error text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_atscale._compat import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow_provider_atscale.batches import AggregateBatch


class AtScaleError(AirflowException):
    """Base class of every error this provider raises."""


class AtScaleConfigurationError(AtScaleError, AirflowFailException, ValueError):
    """
    An argument or a connection setting is invalid.

    Raised before any request is sent. The task fails without retries: the same input fails again.
    """


class AtScaleTransportError(AtScaleError):
    """
    The request got no HTTP answer: connection refused or reset, timeout, TLS failure.

    :param method: the HTTP method.
    :param path: the API path, without host or query.
    :param connection_opened: whether a connection was opened before the failure; if not, AtScale surely
        did not receive the request (and so started no build).
    """

    def __init__(self, message: str, *, method: str, path: str, connection_opened: bool = True) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.connection_opened = connection_opened


class AtScaleResponseError(AtScaleError):
    """
    AtScale answered, but not as its API promises: a body that is not JSON, a missing field, or
    ``"success": false``.

    :param method: the HTTP method.
    :param path: the API path, without host or query.
    :param status_code: the HTTP status of the answer, kept as ``http_status`` (``status_code`` means
        another thing to Airflow).
    """

    def __init__(self, message: str, *, method: str, path: str, status_code: int) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.http_status = status_code


class AtScaleHTTPError(AtScaleError):
    """
    AtScale answered with an HTTP error status.

    :param method: the HTTP method.
    :param path: the API path, without host or query.
    :param status_code: the HTTP status, kept as ``http_status`` (``status_code`` means another thing
        to Airflow).
    :param atscale_message: AtScale's own error text from the body, if any.
    """

    def __init__(
        self, message: str, *, method: str, path: str, status_code: int, atscale_message: str | None
    ) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.http_status = status_code
        self.atscale_message = atscale_message
        self.retry_after: float | None = None
        """Seconds the server asked to wait (``Retry-After``), if it said."""


class AtScaleBadRequestError(AtScaleHTTPError):
    """400: AtScale rejected the request's parameters or body."""


class AtScaleAuthError(AtScaleHTTPError, AirflowFailException):
    """
    401 or 403 (after authenticating again): the token is missing, wrong, expired or revoked, or its user
    lacks a role (``aggregates_manage``). The task fails without Airflow's retries: the same credentials fail
    again; fix the connection and clear the task.
    """


class AtScaleNotFoundError(AtScaleHTTPError):
    """404: the catalog, model or endpoint does not exist (or the model is not deployed)."""


class AtScaleRateLimitError(AtScaleHTTPError):
    """429: AtScale asks the client to slow down."""


class AtScaleServerError(AtScaleHTTPError):
    """5xx: AtScale failed or is unavailable."""


class AtScaleBuildFailedError(AtScaleError):
    """
    The batch ended in a failed status, or in a status this provider does not know.

    :param batch: the batch as last seen.
    """

    def __init__(self, message: str, batch: AggregateBatch) -> None:
        super().__init__(message)
        self.batch = batch


class AtScaleWaitTimeoutError(AtScaleError):
    """
    The batch did not finish within the time allowed. It goes on in AtScale: the API cannot cancel it.

    :param batch_id: the batch waited on.
    """

    def __init__(self, message: str, batch_id: str) -> None:
        super().__init__(message)
        self.batch_id = batch_id


_HTTP_ERROR_CLASSES: dict[int, type[AtScaleHTTPError]] = {
    400: AtScaleBadRequestError,
    401: AtScaleAuthError,
    403: AtScaleAuthError,
    404: AtScaleNotFoundError,
    429: AtScaleRateLimitError,
}


def http_error_class(status_code: int) -> type[AtScaleHTTPError]:
    """The error class for an HTTP error status."""
    if status_code >= 500:
        return AtScaleServerError
    return _HTTP_ERROR_CLASSES.get(status_code, AtScaleHTTPError)
