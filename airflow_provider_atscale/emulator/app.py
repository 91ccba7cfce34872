"""
The emulated AtScale endpoints and the ``/_emulator`` control routes, as one ASGI application. As on a real
AtScale, the instances endpoint documents no paging: it ignores ``page`` and ``size`` and lists at most
``EmulatorConfig.instances_row_limit`` rows, without a total; its ``status`` filter takes one value or, as
an extension, several separated by commas.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from airflow_provider_atscale.emulator.config import FaultConfig
from airflow_provider_atscale.emulator.errors import ApiError, error_body_for_path
from airflow_provider_atscale.emulator.faults import FaultInjector
from airflow_provider_atscale.emulator.middleware import CONTROL_PREFIX, EmulatorMiddleware
from airflow_provider_atscale.emulator.requestlog import RequestLog
from airflow_provider_atscale.emulator.state import EmulatorState
from airflow_provider_atscale.emulator.tokens import TokenIssuer

BATCH_PATH = "/v1/aggregates-batch/catalogs/{catalog_id}/models/{model_id}"
BATCH_HISTORY_PATH = "/wapi/p/aggregate/batch-history"
INSTANCES_PATHS = ("/v1/aggregates/instances", "/v1/public/aggregates/instances")
TOKEN_EXCHANGE_PATH = "/v1/token"
OIDC_TOKEN_PATH = "/auth/realms/atscale/protocol/openid-connect/token"
# Filters of the instances endpoint besides status, named as the fields they match.
INSTANCE_FILTERS = ("batchId", "catalogId", "modelId", "tableName", "definitionId")
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def create_app(
    state: EmulatorState, faults: FaultInjector, request_log: RequestLog, tokens: TokenIssuer
) -> ASGIApp:
    """
    Build the ASGI application uvicorn serves: routes, request log and fault injection.

    :param state: Batches and catalogs the endpoints read and change.
    :param faults: Fault injector, also the source of the clock offset.
    :param request_log: Where API requests are recorded.
    :param tokens: Checks and issues tokens.
    """
    api = FastAPI(title="AtScale engine API emulator", docs_url=None, redoc_url=None, openapi_url=None)
    _add_error_handlers(api)

    def clock_offset() -> float:
        return faults.config.clock_offset_seconds

    # Async on purpose: FastAPI runs a plain function given to Depends in a worker thread, per request.
    async def require_public_api_token(request: Request) -> None:
        token = _bearer_token(request)
        if not tokens.is_api_token(token) and tokens.access_claims(token) is None:
            raise ApiError(401, "Missing, invalid or expired bearer token")

    authenticated = [Depends(require_public_api_token)]

    @api.post(BATCH_PATH, status_code=201, dependencies=authenticated)
    async def create_aggregate_batch(catalog_id: str, model_id: str, request: Request) -> JSONResponse:
        full = request.query_params.get("isFullBuild")
        if full not in ("true", "false"):
            raise ApiError(400, f"Query parameter 'isFullBuild' is required, 'true' or 'false'; got '{full}'")
        is_full_build = full == "true"
        body = await _json_object_body(request)
        overrides = _grace_period_overrides(body.get("gracePeriodOverrides", {}), is_full_build)
        batch = state.create_batch(
            catalog_id, model_id, is_full_build=is_full_build, grace_period_overrides=overrides
        )
        payload = state.batch_payload(batch, clock_offset=clock_offset())
        return JSONResponse({"batch": payload, "success": True}, status_code=201)

    @api.get(BATCH_HISTORY_PATH)
    async def get_batch_history(request: Request) -> JSONResponse:
        if not state.batch_history_enabled:
            raise ApiError(403, f"Access to {BATCH_HISTORY_PATH} is denied: batch history is turned off")
        token = _bearer_token(request)
        if tokens.access_claims(token) is None and not (
            state.batch_history_accepts_api_tokens and tokens.is_api_token(token)
        ):
            if tokens.is_api_token(token):
                message = (
                    f"Batch history needs a JWT, not an API token: exchange it at POST {TOKEN_EXCHANGE_PATH}"
                )
                raise ApiError(401, message)
            raise ApiError(401, "Missing, invalid or expired JWT")
        query = request.query_params
        history = state.batch_history(
            catalog_id=query.get("catalogId") or None,
            model_id=query.get("modelId") or None,
            page=_parse_positive_int(query.get("page"), "page", 1),
            limit=_parse_positive_int(query.get("limit"), "limit", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            clock_offset=clock_offset(),
        )
        return JSONResponse(history)

    async def get_aggregate_instances(request: Request) -> JSONResponse:
        query = request.query_params
        filters = {name: {query[name]} for name in INSTANCE_FILTERS if query.get(name)}
        statuses = {
            value.strip() for raw in query.getlist("status") for value in raw.split(",") if value.strip()
        }
        if statuses:
            filters["status"] = statuses
        limit = state.config.instances_row_limit
        return JSONResponse(state.aggregate_instances(filters, limit=limit, clock_offset=clock_offset()))

    for path in INSTANCES_PATHS:
        api.add_api_route(path, get_aggregate_instances, methods=["GET"], dependencies=authenticated)

    @api.get("/v1/catalogs", dependencies=authenticated)
    async def get_catalogs() -> JSONResponse:
        return JSONResponse(state.catalogs_payload())

    @api.post(TOKEN_EXCHANGE_PATH)
    async def exchange_token(request: Request) -> JSONResponse:
        return JSONResponse(tokens.exchange_api_token(_bearer_token(request)))

    @api.post(OIDC_TOKEN_PATH)
    async def oidc_token(request: Request) -> JSONResponse:
        form = dict(urllib.parse.parse_qsl((await request.body()).decode(errors="replace")))
        return JSONResponse(tokens.token_grant(form), headers={"Cache-Control": "no-store"})

    _add_control_routes(api, state, faults, request_log, tokens)
    return EmulatorMiddleware(api, faults, request_log)


def _add_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(request, exc.code, exc.message, exc.oauth_error)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # NestJS's own wording for a path no route serves.
        message = f"Cannot {request.method} {request.url.path}"
        if exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        return _error_response(request, exc.status_code, message)


def _error_response(
    request: Request, code: int, message: str, oauth_error: str | None = None
) -> JSONResponse:
    path = request.url.path
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else {}
    if path.startswith("/auth/"):
        # Token answers, refusals included, must not be cached (RFC 6749, section 5.1).
        headers["Cache-Control"] = "no-store"
    return JSONResponse(
        error_body_for_path(path, code, message, oauth_error), status_code=code, headers=headers
    )


def _add_control_routes(
    api: FastAPI, state: EmulatorState, faults: FaultInjector, request_log: RequestLog, tokens: TokenIssuer
) -> None:
    @api.get(f"{CONTROL_PREFIX}/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.put(f"{CONTROL_PREFIX}/faults")
    async def put_faults(request: Request) -> dict[str, Any]:
        try:
            config = FaultConfig(**await _json_object_body(request))
        except (TypeError, ValueError) as exc:
            raise ApiError(400, f"Invalid fault configuration: {exc}") from exc
        faults.configure(config)
        return dataclasses.asdict(config)

    @api.get(f"{CONTROL_PREFIX}/requests")
    async def get_requests() -> list[dict[str, Any]]:
        return [dataclasses.asdict(entry) for entry in request_log.entries()]

    @api.delete(f"{CONTROL_PREFIX}/requests", status_code=204)
    async def clear_requests() -> None:
        request_log.clear()

    @api.get(f"{CONTROL_PREFIX}/batches")
    async def get_batches() -> list[dict[str, Any]]:
        now, offset = state.clock.now(), faults.config.clock_offset_seconds
        return [
            {
                **state.batch_payload(batch, now=now, clock_offset=offset),
                "gracePeriodOverrides": dict(batch.grace_period_overrides),
            }
            for batch in state.batches()
        ]

    @api.post(f"{CONTROL_PREFIX}/api-tokens/rotate")
    async def rotate_api_token(request: Request) -> dict[str, str]:
        old = (await _json_object_body(request)).get("token")
        try:
            return {"token": tokens.rotate_api_token(None if old is None else str(old))}
        except KeyError as exc:
            raise ApiError(404, "The token sent is not (or no longer) an accepted API token") from exc


def _parse_positive_int(value: str | None, name: str, default: int, maximum: int | None = None) -> int:
    if not value:
        return default
    number = int(value) if value.lstrip("-").isdigit() else 0
    if number < 1 or (maximum is not None and number > maximum):
        limit = f" and at most {maximum}" if maximum is not None else ""
        raise ApiError(400, f"Query parameter '{name}' must be an integer >= 1{limit}, got '{value}'")
    return number


async def _json_object_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, f"Request body must be a JSON object, got {_json_type(body)}")
    return body


def _grace_period_overrides(overrides: Any, is_full_build: bool) -> dict[str, int]:
    # An explicit null is refused, not read as "no overrides".
    if not isinstance(overrides, dict):
        raise ApiError(400, f"gracePeriodOverrides must be an object, got {_json_type(overrides)}")
    for dataset, period in overrides.items():
        if not dataset.strip():
            raise ApiError(400, f"gracePeriodOverrides keys must be non-empty dataset names, got {dataset!r}")
        if isinstance(period, bool) or not isinstance(period, int) or period < 0:
            raise ApiError(
                400, f"gracePeriodOverrides['{dataset}'] must be a non-negative integer, got {period!r}"
            )
    if overrides and is_full_build:
        raise ApiError(400, "gracePeriodOverrides apply to incremental builds only; send isFullBuild=false")
    return overrides


def _json_type(value: Any) -> str:
    names = {
        type(None): "null",
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
    }
    return names.get(type(value), "object")
