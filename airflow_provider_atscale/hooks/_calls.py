"""
The hook's calls to AtScale, as flows (``hooks/_http.py``): which requests each sends, in which order, and
what the answers mean — a build never started twice, a batch read, a running build found, the catalogs — over
:func:`send`, the one loop that sends a request with its token and retries, and reads its answer.

A *call* (with any token fetched on its behalf) has one :class:`RetryBudget`: each distinct request is sent at
most ``1 + max_retries`` times (re-posts and a resend after a 401 included), and the call sleeps at most
``retry_max_wait`` seconds in all, every attempt counted and every sleep charged before it happens. What may
be retried is decided by the rules of :mod:`~airflow_provider_atscale.errors`. Waits grow exponentially with
full jitter, or follow the server's ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from airflow_provider_atscale import _clock
from airflow_provider_atscale._inputs import BatchRef, BuildRequest, ConnectionSettings
from airflow_provider_atscale.batches import CLOCK_SKEW, AggregateBatch, BatchStatusClass
from airflow_provider_atscale.errors import (
    AtScaleAuthError,
    AtScaleError,
    AtScaleHTTPError,
    AtScaleNotFoundError,
    clip,
    is_ambiguous,
    may_retry,
)
from airflow_provider_atscale.hooks._auth import Credentials
from airflow_provider_atscale.hooks._http import ApiRequest, Flow, RawResponse, Send, Sleep, answer_error

TRIGGER_BUILD_PATH = "/v1/aggregates-batch/catalogs/{catalog_id}/models/{model_id}"
BATCH_HISTORY_PATH = "/wapi/p/aggregate/batch-history"
"""A private Design Center API, newest first, paged by ``page`` and ``limit``: it wants a JWT."""
CATALOGS_PATH = "/v1/catalogs"
HISTORY_FIRST_PAGE_SIZE = 3
"""A poll asks for the model's newest batches first: the batch waited on is almost always among them (a page
of 3 is about 1.2 KB; one of 50, 19 KB)."""
HISTORY_PAGE_SIZE = 50
HISTORY_MAX_PAGES = 10
"""Beyond the first page, batch history is searched in at most this many pages (500 batches)."""
RUNNING_BATCH_SEARCH_SIZE = 20
"""How many of a model's newest batches are searched for a running one."""
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 60.0

log = logging.getLogger(__name__)


