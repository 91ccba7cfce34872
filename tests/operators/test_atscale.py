"""
The build operator against the emulator: what it pushes and when, its arguments, waiting on the worker or
deferred, names, the model's asset and lineage. Which batch a try follows is tests/test_durable.py's.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale.assets import model_asset
from airflow_provider_atscale.emulator import DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, FAILING_MODEL_ID
from airflow_provider_atscale.emulator.config import SECOND_MODEL_ID
from airflow_provider_atscale.errors import (
    AtScaleBuildFailedError,
    AtScaleConfigurationError,
    AtScaleError,
    AtScaleWaitTimeoutError,
)
from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator
from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger
from tests.compat import TaskDeferred
from tests.helpers import RecordingTaskInstance, batch_object

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import EmulatorServer
    from tests.helpers import DrivenClock

BY_NAME = dict(catalog_id=None, model_id=None, catalog_name="Sales Insights", model_name="Internet Sales")
IDS = {"catalog_id": [DEFAULT_CATALOG_ID], "model_id": [DEFAULT_MODEL_ID]}


def operator(**kwargs: Any) -> AtScaleAggregateBuildOperator:
    defaults = dict(
        catalog_id=DEFAULT_CATALOG_ID, model_id=DEFAULT_MODEL_ID, poll_interval=30, deferrable=False
    )
    return AtScaleAggregateBuildOperator(task_id="build", **{**defaults, **kwargs})


class TaskInstance(RecordingTaskInstance):
    """Records each XCom push with the number of waits before it."""

    def __init__(self, clock: DrivenClock) -> None:
        super().__init__()
        self.clock = clock
        self.pushes: list[tuple[str, int]] = []

    def xcom_push(self, key: str, value: object) -> None:
        super().xcom_push(key, value)
        self.pushes.append((key, len(self.clock.sleeps)))


class OutletEvents(defaultdict[str, SimpleNamespace]):
    """Asset events as Airflow's: one per outlet, made on first use, found by the asset's URI (Airflow 3.0's
    assets are not hashable)."""

    def __init__(self) -> None:
        super().__init__(lambda: SimpleNamespace(extra=None))

    def __getitem__(self, asset: Any) -> SimpleNamespace:
        return super().__getitem__(asset.uri)


@pytest.fixture
def ctx(emulator: EmulatorServer, emulator_clock: DrivenClock) -> dict[str, Any]:
    """A task's context, with asset events as Airflow's, against the emulator."""
    return {"ti": TaskInstance(emulator_clock), "outlet_events": OutletEvents()}


def built_tables(
    emulator: EmulatorServer, model_id: str = DEFAULT_MODEL_ID, failing: bool = False
) -> list[str]:
    """The tables the emulator builds for a model; or those it fails to build, with AtScale's reason."""
    (model,) = [m for c in emulator.config.catalogs for m in c.models if m.id == model_id]
    if not failing:
        return [f"atscale_aggs.{a.table_name}" for a in model.aggregates]
    return [
        f"atscale_aggs.{a.table_name} (invalid): {a.failure_message}"
        for a in model.aggregates
        if a.failure_message
    ]


def task_log(capsys: pytest.CaptureFixture[str]) -> str:
    """What the task logged: Airflow's task logger writes structured lines to stdout."""
    captured = capsys.readouterr()
    return captured.out + captured.err


# Starting and waiting on the worker


def test_pushes_ids_and_batch_before_waiting_and_the_final_status_at_the_end(
    emulator: EmulatorServer, ctx: dict[str, Any]
) -> None:
    result = operator().execute(ctx)

    (batch,) = emulator.state.batches()
    assert ctx["ti"].pushes == [
        ("catalog_id", 0),
        ("model_id", 0),
        ("batch_id", 0),
        ("batch_status", 0),
        ("batch_status", 4),
    ]
    assert ctx["ti"].xcom == {**IDS, "batch_id": [batch.id], "batch_status": ["new", "done"]}
    assert (result["id"], result["status"]) == (batch.id, "done")


