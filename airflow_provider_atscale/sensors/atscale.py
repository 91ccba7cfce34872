"""The sensor that waits on an AtScale batch started elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_atscale import _clock
from airflow_provider_atscale._batch_waiting import BatchWaiting
from airflow_provider_atscale._compat import BaseSensorOperator, Context, conf
from airflow_provider_atscale._validation import check_one_of, validate_id, validate_positive_seconds

if TYPE_CHECKING:
    from airflow_provider_atscale.hooks.atscale import AtScaleHook


class AtScaleAggregateBatchSensor(BatchWaiting, BaseSensorOperator):
    """
    Wait until an AtScale batch finishes; a failed batch fails the sensor at once.

    Succeeds when the batch reaches a finished-good status (``done``, ``success``, ``active``) and returns
    the batch object. A failed status, or one this provider does not know, fails the sensor immediately
    with every failing aggregate's table and AtScale's message, instead of poking until the timeout. A poke
    that fails in a way that may pass (no answer, 429, 5xx) counts as "not yet": the outage is logged when
    it starts and when it ends, and only the sensor's ``timeout`` ends the wait.

    :param catalog_id: the catalog's id. Templated. Give it or ``catalog_name``.
    :param model_id: the model's id. Templated. Give it or ``model_name``.
    :param catalog_name: the catalog's name, looked up when the sensor runs (as the operator does). Templated.
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
        validate_positive_seconds("poke_interval", self.poke_interval)
        self._outage_since: float | None = None

    @cached_property
    def model_ids(self) -> tuple[str, str]:
        """The catalog and model ids, given or found by name (``GET /v1/catalogs``), once per task run."""
        return self.hook.lookup_model(
            catalog_id=self.catalog_id,
            catalog_name=self.catalog_name,
            model_id=self.model_id,
            model_name=self.model_name,
        )

    @cached_property
    def hook(self) -> AtScaleHook:
        """The hook for :attr:`atscale_conn_id`, imported on first use to keep DAG parsing light."""
        from airflow_provider_atscale.hooks.atscale import AtScaleHook

        return AtScaleHook(atscale_conn_id=self.atscale_conn_id)

    def execute(self, context: Context) -> Any:
        validate_id("batch_id", self.batch_id)
        catalog_id, model_id = self.model_ids  # names looked up, bad ids refused: before any deferral
        if not self.deferrable:
            return super().execute(context)
        self.wait_until_done(
            catalog_id=catalog_id,
            model_id=model_id,
            batch_id=self.batch_id,
            poll_interval=float(self.poke_interval),
            timeout=float(self.timeout),
            last_status=None,
            deferrable=True,
        )

    def poke(self, context: Context) -> Any:
        from airflow_provider_atscale._compat import PokeReturnValue
        from airflow_provider_atscale._waiting import is_passing, outcome_of, raise_unless_succeeded
        from airflow_provider_atscale.batches import format_duration
        from airflow_provider_atscale.errors import AtScaleError

        try:
            batch = self.hook.get_aggregate_batch(*self.model_ids, self.batch_id)
        except AtScaleError as error:
            if not is_passing(error):
                raise
            if self._outage_since is None:
                self._outage_since = _clock.now()
                self.log.warning(
                    "AtScale does not answer pokes of batch %s (%s); poking on until the sensor's timeout",
                    self.batch_id,
                    error,
                )
            return False
        if self._outage_since is not None:
            self.log.warning(
                "AtScale answers pokes of batch %s again, after %s",
                self.batch_id,
                format_duration(_clock.now() - self._outage_since),
            )
            self._outage_since = None
        self.log.info("AtScale batch %s is %s", batch.id, batch.status)
        if outcome_of(batch) is None:
            return False
        raise_unless_succeeded(batch, self.hook, self.log)
        return PokeReturnValue(is_done=True, xcom_value=batch.to_api())

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """
        Resume after the trigger's event; refuses a missing or unknown event rather than guess success.

        :param context: the task context.
        :param event: the trigger event's payload.
        """
        from airflow_provider_atscale._waiting import raise_unless_succeeded

        batch = self.batch_from_event(event)
        raise_unless_succeeded(batch, self.hook, self.log)
        self.log.info("AtScale batch %s finished: %s", batch.id, batch.status)
        return batch.to_api()
