"""
The emulator's state machine: catalogs, batches, aggregate instances and tokens.

Pure Python and thread-safe, with no HTTP in it. Statuses are not stored: they are computed from the
clock whenever they are read, so a :class:`~airflow_provider_atscale.emulator.clock.ManualClock` moves
every batch forward at once. A batch is ``new`` for ``queue_seconds``, then ``inprogress`` while its
aggregates are built one after the other for ``build_seconds`` in total, then ``done`` (or ``failed`` for
a model configured to fail).
"""

from __future__ import annotations

import dataclasses
import hmac
import itertools
import secrets
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

import jwt

from airflow_provider_atscale.emulator.clock import Clock, SystemClock
from airflow_provider_atscale.emulator.config import (
    AggregateDefinition,
    CatalogConfig,
    EmulatorConfig,
    ModelConfig,
)
from airflow_provider_atscale.emulator.errors import ApiError, OAuthError

BATCH_TYPE = "aggregate_batch"
INSTANCE_PENDING = "pending"
INSTANCE_BUILDING = "inprogress"
INSTANCE_ACTIVE = "active"
INSTANCE_INVALID = "invalid"
GENERIC_FAILURE_MESSAGE = "Aggregate table '{table}' could not be built: the data warehouse query failed"

TOKEN_ISSUER = "atscale-emulator"
_ACCESS = "Bearer"
_REFRESH = "Refresh"
_JWT_ALGORITHM = "HS256"


def iso_utc(timestamp: float) -> str:
    """
    Format a timestamp the way the API does: ISO-8601, UTC, milliseconds, ``Z``.

    :param timestamp: Seconds since the Unix epoch.
    """
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class BatchRecord:
    """
    A batch as created; its status at any time follows from the clock.

    :param id: Batch id (uuid4).
    :param catalog_id: Catalog of the model.
    :param model_id: Model built.
    :param is_full_build: Whether all aggregates are rebuilt.
    :param grace_period_overrides: Overrides sent with an incremental build.
    :param created_at: Creation time in seconds since the Unix epoch.
    :param queue_seconds: Time spent ``new``.
    :param build_seconds: Time spent ``inprogress``.
    :param fail: Whether the batch ends ``failed``.
    :param final_status: The status the batch ends in instead of ``done``/``failed``, if set.
    :param aggregates: Aggregates materialized, in build order.
    :param instance_ids: Id of the aggregate instance for each aggregate.
    :param table_schema: Schema of the aggregate tables.
    :param connection_id: Connection the aggregates are built on.
    :param sequence: Creation order, to sort batches created at the same instant.
    """

    id: str
    catalog_id: str
    model_id: str
    is_full_build: bool
    grace_period_overrides: Mapping[str, int]
    created_at: float
    queue_seconds: float
    build_seconds: float
    fail: bool
    aggregates: tuple[AggregateDefinition, ...]
    instance_ids: tuple[str, ...]
    table_schema: str
    connection_id: str
    sequence: int
    final_status: str | None = None

    @property
    def started_at(self) -> float:
        """Time the batch leaves ``new``."""
        return self.created_at + self.queue_seconds

    @property
    def finished_at(self) -> float:
        """Time the batch reaches ``done`` or ``failed``."""
        return self.started_at + self.build_seconds

    @property
    def estimate_time(self) -> int:
        """Estimated build time in milliseconds, the unit of ``buildDuration``."""
        return round(self.build_seconds * 1000)

    def status_at(self, now: float) -> str:
        """
        Return the batch status at a given time.

        :param now: Seconds since the Unix epoch.
        """
        if now < self.started_at:
            return "new"
        if now < self.finished_at:
            return "inprogress"
        if self.final_status is not None:
            return self.final_status
        return "failed" if self.fail else "done"

    def aggregate_window(self, index: int) -> tuple[float, float]:
        """
        Return when the aggregate at ``index`` starts and ends materializing.

        :param index: Position of the aggregate in :attr:`aggregates`.
        """
        step = self.build_seconds / len(self.aggregates)
        start = self.started_at + index * step
        # The last window ends exactly with the batch, whatever float rounding says.
        end = self.finished_at if index == len(self.aggregates) - 1 else start + step
        return start, end

    def failure_message(self, index: int) -> str | None:
        """
        Return why the aggregate at ``index`` fails, or ``None`` when it builds fine.

        :param index: Position of the aggregate in :attr:`aggregates`.
        """
        if not self.fail:
            return None
        aggregate = self.aggregates[index]
        if any(candidate.failure_message for candidate in self.aggregates):
            return aggregate.failure_message
        return GENERIC_FAILURE_MESSAGE.format(table=aggregate.table_name)


