"""
AtScale aggregate batches and instances, and what their statuses mean. Pure Python, no Airflow and no HTTP:
every other module (hook, operator, trigger, emulator) shares one definition of a batch, one classification
of its statuses and one reading of AtScale's timestamps.
"""

from __future__ import annotations

import copy
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


class BatchStatusClass(str, enum.Enum):
    """What a batch status means for a caller waiting on the batch."""

    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


AGGREGATE_BATCH_TYPE = "aggregate_batch"
"""The ``batchType`` of an aggregate build; batch history also lists batches of other kinds."""

# AtScale documents these status values but not their meaning; this is how public clients read them.
IN_PROGRESS_STATUSES = frozenset({"new", "pending", "inprogress", "running"})
SUCCEEDED_STATUSES = frozenset({"done", "success", "active"})
FAILED_STATUSES = frozenset({"failed", "error", "cancelled", "invalid", "unreliable", "deleted"})

# Aggregate instances: AtScale documents active, invalid, pending and deleted; the others are seen in flight.
INSTANCE_BUILT_STATUSES = frozenset({"active", "done", "success"})
INSTANCE_OPEN_STATUSES = frozenset({"pending", "inprogress"})
INSTANCE_FAILED_STATUSES = FAILED_STATUSES

CLOCK_SKEW = 60.0
"""Seconds by which AtScale's clock (which stamps a batch's dates) may run ahead of or behind Airflow's."""

_STATUS_CLASSES: Mapping[str, BatchStatusClass] = {
    **dict.fromkeys(IN_PROGRESS_STATUSES, BatchStatusClass.IN_PROGRESS),
    **dict.fromkeys(SUCCEEDED_STATUSES, BatchStatusClass.SUCCEEDED),
    **dict.fromkeys(FAILED_STATUSES, BatchStatusClass.FAILED),
}


def classify_status(status: str | None) -> BatchStatusClass:
    """Classify a batch status (case and blanks ignored); one outside the vocabulary is ``UNKNOWN``."""
    if not isinstance(status, str):
        return BatchStatusClass.UNKNOWN
    return _STATUS_CLASSES.get(status.strip().lower(), BatchStatusClass.UNKNOWN)


def parse_api_datetime(value: Any) -> datetime | None:
    """An AtScale timestamp (ISO 8601, ``Z`` or an offset) as an aware UTC datetime; ValueError if not one."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 timestamp, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        # Python 3.10 refuses the Z that ends every AtScale timestamp, fractions of other than 3 or 6 digits
        # and offsets without a colon; 3.11 reads them all. Rewritten, they mean the same instant.
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        text = _COMPACT_OFFSET.sub(r"\1:\2", text) if "T" in text else text
        text = _FRACTION.sub(lambda m: f"{m.group(1)}.{m.group(2)[:6].ljust(6, '0')}", text)
        parsed = datetime.fromisoformat(text)
    # AtScale sends UTC; a timestamp without an offset is read as UTC rather than local time.
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


_FRACTION = re.compile(r"(T\d{2}:\d{2}:\d{2})\.(\d+)")
_COMPACT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")


def format_api_datetime(value: datetime) -> str:
    """Format an aware datetime the way AtScale does: UTC, milliseconds, ``Z``."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def format_duration(seconds: float) -> str:
    """A duration for people: ``0.8s``, ``42s``, ``17m 33s``, ``2h 05m`` (below zero reads as zero)."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


@dataclass(frozen=True)
class AggregateBatch:
    """
    One AtScale aggregate batch: a full or incremental build of a model's aggregates.

    :param id: the batch id AtScale assigned.
    :param catalog_id: the catalog the model belongs to.
    :param model_id: the model whose aggregates the batch builds.
    :param status: the batch status as AtScale sent it; its meaning is :attr:`status_class`.
    :param create_date: when AtScale created the batch, an aware datetime.
    :param estimate_time: AtScale's estimate (``estimateTime``), as sent; its unit is not documented, and is
        read as milliseconds, as AtScale's own tools do.
    :param is_full_build: whether every aggregate is rebuilt, rather than an incremental build.
    :param batch_type: AtScale's batch type, e.g. ``aggregate_batch``.
    :param start_time: when the build started, where batch history tells.
    :param end_time: when the build ended, where batch history tells.
    """

    id: str
    catalog_id: str
    model_id: str
    status: str
    create_date: datetime | None = None
    estimate_time: int | float | None = None
    is_full_build: bool | None = None
    batch_type: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    # The object exactly as AtScale sent it, so to_api() gives it back untouched.
    raw: Mapping[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)
    status_class: BatchStatusClass = field(init=False, compare=False, repr=False)
    """What :attr:`status` means: read once, as the waiting loop looks at it on every poll."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status_class", classify_status(self.status))

    @property
    def is_aggregate_batch(self) -> bool:
        """Whether this is an aggregate build (``batchType`` ``aggregate_batch``), not another kind."""
        return self.batch_type == AGGREGATE_BATCH_TYPE

    @property
    def build_type(self) -> str:
        """``full``, ``incremental``, or ``unknown`` where AtScale did not say."""
        return "unknown" if self.is_full_build is None else "full" if self.is_full_build else "incremental"

    @property
    def estimate_seconds(self) -> float | None:
        """AtScale's estimate in seconds, reading ``estimateTime`` as milliseconds; ``None`` if not given."""
        return None if self.estimate_time is None else self.estimate_time / 1000.0

    def describe_estimate(self) -> str:
        """AtScale's estimate as a duration for a log line, or ``not given``."""
        seconds = self.estimate_seconds
        return "not given" if seconds is None else format_duration(seconds)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> AggregateBatch:
        """A batch from AtScale's batch object (of a trigger answer or history); ValueError if malformed."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a batch object, got {type(data).__name__}")
        batch_id, status = data.get("id"), data.get("status")
        if not isinstance(batch_id, str) or not batch_id:
            raise ValueError(f"batch has no id: {dict(data)!r}")
        if not isinstance(status, str) or not status:
            raise ValueError(f"batch {batch_id} has no status")
        estimate = data.get("estimateTime")
        if estimate is not None and (isinstance(estimate, bool) or not isinstance(estimate, (int, float))):
            raise ValueError(f"batch {batch_id} has a non-numeric estimateTime {estimate!r}")
        is_full_build = data.get("isFullBuild")
        if is_full_build is not None and not isinstance(is_full_build, bool):
            raise ValueError(f"batch {batch_id} has a non-boolean isFullBuild {is_full_build!r}")
        return cls(
            id=batch_id,
            catalog_id=str(data.get("catalogId") or ""),
            model_id=str(data.get("modelId") or ""),
            status=status,
            create_date=parse_api_datetime(data.get("createDate")),
            estimate_time=estimate,
            is_full_build=is_full_build,
            batch_type=data.get("batchType"),
            start_time=parse_api_datetime(data.get("startTime")),
            end_time=parse_api_datetime(data.get("endTime")),
            # A shallow copy: the hook reads batches from JSON it parsed and shares with nobody; to_api()
            # hands out deep copies.
            raw=dict(data),
        )

    def to_api(self) -> dict[str, Any]:
        """The batch as AtScale's camelCase object: exactly what AtScale sent, where it came from AtScale."""
        if self.raw is not None:
            return copy.deepcopy(dict(self.raw))
        data: dict[str, Any] = {
            "id": self.id,
            "catalogId": self.catalog_id,
            "modelId": self.model_id,
            "createDate": format_api_datetime(self.create_date) if self.create_date else None,
            "status": self.status,
            "estimateTime": self.estimate_time,
            "isFullBuild": self.is_full_build,
            "batchType": self.batch_type,
        }
        for key, moment in (("startTime", self.start_time), ("endTime", self.end_time)):
            if moment is not None:
                data[key] = format_api_datetime(moment)
        return data