def test_without_waiting_returns_the_new_batch_after_one_request(
    emulator: EmulatorServer, ctx: dict[str, Any]
) -> None:
    result = operator(wait_for_completion=False).execute(ctx)

    (batch,) = emulator.state.batches()
    assert (result["id"], result["status"]) == (batch.id, "new")
    assert ctx["ti"].xcom == {**IDS, "batch_id": [batch.id], "batch_status": ["new"]}
    assert len(emulator.request_log.entries()) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_id": "a/b"},
        {"full_build": True, "grace_period_overrides": {"sales": 3}},
        pytest.param({**BY_NAME, "full_build": "x"}, id="names, bad full_build"),
        pytest.param({"model_id": None, "model_name": "  "}, id="blank model_name"),
    ],
)
def test_bad_rendered_arguments_are_refused_before_any_request(
    emulator: EmulatorServer, ctx: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(AtScaleConfigurationError):
        operator(**kwargs).execute(ctx)

    assert emulator.request_log.entries() == []


@pytest.mark.parametrize(
    "kwargs",
    [{"poll_interval": 0}, {"timeout": "a day"}, {"catalog_id": None}, {"model_name": "Internet Sales"}],
    ids=["poll_interval", "timeout", "no catalog", "model by id and name"],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs: dict[str, Any]) -> None:
    with pytest.raises(AtScaleConfigurationError):
        operator(**kwargs)


# Deferred


def test_defers_with_the_trigger_of_its_wait_after_pushing_the_batch(
    emulator: EmulatorServer, emulator_clock: DrivenClock, ctx: dict[str, Any]
) -> None:
    with pytest.raises(TaskDeferred) as excinfo:
        operator(deferrable=True, timeout=3600).execute(ctx)

    (batch,) = emulator.state.batches()
    assert ctx["ti"].xcom == {**IDS, "batch_id": [batch.id], "batch_status": ["new"]}
    assert isinstance(excinfo.value.trigger, AtScaleAggregateBatchTrigger)
    assert (excinfo.value.method_name, excinfo.value.timeout) == ("execute_complete", None)
    _, kwargs = excinfo.value.trigger.serialize()
    assert kwargs == {
        "atscale_conn_id": "atscale_default",
        "catalog_id": DEFAULT_CATALOG_ID,
        "model_id": DEFAULT_MODEL_ID,
        "batch_id": batch.id,
        "poll_interval": 30.0,
        "deadline": kwargs["started_at"] + 3600,
        "timeout": 3600.0,
        "started_at": pytest.approx(emulator_clock.now(), abs=5),
        "last_status": "new",
    }


def test_execute_complete_pushes_the_final_status_and_returns_the_batch(emulator: EmulatorServer) -> None:
    ti = RecordingTaskInstance()
    event = {"outcome": "succeeded", "batch_id": "b-1", "batch": batch_object(status="done"), "message": ""}

    assert operator(deferrable=True).execute_complete({"ti": ti}, event) == batch_object(status="done")
    assert ti.xcom == {"batch_status": ["done"]}


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (None, AtScaleError),
        ({"outcome": "timed_out", "batch_id": "b-1", "batch": None}, AtScaleWaitTimeoutError),
    ],
    ids=["missing", "timed out"],
)
def test_execute_complete_fails_on_an_event_that_is_not_a_finished_batch(
    emulator: EmulatorServer, event: Any, error: type[Exception]
) -> None:
    ti = RecordingTaskInstance()

    with pytest.raises(error):
        operator(deferrable=True).execute_complete({"ti": ti}, event)

    assert ti.xcom == {}


