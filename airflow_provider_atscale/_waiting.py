"""
Waiting on a batch: the one loop that polls it, written once for the worker and the triggerer, and what its
end means (outcomes, the trigger event's shape, failure messages). No HTTP here.

:func:`wait_for_batch` is a flow (see :mod:`airflow_provider_atscale._flow`): it yields ``Sleep`` (wait this
long) and ``POLL`` (read the batch now; the driver sends back the batch or throws the ``AtScaleError`` that
reading it raised), and returns a :class:`WaitEvent`. The operator drives it on a worker with the hook's
sync calls (:meth:`BatchWaiting.wait_until_done`), the trigger on the triggerer with its async calls.

A poll that fails in a way that may pass (no answer, 429, 5xx, after the request's own retries) never ends
the wait before its deadline: polling goes on, backing off to at most the poll interval, and the outage is
logged once when it starts and once when it ends. An error that will not pass (401 after
re-authentication, 403, 404, 400) ends it at once.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple, Protocol, TypeVar

from airflow_provider_atscale import _clock
from airflow_provider_atscale._flow import POLL, Flow, Sleep
from airflow_provider_atscale.batches import (
    AggregateBatch,
    AggregateInstance,
    BatchStatusClass,
    format_duration,
)
from airflow_provider_atscale.errors import (
    AtScaleBuildFailedError,
    AtScaleError,
    AtScaleRateLimitError,
    AtScaleServerError,
    AtScaleTransportError,
    AtScaleWaitTimeoutError,
)

T = TypeVar("T")

OUTAGE_FIRST_BACKOFF = 5.0
"""Seconds before polling again after a first failed poll; doubled after each, up to the poll interval."""
RESUME_SKEW_TOLERANCE = 60.0
"""Seconds by which AtScale's clock may differ from Airflow's, when telling what a trigger saw before a
triggerer restart."""


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


def is_passing(error: BaseException) -> bool:
    """Whether a failed poll may pass if tried again later: no answer, 429 or 5xx."""
    return isinstance(error, (AtScaleTransportError, AtScaleRateLimitError, AtScaleServerError))


class WaitPlan(NamedTuple):
    """
    What one wait on a batch is: plain values, the trigger's serialized arguments among them.

    :param batch_id: the batch waited on.
    :param poll_interval: seconds between polls.
    :param deadline: when to give up, in seconds since the epoch.
    :param timeout: the allowed wait in seconds, for the timeout message.
    :param started_at: when waiting began, in seconds since the epoch, for elapsed times in logs.
    :param first_poll_at: when to poll first; later polls follow every ``poll_interval`` after it.
    :param last_status: the status already reported, so it is not logged again.
    """

    batch_id: str
    poll_interval: float
    deadline: float
    timeout: float
    started_at: float
    first_poll_at: float
    last_status: str | None = None

    def slot_before(self, moment: float) -> float | None:
        """The last scheduled poll at or before ``moment``, or ``None`` if none was due yet."""
        if moment < self.first_poll_at:
            return None
        return self.first_poll_at + math.floor((moment - self.first_poll_at) / self.poll_interval) * (
            self.poll_interval
        )

    def slot_after(self, moment: float) -> float:
        """The first scheduled poll after ``moment``."""
        before = self.slot_before(moment)
        return self.first_poll_at if before is None else before + self.poll_interval


class WaitEvent(NamedTuple):
    """
    How a wait ended, as plain JSON: the payload of the one event a trigger emits.

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

    def batch_or_raise(self) -> AggregateBatch:
        """The finished batch; raises for a timeout or an error."""
        if self.outcome is Outcome.TIMED_OUT:
            raise AtScaleWaitTimeoutError(self.message, self.batch_id)
        if self.outcome is Outcome.ERROR or self.batch is None:
            raise AtScaleError(f"Waiting on AtScale batch {self.batch_id} failed: {self.message}")
        return AggregateBatch.from_api(self.batch)


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
        self._seen_until: float | None = None
        self._estimate = "not given"

    def seen_until(self, moment: float) -> None:
        """
        Take a status that began by ``moment`` as already logged, once: a trigger resumed after a triggerer
        restart polls on the same schedule as before, so what its last poll before the restart saw was
        logged then.

        :param moment: the last poll before the restart, in seconds since the epoch.
        """
        self._seen_until = moment

    def observe(self, batch: AggregateBatch, now: float) -> None:
        """Log the batch's status if it differs from the last one reported."""
        seen_until, self._seen_until = self._seen_until, None
        if batch.estimate_time is not None:
            # Kept: a batch read from its aggregate instances (history unavailable for a moment) has none.
            self._estimate = batch.describe_estimate()
        if batch.status == self.last_status:
            return
        self.last_status = batch.status
        began = status_began_at(batch)
        if seen_until is not None and began is not None and began <= seen_until + RESUME_SKEW_TOLERANCE:
            return
        self._log.info(
            "AtScale batch %s is %s after %s (estimate: %s)",
            batch.id,
            batch.status,
            format_duration(max(0.0, now - self._started_at)),
            self._estimate,
        )


