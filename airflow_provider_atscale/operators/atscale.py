"""The operator that starts an AtScale aggregate build."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_atscale._compat import BaseOperator, Context
from airflow_provider_atscale._validation import (
    check_overrides_allowed,
    normalize_full_build,
    normalize_grace_period_overrides,
    validate_id,
)

if TYPE_CHECKING:
    from airflow_provider_atscale.batches import AggregateBatch
    from airflow_provider_atscale.hooks.atscale import AtScaleHook

XCOM_BATCH_ID = "batch_id"
XCOM_BATCH_STATUS = "batch_status"


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
    Start a full or incremental build of an AtScale model's aggregates.

    Pushes the batch id (XCom key ``batch_id``) and its status (``batch_status``) and returns the batch
    object as AtScale sent it.

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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.catalog_id = catalog_id
        self.model_id = model_id
        self.full_build = full_build
        self.grace_period_overrides = grace_period_overrides
        self.atscale_conn_id = atscale_conn_id

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
        batch = self.start_build(request)
        self.push_batch(context, batch)
        return self.finish(context, request, batch)

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

    def finish(self, context: Context, request: BuildRequest, batch: AggregateBatch) -> dict[str, Any]:
        """What the task returns once the batch is started: the batch as AtScale sent it."""
        return batch.to_api()
