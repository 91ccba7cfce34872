"""
The emulator's state machine: catalogs, batches, batch history and aggregate instances.

Pure Python and thread-safe, with no HTTP and no authentication in it (tokens live in
:mod:`~airflow_provider_atscale.emulator.tokens`). Statuses are not stored: they are computed from the
clock whenever they are read, so a :class:`~airflow_provider_atscale.emulator.clock.ManualClock` moves
every batch forward at once. A batch is ``new`` for ``queue_seconds``, then ``inprogress`` while its
aggregates are built one after the other for ``build_seconds`` in total, then ``done`` (or ``failed`` for
a model configured to fail).

Batch history holds more than aggregate batches, as a real one does: with each aggregate batch comes a
batch of type :data:`OTHER_BATCH_TYPE` (``aggregate_cleanup``, a name invented here: no public material
names the other types). It materializes nothing, and only :meth:`EmulatorState.history_batches` and the
batch history endpoint list it.

Timestamps are written on AtScale's clock: the emulator's clock shifted by a ``clock_offset`` the caller
passes in (``FaultConfig.clock_offset_seconds``). Progress itself follows the emulator's clock.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from airflow_provider_atscale.emulator.clock import Clock, SystemClock
from airflow_provider_atscale.emulator.config import (
    AggregateDefinition,
    CatalogConfig,
    EmulatorConfig,
    ModelConfig,
)
from airflow_provider_atscale.emulator.errors import ApiError

BATCH_TYPE = "aggregate_batch"
OTHER_BATCH_TYPE = "aggregate_cleanup"
# How much later than its aggregate batch the other batch is created: enough to be the newest entry.
OTHER_BATCH_DELAY_SECONDS = 0.001
INSTANCE_PENDING = "pending"
INSTANCE_BUILDING = "inprogress"
INSTANCE_ACTIVE = "active"
INSTANCE_INVALID = "invalid"
GENERIC_FAILURE_MESSAGE = "Aggregate table '{table}' could not be built: the data warehouse query failed"


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
    :param created_at: Creation time in seconds since the Unix epoch, on the emulator's clock.
    :param queue_seconds: Time spent ``new``.
    :param build_seconds: Time spent ``inprogress``.
    :param fail: Whether the batch ends ``failed``.
    :param aggregates: Aggregates materialized, in build order.
    :param instance_ids: Id of the aggregate instance for each aggregate.
    :param table_schema: Schema of the aggregate tables.
    :param connection_id: Connection the aggregates are built on.
    :param sequence: Creation order, to sort batches created at the same instant.
    :param final_status: The status the batch ends in instead of ``done``/``failed``, if set.
    :param batch_type: ``aggregate_batch`` for a build; :data:`OTHER_BATCH_TYPE` for the other batches
        batch history holds, which materialize no aggregates.
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
    batch_type: str = BATCH_TYPE

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

        :param now: Seconds since the Unix epoch, on the emulator's clock.
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

    def aggregate_status_at(self, index: int, now: float) -> str:
        """
        Return the status of the aggregate instance at ``index`` at a given time.

        :param index: Position of the aggregate in :attr:`aggregates`.
        :param now: Seconds since the Unix epoch, on the emulator's clock.
        """
        start, end = self.aggregate_window(index)
        if now < start:
            return INSTANCE_PENDING
        if now < end:
            return INSTANCE_BUILDING
        return INSTANCE_INVALID if self.failure_message(index) else INSTANCE_ACTIVE

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
    Catalogs, batches and batch history of one emulated AtScale engine.

    :param config: What to serve; defaults to :class:`EmulatorConfig` ().
    :param clock: Time source; defaults to the system clock.
    """

    def __init__(self, config: EmulatorConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.RLock()
        self._catalogs: dict[str, CatalogConfig] = {catalog.id: catalog for catalog in self.config.catalogs}
        # Aggregate batches only, as created; the history also holds the other batches.
        self._batches: list[BatchRecord] = []
        self._history: list[BatchRecord] = []
        self._by_id: dict[str, BatchRecord] = {}
        self._sequence = itertools.count()
        self._serve_batch_history = self.config.serve_batch_history
        self._history_accepts_api_tokens = self.config.batch_history_accepts_api_tokens

    def reset(self) -> None:
        """Forget every batch and restore the configured catalogs and settings."""
        with self._lock:
            self._catalogs = {catalog.id: catalog for catalog in self.config.catalogs}
            self._batches.clear()
            self._history.clear()
            self._by_id.clear()
            self._serve_batch_history = self.config.serve_batch_history
            self._history_accepts_api_tokens = self.config.batch_history_accepts_api_tokens

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

    # Batch history settings

    @property
    def batch_history_enabled(self) -> bool:
        """Whether the batch history endpoint answers; when not, it answers 403."""
        with self._lock:
            return self._serve_batch_history

    def set_batch_history_enabled(self, enabled: bool) -> None:
        """
        Serve the batch history endpoint, or answer 403 there to everyone.

        :param enabled: Serve it when true.
        """
        with self._lock:
            self._serve_batch_history = enabled

    @property
    def batch_history_accepts_api_tokens(self) -> bool:
        """Whether batch history accepts raw API tokens besides JWTs."""
        with self._lock:
            return self._history_accepts_api_tokens

    def set_batch_history_accepts_api_tokens(self, accepted: bool) -> None:
        """
        Let batch history accept raw API tokens besides JWTs, or not (the default, as a real server).

        :param accepted: Accept them when true.
        """
        with self._lock:
            self._history_accepts_api_tokens = accepted

    # Batches

    def create_batch(
        self,
        catalog_id: str,
        model_id: str,
        *,
        is_full_build: bool,
        grace_period_overrides: Mapping[str, Any] | None = None,
    ) -> BatchRecord:
        """
        Create an aggregate batch, as ``POST /v1/aggregates-batch/...`` does.

        Unless ``EmulatorConfig.history_includes_other_batches`` is off, batch history also gains a batch of
        :data:`OTHER_BATCH_TYPE` for the same model, a millisecond newer, in progress while the aggregate
        batch is queued and half built. It is not returned by :meth:`batches`.

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
            self._record(batch)
            if self.config.history_includes_other_batches:
                self._record(self._other_batch_beside(batch))
            return batch

    def _other_batch_beside(self, batch: BatchRecord) -> BatchRecord:
        # It ends while its aggregate batch still runs: a client following it would report that build
        # finished too early.
        return dataclasses.replace(
            batch,
            id=str(uuid.uuid4()),
            grace_period_overrides=MappingProxyType({}),
            created_at=batch.created_at + OTHER_BATCH_DELAY_SECONDS,
            queue_seconds=0.0,
            build_seconds=batch.queue_seconds + batch.build_seconds / 2,
            fail=False,
            final_status=None,
            aggregates=(),
            instance_ids=(),
            sequence=next(self._sequence),
            batch_type=OTHER_BATCH_TYPE,
        )

    def _record(self, batch: BatchRecord) -> None:
        self._history.append(batch)
        self._by_id[batch.id] = batch

    def batches(self) -> list[BatchRecord]:
        """Return every aggregate batch created so far, oldest first (not the other batches of history)."""
        with self._lock:
            return list(self._batches)

    def history_batches(self) -> list[BatchRecord]:
        """Return every batch batch history holds, of every type, oldest first."""
        with self._lock:
            return list(self._history)

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        """
        Return a batch of any type by id, or ``None``.

        :param batch_id: Batch id.
        """
        with self._lock:
            return self._by_id.get(batch_id)

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
        self,
        batch: BatchRecord,
        *,
        now: float | None = None,
        history: bool = False,
        clock_offset: float = 0.0,
    ) -> dict[str, Any]:
        """
        Render a batch as the API does.

        :param batch: The batch.
        :param now: Time to compute the status at; ``None`` means the creation response (status ``new``).
        :param history: Add ``startTime`` and ``endTime`` as the batch history endpoint does.
        :param clock_offset: Seconds AtScale's clock runs ahead of the emulator's; shifts every timestamp.
        """
        status = "new" if now is None else batch.status_at(now)
        payload: dict[str, Any] = {
            "id": batch.id,
            "catalogId": batch.catalog_id,
            "modelId": batch.model_id,
            "createDate": iso_utc(batch.created_at + clock_offset),
            "status": status,
            "estimateTime": batch.estimate_time,
            "isFullBuild": batch.is_full_build,
            "batchType": batch.batch_type,
        }
        if history:
            moment = batch.created_at if now is None else now
            started, finished = moment >= batch.started_at, moment >= batch.finished_at
            payload["startTime"] = iso_utc(batch.started_at + clock_offset) if started else None
            payload["endTime"] = iso_utc(batch.finished_at + clock_offset) if finished else None
        return payload

    def batch_history(
        self,
        *,
        catalog_id: str | None = None,
        model_id: str | None = None,
        page: int = 1,
        limit: int = 20,
        clock_offset: float = 0.0,
    ) -> dict[str, Any]:
        """
        Return the body of ``GET /wapi/p/aggregate/batch-history``: batches of every type, newest first,
        filtered, paged.

        :param catalog_id: Only batches of this catalog, when given.
        :param model_id: Only batches of this model, when given.
        :param page: 1-based page number.
        :param limit: Page size.
        :param clock_offset: Seconds AtScale's clock runs ahead of the emulator's.
        """
        if page < 1:
            raise ApiError(400, f"page must be a positive integer, got {page}")
        if limit < 1:
            raise ApiError(400, f"limit must be a positive integer, got {limit}")
        now = self.clock.now()
        with self._lock:
            matching = [
                batch
                for batch in reversed(self._history)
                if (catalog_id is None or batch.catalog_id == catalog_id)
                and (model_id is None or batch.model_id == model_id)
            ]
        offset = (page - 1) * limit
        return {
            "data": [
                self.batch_payload(batch, now=now, history=True, clock_offset=clock_offset)
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
        statuses: Collection[str] | None = None,
        table_name: str | None = None,
        definition_id: str | None = None,
        limit: int | None = None,
        clock_offset: float = 0.0,
    ) -> dict[str, Any]:
        """
        Return the body of ``GET /v1/aggregates/instances``: ``{"data": [...]}``, newest batch first,
        aggregates in build order, at most ``limit`` rows and no total, so a long list is cut short
        without a sign of it.

        :param batch_id: Only instances of this batch, when given.
        :param catalog_id: Only instances of this catalog, when given.
        :param model_id: Only instances of this model, when given.
        :param statuses: Only instances in one of these statuses now, when given (the endpoint takes one
            status, or several separated by commas).
        :param table_name: Only instances of this aggregate table, when given.
        :param definition_id: Only instances of this aggregate definition, when given.
        :param limit: Most rows listed; ``None`` lists them all.
        :param clock_offset: Seconds AtScale's clock runs ahead of the emulator's.
        """
        now = self.clock.now()
        with self._lock:
            # Pollers ask by batch id: a dictionary lookup keeps that cheap however many batches exist.
            if batch_id is None:
                candidates = list(reversed(self._batches))
            else:
                found = self._by_id.get(batch_id)
                candidates = [found] if found is not None else []
        rows: list[dict[str, Any]] = []
        for batch in candidates:
            if (catalog_id is not None and batch.catalog_id != catalog_id) or (
                model_id is not None and batch.model_id != model_id
            ):
                continue
            for index, aggregate in enumerate(batch.aggregates):
                if (table_name is not None and aggregate.table_name != table_name) or (
                    definition_id is not None and aggregate.id != definition_id
                ):
                    continue
                status = batch.aggregate_status_at(index, now)
                if statuses is not None and status not in statuses:
                    continue
                rows.append(_instance_payload(batch, index, status, clock_offset))
                if len(rows) == limit:
                    return {"data": rows}
        return {"data": rows}


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


def _instance_payload(batch: BatchRecord, index: int, status: str, clock_offset: float) -> dict[str, Any]:
    aggregate = batch.aggregates[index]
    start, end = batch.aggregate_window(index)
    started = status != INSTANCE_PENDING
    finished = status in (INSTANCE_ACTIVE, INSTANCE_INVALID)
    return {
        "id": batch.instance_ids[index],
        "status": status,
        "message": batch.failure_message(index) if finished else None,
        "tableName": aggregate.table_name,
        "tableSchema": batch.table_schema,
        "batchId": batch.id,
        "stats": {
            "materializationStartTime": iso_utc(start + clock_offset) if started else None,
            "materializationEndTime": iso_utc(end + clock_offset) if finished else None,
            "buildDuration": round((end - start) * 1000) if finished else None,
            "numberOfRows": aggregate.number_of_rows if status == INSTANCE_ACTIVE else None,
        },
        "catalogId": batch.catalog_id,
        "modelId": batch.model_id,
        "definitionId": aggregate.id,
        "connectionId": batch.connection_id,
    }
