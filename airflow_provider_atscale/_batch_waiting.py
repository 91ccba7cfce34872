"""
Waiting on a batch from a task, for the operator and the sensor: on this worker, or deferred to the
triggerer. Both run the one waiting loop of :mod:`airflow_provider_atscale._waiting`, imported only
when a task waits: DAG files import the operator and the sensor, and parsing them needs none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_atscale import _clock

if TYPE_CHECKING:
    from airflow_provider_atscale.batches import AggregateBatch


class BatchWaiting:
    """
    Waiting on a batch, for the operator and the sensor: on this worker, or deferred to the triggerer.

    Both ways run :func:`wait_for_batch`. Mixed into a ``BaseOperator`` with ``atscale_conn_id`` and a
    ``hook`` (an ``AtScaleHook``).
    """

    atscale_conn_id: str
    hook: Any
    log: Any

    if TYPE_CHECKING:
        # BaseOperator's, which this class is mixed with; declared only for the type checker, since a
        # definition here would hide BaseOperator's.
        def defer(self, *, trigger: Any, method_name: str, **kwargs: Any) -> NoReturn: ...

    def wait_until_done(
        self,
        *,
        catalog_id: str,
        model_id: str,
        batch_id: str,
        poll_interval: float,
        timeout: float,
        last_status: str | None,
        deferrable: bool,
    ) -> AggregateBatch:
        """
        Wait until the batch finishes, ``timeout`` seconds at most.

        Deferred: the wait goes to
        :class:`~airflow_provider_atscale.triggers.atscale.AtScaleAggregateBatchTrigger` and the task resumes
        in ``execute_complete`` with its event (this never returns). Otherwise it runs on this worker and
        returns the finished batch; it raises on a timeout or on an error that stays.

        :param last_status: the status read last (not logged again), or ``None``.
        """
        started_at = _clock.now()
        if deferrable:
            from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger

            self.defer(
                trigger=AtScaleAggregateBatchTrigger(
                    atscale_conn_id=self.atscale_conn_id,
                    catalog_id=catalog_id,
                    model_id=model_id,
                    batch_id=batch_id,
                    poll_interval=poll_interval,
                    deadline=started_at + timeout,
                    timeout=timeout,
                    started_at=started_at,
                    last_status=last_status,
                ),
                method_name="execute_complete",
            )
        from airflow_provider_atscale._flow import drive
        from airflow_provider_atscale._waiting import WaitPlan, wait_for_batch

        plan = WaitPlan(
            batch_id=batch_id,
            poll_interval=poll_interval,
            deadline=started_at + timeout,
            timeout=timeout,
            started_at=started_at,
            # The status was read just now: the first poll is one interval away, as every later one.
            first_poll_at=started_at + poll_interval,
            last_status=last_status,
        )
        event = drive(
            wait_for_batch(plan, self.log),
            lambda _poll: self.hook.get_aggregate_batch(catalog_id, model_id, batch_id),
        )
        return event.batch_or_raise()

    def batch_from_event(self, event: Any) -> AggregateBatch:
        """
        The batch the trigger's event reports as finished; raises for a timeout, an error, or an event that is
        missing, malformed or of an unknown outcome (never taken for success).
        """
        from airflow_provider_atscale._waiting import batch_from_event

        return batch_from_event(event)