@dataclass(frozen=True)
class AggregateInstance:
    """One aggregate table a batch materializes: its status as sent (``active``, ``invalid``, ``pending``...),
    table and schema, AtScale's message (the reason for a failure), and where AtScale tells, its row count and
    the AtScale data-warehouse connection it lives in."""

    id: str
    status: str
    table_name: str | None = None
    table_schema: str | None = None
    message: str | None = None
    batch_id: str | None = None
    number_of_rows: int | None = None
    connection_id: str | None = None

    @property
    def is_built(self) -> bool:
        """Whether the aggregate table was built."""
        return self.status.strip().lower() in INSTANCE_BUILT_STATUSES

    @property
    def is_failed(self) -> bool:
        """Whether building the aggregate table failed."""
        return self.status.strip().lower() in INSTANCE_FAILED_STATUSES

    @property
    def table(self) -> str:
        """``schema.table``, or the id where AtScale names no table."""
        return ".".join(part for part in (self.table_schema, self.table_name) if part) or self.id

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> AggregateInstance:
        """An instance from an entry of the instances endpoint; ValueError without id or status."""
        if not isinstance(data, Mapping) or not data.get("id") or not isinstance(data.get("status"), str):
            raise ValueError(f"aggregate instance without id or status: {data!r}")
        stats = data.get("stats")
        rows = stats.get("numberOfRows") if isinstance(stats, Mapping) else None
        return cls(
            id=str(data["id"]),
            status=data["status"],
            table_name=data.get("tableName"),
            table_schema=data.get("tableSchema"),
            message=data.get("message") or None,
            batch_id=data.get("batchId"),
            number_of_rows=rows if isinstance(rows, int) and not isinstance(rows, bool) else None,
            connection_id=data.get("connectionId") or None,
        )

    def describe(self) -> str:
        """``schema.table (status): message`` for a log line or an error."""
        text = f"{self.table} ({self.status})"
        return f"{text}: {self.message}" if self.message else text


def status_from_instances(instances: list[AggregateInstance]) -> str:
    """A batch status from its instances: any failed ``failed``, all built ``done``, else ``inprogress``."""
    if any(instance.is_failed for instance in instances):
        return "failed"
    if instances and all(instance.is_built for instance in instances):
        return "done"
    return "inprogress"
