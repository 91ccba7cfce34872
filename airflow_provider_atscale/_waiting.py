"""
Waiting on a batch: the one loop that polls it, :class:`Wait`, written once as coroutines — on the triggerer's
event loop, on a worker in an event loop of its own (:func:`wait_here`, with the hook's sync calls), and one
poll per poke for the sensor — its plan (built in one place, :meth:`WaitPlan.make`) and its end. No HTTP here.

A poll that fails in a way that may pass (no answer, 429, 5xx) never ends the wait before its deadline:
polling goes on, backing off to at most the poll interval, and the outage is logged when it starts and when it
ends. The connection is read again first when AtScale refuses the token or does not know the batch (a rotated
token, a moved host), and when an outage starts and then every :data:`RECONNECT_EVERY` seconds of it: if it
changed, the wait carries on with it at once. A token refused after AtScale has answered the connection ends
the wait only once the connection has stayed as it is for :data:`TOKEN_REFUSED_GRACE` (a rotated token is
put in the connection after it is minted); any other error that stays ends it at once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_atscale import _clock
from airflow_provider_atscale.batches import (
    CLOCK_SKEW,
    AggregateBatch,
    AggregateInstance,
    BatchStatusClass,
    format_duration,
)
from airflow_provider_atscale.errors import (
    AtScaleAuthError,
    AtScaleBuildFailedError,
    AtScaleError,
    AtScaleNotFoundError,
    AtScaleWaitTimeoutError,
    clip,
    may_pass,
)

if TYPE_CHECKING:
    from airflow_provider_atscale._inputs import BatchRef
    from airflow_provider_atscale.hooks.atscale import AtScaleHook

OUTAGE_FIRST_BACKOFF = 5.0
"""Seconds before polling again after a first failed poll; doubled after each, up to the poll interval."""
TOKEN_REFUSED_GRACE = 600.0
"""Seconds a wait goes on while AtScale refuses the connection's token (401) and the connection stays as it
is: minting a new API token revokes the old one at once, and the connection is edited after it."""
RECONNECT_EVERY = 300.0
"""Seconds between readings of the connection while AtScale cannot be reached: a host fixed in the
connection reaches the wait, and a long outage does not read it on every poll."""


class Outcome(str, enum.Enum):
    """How waiting on a batch ended: the ``outcome`` of every trigger event."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN_STATUS = "unknown_status"
    TIMED_OUT = "timed_out"
    ERROR = "error"


_ENDS = {
    BatchStatusClass.SUCCEEDED: Outcome.SUCCEEDED,
    BatchStatusClass.FAILED: Outcome.FAILED,
    BatchStatusClass.UNKNOWN: Outcome.UNKNOWN_STATUS,
}


def outcome_of(batch: AggregateBatch) -> Outcome | None:
    """The outcome a batch's status means, or ``None`` while it is still in progress."""
    return _ENDS.get(batch.status_class)


class WaitPlan(NamedTuple):
    """What one wait is, in plain values (times in seconds since the epoch): polls from ``first_poll_at``
    every ``poll_interval`` until ``deadline``; ``timeout`` and ``started_at`` for messages;
    ``last_status`` already reported."""

    batch_id: str
    poll_interval: float
    deadline: float
    timeout: float
    started_at: float
    first_poll_at: float
    last_status: str | None = None

    @classmethod
    def make(
        cls,
        batch_id: str,
        *,
        poll_interval: float,
        timeout: float,
        last_status: str | None,
        deferred: bool,
        started_at: float | None = None,
        deadline: float | None = None,
    ) -> WaitPlan:
        """
        The plan of a wait starting now (or at ``started_at``, for a trigger rebuilt from its arguments). The
        status was read just before, so the first poll is an interval away. Tasks deferred together would poll
        in lock-step for ever, so a deferred wait's first poll is spread over the second half of the interval,
        at a point set by the batch id alone: a rebuilt trigger keeps it, and with it its schedule.
        """
        started = _clock.now() if started_at is None else started_at
        spread = zlib.crc32(batch_id.encode()) / 2**32 if deferred else 0.0
        return cls(
            batch_id=batch_id,
            poll_interval=poll_interval,
            deadline=started + timeout if deadline is None else deadline,
            timeout=timeout,
            started_at=started,
            first_poll_at=started + poll_interval * (1.0 - 0.5 * spread),
            last_status=last_status,
        )

    def slot_before(self, moment: float) -> float | None:
        """The last scheduled poll at or before ``moment``, or ``None`` if none was due yet."""
        if moment < self.first_poll_at:
            return None
        return self.first_poll_at + math.floor((moment - self.first_poll_at) / self.poll_interval) * (
            self.poll_interval
        )