class ServerState:
    """What one hook knows of its AtScale server: the connection's settings, its tokens, and what the server
    was found to serve (learned once, kept for later calls)."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.credentials = Credentials(settings)
        self.batch_history: bool | None = None
        """``None`` until tried; ``False`` once the server refused batch history."""
        self.instances_path: str | None = None
        """The aggregate instances path the server answered."""

    def budget(self) -> RetryBudget:
        """A full budget, for a new call."""
        return RetryBudget(self.settings.max_retries, self.settings.retry_max_wait)


class RetryBudget:
    """The attempts (``1 + max_retries`` per distinct request) and the sleep (``max_wait`` seconds in all) one
    call may still spend."""

    __slots__ = ("attempts", "failures", "last_failure", "max_retries", "max_wait", "waited")

    def __init__(self, max_retries: int, max_wait: float) -> None:
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.attempts: dict[Any, int] = {}
        self.waited = 0.0
        # The last failure of each request: raised again if the call asks for it once its attempts are spent;
        # and the call's last failure, for a token request refused its attempts by what came before it.
        self.failures: dict[Any, AtScaleError] = {}
        self.last_failure: AtScaleError | None = None

    def has_attempt(self, key: Any) -> bool:
        """Whether the request of this :func:`attempt_key` may be sent (again)."""
        return self.attempts.get(key, 0) <= self.max_retries

    def wait_before_retry(self, request: ApiRequest, error: AtScaleError) -> float | None:
        """
        Seconds to wait before sending ``request`` again after ``error``, charged to the budget; ``None`` when
        it must not be retried: the failure will not pass, or the budget cannot pay for another attempt.
        """
        key = attempt_key(request)
        self.failures[key] = self.last_failure = error
        if not may_retry(error, idempotent=request.idempotent) or not self.has_attempt(key):
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


def attempt_key(request: ApiRequest) -> tuple[Any, ...]:
    """What makes two requests the same, for counting attempts: method, path, query, and grant type."""
    grant = request.form.get("grant_type") if request.form is not None else None
    return request.method, request.path, tuple(sorted(request.params.items())), grant


def send(server: ServerState, budget: RetryBudget, request: ApiRequest) -> Flow[tuple[int, Any]]:
    """
    Send one request until it succeeds or may not be sent again; return ``(status, json)``, or raise the last
    failure. It carries the connection's bearer token, obtained first where none is fresh; a 401 on a token
    that authenticating again can change drops the token and sends once more.
    """
    key, credentials = attempt_key(request), server.credentials
    reauthenticated = False
    while True:
        if not budget.has_attempt(key):
            # This call sent the request as often as it may (a token asked for again, say): its last failure
            # stands, or, where every attempt was answered, the token each brought was stale on arrival.
            raise (
                budget.failures.get(key)
                or budget.last_failure
                or request.unexpected_answer(200, "with a token already expired by this host's clock")
            )
        headers = request.headers
        if request.authenticated:
            while (token := credentials.bearer(private=request.private)) is None:
                token_request = credentials.token_request()
                try:
                    status_code, data = yield from send(server, budget, token_request)
                except AtScaleHTTPError as error:
                    credentials.refused(token_request, error)
                    continue
                credentials.accept(token_request, status_code, data)
                budget.last_failure = None
            headers = {**headers, "Authorization": f"Bearer {token}"}
        attempt = budget.attempts[key] = budget.attempts.get(key, 0) + 1
        try:
            response: RawResponse = yield Send(request, headers)
            return read_answer(request, response, server.settings)
        except AtScaleError as error:
            if (
                isinstance(error, AtScaleAuthError)
                and error.http_status == 401
                and request.authenticated
                and not reauthenticated
                and credentials.renews(private=request.private)
                and budget.has_attempt(key)
            ):
                # An expired or revoked token: drop it, authenticate again and send once more.
                log.info("AtScale %s answered 401; authenticating again", request.describe())
                budget.last_failure = error
                credentials.invalidate()
                reauthenticated = True
                continue
            wait = budget.wait_before_retry(request, error)
            if wait is None:
                raise
            # The error names the request: "AtScale GET /wapi/... failed with HTTP 503: ...".
            log.warning(
                "%s; attempt %d of %d in %.1fs", clip(error), attempt + 1, budget.max_retries + 1, wait
            )
            yield Sleep(wait)


def trigger_build(server: ServerState, build: BuildRequest) -> Flow[AggregateBatch]:
    """
    Post a build, never starting two. A failure after which AtScale surely started nothing (no connection,
    429, 503) is retried by :func:`send`; after an ambiguous one (read timeout, dropped connection, 500, 502,
    504), batch history is checked for a running batch of this build type created since the POST (allowing
    :data:`CLOCK_SKEW`): found, it is this POST's; else the build is posted again, within the call's budget.
    Where history cannot be read, the error is raised rather than risk a second build.
    """
    budget = server.budget()
    request = ApiRequest(
        "POST",
        TRIGGER_BUILD_PATH.format(
            catalog_id=quote(build.catalog_id, safe=""), model_id=quote(build.model_id, safe="")
        ),
        params={"isFullBuild": "true" if build.full_build else "false"},
        # {} for no overrides, as public clients send.
        json_body={"gracePeriodOverrides": dict(build.grace_period_overrides)},
        idempotent=False,
    )
    posted_at = datetime.fromtimestamp(_clock.now() - CLOCK_SKEW, tz=timezone.utc)
    while True:
        try:
            status_code, data = yield from send(server, budget, request)
        except AtScaleError as error:
            # Only a failure of the POST itself (not of a token fetched for it) may have started a build.
            if getattr(error, "path", None) != request.path or not is_ambiguous(error):
                raise
            if not budget.has_attempt(attempt_key(request)):
                raise
            log.warning(
                "AtScale %s may or may not have started a build (%s); checking batch history",
                request.describe(),
                error,
            )
            try:
                batch = yield from _running_batch(server, budget, build, since=posted_at, until=None)
            except AtScaleError as history_error:
                log.error(
                    "Whether %s started a build cannot be checked (batch history: %s); not posting again",
                    request.describe(),
                    history_error,
                )
                raise error from None
            if batch is not None:
                log.warning("AtScale did start batch %s; taking it instead of posting again", batch.id)
                return batch
            log.warning("AtScale started no build for %s; posting again", request.describe())
            continue
        try:
            return AggregateBatch.from_api(data["batch"])
        except (TypeError, KeyError, ValueError) as error:
            raise request.unexpected_answer(status_code, f"without a valid batch object: {error}") from None


def read_batch(server: ServerState, ref: BatchRef) -> Flow[AggregateBatch]:
    """
    A batch's current state: from batch history while the server serves it (the batch's own status);
    otherwise, and whenever reading history fails in a way that is not about the token, derived from its
    aggregate instances (``hooks/_instances.py``).
    """
    from airflow_provider_atscale.hooks import _instances

    budget = server.budget()
    if server.batch_history is not False:
        try:
            batch = yield from _find_in_history(server, budget, ref)
        except AtScaleError as error:
            _history_failed(server, error, "following batches through their aggregate instances")
        else:
            server.batch_history = True
            if batch is not None:
                return batch
    status, seen = yield from _instances.batch_status(server, budget, ref)
    if server.batch_history and not seen:
        raise AtScaleNotFoundError(
            f"AtScale batch {ref.batch_id} of model {ref.model_id} is neither among the model's newest "
            f"{HISTORY_PAGE_SIZE * HISTORY_MAX_PAGES} batches nor has aggregate instances",
            method="GET",
            path=BATCH_HISTORY_PATH,
            status_code=404,
            atscale_message=None,
        )
    return AggregateBatch(id=ref.batch_id, catalog_id=ref.catalog_id, model_id=ref.model_id, status=status)


def _find_in_history(server: ServerState, budget: RetryBudget, ref: BatchRef) -> Flow[AggregateBatch | None]:
    """The batch in its model's history: the newest few first, then pages of 50 while there are more."""
    pages = [
        (1, HISTORY_FIRST_PAGE_SIZE),
        *((page, HISTORY_PAGE_SIZE) for page in range(1, HISTORY_MAX_PAGES + 1)),
    ]
    for page, size in pages:
        request = _history_request(ref.catalog_id, ref.model_id, page, size)
        status_code, data = yield from send(server, budget, request)
        entries = _page(request, status_code, data)
        for entry in entries:
            if isinstance(entry, dict) and entry.get("id") == ref.batch_id:
                return _batch(request, status_code, entry)
        total = data.get("total")
        if len(entries) < size or page * size >= (total if isinstance(total, int) else len(entries)):
            break
    return None


