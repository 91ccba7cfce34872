"""
The FastAPI application: the emulated AtScale endpoints and a few ``/_emulator`` control endpoints.

:func:`create_app` wraps the routes in
:class:`~airflow_provider_atscale.emulator.middleware.EmulatorMiddleware`, which records every API request
and injects faults; :func:`create_api` returns the bare routes.

Who may call what, as on a real AtScale: the public ``/v1`` API takes an API token or an access token
(JWT); the Design Center's batch history (``/wapi/...``) takes only a JWT, and answers 403 to everyone when
turned off; the token exchange takes only an API token.

The instances endpoint documents no paging: ``page`` and ``size`` are ignored and one answer lists at most
``EmulatorConfig.instances_row_limit`` rows, without a total. Its filters are the documented ``batchId``,
``catalogId``, ``modelId``, ``definitionId``, ``tableName`` and ``status``; ``status`` takes one value or,
as an extension of the emulator's, several separated by commas (``status=pending,inprogress``).
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from airflow_provider_atscale.emulator.config import FaultConfig
from airflow_provider_atscale.emulator.errors import ApiError, OAuthError, error_body_for_path
from airflow_provider_atscale.emulator.faults import FaultInjector
from airflow_provider_atscale.emulator.middleware import CONTROL_PREFIX, EmulatorMiddleware
from airflow_provider_atscale.emulator.requestlog import RequestLog
from airflow_provider_atscale.emulator.state import (
    EmulatorState,
    json_type_name,
    validate_grace_period_overrides,
)
from airflow_provider_atscale.emulator.tokens import TokenIssuer

BATCH_PATH = "/v1/aggregates-batch/catalogs/{catalog_id}/models/{model_id}"
BATCH_HISTORY_PATH = "/wapi/p/aggregate/batch-history"
INSTANCES_PATHS = ("/v1/aggregates/instances", "/v1/public/aggregates/instances")
CATALOGS_PATH = "/v1/catalogs"
TOKEN_EXCHANGE_PATH = "/v1/token"
OIDC_TOKEN_PATH = "/auth/realms/atscale/protocol/openid-connect/token"

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000


def bearer_token(request: Request) -> str | None:
    """
    Return the token of an ``Authorization: Bearer <token>`` header, or ``None``.

    :param request: Incoming request.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def create_app(
    state: EmulatorState,
    faults: FaultInjector | None = None,
    request_log: RequestLog | None = None,
    tokens: TokenIssuer | None = None,
) -> ASGIApp:
    """
    Build the ASGI application uvicorn serves: routes, request log and fault injection.

    :param state: State the endpoints read and change.
    :param faults: Fault injector; defaults to one built from ``state.config.faults``.
    :param request_log: Where requests are recorded; defaults to a new log.
    :param tokens: Checks and issues tokens; defaults to a new issuer for ``state``'s config and clock.
    """
    faults = faults if faults is not None else FaultInjector(state.config.faults)
    request_log = request_log if request_log is not None else RequestLog()
    api = create_api(state, faults, request_log, tokens)
    return EmulatorMiddleware(api, faults, request_log)