class WaitResult(NamedTuple):
    """How a wait ended: the outcome, the batch as last seen (if seen), and a sentence for the task's log."""

    outcome: Outcome
    batch_id: str
    batch: AggregateBatch | None
    message: str

    def to_payload(self) -> dict[str, Any]:
        """The trigger event's JSON payload (the batch as AtScale's camelCase object)."""
        batch = self.batch.to_api() if self.batch is not None else None
        return {
            "outcome": self.outcome.value,
            "batch_id": self.batch_id,
            "batch": batch,
            "message": self.message,
        }

    @classmethod
    def from_payload(cls, payload: Any) -> WaitResult:
        """Read a trigger event's payload; anything but a complete event of a known outcome is refused."""
        if not isinstance(payload, Mapping):
            raise AtScaleError(f"Expected an AtScale trigger event, got {payload!r}: refusing to guess")
        try:
            outcome = Outcome(payload.get("outcome"))
        except ValueError:
            raise AtScaleError(
                f"Unknown AtScale trigger event outcome {payload.get('outcome')!r}: refusing to guess"
            ) from None
        batch_id, batch = payload.get("batch_id"), payload.get("batch")
        if not isinstance(batch_id, str) or not isinstance(batch, (Mapping, type(None))):
            raise AtScaleError(f"Malformed AtScale trigger event {dict(payload)!r}")
        if outcome in _ENDS.values() and batch is None:
            raise AtScaleError(f"AtScale trigger event {outcome.value!r} carries no batch")
        try:
            seen = AggregateBatch.from_api(batch) if batch is not None else None
        except ValueError as error:
            raise AtScaleError(f"Malformed AtScale trigger event {dict(payload)!r}: {error}") from None
        return cls(outcome, batch_id, seen, str(payload.get("message", "")))

    def batch_or_raise(self) -> AggregateBatch:
        """The finished batch; raises for a timeout or an error."""
        if self.outcome is Outcome.TIMED_OUT:
            raise AtScaleWaitTimeoutError(self.message, self.batch_id)
        if self.outcome is Outcome.ERROR or self.batch is None:
            raise AtScaleError(f"Waiting on AtScale batch {self.batch_id} failed: {self.message}")
        return self.batch


