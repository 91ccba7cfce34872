"""The sensor that waits on an AtScale batch started elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, Context, conf

from airflow_provider_atscale._inputs import check_one_of, parse_seconds

if TYPE_CHECKING:
    from airflow_provider_atscale._inputs import BatchRef
    from airflow_provider_atscale._waiting import Wait
    from airflow_provider_atscale.hooks.atscale import AtScaleHook


class AtScaleAggregateBatchSensor(BaseSensorOperator):
    """
    Wait until an AtScale batch finishes; a failed batch fails the sensor at once.

    Succeeds when the batch finishes good (``done``, ``success``, ``active``) and returns it; a failed or
    unknown status fails the sensor at once, naming every failing aggregate and AtScale's message. Each poke
    is one poll of the operator's waiting loop: an outage counts as "not yet" (logged when it starts and
    ends), a connection edited in Airflow reaches the next poke, and only the sensor's ``timeout`` ends the
    wait.

    :param catalog_id: the catalog's id. Templated. Give it or ``catalog_name``.
    :param model_id: the model's id. Templated. Give it or ``model_name``.
    :param catalog_name: the catalog's name, looked up as the operator does. Templated.
    :param model_name: the model's name, looked up likewise. Templated.
    :param batch_id: the batch to wait on. Templated, e.g.
        ``"{{ ti.xcom_pull(task_ids='build', key='batch_id') }}"``.
    :param atscale_conn_id: the ``atscale`` Airflow connection.
    :param deferrable: wait on the triggerer instead of a worker slot; default from Airflow's
        ``[operators] default_deferrable``. ``poke_interval`` and ``timeout`` apply in both modes.
    """

    template_fields: Sequence[str] = ("catalog_id", "model_id", "catalog_name", "model_name", "batch_id")
    ui_color = "#dbe9f9"

    def __init__(
        self,
        *,
        batch_id: str,
        catalog_id: str | None = None,
        model_id: str | None = None,
        catalog_name: str | None = None,
        model_name: str | None = None,
        atscale_conn_id: str = "atscale_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_one_of("catalog_id", catalog_id, "catalog_name", catalog_name)
        check_one_of("model_id", model_id, "model_name", model_name)
        self.catalog_id = catalog_id
        self.model_id = model_id
        self.catalog_name = catalog_name
        self.model_name = model_name
        self.batch_id = batch_id
        self.atscale_conn_id = atscale_conn_id
        self.deferrable = deferrable
        parse_seconds("poke_interval", self.poke_interval)
        self._wait: Wait | None = None

    @cached_property
    def hook(self) -> AtScaleHook:
        """The hook for :attr:`atscale_conn_id`, imported on first use to keep DAG parsing light."""
        from airflow_provider_atscale.hooks.atscale import AtScaleHook

        return AtScaleHook(atscale_conn_id=self.atscale_conn_id)

    @cached_property
    def batch(self) -> BatchRef:
        """The batch waited on, checked; its catalog and model as given, or found by name."""
        from airflow_provider_atscale._inputs import BatchRef, parse_id

        parse_id("batch_id", self.batch_id)  # before a name is looked up
        catalog_id, model_id = self.hook.lookup_model(
            catalog_id=self.catalog_id,
            catalog_name=self.catalog_name,
            model_id=self.model_id,
            model_name=self.model_name,
        )
        return BatchRef.parse(catalog_id=catalog_id, model_id=model_id, batch_id=self.batch_id)

    def execute(self, context: Context) -> Any:
        batch = self.batch  # names looked up, bad ids refused: before any deferral
        if not self.deferrable:
            return super().execute(context)
        from airflow_provider_atscale._waiting import WaitPlan
        from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger

        plan = WaitPlan.make(
            batch.batch_id,
            poll_interval=float(self.poke_interval),
            timeout=float(self.timeout),
            last_status=None,
            deferred=True,
        )
        trigger = AtScaleAggregateBatchTrigger.of_plan(self.atscale_conn_id, batch, plan)
        self.defer(trigger=trigger, method_name="execute_complete")

    def poke(self, context: Context) -> Any:
        import asyncio

        from airflow_provider_atscale._waiting import Wait, WaitPlan

        if self._wait is None:
            plan = WaitPlan.make(
                self.batch.batch_id,
                poll_interval=float(self.poke_interval),
                timeout=float(self.timeout),
                last_status=None,
                deferred=False,
            )
            self._wait = Wait(plan, self._poll, self._reconnect, self.log)
        result = asyncio.run(self._wait.step())
        if result is None:
            return False
        return self.finish(result.batch_or_raise())

    async def _poll(self) -> Any:
        return self.hook.read_batch(self.batch)

    async def _reconnect(self) -> bool:
        return self.hook.reconnect()

    def finish(self, batch: Any) -> Any:
        """Fail unless the batch succeeded (naming its failing aggregates); else return it as sent."""
        from airflow.providers.common.compat.sdk import PokeReturnValue

        from airflow_provider_atscale._waiting import raise_unless_succeeded

        raise_unless_succeeded(batch, self.hook, self.log)
        self.log.info("AtScale batch %s finished: %s", batch.id, batch.status)
        return PokeReturnValue(is_done=True, xcom_value=batch.to_api())

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Resume with the trigger's event; a missing or unknown event is refused, never taken for success."""
        from airflow_provider_atscale._waiting import WaitResult

        return self.finish(WaitResult.from_payload(event).batch_or_raise()).xcom_value
