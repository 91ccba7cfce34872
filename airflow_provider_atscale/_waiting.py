"""
What waiting on a batch means, shared by the operator, the sensor and the trigger: outcomes, the trigger
event's shape, status-change logging and failure messages. No HTTP here.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_atscale.batches import AggregateBatch, AggregateInstance, BatchStatusClass
from airflow_provider_atscale.errors import AtScaleBuildFailedError, AtScaleError, AtScaleWaitTimeoutError


class Outcome(str, enum.Enum):
    """How waiting on a batch ended: the ``outcome`` of every trigger event."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN_STATUS = "unknown_status"
    TIMED_OUT = "timed_out"
    ERROR = "error"


_OUTCOME_OF_CLASS = {
    BatchStatusClass.SUCCEEDED: Outcome.SUCCEEDED,
    BatchStatusClass.FAILED: Outcome.FAILED,
    BatchStatusClass.UNKNOWN: Outcome.UNKNOWN_STATUS,
}


def outcome_of(batch: AggregateBatch) -> Outcome | None:
    """The outcome a batch's status means, or ``None`` while it is still in progress."""
    return _OUTCOME_OF_CLASS.get(batch.status_class)


@dataclass(frozen=True)
class WaitEvent:
    """
    The payload of the one event a trigger emits, as plain JSON.

    :param outcome: how waiting ended.
    :param batch_id: the batch waited on.
    :param batch: the batch as last seen (AtScale's camelCase object), if it was seen.
    :param message: a sentence for the task's log.
    """

    outcome: Outcome
    batch_id: str
    batch: Mapping[str, Any] | None
    message: str

    def to_payload(self) -> dict[str, Any]:
        """The JSON payload for ``TriggerEvent``."""
        return {
            "outcome": self.outcome.value,
            "batch_id": self.batch_id,
            "batch": dict(self.batch) if self.batch is not None else None,
            "message": self.message,
        }

    @classmethod
    def from_payload(cls, payload: Any) -> WaitEvent:
        """
        Read a trigger event's payload, refusing anything but a complete event of a known outcome.

        :raises AtScaleError: the payload is missing, malformed or of an unknown outcome.
        """
        if not isinstance(payload, Mapping):
            raise AtScaleError(f"Expected an AtScale trigger event, got {payload!r}: refusing to guess")
        try:
            outcome = Outcome(payload.get("outcome"))
        except ValueError:
            raise AtScaleError(
                f"Unknown AtScale trigger event outcome {payload.get('outcome')!r}: refusing to guess"
            ) from None
        batch_id = payload.get("batch_id")
        batch = payload.get("batch")
        if not isinstance(batch_id, str) or not isinstance(batch, (Mapping, type(None))):
            raise AtScaleError(f"Malformed AtScale trigger event {dict(payload)!r}")
        if outcome in (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.UNKNOWN_STATUS) and batch is None:
            raise AtScaleError(f"AtScale trigger event {outcome.value!r} carries no batch")
        return cls(outcome=outcome, batch_id=batch_id, batch=batch, message=str(payload.get("message", "")))


class StatusChangeLog:
    """
    Logs a batch's status once per change, with the time since waiting began and AtScale's estimate.

    :param logger: where to log.
    :param started_at: when waiting began, in :func:`airflow_provider_atscale._clock.now` seconds.
    :param last_status: the status already reported, if any.
    """

    def __init__(
        self, logger: logging.Logger | Any, started_at: float, last_status: str | None = None
    ) -> None:
        self._log = logger
        self._started_at = started_at
        self.last_status = last_status

    def observe(self, batch: AggregateBatch, now: float) -> None:
        """Log the batch's status if it differs from the last one seen."""
        if batch.status == self.last_status:
            return
        self._log.info(
            "AtScale batch %s is %s after %.0fs (estimate: %s)",
            batch.id,
            batch.status,
            max(0.0, now - self._started_at),
            batch.estimate_time if batch.estimate_time is not None else "not given",
        )
        self.last_status = batch.status


def timeout_message(batch_id: str, status: str | None, timeout: float) -> str:
    """The message for a wait that ran out of time."""
    return (
        f"AtScale batch {batch_id} did not finish within {timeout:.0f}s "
        f"(last status: {status or 'unknown'}). "
        "The build goes on in AtScale: the API has no cancel call. A retry of this task attaches to it "
        "while it runs."
    )


def failure_message(batch: AggregateBatch, aggregates: Iterable[AggregateInstance] | None) -> str:
    """The message for a batch that ended badly, naming every failing aggregate and AtScale's reason."""
    if batch.status_class is BatchStatusClass.UNKNOWN:
        head = (
            f"AtScale batch {batch.id} of model {batch.model_id} ended in status {batch.status!r}, "
            "which this provider does not know: not treating it as success"
        )
    else:
        head = f"AtScale batch {batch.id} of model {batch.model_id} ended in status {batch.status!r}"
    if aggregates is None:
        return head + " (its aggregates could not be listed)"
    failing = [aggregate for aggregate in aggregates if aggregate.is_failed]
    if not failing:
        return head + " (no aggregate reported a failure)"
    return head + ". Failing aggregates:\n" + "\n".join(f"  - {a.describe()}" for a in failing)


class _ListsAggregates(Protocol):
    def list_batch_aggregates(
        self, batch_id: str, catalog_id: str, model_id: str
    ) -> list[AggregateInstance]: ...


def raise_unless_succeeded(batch: AggregateBatch, hook: _ListsAggregates, logger: Any) -> None:
    """
    Return if the batch succeeded; otherwise raise :class:`AtScaleBuildFailedError` naming its failing
    aggregates (listed through the hook; a failure to list them is logged, not raised).
    """
    if outcome_of(batch) is Outcome.SUCCEEDED:
        return
    aggregates: list[AggregateInstance] | None
    try:
        aggregates = hook.list_batch_aggregates(batch.id, batch.catalog_id, batch.model_id)
    except AtScaleError as error:
        logger.warning("Could not list the aggregates of AtScale batch %s: %s", batch.id, error)
        aggregates = None
    raise AtScaleBuildFailedError(failure_message(batch, aggregates), batch)


def batch_from_event(event: Any) -> AggregateBatch:
    """
    The batch a trigger event reports as finished; raises for a timeout, an error, or an event that is
    missing, malformed or of an unknown outcome.
    """
    wait = WaitEvent.from_payload(event)
    if wait.outcome is Outcome.TIMED_OUT:
        raise AtScaleWaitTimeoutError(wait.message, wait.batch_id)
    if wait.outcome is Outcome.ERROR or wait.batch is None:
        raise AtScaleError(f"Waiting on AtScale batch {wait.batch_id} failed: {wait.message}")
    return AggregateBatch.from_api(wait.batch)
