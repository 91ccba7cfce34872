"""
Every operation on the API (a request with its authentication and retries; paging; fall-backs), written
once for the sync and the async transport.

Each operation is a generator ("flow") that yields what it needs from its driver: :class:`Send` (send this
request with these headers; the driver sends back a :class:`~._protocol.RawResponse` or throws an
``AtScaleTransportError``) or :class:`~._retry.Sleep`. The hook drives flows with requests and
``time.sleep``, the trigger's path with httpx and ``asyncio.sleep``: the logic cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from airflow_provider_atscale import _clock
from airflow_provider_atscale.batches import (
    AggregateBatch,
    AggregateInstance,
    BatchStatusClass,
    status_from_instances,
)
from airflow_provider_atscale.errors import AtScaleError, AtScaleHTTPError, AtScaleNotFoundError
from airflow_provider_atscale.hooks import _protocol, _retry
from airflow_provider_atscale.hooks._auth import Authenticator
from airflow_provider_atscale.hooks._settings import ConnectionSettings

T = TypeVar("T")
Flow = Generator[Any, Any, T]

HISTORY_PAGE_SIZE = 50
HISTORY_MAX_PAGES = 10
"""Batch history is searched in at most this many pages (500 batches) for a batch id."""
INSTANCES_PAGE_SIZE = 100
INSTANCES_MAX_PAGES = 20
RUNNING_BATCH_SEARCH_SIZE = 20
"""How many of a model's newest batches are searched for a running one to attach to."""
# Statuses by which a server says it does not serve batch history to this caller.
HISTORY_UNAVAILABLE_STATUSES = frozenset({403, 404, 405})
RECENT_BATCH_TOLERANCE = timedelta(seconds=5)
"""After an ambiguous POST failure, a batch created this long before the POST still counts as its own
(clock skew between worker and AtScale)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Send:
    """
    A flow's request to its driver: send this request with these headers, answer the raw response.

    :param request: the request.
    :param headers: its headers, the bearer token included; never shown in a repr.
    """

    request: _protocol.ApiRequest
    headers: Mapping[str, str] = field(repr=False)


class ApiClient:
    """
    Sends requests with authentication and retries, as flows: one per hook, so tokens are cached across calls.

    :param settings: the connection's settings.
    """

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.authenticator = Authenticator(settings)
        self.policy = _retry.RetryPolicy(max_retries=settings.max_retries, max_wait=settings.retry_max_wait)
        self.capabilities = ApiCapabilities()

    def call(self, request: _protocol.ApiRequest) -> Flow[tuple[int, Any]]:
        """Send one request, retrying what may pass, and return ``(status, json)`` or raise AtScaleError."""
        return (
            yield from _retry.with_retries(
                self.policy,
                idempotent=request.idempotent,
                describe=request.describe(),
                attempt=lambda: self._attempt(request),
            )
        )

    def _attempt(self, request: _protocol.ApiRequest) -> Flow[tuple[int, Any]]:
        for attempt in (1, 2):
            headers = dict(request.headers)
            if request.authenticated:
                token = yield from self.authenticator.bearer_token(self.call)
                headers["Authorization"] = f"Bearer {token}"
            response: _protocol.RawResponse = yield Send(request, headers)
            if response.status_code == 401 and request.authenticated and attempt == 1:
                # An expired or revoked token: drop it, authenticate again and retry once.
                log.info("AtScale %s answered 401; authenticating again", request.describe())
                self.authenticator.invalidate()
                continue
            return response.status_code, _protocol.read_json(request, response, self.settings.secrets)
        raise AssertionError("unreachable: the second attempt returns or raises")


@dataclass
class ApiCapabilities:
    """
    What this AtScale server was found to serve, learned once per hook and kept for later calls.

    :param batch_history: ``None`` until tried; ``False`` once the server refused batch history.
    :param instances_path: the aggregate instances path the server answered.
    """

    batch_history: bool | None = None
    instances_path: str | None = None


def trigger_aggregate_build(
    api: ApiClient, catalog_id: str, model_id: str, request: _protocol.ApiRequest, *, full_build: bool
) -> Flow[AggregateBatch]:
    """
    Post a build, never starting two.

    A failure after which AtScale surely did not start a build (no connection, 429, 503) is retried by
    :meth:`ApiClient.call`. After an ambiguous one (the request reached AtScale but no clear answer came
    back: read timeout, dropped connection, 500, 502, 504), the model's batch history is checked for a batch
    of this build type created since the POST; if there is one, it is this POST's batch and is returned,
    otherwise the build is posted again (within the retry policy's count). Where the server does not serve
    batch history nothing can be checked, and the error is raised rather than risk a second build.
    """
    posted_at = datetime.fromtimestamp(_clock.now(), tz=timezone.utc) - RECENT_BATCH_TOLERANCE
    for attempt in range(api.policy.max_retries + 1):
        try:
            status_code, data = yield from api.call(request)
        except AtScaleError as error:
            if not _retry.is_ambiguous(error) or attempt == api.policy.max_retries:
                raise
            log.warning(
                "AtScale %s may or may not have started a build (%s); checking batch history",
                request.describe(),
                error,
            )
            batch = yield from find_running_batch(
                api, catalog_id, model_id, full_build=full_build, created_since=posted_at
            )
            if api.capabilities.batch_history is False:
                # Nothing can be checked: posting again could start a second build. Fail instead.
                log.error(
                    "AtScale does not serve batch history, so whether %s started a build cannot be checked; "
                    "not posting again",
                    request.describe(),
                )
                raise
            if batch is not None:
                log.warning("AtScale did start batch %s; attaching to it instead of posting again", batch.id)
                return batch
            log.warning("AtScale started no build for %s; posting again", request.describe())
            continue
        return _protocol.parse_trigger_response(request, status_code, data)
    raise AssertionError("unreachable: the last attempt returns or raises")


def get_aggregate_batch(
    api: ApiClient, catalog_id: str, model_id: str, batch_id: str
) -> Flow[AggregateBatch]:
    """
    A batch's current state.

    From batch history where the server serves it (the batch's own status). Otherwise, derived from the
    batch's aggregate instances: all built is ``done``, any failed is ``failed``, else ``inprogress``.
    """
    capabilities = api.capabilities
    if capabilities.batch_history is not False:
        try:
            batch = yield from _find_in_history(api, catalog_id, model_id, batch_id)
        except AtScaleHTTPError as error:
            _history_unavailable(error, capabilities, "following batches through their aggregate instances")
        else:
            capabilities.batch_history = True
            if batch is not None:
                return batch
    instances = yield from list_aggregate_instances(api, batch_id, catalog_id, model_id)
    if capabilities.batch_history and not instances:
        raise AtScaleNotFoundError(
            f"AtScale batch {batch_id} of model {model_id} is neither among the model's newest "
            f"{HISTORY_PAGE_SIZE * HISTORY_MAX_PAGES} batches nor has aggregate instances",
            method="GET",
            path=_protocol.BATCH_HISTORY_PATH,
            status_code=404,
            atscale_message=None,
        )
    return AggregateBatch(
        id=batch_id, catalog_id=catalog_id, model_id=model_id, status=status_from_instances(instances)
    )


def _find_in_history(
    api: ApiClient, catalog_id: str, model_id: str, batch_id: str
) -> Flow[AggregateBatch | None]:
    for page in range(1, HISTORY_MAX_PAGES + 1):
        request = _protocol.batch_history_request(catalog_id, model_id, page=page, limit=HISTORY_PAGE_SIZE)
        status_code, data = yield from api.call(request)
        batch, on_page, total = _protocol.find_in_history_page(request, status_code, data, batch_id)
        if batch is not None:
            return batch
        if on_page < HISTORY_PAGE_SIZE or page * HISTORY_PAGE_SIZE >= total:
            break
    return None


def list_aggregate_instances(
    api: ApiClient, batch_id: str, catalog_id: str, model_id: str
) -> Flow[list[AggregateInstance]]:
    """Every aggregate instance of a batch, page by page, from whichever instances path the server serves."""
    capabilities = api.capabilities
    paths = (capabilities.instances_path,) if capabilities.instances_path else _protocol.INSTANCES_PATHS
    for index, path in enumerate(paths):
        try:
            instances = yield from _instances_at(api, path, batch_id, catalog_id, model_id)
        except AtScaleNotFoundError:
            if index == len(paths) - 1:
                raise
            continue
        capabilities.instances_path = path
        return instances
    raise AssertionError("unreachable: the last path either returned or raised")


def _instances_at(
    api: ApiClient, path: str, batch_id: str, catalog_id: str, model_id: str
) -> Flow[list[AggregateInstance]]:
    instances: list[AggregateInstance] = []
    for page in range(1, INSTANCES_MAX_PAGES + 1):
        request = _protocol.aggregate_instances_request(
            batch_id, catalog_id, model_id, page=page, size=INSTANCES_PAGE_SIZE, path=path
        )
        status_code, data = yield from api.call(request)
        found, total = _protocol.parse_aggregate_instances(request, status_code, data)
        # Filter: some servers ignore the batchId parameter and answer every instance of the model.
        instances.extend(i for i in found if i.batch_id in (None, batch_id))
        if len(found) < INSTANCES_PAGE_SIZE or page * INSTANCES_PAGE_SIZE >= total:
            break
    return instances


def find_running_batch(
    api: ApiClient, catalog_id: str, model_id: str, *, full_build: bool, created_since: datetime
) -> Flow[AggregateBatch | None]:
    """
    The newest batch of this model and build type that is still in progress and was created since a time.

    ``None`` where there is none, or where the server does not serve batch history (then nothing can be
    found, and the caller starts a build as usual).
    """
    capabilities = api.capabilities
    if capabilities.batch_history is False:
        return None
    request = _protocol.batch_history_request(catalog_id, model_id, page=1, limit=RUNNING_BATCH_SEARCH_SIZE)
    try:
        status_code, data = yield from api.call(request)
    except AtScaleHTTPError as error:
        _history_unavailable(error, capabilities, "a running build cannot be found to attach to")
        return None
    capabilities.batch_history = True
    batches, _ = _protocol.parse_batch_history(request, status_code, data)
    for batch in batches:
        if (
            batch.status_class is BatchStatusClass.IN_PROGRESS
            and batch.is_full_build is full_build
            and batch.create_date is not None
            and batch.create_date >= created_since
        ):
            return batch
    return None


def _history_unavailable(error: AtScaleHTTPError, capabilities: ApiCapabilities, consequence: str) -> None:
    """Remember that the server does not serve batch history (and say so once), or re-raise the error."""
    if error.http_status not in HISTORY_UNAVAILABLE_STATUSES:
        raise error
    capabilities.batch_history = False
    log.warning(
        "AtScale does not serve batch history to this caller (HTTP %s): %s", error.http_status, consequence
    )


def list_catalogs(api: ApiClient) -> Flow[list[dict[str, Any]]]:
    """The catalogs the connection sees, each with its models."""
    request = _protocol.list_catalogs_request()
    status_code, data = yield from api.call(request)
    return _protocol.parse_catalogs(request, status_code, data)
