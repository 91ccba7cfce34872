"""The trigger that waits on an AtScale batch without holding a worker slot."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow_provider_atscale import _clock
from airflow_provider_atscale._compat import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow_provider_atscale._waiting import WaitPlan
    from airflow_provider_atscale.batches import AggregateBatch


class AtScaleAggregateBatchTrigger(BaseTrigger):
    """
    Poll an AtScale batch on the triggerer until it finishes or the deadline passes, then emit one event.

    The event's payload names the outcome (``succeeded``, ``failed``, ``unknown_status``, ``timed_out``
    or ``error``) and carries the batch as last seen. The deadline is enforced here rather than by
    ``defer(timeout=...)``, so the task's ``execute_complete`` always runs and can say what happened. Polls
    that fail in a way that may pass (no answer, 429, 5xx) do not end the wait before the deadline (see
    :func:`~airflow_provider_atscale._waiting.wait_for_batch`, the loop the worker-side wait runs too).

    One HTTP client is opened per trigger and reused for every poll; every argument is plain JSON, so the
    trigger survives a triggerer restart (it is rebuilt from :meth:`serialize`).

    :param atscale_conn_id: the ``atscale`` Airflow connection.
    :param catalog_id: the catalog's id.
    :param model_id: the model's id.
    :param batch_id: the batch to wait on.
    :param poll_interval: seconds between polls.
    :param deadline: when to give up, in seconds since the epoch.
    :param timeout: the allowed wait in seconds, for the timeout message.
    :param started_at: when waiting began, in seconds since the epoch, for elapsed times in logs.
    :param last_status: the status the task reported before deferring, so it is not logged again.
    """

    def __init__(
        self,
        *,
        atscale_conn_id: str,
        catalog_id: str,
        model_id: str,
        batch_id: str,
        poll_interval: float,
        deadline: float,
        timeout: float,
        started_at: float,
        last_status: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.atscale_conn_id = atscale_conn_id
        self.catalog_id = catalog_id
        self.model_id = model_id
        self.batch_id = batch_id
        self.poll_interval = float(poll_interval)
        self.deadline = float(deadline)
        self.timeout = float(timeout)
        self.started_at = float(started_at)
        self.last_status = last_status

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "atscale_conn_id": self.atscale_conn_id,
                "catalog_id": self.catalog_id,
                "model_id": self.model_id,
                "batch_id": self.batch_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "timeout": self.timeout,
                "started_at": self.started_at,
                "last_status": self.last_status,
            },
        )

    def first_poll_at(self) -> float:
        """
        When to poll first: within one interval of ``started_at``, at a point set by the batch id.

        The task read the batch's status just before deferring, so polling at once would be a wasted
        request. Triggers deferred together (mapped tasks, a busy hour) would poll in lock-step for ever
        if each waited exactly one interval, so the first wait is spread over the second half of the
        interval. The point depends only on the batch id, so a trigger rebuilt after a triggerer restart
        keeps it and with it the whole poll schedule.
        """
        spread = zlib.crc32(self.batch_id.encode()) / 2**32
        return self.started_at + self.poll_interval * (1.0 - 0.5 * spread)

    def plan(self) -> WaitPlan:
        """This trigger's wait."""
        from airflow_provider_atscale._waiting import WaitPlan

        return WaitPlan(
            batch_id=self.batch_id,
            poll_interval=self.poll_interval,
            deadline=self.deadline,
            timeout=self.timeout,
            started_at=self.started_at,
            first_poll_at=self.first_poll_at(),
            last_status=self.last_status,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_atscale._flow import adrive
        from airflow_provider_atscale._waiting import Outcome, WaitEvent, wait_for_batch
        from airflow_provider_atscale.errors import AtScaleError
        from airflow_provider_atscale.hooks.atscale import AtScaleHook

        hook = AtScaleHook(atscale_conn_id=self.atscale_conn_id)
        plan = self.plan()
        # Past its first poll, this trigger takes over from one a triggerer restart stopped (or it was
        # picked up late): it polls at once, and leaves unlogged what the earlier one saw.
        resumed = _clock.now() > plan.first_poll_at

        async def poll(_poll: object) -> AggregateBatch:
            return await hook.aget_aggregate_batch(self.catalog_id, self.model_id, self.batch_id)

        try:
            event = await adrive(wait_for_batch(plan, self.log, resumed=resumed), poll)
        except AtScaleError as error:
            event = WaitEvent(Outcome.ERROR, self.batch_id, None, str(error))
        finally:
            await hook.aclose()
        yield TriggerEvent(event.to_payload())  # type: ignore[no-untyped-call]
