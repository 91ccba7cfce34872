"""The operator that starts an AtScale aggregate build and follows it to its end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_atscale import _clock
from airflow_provider_atscale._compat import BaseOperator, Context, conf
from airflow_provider_atscale._validation import (
    check_overrides_allowed,
    normalize_full_build,
    normalize_grace_period_overrides,
    validate_id,
    validate_positive_seconds,
)
from airflow_provider_atscale._waiting import (
    StatusChangeLog,
    batch_from_event,
    outcome_of,
    raise_unless_succeeded,
    timeout_message,
)
from airflow_provider_atscale.errors import AtScaleWaitTimeoutError

if TYPE_CHECKING:
    from airflow_provider_atscale.batches import AggregateBatch
    from airflow_provider_atscale.hooks.atscale import AtScaleHook

XCOM_BATCH_ID = "batch_id"
XCOM_BATCH_STATUS = "batch_status"

DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_TIMEOUT = timedelta(days=1).total_seconds()


@dataclass(frozen=True)
class BuildRequest:
    """
    A checked build request: what the operator's rendered arguments ask for.

    :param catalog_id: the catalog's id.
    :param model_id: the model's id.
    :param full_build: a full build rather than an incremental one.
    :param grace_period_overrides: dataset name to grace period (incremental builds only).
    """

    catalog_id: str
    model_id: str
    full_build: bool
    grace_period_overrides: Mapping[str, int]

    @property
    def build_type(self) -> str:
        """``full`` or ``incremental``, for logs."""
        return "full" if self.full_build else "incremental"


class AtScaleAggregateBuildOperator(BaseOperator):
    """
    Start a full or incremental build of an AtScale model's aggregates and wait for it to finish.

    The batch id (XCom key ``batch_id``) and first status (``batch_status``) are pushed as soon as the
    build starts, before any waiting. On success ``batch_status`` holds the final status and the task
    returns the final batch object as AtScale sent it. A failed batch fails the task with every failing
    aggregate's table and AtScale's message; a status this provider does not know fails it too (never
    taken for success); running out of ``timeout`` fails it saying the build goes on in AtScale.

    Retries never build twice: with ``reuse_running_batch`` a retried task attaches to the batch of the
    same model and build type that is still running and was created since the DAG run started.

    :param catalog_id: the catalog's id. Templated.
    :param model_id: the model's id. Templated.
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
    :param reuse_running_batch: before starting a build, attach to a running batch of the same model and
        build type created since the DAG run started (default ``True``).
    """

    template_fields: Sequence[str] = ("catalog_id", "model_id", "full_build", "grace_period_overrides")
    template_fields_renderers: ClassVar[dict[str, str]] = {"grace_period_overrides": "json"}
    ui_color = "#dbe9f9"

    def __init__(
        self,
        *,
        catalog_id: str,
        model_id: str,
        full_build: bool | str = False,
        grace_period_overrides: Mapping[str, Any] | str | None = None,
        atscale_conn_id: str = "atscale_default",
        wait_for_completion: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        reuse_running_batch: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.catalog_id = catalog_id
        self.model_id = model_id
        self.full_build = full_build
        self.grace_period_overrides = grace_period_overrides
        self.atscale_conn_id = atscale_conn_id
        self.wait_for_completion = wait_for_completion
        self.poll_interval = validate_positive_seconds("poll_interval", poll_interval)
        self.timeout = validate_positive_seconds("timeout", timeout)
        self.deferrable = deferrable
        self.reuse_running_batch = reuse_running_batch
        self.batch_id: str | None = None

    @cached_property
    def hook(self) -> AtScaleHook:
        """The hook for :attr:`atscale_conn_id`, imported on first use to keep DAG parsing light."""
        from airflow_provider_atscale.hooks.atscale import AtScaleHook

        return AtScaleHook(atscale_conn_id=self.atscale_conn_id)

    def build_request(self) -> BuildRequest:
        """Check the rendered arguments; raises before anything is sent to AtScale."""
        full_build = normalize_full_build(self.full_build)
        overrides = normalize_grace_period_overrides(self.grace_period_overrides)
        check_overrides_allowed(full_build, overrides)
        return BuildRequest(
            catalog_id=validate_id("catalog_id", self.catalog_id),
            model_id=validate_id("model_id", self.model_id),
            full_build=full_build,
            grace_period_overrides=overrides,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        request = self.build_request()
        batch = self._running_batch(context, request) if self.reuse_running_batch else None
        if batch is None:
            batch = self.start_build(request)
        self.batch_id = batch.id
        self.push_batch(context, batch)
        if not self.wait_for_completion:
            return batch.to_api()
        started_at = _clock.now()
        if self.deferrable and outcome_of(batch) is None:
            self._defer_until_done(request, batch, started_at)
        return self.complete(context, self.wait_until_done(request, batch, started_at))

    def start_build(self, request: BuildRequest) -> AggregateBatch:
        """Post the build and log one line about the new batch."""
        batch = self.hook.trigger_aggregate_build(
            request.catalog_id,
            request.model_id,
            full_build=request.full_build,
            grace_period_overrides=request.grace_period_overrides,
        )
        self.log.info(
            "Started %s AtScale build of model %s in catalog %s: batch %s, status %s, estimate %s",
            request.build_type,
            request.model_id,
            request.catalog_id,
            batch.id,
            batch.status,
            batch.estimate_time if batch.estimate_time is not None else "not given",
        )
        return batch

    def push_batch(self, context: Context, batch: AggregateBatch) -> None:
        """Push the batch id and status to XCom, so downstream tasks have them while the build runs."""
        ti = context["ti"]
        ti.xcom_push(key=XCOM_BATCH_ID, value=batch.id)
        ti.xcom_push(key=XCOM_BATCH_STATUS, value=batch.status)

    def wait_until_done(
        self, request: BuildRequest, batch: AggregateBatch, started_at: float
    ) -> AggregateBatch:
        """Poll the batch on this worker until it leaves the in-progress statuses or the timeout passes."""
        deadline = started_at + self.timeout
        status_log = StatusChangeLog(self.log, started_at, last_status=batch.status)
        while outcome_of(batch) is None:
            now = _clock.now()
            if now >= deadline:
                raise AtScaleWaitTimeoutError(timeout_message(batch.id, batch.status, self.timeout), batch.id)
            _clock.sleep(min(self.poll_interval, deadline - now))
            batch = self.hook.get_aggregate_batch(request.catalog_id, request.model_id, batch.id)
            status_log.observe(batch, _clock.now())
        return batch

    def complete(self, context: Context, batch: AggregateBatch) -> dict[str, Any]:
        """Finish with a batch that left the in-progress statuses: push its status, return it or fail."""
        self.batch_id = batch.id
        context["ti"].xcom_push(key=XCOM_BATCH_STATUS, value=batch.status)
        raise_unless_succeeded(batch, self.hook, self.log)
        self.log.info("AtScale batch %s finished: %s", batch.id, batch.status)
        return batch.to_api()

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """
        Resume after the trigger's event; refuses a missing or unknown event rather than guess success.

        :param context: the task context.
        :param event: the trigger event's payload.
        """
        return self.complete(context, batch_from_event(event))

    def on_kill(self) -> None:
        """AtScale's API cannot cancel a batch: say so, with the batch id, so nobody assumes it stopped."""
        if self.batch_id:
            self.log.warning(
                "Task killed; AtScale batch %s goes on running in AtScale (the API has no cancel call)",
                self.batch_id,
            )

    def _defer_until_done(self, request: BuildRequest, batch: AggregateBatch, started_at: float) -> None:
        from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger

        self.defer(
            trigger=AtScaleAggregateBatchTrigger(
                atscale_conn_id=self.atscale_conn_id,
                catalog_id=request.catalog_id,
                model_id=request.model_id,
                batch_id=batch.id,
                poll_interval=self.poll_interval,
                deadline=started_at + self.timeout,
                timeout=self.timeout,
                started_at=started_at,
                last_status=batch.status,
            ),
            method_name="execute_complete",
        )

    def _running_batch(self, context: Context, request: BuildRequest) -> AggregateBatch | None:
        since = _dag_run_start(context)
        if since is None:
            return None
        batch = self.hook.find_running_batch(
            request.catalog_id, request.model_id, full_build=request.full_build, created_since=since
        )
        if batch is not None:
            self.log.info(
                "Attaching to AtScale batch %s (%s, created %s): a %s build of model %s already running "
                "since this DAG run started, so no second build is started",
                batch.id,
                batch.status,
                batch.create_date,
                request.build_type,
                request.model_id,
            )
        return batch


def _dag_run_start(context: Context) -> datetime | None:
    dag_run = context.get("dag_run")
    start = getattr(dag_run, "start_date", None)
    return start if isinstance(start, datetime) and start.tzinfo is not None else None