class EmulatorState:
    """
    Catalogs, batches and tokens of one emulated AtScale engine.

    :param config: What to serve; defaults to :class:`EmulatorConfig` ().
    :param clock: Time source; defaults to the system clock.
    """

    def __init__(self, config: EmulatorConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.RLock()
        self._catalogs: dict[str, CatalogConfig] = {catalog.id: catalog for catalog in self.config.catalogs}
        self._batches: list[BatchRecord] = []
        self._batches_by_id: dict[str, BatchRecord] = {}
        self._sequence = itertools.count()
        self._serve_batch_history = self.config.serve_batch_history
        # A fresh key per state: tokens of one emulator run are worthless to another.
        self._signing_key = secrets.token_bytes(32)

    def reset(self) -> None:
        """Forget every batch and issued token and restore the configured catalogs and settings."""
        with self._lock:
            self._catalogs = {catalog.id: catalog for catalog in self.config.catalogs}
            self._batches.clear()
            self._batches_by_id.clear()
            self._serve_batch_history = self.config.serve_batch_history
            self._signing_key = secrets.token_bytes(32)

    # Catalogs and models

    def catalogs(self) -> tuple[CatalogConfig, ...]:
        """Return the catalogs as currently configured."""
        with self._lock:
            return tuple(self._catalogs.values())

    def find_model(self, catalog_id: str, model_id: str) -> ModelConfig:
        """
        Return a model, or raise the 404 the API answers.

        :param catalog_id: Catalog id.
        :param model_id: Model id.
        :raises ApiError: 404 when the catalog or the model is unknown.
        """
        with self._lock:
            catalog = self._catalogs.get(catalog_id)
            if catalog is None:
                known = ", ".join(sorted(self._catalogs)) or "none"
                raise ApiError(404, f"Catalog '{catalog_id}' not found; known catalogs: {known}")
            for model in catalog.models:
                if model.id == model_id:
                    return model
            known = ", ".join(f"{model.id} ({model.name})" for model in catalog.models) or "none"
            raise ApiError(
                404, f"Model '{model_id}' not found in catalog '{catalog_id}'; known models: {known}"
            )

    def configure_model(self, model_id: str, *, catalog_id: str | None = None, **changes: Any) -> ModelConfig:
        """
        Change a model's configuration; batches created from now on use it, existing ones keep theirs.

        :param model_id: Model to change.
        :param catalog_id: Catalog of the model, needed only when several catalogs hold that model id.
        :param changes: Fields of :class:`ModelConfig` to replace, e.g. ``fail=True, build_seconds=2``.
        :return: The new model configuration.
        :raises KeyError: When no catalog (or more than one) holds the model.
        """
        with self._lock:
            holders = [
                catalog
                for catalog in self._catalogs.values()
                if (catalog_id is None or catalog.id == catalog_id)
                and any(model.id == model_id for model in catalog.models)
            ]
            if len(holders) != 1:
                raise KeyError(f"Model '{model_id}' is in {len(holders)} catalogs; pass the one catalog_id")
            catalog = holders[0]
            new_model = next(model for model in catalog.models if model.id == model_id)
            new_model = dataclasses.replace(new_model, **changes)
            models = tuple(new_model if model.id == model_id else model for model in catalog.models)
            self._catalogs[catalog.id] = dataclasses.replace(catalog, models=models)
            return new_model

    def catalogs_payload(self) -> list[dict[str, Any]]:
        """Return the body of ``GET /v1/catalogs``."""
        return [
            {
                "id": catalog.id,
                "name": catalog.name,
                "caption": catalog.caption or catalog.name,
                "publishedAt": catalog.published_at,
                "publishedBy": catalog.published_by,
                "models": [
                    {"id": model.id, "name": model.name, "caption": model.caption or model.name}
                    for model in catalog.models
                ],
            }
            for catalog in self.catalogs()
        ]

    # Batches

    @property
    def batch_history_enabled(self) -> bool:
        """Whether the batch history endpoint is served."""
        with self._lock:
            return self._serve_batch_history

    def set_batch_history_enabled(self, enabled: bool) -> None:
        """
        Serve the batch history endpoint or answer 404 there.

        :param enabled: Serve it when true.
        """
        with self._lock:
            self._serve_batch_history = enabled

    def create_batch(
        self,
        catalog_id: str,
        model_id: str,
        *,
        is_full_build: bool,
        grace_period_overrides: Mapping[str, Any] | None = None,
    ) -> BatchRecord:
        """
        Create a batch, as ``POST /v1/aggregates-batch/...`` does.

        :param catalog_id: Catalog of the model.
        :param model_id: Model to build.
        :param is_full_build: Rebuild every aggregate when true.
        :param grace_period_overrides: Dataset name to grace period; incremental builds only.
        :raises ApiError: 400 for invalid overrides, 404 for an unknown catalog or model.
        """
        overrides = validate_grace_period_overrides(grace_period_overrides or {}, is_full_build=is_full_build)
        with self._lock:
            model = self.find_model(catalog_id, model_id)
            batch = BatchRecord(
                id=str(uuid.uuid4()),
                catalog_id=catalog_id,
                model_id=model_id,
                is_full_build=is_full_build,
                grace_period_overrides=MappingProxyType(overrides),
                created_at=self.clock.now(),
                queue_seconds=(
                    model.queue_seconds
                    if model.queue_seconds is not None
                    else self.config.default_queue_seconds
                ),
                build_seconds=(
                    model.build_seconds
                    if model.build_seconds is not None
                    else self.config.default_build_seconds
                ),
                fail=model.fail,
                final_status=model.final_status,
                aggregates=model.aggregates,
                instance_ids=tuple(str(uuid.uuid4()) for _ in model.aggregates),
                table_schema=model.table_schema,
                connection_id=model.connection_id,
                sequence=next(self._sequence),
            )
            self._batches.append(batch)
            self._batches_by_id[batch.id] = batch
            return batch

    def batches(self) -> list[BatchRecord]:
        """Return every batch created so far, oldest first."""
        with self._lock:
            return list(self._batches)

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        """
        Return a batch by id, or ``None``.

        :param batch_id: Batch id.
        """
        with self._lock:
            return self._batches_by_id.get(batch_id)

    def batch_status(self, batch_id: str) -> str:
        """
        Return a batch's status now.

        :param batch_id: Batch id.
        :raises KeyError: For an unknown batch.
        """
        batch = self.get_batch(batch_id)
        if batch is None:
            raise KeyError(f"Unknown batch '{batch_id}'")
        return batch.status_at(self.clock.now())

    def batch_payload(
        self, batch: BatchRecord, *, now: float | None = None, history: bool = False
    ) -> dict[str, Any]:
        """
        Render a batch as the API does.

        :param batch: The batch.
        :param now: Time to compute the status at; ``None`` means the creation response (status ``new``).
        :param history: Add ``startTime`` and ``endTime`` as the batch history endpoint does.
        """
        status = "new" if now is None else batch.status_at(now)
        payload: dict[str, Any] = {
            "id": batch.id,
            "catalogId": batch.catalog_id,
            "modelId": batch.model_id,
            "createDate": iso_utc(batch.created_at),
            "status": status,
            "estimateTime": batch.estimate_time,
            "isFullBuild": batch.is_full_build,
            "batchType": BATCH_TYPE,
        }
        if history:
            moment = batch.created_at if now is None else now
            payload["startTime"] = iso_utc(batch.started_at) if moment >= batch.started_at else None
            payload["endTime"] = iso_utc(batch.finished_at) if moment >= batch.finished_at else None
        return payload

    def batch_history(
        self, *, catalog_id: str | None = None, model_id: str | None = None, page: int = 1, limit: int = 20
    ) -> dict[str, Any]:
        """
        Return the body of ``GET /wapi/p/aggregate/batch-history``: newest first, filtered, paged.

        :param catalog_id: Only batches of this catalog, when given.
        :param model_id: Only batches of this model, when given.
        :param page: 1-based page number.
        :param limit: Page size.
        """
        _check_paging(page, limit, "limit")
        now = self.clock.now()
        with self._lock:
            matching = [
                batch
                for batch in reversed(self._batches)
                if (catalog_id is None or batch.catalog_id == catalog_id)
                and (model_id is None or batch.model_id == model_id)
            ]
        offset = (page - 1) * limit
        return {
            "data": [
                self.batch_payload(batch, now=now, history=True)
                for batch in matching[offset : offset + limit]
            ],
            "total": len(matching),
            "limit": limit,
            "offset": offset,
        }

    def aggregate_instances(
        self,
        *,
        batch_id: str | None = None,
        catalog_id: str | None = None,
        model_id: str | None = None,
        page: int = 1,
        size: int = 20,
    ) -> dict[str, Any]:
        """
        Return the body of ``GET /v1/aggregates/instances``: newest batch first, aggregates in build order.

        :param batch_id: Only instances of this batch, when given.
        :param catalog_id: Only instances of this catalog, when given.
        :param model_id: Only instances of this model, when given.
        :param page: 1-based page number.
        :param size: Page size.
        """
        _check_paging(page, size, "size")
        now = self.clock.now()
        with self._lock:
            # Pollers ask by batch id: a dictionary lookup keeps that cheap however many batches exist.
            if batch_id is None:
                candidates = list(reversed(self._batches))
            else:
                found = self._batches_by_id.get(batch_id)
                candidates = [found] if found is not None else []
            matching = [
                (batch, index)
                for batch in candidates
                if (catalog_id is None or batch.catalog_id == catalog_id)
                and (model_id is None or batch.model_id == model_id)
                for index in range(len(batch.aggregates))
            ]
        offset = (page - 1) * size
        return {
            "data": [
                _instance_payload(batch, index, now) for batch, index in matching[offset : offset + size]
            ],
            "total": len(matching),
            "size": size,
            "page": page,
        }

    # Authentication

    def is_api_token(self, token: str | None) -> bool:
        """
        Tell whether a token is one of the configured API tokens.

        :param token: Bearer token sent by a client.
        """
        if not token:
            return False
        return any(hmac.compare_digest(token, known) for known in self.config.api_tokens)

    def is_authorized(self, token: str | None) -> bool:
        """
        Tell whether a bearer token grants access: an API token or an unexpired issued access token.

        :param token: Bearer token sent by a client.
        """
        if self.is_api_token(token):
            return True
        claims = self._decode(token, _ACCESS)
        return claims is not None

    def issue_access_token(self, subject: str, ttl_seconds: float) -> str:
        """
        Issue an access token (a HS256 JWT with an ``exp`` claim) valid for ``ttl_seconds``.

        :param subject: Who the token is for.
        :param ttl_seconds: Lifetime in seconds.
        """
        return self._encode(subject, _ACCESS, ttl_seconds)

    def exchange_api_token(self, token: str | None, ttl_seconds: float) -> dict[str, str]:
        """
        Return the body of ``POST /v1/token``: a short-lived access token for an API token.

        :param token: Bearer token sent by the client; must be an API token.
        :param ttl_seconds: Lifetime of the access token.
        :raises ApiError: 401 when the token is not an API token.
        """
        if not self.is_api_token(token):
            raise ApiError(401, "A valid API token is required to request an access token")
        return {"accessToken": self.issue_access_token("api-token", ttl_seconds)}

    def token_grant(self, form: Mapping[str, str], ttl_seconds: float) -> dict[str, Any]:
        """
        Answer the identity broker token endpoint for the ``password`` and ``refresh_token`` grants.

        :param form: Form fields of the request.
        :param ttl_seconds: Lifetime of the access token.
        :raises OAuthError: For a missing field, an unknown client or grant, or invalid credentials.
        """
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
        self._check_client(form)
        if grant_type == "password":
            subject = self._check_password(form)
        elif grant_type == "refresh_token":
            subject = self._check_refresh_token(form)
        else:
            raise OAuthError(400, "unsupported_grant_type", f"Unsupported grant_type '{grant_type}'")
        refresh_ttl = self.config.refresh_token_ttl_seconds
        return {
            "access_token": self._encode(subject, _ACCESS, ttl_seconds),
            "expires_in": int(ttl_seconds),
            "refresh_token": self._encode(subject, _REFRESH, refresh_ttl),
            "refresh_expires_in": int(refresh_ttl),
            "token_type": "Bearer",
        }

    def _check_client(self, form: Mapping[str, str]) -> None:
        client_id = form.get("client_id")
        if not client_id:
            raise OAuthError(400, "invalid_request", "Missing parameter: client_id")
        secret = self.config.client_secret
        if client_id != self.config.client_id or (
            secret is not None and not hmac.compare_digest(form.get("client_secret", ""), secret)
        ):
            raise OAuthError(401, "invalid_client", "Invalid client or Invalid client credentials")

    def _check_password(self, form: Mapping[str, str]) -> str:
        username, password = form.get("username"), form.get("password")
        if not username or password is None:
            raise OAuthError(400, "invalid_request", "Missing parameter: username or password")
        for user in self.config.users:
            if user.username == username and hmac.compare_digest(user.password, password):
                return username
        raise OAuthError(401, "invalid_grant", "Invalid user credentials")

    def _check_refresh_token(self, form: Mapping[str, str]) -> str:
        token = form.get("refresh_token")
        if not token:
            raise OAuthError(400, "invalid_request", "Missing parameter: refresh_token")
        claims = self._decode(token, _REFRESH)
        if claims is None:
            raise OAuthError(400, "invalid_grant", "Invalid refresh token or token is not active")
        return str(claims["sub"])

    def _encode(self, subject: str, token_type: str, ttl_seconds: float) -> str:
        now = self.clock.now()
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "iat": int(now),
            # Rounded down so a token never outlives its configured lifetime.
            "exp": int(now + ttl_seconds),
            "jti": str(uuid.uuid4()),
            "typ": token_type,
            "azp": self.config.client_id,
        }
        return jwt.encode(claims, self._signing_key, algorithm=_JWT_ALGORITHM)

    def _decode(self, token: str | None, token_type: str) -> dict[str, Any] | None:
        if not token:
            return None
        try:
            # Expiry is checked against the emulator's clock below, not the wall clock pyjwt would use.
            claims: dict[str, Any] = jwt.decode(
                token,
                self._signing_key,
                algorithms=[_JWT_ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            return None
        if claims.get("typ") != token_type or not isinstance(claims.get("exp"), int):
            return None
        if self.clock.now() >= claims["exp"]:
            return None
        return claims


def validate_grace_period_overrides(overrides: Any, *, is_full_build: bool) -> dict[str, int]:
    """
    Check ``gracePeriodOverrides``: an object of non-empty dataset names to non-negative integers,
    empty for a full build.

    :param overrides: Value sent by the client.
    :param is_full_build: Whether the build is a full build.
    :raises ApiError: 400 naming the offending value.
    """
    if not isinstance(overrides, Mapping):
        raise ApiError(400, f"gracePeriodOverrides must be an object, got {json_type_name(overrides)}")
    for dataset, period in overrides.items():
        if not isinstance(dataset, str) or not dataset.strip():
            raise ApiError(400, f"gracePeriodOverrides keys must be non-empty dataset names, got {dataset!r}")
        if isinstance(period, bool) or not isinstance(period, int) or period < 0:
            raise ApiError(
                400, f"gracePeriodOverrides['{dataset}'] must be a non-negative integer, got {period!r}"
            )
    if overrides and is_full_build:
        raise ApiError(400, "gracePeriodOverrides apply to incremental builds only; send isFullBuild=false")
    return dict(overrides)


def json_type_name(value: Any) -> str:
    """
    Name a value's type the way JSON does, for error messages.

    :param value: A value decoded from JSON.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _check_paging(page: int, size: int, size_name: str) -> None:
    if page < 1:
        raise ApiError(400, f"page must be a positive integer, got {page}")
    if size < 1:
        raise ApiError(400, f"{size_name} must be a positive integer, got {size}")


def _instance_payload(batch: BatchRecord, index: int, now: float) -> dict[str, Any]:
    aggregate = batch.aggregates[index]
    start, end = batch.aggregate_window(index)
    started, finished = now >= start, now >= end
    failure = batch.failure_message(index) if finished else None
    if not started:
        status = INSTANCE_PENDING
    elif not finished:
        status = INSTANCE_BUILDING
    else:
        status = INSTANCE_INVALID if failure else INSTANCE_ACTIVE
    return {
        "id": batch.instance_ids[index],
        "status": status,
        "message": failure,
        "tableName": aggregate.table_name,
        "tableSchema": batch.table_schema,
        "batchId": batch.id,
        "stats": {
            "materializationStartTime": iso_utc(start) if started else None,
            "materializationEndTime": iso_utc(end) if finished else None,
            "buildDuration": round((end - start) * 1000) if finished else None,
            "numberOfRows": aggregate.number_of_rows if status == INSTANCE_ACTIVE else None,
        },
        "catalogId": batch.catalog_id,
        "modelId": batch.model_id,
        "definitionId": aggregate.id,
        "connectionId": batch.connection_id,
    }
