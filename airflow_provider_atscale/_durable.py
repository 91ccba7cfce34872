"""
A task's own build across its tries: what the operator records in Airflow's task state store, and the
window in which a retry may look for its build where nothing was recorded.

Airflow 3.3 gives each task instance a ``task_state_store`` that survives its retries. Before posting a
build, the operator records what it asks for and when it posts; when AtScale answers, it adds the batch id.
A later try of the same task instance reads that record and resumes exactly that batch (see
``AtScaleAggregateBuildOperator``). Where Airflow has no store (before 3.3), or a worker died between the
POST and the record, a retry may still find its build in batch history, in a window of time around its own
tries: :func:`adoption_window`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from airflow_provider_atscale import _clock
from airflow_provider_atscale._validation import BuildRequest

STORE_KEY = "atscale_aggregate_build"
"""The task state store key of the record. Renaming it would make in-flight retries miss their build."""
CLOCK_SKEW_TOLERANCE = 60.0
"""Seconds by which AtScale's clock (which stamps ``createDate``) may run ahead of or behind Airflow's."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildRecord:
    """
    What one try of a task asked AtScale to build, and the batch AtScale started for it.

    :param catalog_id: the catalog's id.
    :param model_id: the model's id.
    :param full_build: a full build rather than an incremental one.
    :param grace_period_overrides: the overrides sent.
    :param posting_at: when the POST was sent, in seconds since the epoch (Airflow's clock).
    :param batch_id: the batch AtScale answered with; ``None`` until it answered.
    :param finished: the task succeeded with this batch, so a later run of it (a clear) starts anew.
    """

    catalog_id: str
    model_id: str
    full_build: bool
    grace_period_overrides: Mapping[str, int] = field(default_factory=dict)
    posting_at: float = 0.0
    batch_id: str | None = None
    finished: bool = False

    @classmethod
    def posting(cls, request: BuildRequest) -> BuildRecord:
        """The record of a POST about to be sent."""
        return cls(
            catalog_id=request.catalog_id,
            model_id=request.model_id,
            full_build=request.full_build,
            grace_period_overrides=dict(request.grace_period_overrides),
            posting_at=_clock.now(),
        )

    def started(self, batch_id: str) -> BuildRecord:
        """This record once AtScale answered with a batch."""
        return replace(self, batch_id=batch_id)

    def done(self) -> BuildRecord:
        """This record once the task succeeded with its batch."""
        return replace(self, finished=True)

    def asks_for(self, request: BuildRequest) -> bool:
        """Whether this record asked for exactly this build (same model, build type and overrides)."""
        return (
            self.catalog_id == request.catalog_id
            and self.model_id == request.model_id
            and self.full_build == request.full_build
            and dict(self.grace_period_overrides) == dict(request.grace_period_overrides)
        )

    def describe(self) -> str:
        """``an incremental build of model m (overrides {...})`` for logs."""
        kind = "a full build" if self.full_build else "an incremental build"
        overrides = self.grace_period_overrides
        overrides_text = f" with overrides {dict(overrides)}" if overrides else ""
        return f"{kind} of model {self.model_id} in catalog {self.catalog_id}{overrides_text}"

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON the store keeps."""
        return {
            "catalog_id": self.catalog_id,
            "model_id": self.model_id,
            "full_build": self.full_build,
            "grace_period_overrides": dict(self.grace_period_overrides),
            "posting_at": self.posting_at,
            "batch_id": self.batch_id,
            "finished": self.finished,
        }

    @classmethod
    def from_json(cls, value: Any) -> BuildRecord | None:
        """A record read back from the store; ``None`` for anything that is not one (logged)."""
        try:
            overrides = value["grace_period_overrides"]
            record = cls(
                catalog_id=str(value["catalog_id"]),
                model_id=str(value["model_id"]),
                full_build=bool(value["full_build"]),
                grace_period_overrides={str(k): int(v) for k, v in overrides.items()},
                posting_at=float(value["posting_at"]),
                batch_id=str(value["batch_id"]) if value.get("batch_id") else None,
                finished=bool(value.get("finished", False)),
            )
        except (TypeError, KeyError, ValueError, AttributeError):
            log.warning("Ignoring an unreadable AtScale build record in the task state store: %r", value)
            return None
        return record


class BuildStore:
    """
    The task instance's record of its build, in Airflow's ``task_state_store``.

    :param store: the context's ``task_state_store`` accessor.
    """

    def __init__(self, store: Any) -> None:
        self._store = store

    @classmethod
    def of(cls, context: Mapping[str, Any]) -> BuildStore | None:
        """The store of this task instance, or ``None`` where Airflow has none (before 3.3)."""
        store = context.get("task_state_store")
        return cls(store) if store is not None else None

    def load(self) -> BuildRecord | None:
        """The record an earlier try left, if any."""
        value = self._store.get(STORE_KEY)
        return BuildRecord.from_json(value) if value is not None else None

    def save(self, record: BuildRecord) -> None:
        """Write the record (it replaces any earlier one)."""
        self._store.set(STORE_KEY, record.to_json())


@dataclass(frozen=True)
class Window:
    """
    When a build this task started must have been created, by AtScale's clock: a search in batch history.

    :param since: the earliest creation time.
    :param until: the latest creation time.
    :param why: what the window rests on, for the log.
    """

    since: datetime
    until: datetime
    why: str


def adoption_window(since: float, until: float, why: str) -> Window:
    """
    The window from ``since`` to ``until`` (seconds since the epoch, Airflow's clock), widened by
    :data:`CLOCK_SKEW_TOLERANCE` on both sides for AtScale's clock.
    """
    return Window(
        since=datetime.fromtimestamp(since - CLOCK_SKEW_TOLERANCE, tz=timezone.utc),
        until=datetime.fromtimestamp(until + CLOCK_SKEW_TOLERANCE, tz=timezone.utc),
        why=why,
    )
