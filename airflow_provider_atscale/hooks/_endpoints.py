"""
Each AtScale endpoint the provider calls: the request that asks, and the reading of its answer.

Pure functions, no transport: the sync and the async path build their requests and read their answers
here, so the two can never disagree about a URL, a parameter or a JSON shape. What the API promises for each
is in the project's notes on the AtScale API; where it is silent, the readers accept what public clients
have seen and refuse the rest with :meth:`ApiRequest.unexpected_answer`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from airflow_provider_atscale._flow import ApiRequest
from airflow_provider_atscale._validation import BuildRequest
from airflow_provider_atscale.batches import AggregateBatch, AggregateInstance
from airflow_provider_atscale.errors import AtScaleConfigurationError

T = TypeVar("T")

TRIGGER_BUILD_PATH = "/v1/aggregates-batch/catalogs/{catalog_id}/models/{model_id}"
BATCH_HISTORY_PATH = "/wapi/p/aggregate/batch-history"
INSTANCES_PATHS = ("/v1/aggregates/instances", "/v1/public/aggregates/instances")
"""Public clients call the first; AtScale's documentation prints the second. Both are tried."""
CATALOGS_PATH = "/v1/catalogs"
TOKEN_EXCHANGE_PATH = "/v1/token"
PASSWORD_GRANT_PATH = "/auth/realms/{realm}/protocol/openid-connect/token"


# Starting a build


def trigger_build(build: BuildRequest) -> ApiRequest:
    """The POST that starts an aggregate build; ``{}`` for no overrides, as public clients send."""
    return ApiRequest(
        method="POST",
        path=TRIGGER_BUILD_PATH.format(
            catalog_id=quote(build.catalog_id, safe=""), model_id=quote(build.model_id, safe="")
        ),
        params={"isFullBuild": "true" if build.full_build else "false"},
        json_body={"gracePeriodOverrides": dict(build.grace_period_overrides)},
        idempotent=False,
    )


def read_started_batch(request: ApiRequest, status_code: int, data: Any) -> AggregateBatch:
    """The new batch in a trigger answer: ``{"batch": {...}, "success": true}``."""
    batch = data.get("batch") if isinstance(data, dict) else None
    try:
        return AggregateBatch.from_api(batch)  # type: ignore[arg-type]
    except ValueError as error:
        raise request.unexpected_answer(status_code, f"without a valid batch object: {error}") from None


# Batch history: a private Design Center API, newest first, paged by page and limit


def batch_history(catalog_id: str, model_id: str, *, page: int, limit: int) -> ApiRequest:
    """One page of a model's batch history."""
    return ApiRequest(
        method="GET",
        path=BATCH_HISTORY_PATH,
        params={"catalogId": catalog_id, "modelId": model_id, "page": str(page), "limit": str(limit)},
        private=True,
    )


def read_history(request: ApiRequest, status_code: int, data: Any) -> list[AggregateBatch]:
    """Every batch on a page of batch history."""
    entries, _ = _page_entries(request, status_code, data, "batch")
    return [_read_item(request, status_code, entry, AggregateBatch.from_api, "batch") for entry in entries]


def find_in_history(
    request: ApiRequest, status_code: int, data: Any, batch_id: str
) -> tuple[AggregateBatch | None, int, int]:
    """
    One batch on a page of batch history, reading only that entry (a poll runs this every time).

    :return: the batch if on the page, the number of entries on the page, and the total count (the page's
        length where the answer gives none).
    """
    entries, total = _page_entries(request, status_code, data, "batch")
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("id") == batch_id:
            batch = _read_item(request, status_code, entry, AggregateBatch.from_api, "batch")
            return batch, len(entries), total
    return None, len(entries), total


# Aggregate instances: no paging documented, filters by batch, catalog, model and status


def aggregate_instances(
    catalog_id: str,
    model_id: str,
    batch_id: str,
    *,
    page: int,
    size: int,
    path: str = INSTANCES_PATHS[0],
    status: str | None = None,
) -> ApiRequest:
    """One answer of a batch's aggregate instances, optionally of one status."""
    params = {
        "batchId": batch_id,
        "catalogId": catalog_id,
        "modelId": model_id,
        "page": str(page),
        "size": str(size),
    }
    if status is not None:
        params["status"] = status
    return ApiRequest(method="GET", path=path, params=params)


