"""
A task's own build across its tries: which batch a try of the build operator follows (:func:`own_batch`).

On Airflow 3.3 the operator records in the task instance's ``task_state_store`` what it asks for, before the
POST, and the batch id AtScale answers. A later try resumes that batch: still running, it waits on it;
finished good, it finishes with it; finished bad, gone, or asked with other arguments, it posts anew and says
why. Without a store (before 3.3), or where a worker died between the POST and the record, a retry looks in
batch history for a running build of this model and type created during its tries (allowing
:data:`~airflow_provider_atscale.batches.CLOCK_SKEW`). A first try always posts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_atscale import _clock
from airflow_provider_atscale._compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_atscale.batches import CLOCK_SKEW, BatchStatusClass
from airflow_provider_atscale.errors import AtScaleError, AtScaleNotFoundError, may_pass

if TYPE_CHECKING:
    from airflow_provider_atscale._inputs import BuildRequest
    from airflow_provider_atscale.batches import AggregateBatch
    from airflow_provider_atscale.hooks.atscale import AtScaleHook

STORE_KEY = "atscale_aggregate_build"
"""The task state store key of the record. Renaming it would make in-flight retries miss their build."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildRecord:
    """What one try asked AtScale to build and when it posted (Airflow's clock), the batch AtScale answered
    with (``None`` until it answered), and whether the task succeeded with it (a later run, a clear, builds
    anew)."""

    catalog_id: str
    model_id: str
    full_build: bool
    grace_period_overrides: Mapping[str, int] = field(default_factory=dict)
    posting_at: float = 0.0
    batch_id: str | None = None
    finished: bool = False

    def asks_for(self, build: BuildRequest) -> bool:
        """Whether this record asked for exactly this build (same model, build type and overrides)."""
        return (self.catalog_id, self.model_id, self.full_build, dict(self.grace_period_overrides)) == (
            build.catalog_id,
            build.model_id,
            build.full_build,
            dict(build.grace_period_overrides),
        )

    @classmethod
    def load(cls, store: Any) -> BuildRecord | None:
        """The record an earlier try left in the store, if any (an unreadable one is logged and ignored)."""
        value = store.get(STORE_KEY)
        if value is None:
            return None
        try:
            return cls(
                catalog_id=str(value["catalog_id"]),
                model_id=str(value["model_id"]),
                full_build=bool(value["full_build"]),
                grace_period_overrides={str(k): int(v) for k, v in value["grace_period_overrides"].items()},
                posting_at=float(value["posting_at"]),
                batch_id=str(value["batch_id"]) if value.get("batch_id") else None,
                finished=bool(value.get("finished", False)),
            )
        except (TypeError, KeyError, ValueError, AttributeError):
            log.warning("Ignoring an unreadable AtScale build record in the task state store: %r", value)
            return None

    def save(self, store: Any) -> BuildRecord:
        """Write the record as JSON (it replaces any earlier one); returns it."""
        store.set(STORE_KEY, {**asdict(self), "grace_period_overrides": dict(self.grace_period_overrides)})
        return self


def own_batch(
    hook: AtScaleHook,
    build: BuildRequest,
    context: Mapping[str, Any],
    logger: Any,
    *,
    durable: bool,
    waiting: bool,
) -> tuple[str, AggregateBatch | None]:
    """
    The batch this try follows, ``(id, batch)``: one an earlier try started, where that can be told
    (``durable``), else a new build. The batch is ``None`` where its status could not be read just now, if the
    task is ``waiting`` for it anyway.
    """
    store = context.get("task_state_store") if durable else None
    record = BuildRecord.load(store) if store is not None else None
    found: AggregateBatch | None = None
    if record is not None and not record.finished:
        if not record.asks_for(build):
            logger.warning(
                "An earlier try of this task asked for a%s build of model %s (batch %s); this one asks for "
                "%s: "
                "starting a new build",
                " full" if record.full_build else "n incremental",
                record.model_id,
                record.batch_id or "unknown",
                build.describe(),
            )
        elif record.batch_id is not None:
            resumed = _resume(hook, build, record.batch_id, logger, waiting=waiting)
            if resumed is not None:
                return resumed
        else:
            # The worker was lost between the POST and the record of its answer.
            why = "after an earlier try of this task posted a build and was lost before recording the answer"
            found = _find_own_batch(hook, build, record.posting_at, _try_start(context), why, logger)
    elif (
        durable and store is None and _try_number(context) > 1 and (first := _first_try(context)) is not None
    ):
        found = _find_own_batch(hook, build, first[0], _try_start(context), f"since {first[1]}", logger)
    if found is not None:
        return found.id, found
    batch = start_build(hook, build, store)
    logger.info(
        "Started %s AtScale build of model %s in catalog %s: batch %s, status %s, estimate %s",
        "full" if build.full_build else "incremental",
        build.model_id,
        build.catalog_id,
        batch.id,
        batch.status,
        batch.describe_estimate(),
    )
    return batch.id, batch


