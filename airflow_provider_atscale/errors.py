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

No message carries a token: messages name the method, the API path, the status and AtScale's own text.
Below the classes, the one set of rules for what a failure means: whether it may pass (:func:`may_pass`),
may be sent again as it is (:func:`may_retry`), or may have started a build all the same
(:func:`is_ambiguous`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow_provider_atscale.batches import AggregateBatch


class AtScaleError(AirflowException):
    """Base class of every error this provider raises."""


class AtScaleConfigurationError(AtScaleError, AirflowFailException, ValueError):
    """An argument or a connection setting is invalid: raised before any request; the task fails without
    retries, since the same input fails again."""


class AtScaleTransportError(AtScaleError):
    """The request got no HTTP answer (refused, reset, timed out, TLS); ``connection_opened``: whether a
    connection had opened (if not, AtScale surely started nothing)."""

    def __init__(self, message: str, *, method: str, path: str, connection_opened: bool = True) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.connection_opened = connection_opened


class AtScaleResponseError(AtScaleError):
    """AtScale answered (with ``http_status``: ``status_code`` means another thing to Airflow), but not as its
    API promises: a body that is not JSON, a missing field, or ``"success": false``."""

    def __init__(self, message: str, *, method: str, path: str, status_code: int) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.http_status = status_code


class AtScaleHTTPError(AtScaleError):
    """
    AtScale answered with an HTTP error status (``http_status``), its own error text (``atscale_message``) and
    any ``Retry-After`` (``retry_after``, seconds).
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


class AtScaleBadRequestError(AtScaleHTTPError):
    """400: AtScale rejected the request's parameters or body."""


class AtScaleAuthError(AtScaleHTTPError, AirflowFailException):
    """401 or 403 after authenticating again: the token is wrong, expired or revoked, or its user lacks a role
    (``aggregates_manage``). No Airflow retries: the same credentials fail again."""


class AtScaleNotFoundError(AtScaleHTTPError):
    """404: the catalog, model or endpoint does not exist (or the model is not deployed)."""


class AtScaleRateLimitError(AtScaleHTTPError):
    """429: AtScale asks the client to slow down."""


class AtScaleServerError(AtScaleHTTPError):
    """5xx: AtScale failed or is unavailable."""


class AtScaleBuildFailedError(AtScaleError):
    """The batch (``batch``, as last seen) ended failed, or in a status this provider does not know."""

    def __init__(self, message: str, batch: AggregateBatch) -> None:
        super().__init__(message)
        self.batch = batch


class AtScaleWaitTimeoutError(AtScaleError):
    """The batch (``batch_id``) did not finish in the time allowed; it goes on in AtScale (no cancel API)."""

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


RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses that may pass, for any request."""
NOT_STARTED_STATUSES = frozenset({429, 503})
"""Statuses by which AtScale surely did not start a build: the POST may be sent again as it is."""
MAX_TEXT = 300
"""The longest piece of foreign text (AtScale's error text, a transport's message) a message quotes."""


def may_pass(error: BaseException) -> bool:
    """Whether a failure may pass if the same thing is tried later: no answer, 429 or 5xx."""
    return isinstance(error, (AtScaleTransportError, AtScaleRateLimitError, AtScaleServerError))


def may_retry(error: BaseException, *, idempotent: bool) -> bool:
    """Whether a failed request may be sent again as it is; the POST that starts a build (not ``idempotent``)
    only when AtScale surely started nothing (no connection opened, 429, 503)."""
    if isinstance(error, AtScaleTransportError):
        return idempotent or not error.connection_opened
    if isinstance(error, AtScaleHTTPError):
        if idempotent:
            return error.http_status in RETRYABLE_STATUSES or error.http_status == 500
        return error.http_status in NOT_STARTED_STATUSES
    return False


def is_ambiguous(error: BaseException) -> bool:
    """Whether a failed POST may have started a build all the same: it reached AtScale, without a clear no."""
    if isinstance(error, AtScaleTransportError):
        return error.connection_opened
    return isinstance(error, AtScaleHTTPError) and error.http_status in (500, 502, 504)


def clip(text: object) -> str:
    """``text`` (or ``str()`` of it) cut to :data:`MAX_TEXT` characters, for a message or a log line."""
    text = str(text)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."
