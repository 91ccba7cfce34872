"""
What the hook does with the API, as flows: which requests to send, in which order, and what their answers
mean — starting a build without ever starting two, finding a batch, reading its aggregate instances,
listing catalogs. Each function takes one :class:`~._session.ApiCall` (the logical call whose requests share
one retry budget) and yields only what :meth:`~._session.ApiCall.send` yields; the hook drives it, sync or
async.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from airflow_provider_atscale import _clock
from airflow_provider_atscale._flow import Flow
from airflow_provider_atscale._validation import BatchRef, BuildRequest
from airflow_provider_atscale.batches import (
    AggregateBatch,
    AggregateInstance,
    BatchStatusClass,
    status_from_instances,
)
from airflow_provider_atscale.errors import AtScaleError, AtScaleHTTPError, AtScaleNotFoundError
from airflow_provider_atscale.hooks import _endpoints
from airflow_provider_atscale.hooks._session import ApiCall, ApiCapabilities, is_ambiguous

HISTORY_FIRST_PAGE_SIZE = 3
"""A poll asks for the model's newest batches first: the batch waited on is almost always among them (a
page of 3 is about 1.2 KB; one of 50, 19 KB)."""
HISTORY_PAGE_SIZE = 50
HISTORY_MAX_PAGES = 10
"""Beyond the first page, batch history is searched in at most this many pages (500 batches)."""
RUNNING_BATCH_SEARCH_SIZE = 20
"""How many of a model's newest batches are searched for a running one."""
RECENT_BATCH_TOLERANCE = timedelta(seconds=5)
"""After an ambiguous POST failure, a batch created this long before the POST still counts as its own
(clock skew between worker and AtScale)."""
INSTANCES_PAGE_SIZE = 100
INSTANCES_MAX_PAGES = 20
SUSPECT_ROW_CAP = 10
"""An answer of this many rows or more may be truncated: a sibling endpoint of the aggregate instances was
seen answering at most 10 rows whatever page size was asked."""
OPEN_INSTANCE_STATUSES = ("pending", "inprogress")
"""Statuses of an aggregate not built yet: ``pending`` is documented, ``inprogress`` seen in flight."""
FAILED_INSTANCE_STATUSES = ("invalid", "deleted")
"""The documented instance statuses of an aggregate that will not be built."""

log = logging.getLogger(__name__)


def trigger_aggregate_build(call: ApiCall, build: BuildRequest) -> Flow[AggregateBatch]:
    """
    Post a build, never starting two.

    A failure after which AtScale surely did not start a build (no connection, 429, 503) is retried by
    :meth:`ApiCall.send`. After an ambiguous one (the request reached AtScale but no clear answer came back:
    read timeout, dropped connection, 500, 502, 504), the model's batch history is checked for a batch of
    this build type created since the POST; if there is one, it is this POST's batch and is returned;
    otherwise the build is posted again, within the call's budget of attempts for the POST. Where history
    cannot be read nothing can be checked, and the error is raised rather than risk a second build.
    """
    request = _endpoints.trigger_build(build)
    posted_at = datetime.fromtimestamp(_clock.now(), tz=timezone.utc) - RECENT_BATCH_TOLERANCE
    while True:
        try:
            status_code, data = yield from call.send(request)
            return _endpoints.read_started_batch(request, status_code, data)
        except AtScaleError as error:
            # Only a failure of the POST itself (not of a token fetched for it) may have started a build.
            of_the_post = getattr(error, "path", None) == request.path
            if not of_the_post or not is_ambiguous(error) or not call.budget.has_attempt(request.key):
                raise
            log.warning(
                "AtScale %s may or may not have started a build (%s); checking batch history",
                request.describe(),
                error,
            )
            try:
                batch = yield from _running_batch_in_history(call, build, since=posted_at, until=None)
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


def get_aggregate_batch(call: ApiCall, ref: BatchRef) -> Flow[AggregateBatch]:
    """
    A batch's current state: from batch history while the server serves it (the batch's own status);
    otherwise, and whenever history fails, derived from its aggregate instances
    (:func:`batch_status_from_instances`).
    """
    capabilities = call.capabilities
    if capabilities.batch_history is not False:
        try:
            batch = yield from _find_in_history(call, ref)
        except AtScaleError as error:
            _history_failed(error, capabilities, "following batches through their aggregate instances")
        else:
            capabilities.batch_history = True
            if batch is not None:
                return batch
    status, seen = yield from batch_status_from_instances(call, ref)
    if capabilities.batch_history and not seen:
        raise AtScaleNotFoundError(
            f"AtScale batch {ref.batch_id} of model {ref.model_id} is neither among the model's newest "
            f"{HISTORY_PAGE_SIZE * HISTORY_MAX_PAGES} batches nor has aggregate instances",
            method="GET",
            path=_endpoints.BATCH_HISTORY_PATH,
            status_code=404,
            atscale_message=None,
        )
    return AggregateBatch(id=ref.batch_id, catalog_id=ref.catalog_id, model_id=ref.model_id, status=status)


def _find_in_history(call: ApiCall, ref: BatchRef) -> Flow[AggregateBatch | None]:
    """The batch in its model's history: the newest few first, then pages of 50 while there are more."""
    pages = [
        (1, HISTORY_FIRST_PAGE_SIZE),
        *((page, HISTORY_PAGE_SIZE) for page in range(1, HISTORY_MAX_PAGES + 1)),
    ]
    for page, size in pages:
        request = _endpoints.batch_history(ref.catalog_id, ref.model_id, page=page, limit=size)
        status_code, data = yield from call.send(request)
        batch, on_page, total = _endpoints.find_in_history(request, status_code, data, ref.batch_id)
        if batch is not None:
            return batch
        if on_page < size or page * size >= total:
            break
    return None