def read_instances(request: ApiRequest, status_code: int, data: Any) -> list[AggregateInstance]:
    """The instances of one answer: ``{"data": [...]}``."""
    entries, _ = _page_entries(request, status_code, data, "instance")
    return [
        _read_item(request, status_code, entry, AggregateInstance.from_api, "instance") for entry in entries
    ]


# Catalogs and their models


def catalogs() -> ApiRequest:
    """The catalogs the connection sees, each with its models."""
    return ApiRequest(method="GET", path=CATALOGS_PATH)


def read_catalogs(request: ApiRequest, status_code: int, data: Any) -> list[dict[str, Any]]:
    """The list of catalogs; some editions wrap it as ``{"data": [...]}``."""
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise request.unexpected_answer(status_code, "without a list of catalogs")
    return data


def find_named(items: list[dict[str, Any]], name: str, what: str, where: str) -> dict[str, Any]:
    """
    The one catalog or model called ``name``: written exactly so, or else written so in any case if only one
    is; anything else is an error listing the names that exist.

    :param items: the catalogs, or a catalog's models, as ``GET /v1/catalogs`` lists them.
    :param name: the name asked for.
    :param what: ``catalog`` or ``model``, for the message.
    :param where: what they are, for the message: ``the catalogs this token sees``.
    :raises AtScaleConfigurationError: no item or several items carry the name.
    """
    exact = [item for item in items if item.get("name") == name]
    if not exact:
        folded = name.casefold()
        exact = [item for item in items if str(item.get("name", "")).casefold() == folded]
    if len(exact) == 1:
        return exact[0]
    known = ", ".join(sorted(repr(str(item.get("name"))) for item in items)) or "none"
    if not exact:
        raise AtScaleConfigurationError(f"no {what} named {name!r} among {where}: {known}")
    ids = ", ".join(str(item.get("id")) for item in exact)
    raise AtScaleConfigurationError(
        f"{len(exact)} {what}s are named {name!r} among {where} ({ids}): name it by {what}_id instead"
    )


def describe_catalogs(catalog_list: list[dict[str, Any]]) -> str:
    """The catalogs the token sees, by id and name, for a message."""
    return ", ".join(f"{c.get('id')} ({c.get('name')})" for c in catalog_list) or "none"


def describe_known_models(catalog_list: list[dict[str, Any]], catalog_id: str) -> str:
    """A hint for a 404: the catalogs the token sees, or the models of the catalog asked for."""
    catalog = next((c for c in catalog_list if c.get("id") == catalog_id), None)
    if catalog is None:
        known = describe_catalogs(catalog_list)
        return f"catalog {catalog_id} is not among the catalogs this token sees: {known}"
    models = catalog.get("models") or []
    known = ", ".join(f"{m.get('id')} ({m.get('name')})" for m in models if isinstance(m, dict)) or "none"
    return f"models of catalog {catalog_id}: {known}"


# Tokens: the API token's exchange for a JWT, and the Identity Broker's password and refresh grants


def token_exchange(api_token: str) -> ApiRequest:
    """The exchange of an API token for a short-lived JWT."""
    return ApiRequest(
        method="POST",
        path=TOKEN_EXCHANGE_PATH,
        json_body={},
        headers={"Authorization": f"Bearer {api_token}"},
        authenticated=False,
    )


def identity_grant(realm: str, form: Mapping[str, str]) -> ApiRequest:
    """A password or refresh-token grant of the Identity Broker (Keycloak), form-encoded."""
    return ApiRequest(
        method="POST",
        path=PASSWORD_GRANT_PATH.format(realm=realm),
        form=dict(form),
        authenticated=False,
    )


def read_token(request: ApiRequest, status_code: int, data: Any, key: str) -> str:
    """The token under ``key`` of a token answer (``accessToken`` or ``access_token``)."""
    token = data.get(key) if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise request.unexpected_answer(status_code, f"without {key!r}")
    return token


# Paged answers: {"data": [...], "total": N}


def _page_entries(request: ApiRequest, status_code: int, data: Any, what: str) -> tuple[list[Any], int]:
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        plural = what + ("es" if what.endswith("ch") else "s")
        raise request.unexpected_answer(status_code, f"without a list of {plural} under 'data'")
    total = data.get("total")
    return entries, total if isinstance(total, int) and not isinstance(total, bool) else len(entries)


def _read_item(request: ApiRequest, status_code: int, entry: Any, read: Callable[[Any], T], what: str) -> T:
    try:
        return read(entry)
    except ValueError as error:
        raise request.unexpected_answer(status_code, f"with a malformed {what}: {error}") from None
