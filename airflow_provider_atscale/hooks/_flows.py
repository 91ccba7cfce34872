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
SUSPECT_ROW_CAP = 10
"""An answer of this many rows or more may be truncated: a sibling endpoint of the aggregate instances was
seen answering at most 10 rows whatever page size was asked."""
OPEN_INSTANCE_STATUSES = ("pending", "inprogress")
"""Statuses of an aggregate not built yet: ``pending`` is documented, ``inprogress`` seen in flight."""
FAILED_INSTANCE_STATUSES = ("invalid", "deleted")
"""The documented instance statuses of an aggregate that will not be built."""
RUNNING_BATCH_SEARCH_SIZE = 20
"""How many of a model's newest batches are searched for a running one to attach to."""
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
        self._unauthorized_hint = _protocol.unauthorized_hint(settings.conn_id, settings.auth_type)

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
                token = yield from self.authenticator.bearer_token(self.call, private=request.private)
                headers["Authorization"] = f"Bearer {token}"
            response: _protocol.RawResponse = yield Send(request, headers)
            if (
                response.status_code == 401
                and request.authenticated
                and attempt == 1
                and self.authenticator.renews(private=request.private)
            ):
                # An expired or revoked token: drop it, authenticate again and retry once.
                log.info("AtScale %s answered 401; authenticating again", request.describe())
                self.authenticator.invalidate()
                continue
            return response.status_code, _protocol.read_json(
                request, response, self.settings.secrets, self._unauthorized_hint
            )
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
    otherwise the build is posted again (within the retry policy's count). Where batch history cannot be
    read nothing can be checked, and the error is raised rather than risk a second build.
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
            try:
                batch = yield from _running_batch_in_history(
                    api, catalog_id, model_id, full_build=full_build, created_since=posted_at
                )
            except AtScaleError as history_error:
                # Nothing can be checked: posting again could start a second build. Fail instead.
                log.error(
                    "Whether %s started a build cannot be checked (batch history: %s); not posting again",
                    request.describe(),
                    history_error,
                )
                raise error from None
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

    From batch history while the server serves it (the batch's own status). Otherwise, and whenever history
    fails, derived from the batch's aggregate instances (see :func:`batch_status_from_instances`).
    """
    capabilities = api.capabilities
    if capabilities.batch_history is not False:
        try:
            batch = yield from _find_in_history(api, catalog_id, model_id, batch_id)
        except AtScaleError as error:
            _history_failed(error, capabilities, "following batches through their aggregate instances")
        else:
            capabilities.batch_history = True
            if batch is not None:
                return batch
    status, seen = yield from batch_status_from_instances(api, catalog_id, model_id, batch_id)
    if capabilities.batch_history and not seen:
        raise AtScaleNotFoundError(
            f"AtScale batch {batch_id} of model {model_id} is neither among the model's newest "
            f"{HISTORY_PAGE_SIZE * HISTORY_MAX_PAGES} batches nor has aggregate instances",
            method="GET",
            path=_protocol.BATCH_HISTORY_PATH,
            status_code=404,
            atscale_message=None,
        )
    return AggregateBatch(id=batch_id, catalog_id=catalog_id, model_id=model_id, status=status)


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


@dataclass(frozen=True)
class InstanceListing:
    """
    A batch's aggregate instances as the server listed them.

    :param instances: the instances of the batch that were seen.
    :param complete: whether the listing is known to hold every instance of the batch; ``False`` when the
        server's answers may have been truncated (see :func:`list_aggregate_instances`).
    """

    instances: list[AggregateInstance]
    complete: bool


def list_aggregate_instances(
    api: ApiClient, catalog_id: str, model_id: str, batch_id: str
) -> Flow[InstanceListing]:
    """
    A batch's aggregate instances, from whichever instances path the server serves.

    The endpoint documents no paging and no total, and a sibling endpoint was seen ignoring ``page`` and
    ``size`` and answering 10 rows. So pages are read until one is short: fewer rows than
    :data:`SUSPECT_ROW_CAP`, or fewer than asked once the server has answered a full page. A page that
    brings no instance not seen before means the server ignores paging: the listing is then marked
    incomplete rather than taken for the whole.
    """
    capabilities = api.capabilities
    paths = (capabilities.instances_path,) if capabilities.instances_path else _protocol.INSTANCES_PATHS
    for index, path in enumerate(paths):
        try:
            listing = yield from _instances_at(api, path, catalog_id, model_id, batch_id)
        except AtScaleNotFoundError:
            if index == len(paths) - 1:
                raise
            continue
        capabilities.instances_path = path
        return listing
    raise AssertionError("unreachable: the last path either returned or raised")


def _instances_at(
    api: ApiClient, path: str, catalog_id: str, model_id: str, batch_id: str
) -> Flow[InstanceListing]:
    instances: dict[str, AggregateInstance] = {}
    seen: set[str] = set()
    size_honoured = False
    for page in range(1, INSTANCES_MAX_PAGES + 1):
        request = _protocol.aggregate_instances_request(
            batch_id, catalog_id, model_id, page=page, size=INSTANCES_PAGE_SIZE, path=path
        )
        status_code, data = yield from api.call(request)
        found, _ = _protocol.parse_aggregate_instances(request, status_code, data)
        new = [i for i in found if i.id not in seen]
        seen.update(i.id for i in found)
        # Filter: some servers ignore the batchId parameter and answer every instance of the model.
        instances.update((i.id, i) for i in new if i.batch_id in (None, batch_id))
        # Short: fewer rows than any cap seen in the wild, or fewer than asked from a server that has
        # already answered a page as large as asked.
        if len(found) < SUSPECT_ROW_CAP or (size_honoured and len(found) < INSTANCES_PAGE_SIZE):
            return InstanceListing(list(instances.values()), complete=True)
        if not new:
            break  # the same rows again: paging is ignored, and the answer may be truncated
        size_honoured = size_honoured or len(found) == INSTANCES_PAGE_SIZE
    return InstanceListing(list(instances.values()), complete=False)


def batch_status_from_instances(
    api: ApiClient, catalog_id: str, model_id: str, batch_id: str
) -> Flow[tuple[str, bool]]:
    """
    A batch's status derived from its aggregate instances, for servers that do not serve batch history.

    Any failed instance means ``failed``; any not yet built, or none at all, ``inprogress``; ``done`` only
    when every instance is built and the listing is known to be complete. When every instance seen is built
    but the listing may be truncated, the precise questions are asked with the documented ``status`` filter
    (any of this batch's instances pending, in progress, invalid or deleted?); a server that ignores that
    filter cannot answer them, and the batch stays ``inprogress`` (it is never called done from a list that
    may be partial).

    :return: the status, and whether any instance of the batch was seen.
    """
    listing = yield from list_aggregate_instances(api, catalog_id, model_id, batch_id)
    status = status_from_instances(listing.instances)
    if status != "done" or listing.complete:
        return status, bool(listing.instances)
    path = api.capabilities.instances_path or _protocol.INSTANCES_PATHS[0]
    for asked in OPEN_INSTANCE_STATUSES + FAILED_INSTANCE_STATUSES:
        request = _protocol.aggregate_instances_request(
            batch_id, catalog_id, model_id, page=1, size=INSTANCES_PAGE_SIZE, path=path, status=asked
        )
        status_code, data = yield from api.call(request)
        found, _ = _protocol.parse_aggregate_instances(request, status_code, data)
        if any(instance.status.strip().lower() != asked for instance in found):
            log.warning(
                "AtScale's aggregate instances endpoint ignores the status filter and may truncate its "
                "answers: whether batch %s has finished cannot be told from its instances",
                batch_id,
            )
            return "inprogress", True
        if any(instance.batch_id in (None, batch_id) for instance in found):
            return ("failed" if asked in FAILED_INSTANCE_STATUSES else "inprogress"), True
    return "done", True


def find_running_batch(
    api: ApiClient,
    catalog_id: str,
    model_id: str,
    *,
    full_build: bool,
    created_since: datetime,
    created_until: datetime | None = None,
) -> Flow[AggregateBatch | None]:
    """
    The newest aggregate build of this model and build type still in progress, created in a window.

    ``None`` where there is none, or where batch history cannot be read (then nothing can be found, and
    the caller starts a build as usual: nothing about history ever stops a build from being started).
    """
    if api.capabilities.batch_history is False:
        return None
    try:
        return (
            yield from _running_batch_in_history(
                api,
                catalog_id,
                model_id,
                full_build=full_build,
                created_since=created_since,
                created_until=created_until,
            )
        )
    except AtScaleError as error:
        _history_failed(error, api.capabilities, "a running build cannot be found to attach to")
        return None


def _running_batch_in_history(
    api: ApiClient,
    catalog_id: str,
    model_id: str,
    *,
    full_build: bool,
    created_since: datetime,
    created_until: datetime | None = None,
) -> Flow[AggregateBatch | None]:
    """:func:`find_running_batch`, raising when history cannot be read."""
    request = _protocol.batch_history_request(catalog_id, model_id, page=1, limit=RUNNING_BATCH_SEARCH_SIZE)
    status_code, data = yield from api.call(request)
    api.capabilities.batch_history = True
    batches, _ = _protocol.parse_batch_history(request, status_code, data)
    for batch in batches:
        if (
            batch.is_aggregate_batch
            and batch.status_class is BatchStatusClass.IN_PROGRESS
            and batch.is_full_build is full_build
            and batch.create_date is not None
            and batch.create_date >= created_since
            and (created_until is None or batch.create_date <= created_until)
        ):
            return batch
    return None


def _history_failed(error: AtScaleError, capabilities: ApiCapabilities, consequence: str) -> None:
    """
    Note a failed read of batch history.

    A refusal (an HTTP 4xx other than 429, for history or for the JWT it needs) means the server does not
    serve history to this caller: remembered for the hook's life and said once. Anything else (5xx, no
    answer, an answer not as documented) is taken as passing: this call goes without history.
    """
    if isinstance(error, AtScaleHTTPError) and 400 <= error.http_status < 500 and error.http_status != 429:
        capabilities.batch_history = False
        log.warning(
            "AtScale does not serve batch history to this connection (%s): %s", _short(error), consequence
        )
    else:
        log.info("AtScale batch history could not be read (%s): %s for now", _short(error), consequence)


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 300 else text[:300] + "..."


def list_catalogs(api: ApiClient) -> Flow[list[dict[str, Any]]]:
    """The catalogs the connection sees, each with its models."""
    request = _protocol.list_catalogs_request()
    status_code, data = yield from api.call(request)
    return _protocol.parse_catalogs(request, status_code, data)