def create_api(
    state: EmulatorState, faults: FaultInjector, request_log: RequestLog, tokens: TokenIssuer | None = None
) -> FastAPI:
    """
    Build the FastAPI routes without request logging or faults.

    :param state: State the endpoints read and change.
    :param faults: Fault injector, for the token lifetime, the clock offset and the control endpoints.
    :param request_log: Request log, for the control endpoints.
    :param tokens: Checks and issues tokens; defaults to a new issuer for ``state``'s config and clock.
    """
    tokens = tokens if tokens is not None else TokenIssuer(state.config, state.clock, faults)
    api = FastAPI(
        title="AtScale engine API emulator",
        docs_url=f"{CONTROL_PREFIX}/docs",
        redoc_url=None,
        openapi_url=f"{CONTROL_PREFIX}/openapi.json",
    )
    _add_error_handlers(api)

    def clock_offset() -> float:
        return faults.config.clock_offset_seconds

    # Async on purpose: FastAPI runs plain functions given to Depends in a worker thread, per request.
    async def require_public_api_token(request: Request) -> None:
        if not tokens.grants_public_api(bearer_token(request)):
            raise ApiError(401, "Missing, invalid or expired bearer token")

    authenticated = [Depends(require_public_api_token)]

    @api.post(BATCH_PATH, status_code=201, dependencies=authenticated)
    async def create_aggregate_batch(catalog_id: str, model_id: str, request: Request) -> JSONResponse:
        is_full_build = _parse_bool(request.query_params.get("isFullBuild"), "isFullBuild")
        body = await _json_object_body(request)
        # Checked here too so an explicit null is refused instead of read as "no overrides".
        overrides = validate_grace_period_overrides(
            body.get("gracePeriodOverrides", {}), is_full_build=is_full_build
        )
        batch = state.create_batch(
            catalog_id, model_id, is_full_build=is_full_build, grace_period_overrides=overrides
        )
        payload = state.batch_payload(batch, clock_offset=clock_offset())
        return JSONResponse({"batch": payload, "success": True}, status_code=201)

    @api.get(BATCH_HISTORY_PATH)
    async def get_batch_history(request: Request) -> JSONResponse:
        # Turned off, it refuses whoever asks, before looking at the token.
        if not state.batch_history_enabled:
            raise ApiError(403, f"Access to {BATCH_HISTORY_PATH} is denied: batch history is turned off")
        token = bearer_token(request)
        if tokens.access_claims(token) is None and not (
            state.batch_history_accepts_api_tokens and tokens.is_api_token(token)
        ):
            raise ApiError(401, _design_center_refusal(tokens, token))
        query = request.query_params
        return JSONResponse(
            state.batch_history(
                catalog_id=query.get("catalogId") or None,
                model_id=query.get("modelId") or None,
                page=_parse_positive_int(query.get("page"), "page", 1),
                limit=_parse_positive_int(query.get("limit"), "limit", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
                clock_offset=clock_offset(),
            )
        )

    # No paging is documented here: page and size are ignored, as a sibling endpoint does on a live host.
    async def get_aggregate_instances(request: Request) -> JSONResponse:
        query = request.query_params
        return JSONResponse(
            state.aggregate_instances(
                batch_id=query.get("batchId") or None,
                catalog_id=query.get("catalogId") or None,
                model_id=query.get("modelId") or None,
                statuses=_comma_separated(query, "status"),
                table_name=query.get("tableName") or None,
                definition_id=query.get("definitionId") or None,
                limit=state.config.instances_row_limit,
                clock_offset=clock_offset(),
            )
        )

    for path in INSTANCES_PATHS:
        api.add_api_route(path, get_aggregate_instances, methods=["GET"], dependencies=authenticated)

    @api.get(CATALOGS_PATH, dependencies=authenticated)
    async def get_catalogs() -> JSONResponse:
        return JSONResponse(state.catalogs_payload())

    @api.post(TOKEN_EXCHANGE_PATH)
    async def exchange_token(request: Request) -> JSONResponse:
        return JSONResponse(tokens.exchange_api_token(bearer_token(request)))

    @api.post(OIDC_TOKEN_PATH)
    async def oidc_token(request: Request) -> JSONResponse:
        raw = (await request.body()).decode("utf-8", errors="replace")
        form = dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))
        return JSONResponse(tokens.token_grant(form), headers={"Cache-Control": "no-store"})

    _add_control_routes(api, state, faults, request_log)
    return api


def _design_center_refusal(tokens: TokenIssuer, token: str | None) -> str:
    if token is None:
        return "Missing bearer token: batch history needs a JWT"
    if tokens.is_api_token(token):
        return (
            "Batch history is a Design Center API and needs a JWT, not an API token: "
            f"exchange the API token at POST {TOKEN_EXCHANGE_PATH} first"
        )
    return "Invalid or expired JWT"


def _add_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(request, exc.code, exc.message)

    @api.exception_handler(OAuthError)
    async def oauth_error(request: Request, exc: OAuthError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.code, headers={"Cache-Control": "no-store"})

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            # NestJS's own wording for a path no route serves.
            message = f"Cannot {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return _error_response(request, exc.status_code, message, exc.headers)

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(request, 400, f"Invalid request: {exc.errors()}")


def _error_response(
    request: Request, code: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    if code == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    body = error_body_for_path(request.url.path, code, message)
    return JSONResponse(body, status_code=code, headers=headers)


def _add_control_routes(
    api: FastAPI, state: EmulatorState, faults: FaultInjector, request_log: RequestLog
) -> None:
    @api.get(f"{CONTROL_PREFIX}/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get(f"{CONTROL_PREFIX}/faults")
    async def get_faults() -> dict[str, Any]:
        return dataclasses.asdict(faults.config)

    @api.put(f"{CONTROL_PREFIX}/faults")
    async def put_faults(request: Request) -> dict[str, Any]:
        body = await _json_object_body(request)
        try:
            config = FaultConfig(**body)
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
        now = state.clock.now()
        offset = faults.config.clock_offset_seconds
        return [
            {
                **state.batch_payload(batch, now=now, history=True, clock_offset=offset),
                "gracePeriodOverrides": dict(batch.grace_period_overrides),
            }
            for batch in state.batches()
        ]


def _comma_separated(query: QueryParams, name: str) -> frozenset[str] | None:
    values = frozenset(
        value.strip() for raw in query.getlist(name) for value in raw.split(",") if value.strip()
    )
    return values or None


def _parse_bool(value: str | None, name: str) -> bool:
    if value == "true":
        return True
    if value == "false":
        return False
    if value is None:
        raise ApiError(400, f"Query parameter '{name}' is required and must be 'true' or 'false'")
    raise ApiError(400, f"Query parameter '{name}' must be 'true' or 'false', got '{value}'")


def _parse_positive_int(value: str | None, name: str, default: int, maximum: int | None = None) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
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
        raise ApiError(400, f"Request body must be a JSON object, got {json_type_name(body)}")
    return body
