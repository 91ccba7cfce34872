"""
The emulator's batches, batch history and aggregate instances: pure Python, thread-safe, no HTTP.

Statuses are computed from the clock when read, so a manual clock moves every batch at once: ``new`` for the
queue time, ``inprogress`` while the aggregates are built one after the other, then ``done`` (or ``failed``).
Beside each aggregate batch, history holds one of type :data:`OTHER_BATCH_TYPE` (invented: no public material
names the others), as real histories hold others.
Timestamps are written on AtScale's clock: the emulator's, shifted by the ``clock_offset`` passed in.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from airflow_provider_atscale.emulator.clock import Clock, SystemClock
from airflow_provider_atscale.emulator.config import (
    DEFAULT_USERNAME,
    AggregateDefinition,
    CatalogConfig,
    EmulatorConfig,
    ModelConfig,
)
from airflow_provider_atscale.emulator.errors import ApiError

BATCH_TYPE = "aggregate_batch"
OTHER_BATCH_TYPE = "aggregate_cleanup"
PUBLISHED_AT = "2025-01-15T10:00:00.000Z"
TABLE_SCHEMA = "atscale_aggs"
CONNECTION_ID = "snowflake-warehouse"
GENERIC_FAILURE_MESSAGE = "Aggregate table '{table}' could not be built: the data warehouse query failed"


def _iso_utc(timestamp: float) -> str:
    # As the API writes them: ISO-8601, UTC, milliseconds, Z.
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class BatchRecord:
    """
    A batch as created; its status at any time follows from the clock.

    :param id: Batch id (uuid4).
    :param catalog_id: Catalog of the model.
    :param model_id: Model built.
    :param is_full_build: Whether every aggregate is rebuilt.
    :param grace_period_overrides: Overrides sent with an incremental build.
    :param created_at: Creation time on the emulator's clock, in seconds since the Unix epoch.
    :param queue_seconds: Time spent ``new``.
    :param build_seconds: Time spent ``inprogress``.
    :param fail: Whether the batch ends ``failed``.
    :param aggregates: Aggregates materialized, in build order.
    :param instance_ids: Id of the aggregate instance of each aggregate.
    :param final_status: The status the batch ends in instead of ``done``/``failed``, if set.
    :param batch_type: ``aggregate_batch``, or :data:`OTHER_BATCH_TYPE` for the other batches of history.
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
    final_status: str | None = None
    batch_type: str = BATCH_TYPE

    @property
    def started_at(self) -> float:
        """Time the batch leaves ``new``."""
        return self.created_at + self.queue_seconds

    @property
    def finished_at(self) -> float:
        """Time the batch ends."""
        return self.started_at + self.build_seconds

    def status_at(self, now: float) -> str:
        """
        Return the batch status at a given time.

        :param now: Seconds since the Unix epoch, on the emulator's clock.
        """
        if now < self.started_at:
            return "new"
        if now < self.finished_at:
            return "inprogress"
        return self.final_status or ("failed" if self.fail else "done")


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
        self.reset()

    def reset(self) -> None:
        """Forget every batch and restore the configured catalogs and batch history settings."""
        with self._lock:
            self._catalogs = {catalog.id: catalog for catalog in self.config.catalogs}
            # Aggregate batches, as created; the history holds the other batches too.
            self._batches: list[BatchRecord] = []
            self._history: list[BatchRecord] = []
            self._by_id: dict[str, BatchRecord] = {}
            # Plain flags, each read and written at once: the lock adds nothing to them.
            self.batch_history_enabled = self.config.serve_batch_history
            self.batch_history_accepts_api_tokens = False

    def _find_model(self, catalog_id: str, model_id: str) -> ModelConfig:
        with self._lock:
            catalog = self._catalogs.get(catalog_id)
            if catalog is None:
                known = ", ".join(sorted(self._catalogs)) or "none"
                raise ApiError(404, f"Catalog '{catalog_id}' not found; known catalogs: {known}")
            for model in catalog.models:
                if model.id == model_id:
                    return model
            known = ", ".join(f"{model.id} ({model.name})" for model in catalog.models) or "none"
            raise ApiError(404, f"Model '{model_id}' not found in catalog '{catalog_id}'; known: {known}")

    def configure_model(self, model_id: str, *, catalog_id: str | None = None, **changes: Any) -> ModelConfig:
        """
        Change a model; batches created from now on follow the change, existing ones do not.

        :param model_id: Model to change.
        :param catalog_id: Catalog of the model, needed only when several catalogs hold that model id.
        :param changes: Fields of :class:`ModelConfig` to replace, e.g. ``fail=True, build_seconds=2``.
        :return: The new model configuration.
        :raises KeyError: When no catalog, or more than one, holds the model.
        """
        with self._lock:
            holders = [
                catalog
                for catalog in self._catalogs.values()
                if catalog_id in (None, catalog.id) and any(model.id == model_id for model in catalog.models)
            ]
            if len(holders) != 1:
                raise KeyError(f"Model '{model_id}' is in {len(holders)} catalogs; pass the one catalog_id")
            (catalog,) = holders
            new = dataclasses.replace(self._find_model(catalog.id, model_id), **changes)
            models = tuple(new if model.id == model_id else model for model in catalog.models)
            self._catalogs[catalog.id] = dataclasses.replace(catalog, models=models)
            return new

    def catalogs_payload(self) -> list[dict[str, Any]]:
        """Return the body of ``GET /v1/catalogs``."""
        with self._lock:
            catalogs: list[CatalogConfig] = list(self._catalogs.values())
        return [
            {
                "id": catalog.id,
                "name": catalog.name,
                "caption": catalog.name,
                "publishedAt": PUBLISHED_AT,
                "publishedBy": DEFAULT_USERNAME,
                "models": [
                    {"id": model.id, "name": model.name, "caption": model.name} for model in catalog.models
                ],
            }
            for catalog in catalogs
        ]

    def set_batch_history_enabled(self, enabled: bool) -> None:
        """
        Serve batch history, or answer 403 there to everyone.

        :param enabled: Serve it when true.
        """
        self.batch_history_enabled = enabled

    def set_batch_history_accepts_api_tokens(self, accepted: bool) -> None:
        """
        Let batch history accept raw API tokens besides JWTs, as no real server is known to, or not.

        :param accepted: Accept them when true.
        """
        self.batch_history_accepts_api_tokens = accepted

    def create_batch(
        self,
        catalog_id: str,
        model_id: str,
        *,
        is_full_build: bool,
        grace_period_overrides: Mapping[str, Any] | None = None,
    ) -> BatchRecord:
        """
        Create an aggregate batch, as ``POST /v1/aggregates-batch/...`` does, and the batch of another type
        that comes with it in history: a millisecond newer, done when the build is half way.

        :param catalog_id: Catalog of the model.
        :param model_id: Model to build.
        :param is_full_build: Rebuild every aggregate when true.
        :param grace_period_overrides: Dataset name to grace period, as the API checks them.
        :raises ApiError: 404 for an unknown catalog or model.
        """
        with self._lock:
            model = self._find_model(catalog_id, model_id)
            queue = model.queue_seconds
            build = model.build_seconds
            batch = BatchRecord(
                id=str(uuid.uuid4()),
                catalog_id=catalog_id,
                model_id=model_id,
                is_full_build=is_full_build,
                grace_period_overrides=MappingProxyType(dict(grace_period_overrides or {})),
                created_at=self.clock.now(),
                queue_seconds=queue if queue is not None else self.config.default_queue_seconds,
                build_seconds=build if build is not None else self.config.default_build_seconds,
                fail=model.fail,
                aggregates=model.aggregates,
                instance_ids=tuple(str(uuid.uuid4()) for _ in model.aggregates),
                final_status=model.final_status,
            )
            # Ending while its aggregate batch still runs: a client following it would report the build
            # finished too early.
            other = dataclasses.replace(
                batch,
                id=str(uuid.uuid4()),
                grace_period_overrides=MappingProxyType({}),
                created_at=batch.created_at + 0.001,
                queue_seconds=0.0,
                build_seconds=batch.queue_seconds + batch.build_seconds / 2,
                fail=False,
                aggregates=(),
                instance_ids=(),
                final_status=None,
                batch_type=OTHER_BATCH_TYPE,
            )
            self._batches.append(batch)
            self._history += [batch, other]
            self._by_id.update({batch.id: batch, other.id: other})
            return batch

    def batches(self) -> list[BatchRecord]:
        """Return every aggregate batch created so far, oldest first (not the other batches of history)."""
        with self._lock:
            return list(self._batches)

    def batch_payload(
        self, batch: BatchRecord, *, now: float | None = None, clock_offset: float = 0.0
    ) -> dict[str, Any]:
        """
        Render a batch as the API does.

        :param batch: The batch.
        :param now: For batch history: the time of its status, ``startTime`` and ``endTime``; ``None`` for
            the answer that creates it.
        :param clock_offset: Seconds AtScale's clock runs ahead of the emulator's.
        """
        payload: dict[str, Any] = {
            "id": batch.id,
            "catalogId": batch.catalog_id,
            "modelId": batch.model_id,
            "createDate": _iso_utc(batch.created_at + clock_offset),
            "status": "new" if now is None else batch.status_at(now),
            "estimateTime": round(batch.build_seconds * 1000),
            "isFullBuild": batch.is_full_build,
            "batchType": batch.batch_type,
        }
        if now is not None:
            started, finished = now >= batch.started_at, now >= batch.finished_at
            payload["startTime"] = _iso_utc(batch.started_at + clock_offset) if started else None
            payload["endTime"] = _iso_utc(batch.finished_at + clock_offset) if finished else None
        return payload

    def batch_history(
        self, catalog_id: str | None, model_id: str | None, page: int, limit: int, clock_offset: float = 0.0
    ) -> dict[str, Any]:
        """
        Return the body of ``GET /wapi/p/aggregate/batch-history``: batches of every type, newest first.

        :param catalog_id: Only batches of this catalog, when given.
        :param model_id: Only batches of this model, when given.
        :param page: 1-based page number.
        :param limit: Page size.
        :param clock_offset: Seconds AtScale's clock runs ahead of the emulator's.
        """
        now = self.clock.now()
        with self._lock:
            matching = [
                batch
                for batch in reversed(self._history)
                if catalog_id in (None, batch.catalog_id) and model_id in (None, batch.model_id)
            ]
        offset = (page - 1) * limit
        return {
            "data": [
                self.batch_payload(batch, now=now, clock_offset=clock_offset)
                for batch in matching[offset : offset + limit]
            ],
            "total": len(matching),
            "limit": limit,
            "offset": offset,
        }

    def aggregate_instances(
        self, filters: Mapping[str, Collection[str]], *, limit: int | None, clock_offset: float = 0.0
    ) -> dict[str, Any]:
        """
        Return the body of ``GET /v1/aggregates/instances``: ``{"data": [...]}``, newest batch first,
        aggregates in build order, at most ``limit`` rows and no total, so a long list is cut short silently.

        :param filters: A field of the instance (``batchId``, ``modelId``, ``status``, ...) to the values
            it may have.
        :param limit: Most rows listed; ``None`` lists them all.
        :param clock_offset: Seconds AtScale's clock runs ahead of the emulator's.
        """
        now = self.clock.now()
        with self._lock:
            # Pollers ask by batch id: a dictionary lookup keeps that cheap however many batches exist.
            candidates = [self._by_id[key] for key in filters.get("batchId", ()) if key in self._by_id]
            if "batchId" not in filters:
                candidates = list(reversed(self._batches))
        rows: list[dict[str, Any]] = []
        for batch in candidates:
            for index in range(len(batch.aggregates)):
                row = _instance_payload(batch, index, now, clock_offset)
                if all(row[name] in accepted for name, accepted in filters.items()):
                    rows.append(row)
                    if len(rows) == limit:
                        return {"data": rows}
        return {"data": rows}