def start_build(hook: AtScaleHook, build: BuildRequest, store: Any) -> AggregateBatch:
    """Post the build; with a store, record it before the POST and add the batch id when AtScale answers."""
    record = BuildRecord(
        build.catalog_id, build.model_id, build.full_build, dict(build.grace_period_overrides), _clock.now()
    )
    if store is not None:
        record.save(store)
    batch = hook.start_build(build)
    if store is not None:
        replace(record, batch_id=batch.id).save(store)
    return batch


def finish(context: Mapping[str, Any], batch_id: str, *, durable: bool) -> None:
    """The task is done with its batch: mark the record so a later run of the task (a clear) builds anew."""
    store = context.get("task_state_store") if durable else None
    record = BuildRecord.load(store) if store is not None else None
    if record is not None and record.batch_id == batch_id:
        replace(record, finished=True).save(store)


def _resume(
    hook: AtScaleHook, build: BuildRequest, batch_id: str, logger: Any, *, waiting: bool
) -> tuple[str, AggregateBatch | None] | None:
    """The recorded batch to go on with, or ``None`` to start a new build (saying why)."""
    from airflow_provider_atscale._inputs import BatchRef

    earlier = f"AtScale batch {batch_id}, which an earlier try of this task started,"
    try:
        batch = hook.read_batch(BatchRef(build.catalog_id, build.model_id, batch_id))
    except AtScaleNotFoundError as error:
        logger.warning("%s cannot be found (%s): starting a new build", earlier, error)
        return None
    except AtScaleError as error:
        if not may_pass(error) or not waiting:
            raise
        logger.warning("%s: its status cannot be read now (%s), so waiting on it", earlier, error)
        return batch_id, None
    if batch.status_class is BatchStatusClass.IN_PROGRESS:
        logger.info(
            "Resuming AtScale batch %s (%s), which an earlier try of this task started",
            batch.id,
            batch.status,
        )
    elif batch.status_class is BatchStatusClass.SUCCEEDED:
        logger.info("%s finished %s: no new build", earlier, batch.status)
    else:
        logger.warning("%s ended %s: starting a new build", earlier, batch.status)
        return None
    return batch.id, batch


def _find_own_batch(
    hook: AtScaleHook, build: BuildRequest, since: float, until: float, why: str, logger: Any
) -> AggregateBatch | None:
    """A running build of this model and type created from ``since`` to ``until``, by AtScale's clock."""
    batch = hook.find_build(
        build,
        since=datetime.fromtimestamp(since - CLOCK_SKEW, tz=timezone.utc),
        until=datetime.fromtimestamp(until + CLOCK_SKEW, tz=timezone.utc),
    )
    if batch is not None:
        logger.warning(
            "Resuming AtScale batch %s (%s, created %s): %s created %s, taken for the build an earlier try "
            "of this "
            "task started; no new build",
            batch.id,
            batch.status,
            batch.create_date,
            build.describe(),
            why,
        )
    return batch


def _try_number(context: Mapping[str, Any]) -> int:
    number = getattr(context.get("ti"), "try_number", None)
    return number if isinstance(number, int) and number > 0 else 1


def _try_start(context: Mapping[str, Any]) -> float:
    """When this try started, by Airflow's clock; now where Airflow does not say."""
    start = getattr(context.get("ti"), "start_date", None)
    return start.timestamp() if isinstance(start, datetime) and start.tzinfo is not None else _clock.now()


def _first_try(context: Mapping[str, Any]) -> tuple[float, str] | None:
    """
    When this task instance's first try started, and what that is (for logs): from ``TaskInstanceHistory`` on
    Airflow 2; Airflow 3 tasks have no database access, and 3.0 to 3.2 tell a try nothing of earlier ones
    (3.3's store does, and is used instead): there, the DAG run's start is the bound.
    """
    ti = context.get("ti")
    if not AIRFLOW_V_3_0_PLUS and ti is not None:
        from airflow.models.taskinstancehistory import TaskInstanceHistory as History
        from airflow.utils.session import create_session

        with create_session() as session:
            tries = session.query(History.start_date).filter(
                History.dag_id == ti.dag_id,
                History.task_id == ti.task_id,
                History.run_id == ti.run_id,
                History.map_index == ti.map_index,
            )
            first = min((start for (start,) in tries if start is not None), default=None)
        if isinstance(first, datetime):
            return _aware(first).timestamp(), "this task instance's first try started"
    start = getattr(context.get("dag_run"), "start_date", None)
    return (_aware(start).timestamp(), "this DAG run started") if isinstance(start, datetime) else None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
