"""The operator that starts an AtScale aggregate build and follows it to its end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_atscale import _clock
from airflow_provider_atscale._batch_waiting import BatchWaiting
from airflow_provider_atscale._compat import (
    BaseOperator,
    Context,
    conf,
    first_try_started_at,
    try_number,
    try_started_at,
)
from airflow_provider_atscale._validation import (
    BuildRequest,
    check_build_arguments,
    check_one_of,
    validate_positive_seconds,
)

if TYPE_CHECKING:
    from airflow_provider_atscale._durable import BuildStore, Window
    from airflow_provider_atscale.batches import AggregateBatch
    from airflow_provider_atscale.hooks.atscale import AtScaleHook

XCOM_CATALOG_ID = "catalog_id"
XCOM_MODEL_ID = "model_id"
XCOM_BATCH_ID = "batch_id"
XCOM_BATCH_STATUS = "batch_status"

DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_TIMEOUT = timedelta(days=1).total_seconds()


class AtScaleAggregateBuildOperator(BatchWaiting, BaseOperator):
    """
    Start a full or incremental build of an AtScale model's aggregates and wait for it to finish.

    The batch id (XCom key ``batch_id``) and first status (``batch_status``) are pushed as soon as the
    build starts, before any waiting. On success ``batch_status`` holds the final status and the task
    returns the final batch object as AtScale sent it. A failed batch fails the task with every failing
    aggregate's table and AtScale's message; a status this provider does not know fails it too (never
    taken for success); running out of ``timeout`` fails it saying the build goes on in AtScale. Polls that
    fail in a way that may pass (no answer, 429, 5xx) do not end the wait before ``timeout``.

    A retried task resumes exactly its own build (``durable``): on Airflow 3.3 and later the build it
    posted is recorded in the task instance's state store, and a later try waits on that batch (still
    running), finishes with it (finished good), or starts a new build (finished bad). Without a record (an
    older Airflow, or a worker lost between the POST and the record) a retry looks in batch history for a
    running build of this model and build type created during this task instance's tries. A first try
    always starts its own build, with its own overrides.

    :param catalog_id: the catalog's id. Templated. Give it or ``catalog_name``.
    :param model_id: the model's id. Templated. Give it or ``model_name``.
    :param catalog_name: the catalog's name as AtScale shows it (``Sales Insights``), looked up in
        ``GET /v1/catalogs`` when the task runs. Templated.
    :param model_name: the model's name (``Internet Sales``), looked up likewise in the catalog. Templated.
        Names are matched as written; a name in another case only where exactly one catalog or model has it.
        An unknown or ambiguous name fails the task before any build, without retries, listing the names
        that exist. The ids, given or found, are pushed to XCom (``catalog_id``, ``model_id``).
    :param full_build: rebuild every aggregate (``True``) or build incrementally (``False``, the default).
        Templated: after rendering, a bool or ``"true"``/``"false"`` in any case.
    :param grace_period_overrides: for incremental builds only, a mapping of dataset name to grace period,
        a non-negative integer (``"30"`` is sent as ``30``). Templated: a dict whose values are templates,
        one template rendering to a JSON object string, or a native dict under
        ``render_template_as_native_obj=True``. AtScale applies overrides only where its
        ``aggregate.batch.gracePeriodOverrides.enabled`` settings are on.
    :param atscale_conn_id: the ``atscale`` Airflow connection.
    :param wait_for_completion: wait for the batch to finish (default); if ``False``, return once started.
    :param poll_interval: seconds between status checks while waiting (default 60).
    :param timeout: seconds to wait for the batch before failing (default a day).
    :param deferrable: wait on the triggerer instead of a worker slot; default from Airflow's
        ``[operators] default_deferrable``.
    :param durable: a retry resumes the build an earlier try of this task instance started instead of
        starting another (default ``True``, Airflow's name for this behaviour); ``False``: every try posts.
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
        self.poll_interval = validate_positive_seconds("poll_interval", poll_interval)
        self.timeout = validate_positive_seconds("timeout", timeout)
        self.deferrable = deferrable
        self.durable = durable
        self.batch_id: str | None = None
        self.finished_batch: AggregateBatch | None = None
        """The batch as the task last saw it, for lineage."""

    @cached_property
    def hook(self) -> AtScaleHook:
        """The hook for :attr:`atscale_conn_id`, imported on first use to keep DAG parsing light."""
        from airflow_provider_atscale.hooks.atscale import AtScaleHook

        return AtScaleHook(atscale_conn_id=self.atscale_conn_id)

    def build_request(self) -> BuildRequest:
        """
        Check the rendered arguments (before any request), then find the ids of a catalog or model given by
        name (``GET /v1/catalogs``): raises before any build is started.
        """
        full_build, overrides = check_build_arguments(self.full_build, self.grace_period_overrides)
        catalog_id, model_id = self.hook.lookup_model(
            catalog_id=self.catalog_id,
            catalog_name=self.catalog_name,
            model_id=self.model_id,
            model_name=self.model_name,
        )
        if self.catalog_name is not None or self.model_name is not None:
            self.log.info(
                "AtScale model %r of catalog %r: model id %s, catalog id %s",
                self.model_name or model_id,
                self.catalog_name or catalog_id,
                model_id,
                catalog_id,
            )
        return BuildRequest.checked(
            catalog_id=catalog_id,
            model_id=model_id,
            full_build=full_build,
            grace_period_overrides=overrides,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_atscale._durable import BuildStore
        from airflow_provider_atscale._waiting import outcome_of

        request = self.build_request()
        context["ti"].xcom_push(key=XCOM_CATALOG_ID, value=request.catalog_id)
        context["ti"].xcom_push(key=XCOM_MODEL_ID, value=request.model_id)
        store = BuildStore.of(context) if self.durable else None
        batch_id, batch = self._own_batch(context, request, store)
        self.batch_id = batch_id
        context["ti"].xcom_push(key=XCOM_BATCH_ID, value=batch_id)
        if batch is not None and (not self.wait_for_completion or outcome_of(batch) is not None):
            return self.complete(context, batch)
        if batch is not None:
            context["ti"].xcom_push(key=XCOM_BATCH_STATUS, value=batch.status)
        last_status = batch.status if batch is not None else None
        finished = self.wait_until_done(
            catalog_id=request.catalog_id,
            model_id=request.model_id,
            batch_id=batch_id,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            last_status=last_status,
            deferrable=self.deferrable,
        )
        return self.complete(context, finished)

    def start_build(self, request: BuildRequest, store: BuildStore | None = None) -> AggregateBatch:
        """
        Post the build and log one line about the new batch; with a store, record it before and after.

        :param request: the checked build request.
        :param store: the task instance's build record, where Airflow keeps one.
        """
        from airflow_provider_atscale._durable import BuildRecord

        record = BuildRecord.posting(request)
        if store is not None:
            store.save(record)
        batch = self.hook.trigger_aggregate_build(
            request.catalog_id,
            request.model_id,
            full_build=request.full_build,
            grace_period_overrides=request.grace_period_overrides,
        )
        if store is not None:
            store.save(record.started(batch.id))
        self.log.info(
            "Started %s AtScale build of model %s in catalog %s: batch %s, status %s, estimate %s",
            request.build_type,
            request.model_id,
            request.catalog_id,
            batch.id,
            batch.status,
            batch.describe_estimate(),
        )
        return batch

    def complete(self, context: Context, batch: AggregateBatch) -> dict[str, Any]:
        """
        Finish with a batch: push its status, then return it, or fail if it ended badly.

        With ``wait_for_completion=False`` the batch may still run; the task is done with it all the same.
        """
        from airflow_provider_atscale._durable import BuildStore
        from airflow_provider_atscale._waiting import raise_unless_succeeded

        self.batch_id = batch.id
        self.finished_batch = batch
        context["ti"].xcom_push(key=XCOM_BATCH_STATUS, value=batch.status)
        if self.wait_for_completion:
            raise_unless_succeeded(batch, self.hook, self.log)
            self.log.info("AtScale batch %s finished: %s", batch.id, batch.status)
        store = BuildStore.of(context) if self.durable else None
        record = store.load() if store is not None else None
        if store is not None and record is not None and record.batch_id == batch.id:
            # This run of the task is done with the batch: a later run (a clear) builds anew.
            store.save(record.done())
        return batch.to_api()

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """
        Resume after the trigger's event; refuses a missing or unknown event rather than guess success.

        :param context: the task context.
        :param event: the trigger event's payload.
        """
        return self.complete(context, self.batch_from_event(event))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """
        Lineage for OpenLineage (called only by apache-airflow-providers-openlineage): one output dataset per
        aggregate table the batch built, and a run facet with the batch id, build type and final status.

        :param task_instance: the finished task instance (unused: the operator kept its batch).
        """
        from airflow.providers.openlineage.extractors import OperatorLineage

        from airflow_provider_atscale._lineage import aggregate_build_lineage

        batch = self.finished_batch
        if batch is None:
            return OperatorLineage()
        full_build = batch.is_full_build
        if full_build is None:
            full_build = check_build_arguments(self.full_build, self.grace_period_overrides)[0]
        return aggregate_build_lineage(self.hook, batch, full_build=full_build)

    def on_kill(self) -> None:
        """AtScale's API cannot cancel a batch: say so, with the batch id, so nobody assumes it stopped."""
        if self.batch_id:
            self.log.warning(
                "Task killed; AtScale batch %s goes on running in AtScale (the API has no cancel call)",
                self.batch_id,
            )

    def _own_batch(
        self, context: Context, request: BuildRequest, store: BuildStore | None
    ) -> tuple[str, AggregateBatch | None]:
        """
        The batch this try follows: one an earlier try started, where it can be told, else a new build.

        :return: the batch id, and the batch (``None`` when its status could not be read just now).
        """
        from airflow_provider_atscale._durable import BuildRecord, adoption_window

        if self.durable:
            record = store.load() if store is not None else None
            if record is not None and not record.finished:
                if not record.asks_for(request):
                    self.log.warning(
                        "An earlier try of this task asked for %s (batch %s); this one asks for %s: starting "
                        "a new build",
                        record.describe(),
                        record.batch_id or "unknown",
                        BuildRecord.posting(request).describe(),
                    )
                elif record.batch_id is not None:
                    resumed = self._resume(request, record.batch_id)
                    if resumed is not None:
                        return resumed
                else:
                    # The worker was lost between the POST and the record of its answer.
                    window = adoption_window(
                        record.posting_at,
                        try_started_at(context) or _clock.now(),
                        "after an earlier try of this task posted a build and was lost before recording "
                        "AtScale's answer",
                    )
                    if (found := self._find_own_batch(request, window)) is not None:
                        return found.id, found
            elif (
                store is None
                and try_number(context) > 1
                and (found := self._find_from_retry(context, request))
            ):
                return found.id, found
        batch = self.start_build(request, store)
        return batch.id, batch

    def _resume(self, request: BuildRequest, batch_id: str) -> tuple[str, AggregateBatch | None] | None:
        """The recorded batch to go on with, or ``None`` to start a new build (saying why)."""
        from airflow_provider_atscale._waiting import Outcome, is_passing, outcome_of
        from airflow_provider_atscale.errors import AtScaleError, AtScaleNotFoundError

        try:
            batch = self.hook.get_aggregate_batch(request.catalog_id, request.model_id, batch_id)
        except AtScaleNotFoundError as error:
            self.log.warning(
                "AtScale batch %s, which an earlier try of this task started, cannot be found (%s): starting "
                "a new build",
                batch_id,
                error,
            )
            return None
        except AtScaleError as error:
            if not is_passing(error) or not self.wait_for_completion:
                raise
            self.log.warning(
                "Resuming AtScale batch %s, which an earlier try of this task started; its status cannot be "
                "read now (%s), so waiting on it",
                batch_id,
                error,
            )
            return batch_id, None
        outcome = outcome_of(batch)
        if outcome is None:
            self.log.info(
                "Resuming AtScale batch %s (%s), which an earlier try of this task started: no new build",
                batch.id,
                batch.status,
            )
        elif outcome is Outcome.SUCCEEDED:
            self.log.info(
                "AtScale batch %s, which an earlier try of this task started, finished %s: no new build",
                batch.id,
                batch.status,
            )
        else:
            self.log.warning(
                "AtScale batch %s, which an earlier try of this task started, ended %s: starting a new build",
                batch.id,
                batch.status,
            )
            return None
        return batch.id, batch

    def _find_from_retry(self, context: Context, request: BuildRequest) -> AggregateBatch | None:
        """Where Airflow keeps no record: look for the build in the window of this task instance's tries."""
        from airflow_provider_atscale._durable import adoption_window

        first = first_try_started_at(context)
        if first is None:
            return None
        since, what = first
        window = adoption_window(since, try_started_at(context) or _clock.now(), f"since {what}")
        return self._find_own_batch(request, window)

    def _find_own_batch(self, request: BuildRequest, window: Window) -> AggregateBatch | None:
        batch = self.hook.find_running_batch(
            request.catalog_id,
            request.model_id,
            full_build=request.full_build,
            created_since=window.since,
            created_until=window.until,
        )
        if batch is not None:
            self.log.warning(
                "Resuming AtScale batch %s (%s, created %s): %s of model %s created %s, taken for the build "
                "an earlier try of this task started; no new build",
                batch.id,
                batch.status,
                batch.create_date,
                request.describe_build_type(),
                request.model_id,
                window.why,
            )
        return batch