def _instance_payload(batch: BatchRecord, index: int, now: float, clock_offset: float) -> dict[str, Any]:
    aggregate = batch.aggregates[index]
    step = batch.build_seconds / len(batch.aggregates)
    start = batch.started_at + index * step
    # The last aggregate ends exactly with the batch, whatever float rounding says.
    end = batch.finished_at if index == len(batch.aggregates) - 1 else start + step
    started, finished = now >= start, now >= end
    message = None
    if batch.fail:
        # Aggregates fail with their own messages, or, when none has one, all with a generic message.
        has_messages = any(candidate.failure_message for candidate in batch.aggregates)
        message = (
            aggregate.failure_message
            if has_messages
            else GENERIC_FAILURE_MESSAGE.format(table=aggregate.table_name)
        )
    status = ("invalid" if message else "active") if finished else "inprogress" if started else "pending"
    return {
        "id": batch.instance_ids[index],
        "status": status,
        "message": message if finished else None,
        "tableName": aggregate.table_name,
        "tableSchema": TABLE_SCHEMA,
        "batchId": batch.id,
        "stats": {
            "materializationStartTime": _iso_utc(start + clock_offset) if started else None,
            "materializationEndTime": _iso_utc(end + clock_offset) if finished else None,
            "buildDuration": round((end - start) * 1000) if finished else None,
            "numberOfRows": aggregate.number_of_rows if status == "active" else None,
        },
        "catalogId": batch.catalog_id,
        "modelId": batch.model_id,
        "definitionId": aggregate.id,
        "connectionId": CONNECTION_ID,
    }