def find_running_batch(
    server: ServerState, build: BuildRequest, *, since: datetime, until: datetime | None
) -> Flow[AggregateBatch | None]:
    """
    The newest aggregate build of this model and build type still in progress, created in a window; ``None``
    where there is none, or where batch history cannot be read (then the caller starts a build as usual). A
    refused token is raised: nothing else about history stops a build from being started.
    """
    if server.batch_history is False:
        return None
    try:
        return (yield from _running_batch(server, server.budget(), build, since=since, until=until))
    except AtScaleError as error:
        _history_failed(server, error, "a running build cannot be looked for")
        return None


def _running_batch(
    server: ServerState, budget: RetryBudget, build: BuildRequest, *, since: datetime, until: datetime | None
) -> Flow[AggregateBatch | None]:
    """:func:`find_running_batch`, raising when history cannot be read."""
    request = _history_request(build.catalog_id, build.model_id, 1, RUNNING_BATCH_SEARCH_SIZE)
    status_code, data = yield from send(server, budget, request)
    server.batch_history = True
    for entry in _page(request, status_code, data):
        batch = _batch(request, status_code, entry)
        if (
            batch.is_aggregate_batch
            and batch.status_class is BatchStatusClass.IN_PROGRESS
            and batch.is_full_build is build.full_build
            and batch.create_date is not None
            and batch.create_date >= since
            and (until is None or batch.create_date <= until)
        ):
            return batch
    return None


def list_catalogs(server: ServerState) -> Flow[list[dict[str, Any]]]:
    """The catalogs the connection sees, each with its ``models``; some editions wrap them in ``data``."""
    request = ApiRequest("GET", CATALOGS_PATH)
    status_code, data = yield from send(server, server.budget(), request)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise request.unexpected_answer(status_code, "without a list of catalogs")
    return data


def _history_failed(server: ServerState, error: AtScaleError, consequence: str) -> None:
    """
    Note a failed read of batch history: a refused token (a 401 of its exchange or grant) is raised; any
    other 4xx but 429 means history is not served to this caller (remembered, said once); anything else
    passes, this call going without history.
    """
    if isinstance(error, AtScaleAuthError) and error.http_status == 401 and error.path != BATCH_HISTORY_PATH:
        raise error
    if isinstance(error, AtScaleHTTPError) and 400 <= error.http_status < 500 and error.http_status != 429:
        server.batch_history = False
        log.warning(
            "AtScale does not serve batch history to this connection (%s): %s", clip(error), consequence
        )
    else:
        log.info("AtScale batch history could not be read (%s): %s for now", clip(error), consequence)


def _history_request(catalog_id: str, model_id: str, page: int, limit: int) -> ApiRequest:
    params = {"catalogId": catalog_id, "modelId": model_id, "page": str(page), "limit": str(limit)}
    return ApiRequest("GET", BATCH_HISTORY_PATH, params=params, private=True)


def _page(request: ApiRequest, status_code: int, data: Any) -> list[Any]:
    """The entries of a paged answer, ``{"data": [...], ...}``."""
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise request.unexpected_answer(status_code, "without a list under 'data'")
    return entries


def _batch(request: ApiRequest, status_code: int, entry: Any) -> AggregateBatch:
    try:
        return AggregateBatch.from_api(entry)
    except ValueError as error:
        raise request.unexpected_answer(status_code, f"with a malformed batch: {error}") from None


def read_answer(request: ApiRequest, response: RawResponse, settings: ConnectionSettings) -> tuple[int, Any]:
    """
    Check an answer and return ``(status, json)``; an error status, a body that is not JSON or says
    ``"success": false`` raises the error it means (:func:`~._http.answer_error`).
    """
    try:
        parsed = json.loads(response.body)
    except ValueError:
        # An empty body is no JSON, and no text either.
        if response.body.strip():
            raise answer_error(request, response, settings) from None
        parsed = None
    if response.status_code >= 400 or (isinstance(parsed, dict) and parsed.get("success") is False):
        raise answer_error(request, response, settings)
    return response.status_code, parsed
