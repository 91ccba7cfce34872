"""
Sending one request: authentication, retries and re-authentication, in one loop (:meth:`ApiCall.send`).

A *logical call* — a build, a poll, a listing, with any token fetched on its behalf — is one
:class:`ApiCall`, and all its requests share one :class:`RetryBudget`: each distinct request is sent at most
``1 + max_retries`` times (a build's re-posts after an ambiguous failure and a resend after a 401 included),
and the call sleeps at most ``retry_max_wait`` seconds in all. The bounds hold by construction: every
attempt is counted and every sleep is charged before it happens, in the one place that sends.

A request is retried when its failure may pass: no answer at all, or HTTP 429, 502, 503 or 504 (and 500 for
requests that are safe to repeat). The POST that starts a build is not safe to repeat: it is retried only
when AtScale surely did not start a build (the connection never opened, 429, 503); other failures of it are
ambiguous and left to the caller (``_operations.trigger_aggregate_build``). Waits grow exponentially with
full jitter; a ``Retry-After`` from the server (seconds or an HTTP date) is honoured instead.

No I/O here: the loop yields :class:`~airflow_provider_atscale._flow.Send` and
:class:`~airflow_provider_atscale._flow.Sleep` to its driver.
"""

from __future__ import annotations

import json
import logging
import random
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

