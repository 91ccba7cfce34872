"""The operator that starts an AtScale aggregate build and follows it to its end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator, Context, conf

from airflow_provider_atscale._inputs import check_one_of, parse_seconds
from airflow_provider_atscale.errors import AtScaleError

if TYPE_CHECKING:
    from airflow_provider_atscale._inputs import BuildRequest
    from airflow_provider_atscale.batches import AggregateBatch, AggregateInstance
    from airflow_provider_atscale.hooks.atscale import AtScaleHook

XCOM_CATALOG_ID = "catalog_id"
XCOM_MODEL_ID = "model_id"
XCOM_BATCH_ID = "batch_id"
XCOM_BATCH_STATUS = "batch_status"

DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_TIMEOUT = timedelta(days=1).total_seconds()


class AtScaleAggregateBuildOperator(BaseOperator):
    """
    Start a full or incremental build of an AtScale model's aggregates and wait for it to finish.

    The batch id (XCom ``batch_id``) and first status (``batch_status``) are pushed as soon as the build
    starts; on success ``batch_status`` holds the final status, the task returns the batch as AtScale sent it,
    and the model's asset among ``outlets`` gets the build in its event's ``extra``. A failed batch fails the
    task with every failing aggregate and AtScale's message; an unknown status fails it too; running out of
    ``timeout`` fails it saying the build goes on in AtScale. Outages do not end the wait before ``timeout``,
    and a connection edited in Airflow reaches it. A retry resumes the build its earlier try started
    (``_durable.py``); a first try always starts its own.

    :param catalog_id: the catalog's id. Templated. Give it or ``catalog_name``.
    :param model_id: the model's id. Templated. Give it or ``model_name``.
    :param catalog_name: the catalog's name as AtScale shows it (``Sales Insights``), looked up in
        ``GET /v1/catalogs`` when the task runs. Templated.
    :param model_name: the model's name (``Internet Sales``), looked up likewise. Templated. An unknown or
        ambiguous name fails the task before any build, without retries. The ids are pushed to XCom.
    :param full_build: rebuild every aggregate (``True``) or build incrementally (``False``, the default).
        Templated: after rendering, a bool or ``"true"``/``"false"`` in any case.
    :param grace_period_overrides: for incremental builds only, dataset name to grace period, a non-negative
        integer (``"30"`` is sent as ``30``). Templated: a dict of templates, one template rendering a JSON
        object, or a native dict. AtScale applies them only where its grace-period override settings are on.
    :param atscale_conn_id: the ``atscale`` Airflow connection.
    :param wait_for_completion: wait for the batch to finish (default); if ``False``, return once started.
    :param poll_interval: seconds between status checks while waiting (default 60).
    :param timeout: seconds to wait for the batch before failing (default a day).
    :param deferrable: wait on the triggerer instead of a worker slot; default from Airflow's
        ``[operators] default_deferrable``.
    :param durable: a retry resumes the build an earlier try started (default); ``False``: every try posts.
    """

    template_fields: Sequence[str] = (
        "catalog_id",
        "model_id",
        "catalog_name",
        "model_name",
        "full_build",
        "grace_period_overrides",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"grace_period_overrides": "json"}
    ui_color = "#dbe9f9"

    def __init__(
        self,
        *,
        catalog_id: str | None = None,
        model_id: str | None = None,
        catalog_name: str | None = None,
        model_name: str | None = None,
        full_build: bool | str = False,
        grace_period_overrides: Mapping[str, Any] | str | None = None,
        atscale_conn_id: str = "atscale_default",
        wait_for_completion: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        durable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_one_of("catalog_id", catalog_id, "catalog_name", catalog_name)
        check_one_of("model_id", model_id, "model_name", model_name)
        self.catalog_id = catalog_id
        self.model_id = model_id
        self.catalog_name = catalog_name
        self.model_name = model_name
        self.full_build = full_build
        self.grace_period_overrides = grace_period_overrides
        self.atscale_conn_id = atscale_conn_id
        self.wait_for_completion = wait_for_completion
        self.poll_interval = parse_seconds("poll_interval", poll_interval)
        self.timeout = parse_seconds("timeout", timeout)
        self.deferrable = deferrable
        self.durable = durable
        self.build: BuildRequest | None = None
        """The checked build this run asked for."""
        self.batch_id: str | None = None
        self.batch: AggregateBatch | None = None
        """The batch as the task last saw it, for assets, lineage and kill messages."""
        self.failure: str | None = None
        """Why the build failed, for lineage."""
        self._aggregates: list[AggregateInstance] | None = None

    @cached_property
    def hook(self) -> AtScaleHook:
        """The hook for :attr:`atscale_conn_id`, imported on first use to keep DAG parsing light."""
        from airflow_provider_atscale.hooks.atscale import AtScaleHook

        return AtScaleHook(atscale_conn_id=self.atscale_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_atscale._durable import own_batch
        from airflow_provider_atscale.batches import BatchStatusClass

        self.build = build = self.build_request()
        ti = context["ti"]
        ti.xcom_push(key=XCOM_CATALOG_ID, value=build.catalog_id)
        ti.xcom_push(key=XCOM_MODEL_ID, value=build.model_id)
        batch_id, batch = own_batch(
            self.hook, build, context, self.log, durable=self.durable, waiting=self.wait_for_completion
        )
        self.batch_id = batch_id
        ti.xcom_push(key=XCOM_BATCH_ID, value=batch_id)
        finished = batch is not None and batch.status_class is not BatchStatusClass.IN_PROGRESS
        if batch is not None and (finished or not self.wait_for_completion):
            return self.complete(context, batch)
        if batch is not None:
            self.batch = batch
            ti.xcom_push(key=XCOM_BATCH_STATUS, value=batch.status)
        return self.complete(context, self.wait(batch_id, batch.status if batch is not None else None))

    def build_request(self) -> BuildRequest:
        """The rendered arguments checked once, before any request; names looked up in AtScale's catalogs."""
        from airflow_provider_atscale._inputs import BuildRequest, parse_build_options, parse_id

        if self.catalog_name is None and self.model_name is None:
            return BuildRequest.parse(
                catalog_id=self.catalog_id,
                model_id=self.model_id,
                full_build=self.full_build,
                grace_period_overrides=self.grace_period_overrides,
            )
        full, overrides = parse_build_options(self.full_build, self.grace_period_overrides)
        catalog_id, model_id = self.hook.lookup_model(
            catalog_id=self.catalog_id,
            catalog_name=self.catalog_name,
            model_id=self.model_id,
            model_name=self.model_name,
        )
        self.log.info(
            "AtScale model %r of catalog %r: model id %s, catalog id %s",
            self.model_name or model_id,
            self.catalog_name or catalog_id,
            model_id,
            catalog_id,
        )
        return BuildRequest(
            parse_id("catalog_id", catalog_id), parse_id("model_id", model_id), full, overrides
        )

    def wait(self, batch_id: str, last_status: str | None) -> AggregateBatch:
        """Wait on this worker for the batch to finish, or defer to the triggerer (see execute_complete)."""
        from airflow_provider_atscale._inputs import BatchRef
        from airflow_provider_atscale._waiting import WaitPlan, wait_here

        assert self.build is not None
        batch = BatchRef(self.build.catalog_id, self.build.model_id, batch_id)
        plan = WaitPlan.make(
            batch_id,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            last_status=last_status,
            deferred=self.deferrable,
        )
        if not self.deferrable:
            return wait_here(self.hook, batch, plan, self.log)
        from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger

        trigger = AtScaleAggregateBatchTrigger.of_plan(self.atscale_conn_id, batch, plan)
        self.defer(trigger=trigger, method_name="execute_complete")

    def complete(self, context: Context, batch: AggregateBatch) -> dict[str, Any]:
        """Finish with a batch (still running, without ``wait_for_completion``): push its status, fail if it
        ended badly, else tell the outlets and return it."""
        from airflow_provider_atscale._durable import finish
        from airflow_provider_atscale.batches import BatchStatusClass

        self.batch_id, self.batch = batch.id, batch
        context["ti"].xcom_push(key=XCOM_BATCH_STATUS, value=batch.status)
        if self.wait_for_completion:
            if batch.status_class is not BatchStatusClass.SUCCEEDED:
                from airflow_provider_atscale._waiting import raise_unless_succeeded

                try:
                    raise_unless_succeeded(batch, self.hook, self.log)
                except AtScaleError as error:
                    self.failure = str(error)
                    raise
            self.log.info("AtScale batch %s finished: %s", batch.id, batch.status)
            self._tell_outlets(context, batch)
        finish(context, batch.id, durable=self.durable)
        return batch.to_api()

    def _tell_outlets(self, context: Context, batch: AggregateBatch) -> None:
        """Put the build in the ``extra`` of the asset event of each outlet that is this model's asset."""
        from airflow_provider_atscale.assets import SCHEME, model_uri

        outlets = [o for o in self.outlets or [] if str(getattr(o, "uri", "")).startswith(f"{SCHEME}://")]
        if not outlets:
            return
        host = self.hook.settings.base_url
        ours = {model_uri(host, batch.catalog_id, batch.model_id)}
        if self.catalog_name is not None and self.model_name is not None:
            ours.add(model_uri(host, catalog_name=self.catalog_name, model_name=self.model_name))
        extra: dict[str, Any] = {
            "batch_id": batch.id,
            "build_type": self._build_type(batch),
            "status": batch.status,
            "aggregate_tables": [aggregate.table for aggregate in self.aggregates() if aggregate.is_built],
        }
        for outlet in outlets:
            if outlet.uri in ours:
                context["outlet_events"][outlet].extra = extra
            else:
                self.log.warning(
                    "Outlet %s is not the asset of model %s at %s: its event carries no build details",
                    outlet.uri,
                    batch.model_id,
                    host,
                )

    def aggregates(self) -> list[AggregateInstance]:
        """The batch's aggregate instances, listed once (for assets and lineage); none if they cannot be."""
        from airflow_provider_atscale._inputs import BatchRef

        if self._aggregates is None and self.batch is not None:
            batch = self.batch
            try:
                self._aggregates = self.hook.read_aggregates(
                    BatchRef(batch.catalog_id, batch.model_id, batch.id)
                )
            except AtScaleError as error:
                self.log.warning("Could not list the aggregates of AtScale batch %s: %s", batch.id, error)
                self._aggregates = []
        return self._aggregates or []

    def _build_type(self, batch: AggregateBatch) -> str:
        if batch.is_full_build is None and self.build is not None:
            return self.build.build_type
        return batch.build_type

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume with the trigger's event; a missing or unknown event is refused, never taken for success."""
        from airflow_provider_atscale._waiting import WaitResult

        result = WaitResult.from_payload(event)
        self.batch = result.batch or self.batch
        try:
            batch = result.batch_or_raise()
        except AtScaleError as error:
            self.failure = str(error)
            raise
        return self.complete(context, batch)

    def get_openlineage_facets_on_start(self) -> Any:
        """Lineage when the task starts (called only by the OpenLineage provider): the model, as the input."""
        return self._lineage()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Lineage of a finished build: the model, each aggregate table built, the batch (``_lineage.py``)."""
        return self._lineage(self.aggregates())

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """Lineage of a failed build or wait: the model, the batch as last seen, and why it failed."""
        return self._lineage(error=self.failure)

    def _lineage(self, aggregates: list[AggregateInstance] | None = None, error: str | None = None) -> Any:
        from airflow_provider_atscale._lineage import build_lineage

        batch = self.batch
        if batch is not None:
            model = (batch.catalog_id, batch.model_id)
        else:
            model = (str(self.catalog_id or self.catalog_name), str(self.model_id or self.model_name))
        build_type = self._build_type(batch) if batch is not None else "unknown"
        return build_lineage(
            self.hook.settings, model, batch, build_type=build_type, aggregates=aggregates or (), error=error
        )

    def on_kill(self) -> None:
        """AtScale's API cannot cancel a batch: say so, with the batch id, so nobody assumes it stopped."""
        if self.batch_id:
            self.log.warning(
                "Task killed; AtScale has no API to cancel a build: batch %s continues in AtScale",
                self.batch_id,
            )