class Wait:
    """
    One wait on a batch: :meth:`run` polls until the batch finishes or the deadline passes.

    :param plan: what to wait on and how.
    :param poll: reads the batch now.
    :param reconnect: reads the connection again; answers whether it changed.
    :param logger: where status changes and outages are logged.
    :param resumed: this wait takes over from one a triggerer restart stopped: it polls at once if a poll is
        due, and does not log again what the earlier one logged.
    """

    def __init__(
        self,
        plan: WaitPlan,
        poll: Callable[[], Awaitable[AggregateBatch]],
        reconnect: Callable[[], Awaitable[bool]],
        logger: logging.Logger | Any,
        *,
        resumed: bool = False,
    ) -> None:
        self.plan, self._poll, self._reconnect, self._log = plan, poll, reconnect, logger
        self.last_status = plan.last_status
        self.last_seen: AggregateBatch | None = None
        self._estimate = "not given"
        self._seen_until = plan.slot_before(_clock.now()) if resumed else None
        self._outage_began: float | None = None
        # Whether AtScale has answered this connection before (the task read the batch, or a poll did): a
        # token refused after that was revoked, not wrong from the start.
        self._answered = plan.last_status is not None
        self._refused_since: float | None = None
        self._outage_error: AtScaleError | None = None
        self._backoff = OUTAGE_FIRST_BACKOFF
        self._reconnected_at = -math.inf

    async def run(self) -> WaitResult:
        """Poll on schedule until the batch finishes or the deadline passes; an error that stays is raised."""
        plan, now = self.plan, _clock.now()
        next_poll = now if self._seen_until is not None else min(plan.first_poll_at, plan.deadline)
        while True:
            if next_poll > now:
                await _clock.asleep(next_poll - now)
            result = await self.step()
            now = _clock.now()
            if result is not None:
                return result
            if now >= plan.deadline:
                return self.timed_out()
            if self._outage_began is not None:
                next_poll = now + min(self._backoff, plan.poll_interval, plan.deadline - now)
                self._backoff *= 2
            else:
                # The next slot of the schedule: polls keep to it whatever each one took.
                before = plan.slot_before(now)
                next_poll = min(
                    plan.first_poll_at if before is None else before + plan.poll_interval, plan.deadline
                )

    async def step(self, *, reconnected: bool = False) -> WaitResult | None:
        """One poll (again at once, once, where the connection changed): the result once the batch finished,
        else ``None``; an error that stays is raised."""
        try:
            batch = await self._poll()
        except AtScaleError as error:
            now = _clock.now()
            if not reconnected and await self._reconnected(error, now):
                return await self.step(reconnected=True)
            if isinstance(error, AtScaleAuthError) and error.http_status == 401 and self._answered:
                self._refused(error, now)
                return None
            if not may_pass(error):
                raise
            if self._outage_began is None:
                self._outage_began, self._backoff = now, OUTAGE_FIRST_BACKOFF
                self._log.warning(
                    "AtScale does not answer polls of batch %s (%s); polling on until %s, at most every %s",
                    self.plan.batch_id,
                    clip(error),
                    datetime.fromtimestamp(self.plan.deadline, tz=timezone.utc).strftime(
                        "%Y-%m-%d %H:%M:%S UTC"
                    ),
                    format_duration(self.plan.poll_interval),
                )
            self._outage_error = error
            return None
        now = _clock.now()
        self._answered, self._refused_since = True, None
        if self._outage_began is not None:
            self._log.warning(
                "AtScale answers polls of batch %s again, after %s",
                self.plan.batch_id,
                format_duration(now - self._outage_began),
            )
            self._outage_began = None
        self.last_seen = batch
        if batch.estimate_time is not None:
            # Kept: a batch read from its aggregate instances (history unavailable for a moment) has none.
            self._estimate = batch.describe_estimate()
        if batch.status != self.last_status:
            self._log_status(batch, now)
        outcome = _ENDS.get(batch.status_class)
        if outcome is None:
            return None
        return WaitResult(outcome, batch.id, batch, f"AtScale batch {batch.id} is {batch.status}")

    def _refused(self, error: AtScaleAuthError, now: float) -> None:
        """A refused token, the connection unchanged: poll on (reading it before each poll) for a grace."""
        if self._refused_since is None:
            self._refused_since = now
            self._log.warning(
                "AtScale refuses the token of the connection polling batch %s (%s); polling on, reading the "
                "connection again before each poll, for up to %s",
                self.plan.batch_id,
                clip(error),
                format_duration(TOKEN_REFUSED_GRACE),
            )
        if now - self._refused_since >= TOKEN_REFUSED_GRACE:
            raise error

    async def _reconnected(self, error: AtScaleError, now: float) -> bool:
        """Read the connection again where the failure may come from an edit of it; whether it changed."""
        if isinstance(error, (AtScaleAuthError, AtScaleNotFoundError)):
            due = True
        elif may_pass(error):
            due = self._outage_began is None or now - self._reconnected_at >= RECONNECT_EVERY
        else:
            due = False
        if not due:
            return False
        self._reconnected_at = now
        if not await self._reconnect():
            return False
        self._log.warning("Polling AtScale batch %s with the connection as it is now", self.plan.batch_id)
        return True

    def _log_status(self, batch: AggregateBatch, now: float) -> None:
        self.last_status = batch.status
        seen_until, self._seen_until = self._seen_until, None
        if seen_until is not None:
            # What the wait before a triggerer restart saw was logged then, if AtScale's dates tell.
            moment = (batch.start_time or batch.create_date) if outcome_of(batch) is None else batch.end_time
            if moment is not None and moment.year > 1970 and moment.timestamp() <= seen_until + CLOCK_SKEW:
                return
        self._log.info(
            "AtScale batch %s is %s after %s (estimate: %s)",
            batch.id,
            batch.status,
            format_duration(now - self.plan.started_at),
            self._estimate,
        )

    def timed_out(self) -> WaitResult:
        """The result of a wait that ran out of time, with what was seen of the batch and of any outage."""
        batch, status = self.last_seen, self.last_status
        message = (
            f"AtScale batch {self.plan.batch_id} did not finish within {format_duration(self.plan.timeout)} "
            f"(last status: {status or 'unknown'}). The build goes on in AtScale: the API has no cancel "
            "call. A retry of this task resumes waiting on it while it runs."
        )
        if self._outage_began is not None:
            silent = format_duration(_clock.now() - self._outage_began)
            message += f" AtScale had not answered its polls for {silent}: {clip(self._outage_error)}"
        return WaitResult(Outcome.TIMED_OUT, self.plan.batch_id, batch, message)