def test_on_kill_names_the_batch_and_says_atscale_cannot_cancel_it(
    emulator: EmulatorServer, ctx: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task = operator(wait_for_completion=False)
    task.execute(ctx)

    task.on_kill()

    (batch,) = emulator.state.batches()
    assert f"AtScale has no API to cancel a build: batch {batch.id} continues in AtScale" in task_log(capsys)


def test_a_model_given_by_name_is_looked_up_then_built_and_its_ids_pushed(
    emulator: EmulatorServer, ctx: dict[str, Any]
) -> None:
    operator(**BY_NAME, wait_for_completion=False).execute(ctx)

    assert [(r.method, r.path) for r in emulator.request_log.entries()] == [
        ("GET", "/v1/catalogs"),
        ("POST", f"/v1/aggregates-batch/catalogs/{DEFAULT_CATALOG_ID}/models/{DEFAULT_MODEL_ID}"),
    ]
    assert {key: ctx["ti"].xcom[key] for key in IDS} == IDS


# The model's asset and lineage (what the OpenLineage provider asks the task for: tests/test_lineage.py)


def build_and_tell(ctx: dict[str, Any], outlet: Any, **kwargs: Any) -> AtScaleAggregateBuildOperator:
    """Build with ``outlet`` among the task's outlets (a failed build allowed); returns the task."""
    task = operator(outlets=[outlet], **kwargs)
    with contextlib.suppress(AtScaleBuildFailedError):
        task.execute(ctx)
    return task


@pytest.mark.parametrize(
    ("task_names", "asset_names"),
    [(False, False), (True, True), (True, False)],
    ids=["ids", "names", "names, ids"],
)
def test_the_model_asset_event_carries_the_build(
    emulator: EmulatorServer, ctx: dict[str, Any], task_names: bool, asset_names: bool
) -> None:
    ids = {"catalog_id": DEFAULT_CATALOG_ID, "model_id": DEFAULT_MODEL_ID}
    asset = model_asset(emulator.url, **(BY_NAME if asset_names else ids))

    build_and_tell(ctx, asset, **(BY_NAME if task_names else {}))

    (batch,) = emulator.state.batches()
    assert ctx["outlet_events"][asset].extra == {
        "batch_id": batch.id,
        "build_type": "incremental",
        "status": "done",
        "aggregate_tables": built_tables(emulator),
    }


@pytest.mark.parametrize(
    ("asset_of", "built", "warned"),
    [(FAILING_MODEL_ID, FAILING_MODEL_ID, False), (SECOND_MODEL_ID, DEFAULT_MODEL_ID, True)],
    ids=["a failed build", "another model"],
)
def test_an_asset_gets_no_extra_from_a_failed_build_nor_from_a_build_of_another_model(
    emulator: EmulatorServer,
    ctx: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    asset_of: str,
    built: str,
    warned: bool,
) -> None:
    asset = model_asset(emulator.url, catalog_id=DEFAULT_CATALOG_ID, model_id=asset_of)

    build_and_tell(ctx, asset, model_id=built)

    assert ctx["outlet_events"] == {}
    assert (f"Outlet {asset.uri} is not the asset of model {built}" in task_log(capsys)) is warned


def test_lineage_on_start_has_the_model_as_its_input(emulator: EmulatorServer) -> None:
    lineage = operator().get_openlineage_facets_on_start()

    (model,) = lineage.inputs
    assert (model.namespace, model.name) == (
        f"atscale://{emulator.url.removeprefix('http://')}",
        f"{DEFAULT_CATALOG_ID}/{DEFAULT_MODEL_ID}",
    )
    assert (lineage.outputs, lineage.run_facets) == ([], {})


def test_lineage_on_complete_has_an_output_per_built_table_and_the_batch(
    emulator: EmulatorServer, ctx: dict[str, Any]
) -> None:
    task = operator()
    task.execute(ctx)

    lineage = task.get_openlineage_facets_on_complete(None)

    (batch,) = emulator.state.batches()
    assert [output.name for output in lineage.outputs] == built_tables(emulator)
    facet = lineage.run_facets["atscale_aggregate_batch"]
    assert (facet.batchId, facet.modelId, facet.buildType, facet.status) == (
        batch.id,
        DEFAULT_MODEL_ID,
        "incremental",
        "done",
    )
    assert emulator.request_log.count("GET", "/v1/aggregates/instances") == 1, "listed once"


def test_lineage_on_failure_has_the_batch_and_every_failing_aggregate_message(
    emulator: EmulatorServer, ctx: dict[str, Any]
) -> None:
    task = build_and_tell(
        ctx, model_asset(emulator.url, catalog_id="c", model_id="m"), model_id=FAILING_MODEL_ID
    )

    lineage = task.get_openlineage_facets_on_failure(None)

    (batch,) = emulator.state.batches()
    assert lineage.run_facets["atscale_aggregate_batch"].batchId == batch.id
    assert lineage.run_facets["atscale_aggregate_batch"].status == "failed"
    message = lineage.run_facets["errorMessage"].message
    assert all(failing in message for failing in built_tables(emulator, FAILING_MODEL_ID, failing=True))
