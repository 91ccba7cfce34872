"""The trigger that waits on an AtScale batch without holding a worker slot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow_provider_atscale import _clock
from airflow_provider_atscale._compat import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow_provider_atscale._inputs import BatchRef
    from airflow_provider_atscale._waiting import WaitPlan


class AtScaleAggregateBatchTrigger(BaseTrigger):
    """
    Poll an AtScale batch on the triggerer until it finishes or the deadline passes, then emit one event.

    The event names the outcome (``succeeded``, ``failed``, ``unknown_status``, ``timed_out``, ``error``) and
    carries the batch as last seen; the deadline is enforced here, so ``execute_complete`` always says what
    happened. Outages do not end the wait, and a connection edited in Airflow reaches it (the loop is
    :class:`~airflow_provider_atscale._waiting.Wait`, which workers run too). Every argument is plain JSON: a
    trigger survives a triggerer restart. The triggers of one triggerer share one HTTP connection pool.

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

    @classmethod
    def of_plan(cls, atscale_conn_id: str, batch: BatchRef, plan: WaitPlan) -> AtScaleAggregateBatchTrigger:
        """The trigger that carries on a wait planned by a task (``WaitPlan.make(..., deferred=True)``)."""
        return cls(
            atscale_conn_id=atscale_conn_id,
            catalog_id=batch.catalog_id,
            model_id=batch.model_id,
            batch_id=batch.batch_id,
            poll_interval=plan.poll_interval,
            deadline=plan.deadline,
            timeout=plan.timeout,
            started_at=plan.started_at,
            last_status=plan.last_status,
        )

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

    def plan(self) -> WaitPlan:
        """This trigger's wait (its first poll spread over the second half of its first interval)."""
        from airflow_provider_atscale._waiting import WaitPlan

        return WaitPlan.make(
            self.batch_id,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            last_status=self.last_status,
            deferred=True,
            started_at=self.started_at,
            deadline=self.deadline,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_atscale._inputs import BatchRef
        from airflow_provider_atscale._waiting import Outcome, Wait, WaitResult
        from airflow_provider_atscale.errors import AtScaleError
        from airflow_provider_atscale.hooks.atscale import AtScaleHook

        hook = AtScaleHook(atscale_conn_id=self.atscale_conn_id)
        batch = BatchRef(self.catalog_id, self.model_id, self.batch_id)  # checked by the task that deferred
        plan = self.plan()
        # Past its first poll, this trigger takes over from one a triggerer restart stopped (or it was
        # picked up
        # late): it polls at once, and leaves unlogged what the earlier one saw.
        resumed = _clock.now() > plan.first_poll_at
        wait = Wait(plan, lambda: hook.aread_batch(batch), hook.areconnect, self.log, resumed=resumed)
        try:
            result = await wait.run()
        except AtScaleError as error:
            result = WaitResult(Outcome.ERROR, self.batch_id, wait.last_seen, str(error))
        finally:
            await hook.aclose()
        yield TriggerEvent(result.to_payload())  # type: ignore[no-untyped-call]

    async def on_kill(self) -> None:
        """
        The task was killed while waiting (marked failed or succeeded, cleared): AtScale's API cannot cancel a
        build, so say that the batch goes on. Airflow 3.3 and later call this; earlier versions do not.
        """
        self.log.warning(
            "Task killed; AtScale has no API to cancel a build: batch %s continues in AtScale",
            self.batch_id,
        )
