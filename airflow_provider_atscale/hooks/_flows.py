"""
Multi-request operations (paging, fall-backs) written once for the sync and the async transport.

Each operation is a generator that yields the :class:`~._protocol.ApiRequest` it needs next and is sent
back ``(status_code, json)``; a failed request is thrown into it as an ``AtScaleError``. The hook drives
these with requests, the trigger's path with httpx: the logic cannot drift apart between the two.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from airflow_provider_atscale.batches import (
    AggregateBatch,
    AggregateInstance,
    BatchStatusClass,
    status_from_instances,
)
from airflow_provider_atscale.errors import AtScaleHTTPError, AtScaleNotFoundError
from airflow_provider_atscale.hooks import _protocol

T = TypeVar("T")
Flow = Generator[_protocol.ApiRequest, tuple[int, Any], T]

HISTORY_PAGE_SIZE = 50
HISTORY_MAX_PAGES = 10
"""Batch history is searched in at most this many pages (500 batches) for a batch id."""
INSTANCES_PAGE_SIZE = 100
INSTANCES_MAX_PAGES = 20
RUNNING_BATCH_SEARCH_SIZE = 20
"""How many of a model's newest batches are searched for a running one to attach to."""
# Statuses by which a server says it does not serve batch history to this caller.
HISTORY_UNAVAILABLE_STATUSES = frozenset({403, 404, 405})

log = logging.getLogger(__name__)


@dataclass
class ApiCapabilities:
    """
    What this AtScale server was found to serve, learned once per hook and kept for later calls.

    :param batch_history: ``None`` until tried; ``False`` once the server refused batch history.
    :param instances_path: the aggregate instances path the server answered.
    """

    batch_history: bool | None = None
    instances_path: str | None = None


def get_aggregate_batch(
    catalog_id: str, model_id: str, batch_id: str, capabilities: ApiCapabilities
) -> Flow[AggregateBatch]:
    """
    A batch's current state.

    From batch history where the server serves it (the batch's own status). Otherwise, derived from the
    batch's aggregate instances: all built is ``done``, any failed is ``failed``, else ``inprogress``.
    """
    if capabilities.batch_history is not False:
        try:
            batch = yield from _find_in_history(catalog_id, model_id, batch_id)
        except AtScaleHTTPError as error:
            if error.http_status not in HISTORY_UNAVAILABLE_STATUSES:
                raise
            capabilities.batch_history = False
            log.warning(
                "AtScale does not serve batch history to this caller (HTTP %s); following batches through "
                "their aggregate instances instead",
                error.http_status,
            )
        else:
            capabilities.batch_history = True
            if batch is not None:
                return batch
    instances = yield from list_aggregate_instances(batch_id, catalog_id, model_id, capabilities)
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


def _find_in_history(catalog_id: str, model_id: str, batch_id: str) -> Flow[AggregateBatch | None]:
    for page in range(1, HISTORY_MAX_PAGES + 1):
        request = _protocol.batch_history_request(catalog_id, model_id, page=page, limit=HISTORY_PAGE_SIZE)
        status_code, data = yield request
        batches, total = _protocol.parse_batch_history(request, status_code, data)
        for batch in batches:
            if batch.id == batch_id:
                return batch
        if len(batches) < HISTORY_PAGE_SIZE or page * HISTORY_PAGE_SIZE >= total:
            break
    return None


def list_aggregate_instances(
    batch_id: str, catalog_id: str, model_id: str, capabilities: ApiCapabilities
) -> Flow[list[AggregateInstance]]:
    """Every aggregate instance of a batch, page by page, from whichever instances path the server serves."""
    paths = (capabilities.instances_path,) if capabilities.instances_path else _protocol.INSTANCES_PATHS
    for index, path in enumerate(paths):
        try:
            instances = yield from _instances_at(path, batch_id, catalog_id, model_id)
        except AtScaleNotFoundError:
            if index == len(paths) - 1:
                raise
            continue
        capabilities.instances_path = path
        return instances
    raise AssertionError("unreachable: the last path either returned or raised")


def _instances_at(path: str, batch_id: str, catalog_id: str, model_id: str) -> Flow[list[AggregateInstance]]:
    instances: list[AggregateInstance] = []
    for page in range(1, INSTANCES_MAX_PAGES + 1):
        request = _protocol.aggregate_instances_request(
            batch_id, catalog_id, model_id, page=page, size=INSTANCES_PAGE_SIZE, path=path
        )
        status_code, data = yield request
        found, total = _protocol.parse_aggregate_instances(request, status_code, data)
        # Filter: some servers ignore the batchId parameter and answer every instance of the model.
        instances.extend(i for i in found if i.batch_id in (None, batch_id))
        if len(found) < INSTANCES_PAGE_SIZE or page * INSTANCES_PAGE_SIZE >= total:
            break
    return instances


def find_running_batch(
    catalog_id: str,
    model_id: str,
    *,
    full_build: bool,
    created_since: datetime,
    capabilities: ApiCapabilities,
) -> Flow[AggregateBatch | None]:
    """
    The newest batch of this model and build type that is still in progress and was created since a time.

    ``None`` where there is none, or where the server does not serve batch history (then nothing can be
    found, and the caller starts a build as usual).
    """
    if capabilities.batch_history is False:
        return None
    request = _protocol.batch_history_request(catalog_id, model_id, page=1, limit=RUNNING_BATCH_SEARCH_SIZE)
    try:
        status_code, data = yield request
    except AtScaleHTTPError as error:
        if error.http_status not in HISTORY_UNAVAILABLE_STATUSES:
            raise
        capabilities.batch_history = False
        log.warning(
            "AtScale does not serve batch history to this caller (HTTP %s): a running build cannot be "
            "found to attach to",
            error.http_status,
        )
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