from airflow_provider_atscale import _clock
from airflow_provider_atscale._flow import ApiRequest, Flow, RawResponse, Send, Sleep
from airflow_provider_atscale.errors import (
    AtScaleError,
    AtScaleHTTPError,
    AtScaleTransportError,
    http_error_class,
)
from airflow_provider_atscale.hooks._auth import Credentials
from airflow_provider_atscale.hooks._settings import ConnectionSettings

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses that may pass, for any request."""
RETRYABLE_IDEMPOTENT_STATUSES = RETRYABLE_STATUSES | {500}
"""Statuses that may pass, for requests safe to repeat."""
NOT_STARTED_STATUSES = frozenset({429, 503})
"""Statuses by which AtScale surely did not start a build: the POST may be sent again as it is."""
AMBIGUOUS_STATUSES = frozenset({500, 502, 504})
"""Statuses after which a build may or may not have started."""
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 60.0

log = logging.getLogger(__name__)


def is_retryable(error: BaseException, *, idempotent: bool) -> bool:
    """Whether a failed request may be sent again as it is."""
    if isinstance(error, AtScaleTransportError):
        return idempotent or not error.connection_opened
    if isinstance(error, AtScaleHTTPError):
        statuses = RETRYABLE_IDEMPOTENT_STATUSES if idempotent else NOT_STARTED_STATUSES
        return error.http_status in statuses
    return False


def is_ambiguous(error: BaseException) -> bool:
    """Whether a failed POST may have started a build all the same: it reached AtScale, without a clear no."""
    if isinstance(error, AtScaleTransportError):
        return error.connection_opened
    return isinstance(error, AtScaleHTTPError) and error.http_status in AMBIGUOUS_STATUSES


class RetryBudget:
    """
    The attempts and the waiting one logical call may still spend.

    :param max_retries: retries of each distinct request after its first attempt.
    :param max_wait: seconds the whole call may sleep between attempts.
    """

    __slots__ = ("attempts", "failures", "max_retries", "max_wait", "waited")

    def __init__(self, max_retries: int, max_wait: float) -> None:
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.attempts: dict[Any, int] = {}
        self.waited = 0.0
        # The last failure of each request: raised again if the call asks for it once its attempts are spent.
        self.failures: dict[Any, AtScaleError] = {}

    def has_attempt(self, key: Any) -> bool:
        """Whether the request of this :attr:`ApiRequest.key` may be sent (again)."""
        return self.attempts.get(key, 0) <= self.max_retries

    def count(self, key: Any) -> int:
        """Count an attempt of the request of this key; returns its number, from 1."""
        number = self.attempts[key] = self.attempts.get(key, 0) + 1
        return number

    def wait_before_retry(self, request: ApiRequest, key: Any, error: AtScaleError) -> float | None:
        """
        Seconds to wait before sending ``request`` again after ``error``, charged to the budget; ``None`` when
        it must not be retried: the failure will not pass, or the budget cannot pay for another attempt.
        """
        self.failures[key] = error
        if not is_retryable(error, idempotent=request.idempotent) or not self.has_attempt(key):
            return None
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, (int, float)):
            wait = float(retry_after)
        else:
            ceiling = min(MAX_BACKOFF, INITIAL_BACKOFF * 2 ** (self.attempts[key] - 1))
            wait = random.uniform(ceiling / 2, ceiling)
        if self.waited + wait > self.max_wait:
            return None
        self.waited += wait
        return wait


class ApiCapabilities:
    """
    What this AtScale server was found to serve, learned once per hook and kept for later calls.

    :param batch_history: ``None`` until tried; ``False`` once the server refused batch history.
    :param instances_path: the aggregate instances path the server answered.
    """

    __slots__ = ("batch_history", "instances_path")

    def __init__(self, batch_history: bool | None = None, instances_path: str | None = None) -> None:
        self.batch_history = batch_history
        self.instances_path = instances_path


class ApiSession:
    """
    What one hook keeps between its calls — the connection's settings and tokens, what the server was found
    to serve — and where each logical call begins (:meth:`begin`).

    :param settings: the connection's settings.
    """

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.credentials = Credentials(settings)
        self.capabilities = ApiCapabilities()
        self.unauthorized_hint = unauthorized_hint(settings.conn_id, settings.auth_type)

    def begin(self) -> ApiCall:
        """A new logical call, with a full retry budget."""
        return ApiCall(self, RetryBudget(self.settings.max_retries, self.settings.retry_max_wait))


class ApiCall:
    """
    One logical call: its requests share one :class:`RetryBudget`.

    :param session: the hook's session.
    :param budget: the call's budget.
    """

    def __init__(self, session: ApiSession, budget: RetryBudget) -> None:
        self.session = session
        self.budget = budget

    @property
    def capabilities(self) -> ApiCapabilities:
        """What the server was found to serve."""
        return self.session.capabilities

    def send(self, request: ApiRequest) -> Flow[tuple[int, Any]]:
        """
        Send one request until it succeeds or may not be sent again, and return ``(status, json)``.

        :raises AtScaleError: the last failure, once it will not pass or the budget is spent.
        """
        session, budget, key = self.session, self.budget, request.key
        reauthenticated = False
        while True:
            if not budget.has_attempt(key):
                # This call sent the request as often as it may (a token asked for again, say): its last
                # failure stands.
                raise budget.failures[key]
            headers = dict(request.headers)
            if request.authenticated:
                token = yield from self._bearer(private=request.private)
                headers["Authorization"] = f"Bearer {token}"
            attempt = budget.count(key)
            try:
                response: RawResponse = yield Send(request, headers)
                if (
                    response.status_code == 401
                    and request.authenticated
                    and not reauthenticated
                    and session.credentials.renews(private=request.private)
                    and budget.has_attempt(key)
                ):
                    # An expired or revoked token: drop it, authenticate again and send once more.
                    log.info("AtScale %s answered 401; authenticating again", request.describe())
                    session.credentials.invalidate()
                    reauthenticated = True
                    continue
                return response.status_code, read_json(
                    request, response, session.settings.secrets, session.unauthorized_hint
                )
            except AtScaleError as error:
                wait = budget.wait_before_retry(request, key, error)
                if wait is None:
                    raise
                # The error names the request: "AtScale GET /wapi/... failed with HTTP 503: ...".
                log.warning(
                    "%s; attempt %d of %d in %.1fs", _short(error), attempt + 1, budget.max_retries + 1, wait
                )
                yield Sleep(wait)

    def _bearer(self, *, private: bool) -> Flow[str]:
        """The token to send, obtained first (with this call's budget) where none is fresh."""
        credentials = self.session.credentials
        while (token := credentials.bearer(private=private)) is None:
            request = credentials.token_request()
            try:
                status_code, data = yield from self.send(request)
            except AtScaleHTTPError as error:
                credentials.refused(request, error)
                continue
            credentials.accept(request, status_code, data)
        return token


# Reading every answer: its status, its JSON, AtScale's error text


# Keys under which AtScale and the proxies in front of it put an error's text.
_ERROR_TEXT_KEYS = ("message", "error_description", "errorMessage", "detail", "error", "errors")
_MAX_ERROR_TEXT = 500

_STATUS_HINTS = {
    401: "check the connection's API token (AtScale API tokens expire after 90 days)",
    403: "the token's user needs the aggregates_manage role, and the model must be deployed",
}


def unauthorized_hint(conn_id: str, auth_type: str) -> str:
    """
    What to check after a 401 that survived re-authentication, naming the connection.

    :param conn_id: the Airflow connection id.
    :param auth_type: the connection's ``auth_type``.
    """
    if auth_type == "password":
        return (
            f"connection {conn_id!r}, auth_type 'password': AtScale refused the token it issued for the "
            "connection's user; check the user's roles, or whether an administrator signed its session out"
        )
    return (
        f"connection {conn_id!r}, auth_type {auth_type!r}: AtScale refused its API token. API tokens expire "
        "after 90 days; minting a new token for the same user revokes the previous one; an administrator may "
        "have signed its session out (Identity Broker, Sessions). Put a current API token in the "
        "connection's password"
    )


def read_json(
    request: ApiRequest,
    response: RawResponse,
    secrets: tuple[str, ...] = (),
    unauthorized: str | None = None,
) -> Any:
    """
    Check an answer's status and return its JSON body.

    :param request: the request that was answered.
    :param response: the answer.
    :param secrets: strings to scrub from any error text (the token), should a server echo them.
    :param unauthorized: the hint for a 401 (see :func:`unauthorized_hint`), if the caller knows better.
    :raises AtScaleHTTPError: for an error status, the subclass for that status.
    :raises AtScaleResponseError: for a body that is not JSON or says ``"success": false``.
    """
    status_code, body = response.status_code, response.body
    if status_code >= 400:
        raise http_error(request, response, secrets, unauthorized)
    parsed = _parse(body)
    if parsed is _NOT_JSON:
        raise request.unexpected_answer(
            status_code, f"with a body that is not JSON: {_scrub(_text(body), secrets)!r}"
        )
    if isinstance(parsed, dict) and parsed.get("success") is False:
        message = _scrub(_error_text(parsed) or "no error text", secrets)
        raise request.unexpected_answer(status_code, f'with "success": false: {message}')
    return parsed


def http_error(
    request: ApiRequest, response: RawResponse, secrets: tuple[str, ...], unauthorized: str | None = None
) -> AtScaleHTTPError:
    """Build the error for an HTTP error status, carrying AtScale's own error text and any Retry-After."""
    status_code, body = response.status_code, response.body
    parsed = _parse(body)
    atscale_message = _error_text(parsed) if parsed is not _NOT_JSON else (_text(body) or None)
    if atscale_message is not None:
        atscale_message = _scrub(atscale_message, secrets)
    message = f"AtScale {request.describe()} failed with HTTP {status_code}"
    message += f": {atscale_message}" if atscale_message else " and no error text"
    if hint := (unauthorized if status_code == 401 and unauthorized else _STATUS_HINTS.get(status_code)):
        message += f" ({hint})"
    error = http_error_class(status_code)(
        message,
        method=request.method,
        path=request.path,
        status_code=status_code,
        atscale_message=atscale_message,
    )
    error.retry_after = parse_retry_after(response.headers.get("retry-after"))
    return error


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """
    Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date.

    :param value: the header's value, if any.
    :param now: the current time in seconds since the epoch (default: the provider's clock).
    :return: non-negative seconds, or ``None`` when absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, moment.timestamp() - (_clock.now() if now is None else now))


class _NotJson:
    pass


_NOT_JSON: Any = _NotJson()


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        # An empty body is no JSON, and no text either.
        return None if not body.strip() else _NOT_JSON


def _error_text(parsed: Any) -> str | None:
    """Find the error's text in a JSON error body of any of the shapes seen in the wild."""
    if isinstance(parsed, str):
        return _clip(parsed) if parsed.strip() else None
    if isinstance(parsed, list):
        texts = [text for item in parsed if (text := _error_text(item))]
        return _clip("; ".join(texts)) if texts else None
    if isinstance(parsed, dict):
        for key in _ERROR_TEXT_KEYS:
            if key in parsed and (text := _error_text(parsed[key])):
                return text
    return None


def _text(body: bytes) -> str:
    return _clip(body.decode("utf-8", errors="replace").strip())


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "..."


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 200 else text[:200] + "..."