_NEVER = datetime(1971, 1, 1, tzinfo=timezone.utc)


def status_began_at(batch: AggregateBatch) -> float | None:
    """When the batch entered its current status, by AtScale's timestamps, if they tell."""
    if batch.status_class is BatchStatusClass.IN_PROGRESS:
        moment = batch.start_time or batch.create_date
    else:
        moment = batch.end_time
    # A batch that never started carries 0001-01-01 as its start time.
    return moment.timestamp() if moment is not None and moment > _NEVER else None


class _Outage:
    """A run of failed polls: when it began, and how long to wait before the next poll."""

    def __init__(self, began: float, error: AtScaleError) -> None:
        self.began = began
        self.error = error
        self.backoff = OUTAGE_FIRST_BACKOFF

    def next_wait(self, poll_interval: float) -> float:
        wait = min(self.backoff, poll_interval)
        self.backoff *= 2
        return wait


def wait_for_batch(plan: WaitPlan, logger: logging.Logger | Any, *, resumed: bool = False) -> Flow[WaitEvent]:
    """
    Poll a batch until it finishes or the deadline passes: a flow of ``Sleep`` and ``POLL`` (see ``_flow``).

    :param plan: what to wait on and how.
    :param logger: where status changes and outages are logged.
    :param resumed: this wait takes over from an earlier one (a trigger rebuilt after a triggerer
        restart): poll at once if a poll is due, and do not log again what the earlier one logged.
    :return: how the wait ended; an error that will not pass is raised instead.
    """
    status_log = StatusChangeLog(logger, plan.started_at, plan.last_status)
    now = _clock.now()
    next_poll = min(plan.first_poll_at, plan.deadline)
    if resumed and (seen := plan.slot_before(now)) is not None:
        status_log.seen_until(seen)
        next_poll = now
    outage: _Outage | None = None
    last_seen: AggregateBatch | None = None
    while True:
        if next_poll > now:
            yield Sleep(next_poll - now)
        try:
            reply: AggregateBatch = yield POLL
        except AtScaleError as error:
            now = _clock.now()
            if not is_passing(error):
                raise
            if outage is None:
                outage = _Outage(now, error)
                logger.warning(
                    "AtScale does not answer polls of batch %s (%s); polling on until %s, at most every %s",
                    plan.batch_id,
                    _short(error),
                    _iso(plan.deadline),
                    format_duration(plan.poll_interval),
                )
            outage.error = error
            if now >= plan.deadline:
                return _timed_out(plan, last_seen, outage)
            next_poll = now + min(outage.next_wait(plan.poll_interval), plan.deadline - now)
            continue
        now = _clock.now()
        if outage is not None:
            logger.warning(
                "AtScale answers polls of batch %s again, after %s",
                plan.batch_id,
                format_duration(now - outage.began),
            )
            outage = None
        last_seen = reply
        status_log.observe(reply, now)
        outcome = outcome_of(reply)
        if outcome is not None:
            return WaitEvent(outcome, reply.id, reply.to_api(), f"AtScale batch {reply.id} is {reply.status}")
        if now >= plan.deadline:
            return _timed_out(plan, last_seen, None)
        next_poll = min(plan.slot_after(now), plan.deadline)


def _timed_out(plan: WaitPlan, batch: AggregateBatch | None, outage: _Outage | None) -> WaitEvent:
    message = timeout_message(plan.batch_id, batch.status if batch else plan.last_status, plan.timeout)
    if outage is not None:
        message += f" AtScale had not answered its polls for {format_duration(_clock.now() - outage.began)}: "
        message += _short(outage.error)
    return WaitEvent(Outcome.TIMED_OUT, plan.batch_id, batch.to_api() if batch else None, message)


def timeout_message(batch_id: str, status: str | None, timeout: float) -> str:
    """The message for a wait that ran out of time."""
    return (
        f"AtScale batch {batch_id} did not finish within {format_duration(timeout)} "
        f"(last status: {status or 'unknown'}). "
        "The build goes on in AtScale: the API has no cancel call. A retry of this task resumes waiting on "
        "it while it runs."
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
        self, catalog_id: str, model_id: str, batch_id: str
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
        aggregates = hook.list_batch_aggregates(batch.catalog_id, batch.model_id, batch.id)
    except AtScaleError as error:
        logger.warning("Could not list the aggregates of AtScale batch %s: %s", batch.id, error)
        aggregates = None
    raise AtScaleBuildFailedError(failure_message(batch, aggregates), batch)


def batch_from_event(event: Any) -> AggregateBatch:
    """
    The batch a trigger event reports as finished; raises for a timeout, an error, or an event that is
    missing, malformed or of an unknown outcome.
    """
    return WaitEvent.from_payload(event).batch_or_raise()


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 300 else text[:300] + "..."


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