class InstanceListing(NamedTuple):
    """
    A batch's aggregate instances as the server listed them.

    :param instances: the instances of the batch that were seen.
    :param complete: whether the listing is known to hold every instance of the batch; ``False`` when the
        server's answers may have been truncated (see :func:`list_aggregate_instances`).
    """

    instances: list[AggregateInstance]
    complete: bool


def list_aggregate_instances(call: ApiCall, ref: BatchRef) -> Flow[InstanceListing]:
    """
    A batch's aggregate instances, from whichever instances path the server serves.

    The endpoint documents no paging and no total, and a sibling endpoint was seen ignoring ``page`` and
    ``size`` and answering 10 rows. So pages are read until one is short: fewer rows than
    :data:`SUSPECT_ROW_CAP`, or fewer than asked once the server has answered a full page. A page that
    brings no instance not seen before means the server ignores paging: the listing is then marked
    incomplete rather than taken for the whole.
    """
    capabilities = call.capabilities
    paths = (capabilities.instances_path,) if capabilities.instances_path else _endpoints.INSTANCES_PATHS
    for index, path in enumerate(paths):
        try:
            listing = yield from _instances_at(call, path, ref)
        except AtScaleNotFoundError:
            if index == len(paths) - 1:
                raise
            continue
        capabilities.instances_path = path
        return listing
    raise AssertionError("unreachable: the last path either returned or raised")


def _instances_at(call: ApiCall, path: str, ref: BatchRef) -> Flow[InstanceListing]:
    instances: dict[str, AggregateInstance] = {}
    seen: set[str] = set()
    size_honoured = False
    for page in range(1, INSTANCES_MAX_PAGES + 1):
        request = _endpoints.aggregate_instances(
            ref.catalog_id, ref.model_id, ref.batch_id, page=page, size=INSTANCES_PAGE_SIZE, path=path
        )
        status_code, data = yield from call.send(request)
        found = _endpoints.read_instances(request, status_code, data)
        new = [i for i in found if i.id not in seen]
        seen.update(i.id for i in found)
        # Filter: some servers ignore the batchId parameter and answer every instance of the model.
        instances.update((i.id, i) for i in new if i.batch_id in (None, ref.batch_id))
        # Short: fewer rows than any cap seen in the wild, or fewer than asked from a server that has
        # already answered a page as large as asked.
        if len(found) < SUSPECT_ROW_CAP or (size_honoured and len(found) < INSTANCES_PAGE_SIZE):
            return InstanceListing(list(instances.values()), complete=True)
        if not new:
            break  # the same rows again: paging is ignored, and the answer may be truncated
        size_honoured = size_honoured or len(found) == INSTANCES_PAGE_SIZE
    return InstanceListing(list(instances.values()), complete=False)


def batch_status_from_instances(call: ApiCall, ref: BatchRef) -> Flow[tuple[str, bool]]:
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
    listing = yield from list_aggregate_instances(call, ref)
    status = status_from_instances(listing.instances)
    if status != "done" or listing.complete:
        return status, bool(listing.instances)
    path = call.capabilities.instances_path or _endpoints.INSTANCES_PATHS[0]
    for asked in OPEN_INSTANCE_STATUSES + FAILED_INSTANCE_STATUSES:
        request = _endpoints.aggregate_instances(
            ref.catalog_id,
            ref.model_id,
            ref.batch_id,
            page=1,
            size=INSTANCES_PAGE_SIZE,
            path=path,
            status=asked,
        )
        status_code, data = yield from call.send(request)
        found = _endpoints.read_instances(request, status_code, data)
        if any(instance.status.strip().lower() != asked for instance in found):
            log.warning(
                "AtScale's aggregate instances endpoint ignores the status filter and may truncate its "
                "answers: whether batch %s has finished cannot be told from its instances",
                ref.batch_id,
            )
            return "inprogress", True
        if any(instance.batch_id in (None, ref.batch_id) for instance in found):
            return ("failed" if asked in FAILED_INSTANCE_STATUSES else "inprogress"), True
    return "done", True


def find_running_batch(
    call: ApiCall, build: BuildRequest, *, since: datetime, until: datetime | None
) -> Flow[AggregateBatch | None]:
    """
    The newest aggregate build of this model and build type still in progress, created in a window.

    ``None`` where there is none, or where batch history cannot be read (then nothing can be found, and
    the caller starts a build as usual: nothing about history ever stops a build from being started).
    """
    if call.capabilities.batch_history is False:
        return None
    try:
        return (yield from _running_batch_in_history(call, build, since=since, until=until))
    except AtScaleError as error:
        _history_failed(error, call.capabilities, "a running build cannot be looked for")
        return None


def _running_batch_in_history(
    call: ApiCall, build: BuildRequest, *, since: datetime, until: datetime | None
) -> Flow[AggregateBatch | None]:
    """:func:`find_running_batch`, raising when history cannot be read."""
    request = _endpoints.batch_history(
        build.catalog_id, build.model_id, page=1, limit=RUNNING_BATCH_SEARCH_SIZE
    )
    status_code, data = yield from call.send(request)
    call.capabilities.batch_history = True
    for batch in _endpoints.read_history(request, status_code, data):
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


def list_catalogs(call: ApiCall) -> Flow[list[dict[str, Any]]]:
    """The catalogs the connection sees, each with its models."""
    request = _endpoints.catalogs()
    status_code, data = yield from call.send(request)
    return _endpoints.read_catalogs(request, status_code, data)


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
