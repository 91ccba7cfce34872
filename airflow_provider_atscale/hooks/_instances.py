"""
A batch's aggregate instances, as flows over :func:`~._calls.send`: each table, its status and AtScale's
message, for failure messages, lineage and, where history is not served, the batch's status. The endpoint
documents no paging (a sibling was seen answering 10 rows whatever was asked): pages are read until one is
short, a listing that may be truncated is never taken for the whole, and the ``status`` filter asks instead.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from airflow_provider_atscale._inputs import BatchRef
from airflow_provider_atscale.batches import (
    INSTANCE_FAILED_STATUSES,
    INSTANCE_OPEN_STATUSES,
    AggregateInstance,
    status_from_instances,
)
from airflow_provider_atscale.errors import AtScaleNotFoundError
from airflow_provider_atscale.hooks._calls import RetryBudget, ServerState, send
from airflow_provider_atscale.hooks._http import ApiRequest, Flow

INSTANCES_PATHS = ("/v1/aggregates/instances", "/v1/public/aggregates/instances")
"""Public clients call the first; AtScale's documentation prints the second. Both are tried."""
PAGE_SIZE = 100
MAX_PAGES = 20
SUSPECT_ROW_CAP = 10
"""An answer of this many rows or more may be truncated: a sibling endpoint was seen answering at most 10."""

log = logging.getLogger(__name__)


class InstanceListing(NamedTuple):
    """A batch's instances as listed, and whether the listing is known to hold them all."""

    instances: list[AggregateInstance]
    complete: bool


def list_instances(server: ServerState, budget: RetryBudget, ref: BatchRef) -> Flow[InstanceListing]:
    """A batch's aggregate instances, from whichever instances path the server serves."""
    *first, last = (server.instances_path,) if server.instances_path else INSTANCES_PATHS
    for path in first:
        try:
            listing = yield from _list_at(server, budget, path, ref)
        except AtScaleNotFoundError:
            continue
        server.instances_path = path
        return listing
    listing = yield from _list_at(server, budget, last, ref)
    server.instances_path = last
    return listing


def _list_at(server: ServerState, budget: RetryBudget, path: str, ref: BatchRef) -> Flow[InstanceListing]:
    """Pages until one is short: fewer rows than any cap seen, or fewer than asked once a full page came."""
    instances: dict[str, AggregateInstance] = {}
    seen: set[str] = set()
    size_honoured = False
    for page in range(1, MAX_PAGES + 1):
        found = yield from _ask(server, budget, _request(path, ref, page))
        new = [instance for instance in found if instance.id not in seen]
        seen.update(instance.id for instance in found)
        # Some servers ignore the batchId filter and answer every instance of the model.
        instances.update((i.id, i) for i in new if i.batch_id in (None, ref.batch_id))
        if len(found) < SUSPECT_ROW_CAP or (size_honoured and len(found) < PAGE_SIZE):
            return InstanceListing(list(instances.values()), complete=True)
        if not new:
            break  # the same rows again: paging is ignored, and the answer may be truncated
        size_honoured = size_honoured or len(found) == PAGE_SIZE
    return InstanceListing(list(instances.values()), complete=False)


def batch_status(server: ServerState, budget: RetryBudget, ref: BatchRef) -> Flow[tuple[str, bool]]:
    """
    A batch's status derived from its aggregate instances (:func:`status_from_instances`), ``done`` only from
    a listing known to be complete. When every instance seen is built but the listing may be truncated, the
    ``status`` filter asks whether any of the batch's instances is still open or failed; a server that
    ignores the filter cannot answer, and the batch stays ``inprogress``.

    :return: the status, and whether any instance of the batch was seen.
    """
    listing = yield from list_instances(server, budget, ref)
    status = status_from_instances(listing.instances)
    if status != "done" or listing.complete:
        return status, bool(listing.instances)
    path = server.instances_path or INSTANCES_PATHS[0]
    for asked in sorted(INSTANCE_OPEN_STATUSES) + sorted(INSTANCE_FAILED_STATUSES):
        found = yield from _ask(server, budget, _request(path, ref, 1, status=asked))
        if any(instance.status.strip().lower() != asked for instance in found):
            log.warning(
                "AtScale's aggregate instances endpoint ignores the status filter and may truncate its "
                "answers: "
                "whether batch %s has finished cannot be told from its instances",
                ref.batch_id,
            )
            return "inprogress", True
        if any(instance.batch_id in (None, ref.batch_id) for instance in found):
            return ("failed" if asked in INSTANCE_FAILED_STATUSES else "inprogress"), True
    return "done", True


def _request(path: str, ref: BatchRef, page: int, status: str | None = None) -> ApiRequest:
    params = {
        "batchId": ref.batch_id,
        "catalogId": ref.catalog_id,
        "modelId": ref.model_id,
        "page": str(page),
        "size": str(PAGE_SIZE),
    }
    if status is not None:
        params["status"] = status
    return ApiRequest("GET", path, params=params)


def _ask(server: ServerState, budget: RetryBudget, request: ApiRequest) -> Flow[list[AggregateInstance]]:
    """The instances of one answer: ``{"data": [...]}``."""
    status_code, data = yield from send(server, budget, request)
    entries: Any = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise request.unexpected_answer(status_code, "without a list of instances under 'data'")
    try:
        return [AggregateInstance.from_api(entry) for entry in entries]
    except ValueError as error:
        raise request.unexpected_answer(status_code, f"with a malformed instance: {error}") from None