def wait_here(
    hook: AtScaleHook, ref: BatchRef, plan: WaitPlan, logger: logging.Logger | Any
) -> AggregateBatch:
    """Wait on this worker, polling with the hook's sync calls; returns the finished batch or raises."""

    async def poll() -> AggregateBatch:
        return hook.read_batch(ref)

    async def reconnect() -> bool:
        return hook.reconnect()

    return asyncio.run(Wait(plan, poll, reconnect, logger).run()).batch_or_raise()


def failure_message(batch: AggregateBatch, aggregates: Iterable[AggregateInstance] | None) -> str:
    """The message for a batch that ended badly, naming every failing aggregate and AtScale's reason."""
    head = f"AtScale batch {batch.id} of model {batch.model_id} ended in status {batch.status!r}"
    if batch.status_class is BatchStatusClass.UNKNOWN:
        head += ", which this provider does not know: not treating it as success"
    if aggregates is None:
        return head + " (its aggregates could not be listed)"
    failing = [aggregate for aggregate in aggregates if aggregate.is_failed]
    if not failing:
        return head + " (no aggregate reported a failure)"
    return head + ". Failing aggregates:\n" + "\n".join(f"  - {a.describe()}" for a in failing)


def raise_unless_succeeded(batch: AggregateBatch, hook: AtScaleHook, logger: logging.Logger | Any) -> None:
    """Raise :class:`AtScaleBuildFailedError` naming the failing aggregates, unless the batch succeeded."""
    if batch.status_class is BatchStatusClass.SUCCEEDED:
        return
    from airflow_provider_atscale._inputs import BatchRef

    aggregates: list[AggregateInstance] | None
    try:
        aggregates = hook.read_aggregates(BatchRef(batch.catalog_id, batch.model_id, batch.id))
    except AtScaleError as error:
        logger.warning("Could not list the aggregates of AtScale batch %s: %s", batch.id, error)
        aggregates = None
    raise AtScaleBuildFailedError(failure_message(batch, aggregates), batch)
