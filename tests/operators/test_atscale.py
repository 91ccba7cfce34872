"""
The build operator against the emulator: what it pushes and when, its arguments, waiting on the worker or
deferred, names, the model's asset and lineage. Which batch a try follows is tests/test_durable.py's.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale.assets import model_asset
from airflow_provider_atscale.emulator import (
    DEFAULT_CATALOG_ID,
    DEFAULT_MODEL_ID,
    FAILING_MODEL_ID,
    SECOND_MODEL_ID,
)
from airflow_provider_atscale.errors import (
    AtScaleBuildFailedError,
    AtScaleConfigurationError,
    AtScaleError,
    AtScaleWaitTimeoutError,
)
from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator
from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger
from tests.compat import DAG, TaskDeferred
from tests.helpers import RecordingTaskInstance, batch_object

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import AggregateDefinition, EmulatorServer, RecordedRequest
    from tests.helpers import DrivenClock

TRIGGER_PATH = "/v1/aggregates-batch/"
BY_NAME = {
    "catalog_id": None,
    "model_id": None,
    "catalog_name": "Sales Insights",
    "model_name": "Internet Sales",
}
IDS = {"catalog_id": [DEFAULT_CATALOG_ID], "model_id": [DEFAULT_MODEL_ID]}


def operator(**kwargs: Any) -> AtScaleAggregateBuildOperator:
    arguments: dict[str, Any] = {
        "task_id": "build",
        "catalog_id": DEFAULT_CATALOG_ID,
        "model_id": DEFAULT_MODEL_ID,
        "poll_interval": 30,
        "deferrable": False,
    }
    return AtScaleAggregateBuildOperator(**{**arguments, **kwargs})


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


def context(clock: DrivenClock, **more: Any) -> dict[str, Any]:
    """A task's context, with asset events as Airflow's."""
    return {"ti": TaskInstance(clock), "outlet_events": OutletEvents(), **more}


def posts(emulator: EmulatorServer) -> list[RecordedRequest]:
    return [
        r for r in emulator.request_log.entries() if r.method == "POST" and r.path.startswith(TRIGGER_PATH)
    ]


def aggregates(emulator: EmulatorServer, model_id: str) -> tuple[AggregateDefinition, ...]:
    """The aggregates the emulator builds for a model."""
    return next(m.aggregates for c in emulator.config.catalogs for m in c.models if m.id == model_id)


def failing_aggregates(emulator: EmulatorServer) -> list[str]:
    """Each aggregate the emulator's failing model cannot build, with AtScale's reason."""
    failing = [a for a in aggregates(emulator, FAILING_MODEL_ID) if a.failure_message]
    return [f"atscale_aggs.{a.table_name} (invalid): {a.failure_message}" for a in failing]


def built_tables(emulator: EmulatorServer) -> list[str]:
    return [f"atscale_aggs.{a.table_name}" for a in aggregates(emulator, DEFAULT_MODEL_ID)]


def task_log(capsys: pytest.CaptureFixture[str]) -> str:
    """What the task logged: Airflow's task logger writes structured lines to stdout."""
    captured = capsys.readouterr()
    return captured.out + captured.err


# Starting and waiting on the worker


def test_pushes_ids_and_batch_before_waiting_and_the_final_status_at_the_end(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    ctx = context(emulator_clock)

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
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    ctx = context(emulator_clock)

    result = operator(wait_for_completion=False).execute(ctx)

    (batch,) = emulator.state.batches()
    assert (result["id"], result["status"]) == (batch.id, "new")
    assert ctx["ti"].xcom == {**IDS, "batch_id": [batch.id], "batch_status": ["new"]}
    assert len(emulator.request_log.entries()) == 1


@pytest.mark.parametrize(
    ("native", "overrides"),
    [
        (False, {"factinternetsales": "{{ params.grace }}", "factresellersales": 0}),
        (False, "{{ params.as_json }}"),
        (True, "{{ params.as_dict }}"),
    ],
    ids=["dict of templates", "one template of a JSON object", "native dict"],
)
def test_each_templated_form_of_the_overrides_is_posted_as_integers(
    emulator: EmulatorServer, emulator_clock: DrivenClock, native: bool, overrides: Any
) -> None:
    params = {
        "grace": 30,
        "as_json": '{"factinternetsales": 30, "factresellersales": "0"}',
        "as_dict": {"factinternetsales": 30, "factresellersales": 0},
    }
    with DAG(
        "templating", schedule=None, start_date=datetime(2025, 1, 1), render_template_as_native_obj=native
    ):
        task = operator(
            grace_period_overrides=overrides, full_build="{{ 'FALSE' }}", wait_for_completion=False
        )
    ctx = context(emulator_clock, params=params)

    task.render_template_fields(ctx)
    task.execute(ctx)

    (post,) = posts(emulator)
    assert post.body == {"gracePeriodOverrides": {"factinternetsales": 30, "factresellersales": 0}}
    assert post.query == {"isFullBuild": "false"}


BAD_ARGUMENTS = [
    {"catalog_id": ""},
    {"model_id": "a/b"},
    {"full_build": "maybe"},
    {"grace_period_overrides": {"sales": -3}},
    {"grace_period_overrides": '{"sales": '},
    {"full_build": True, "grace_period_overrides": {"sales": 3}},
    pytest.param({**BY_NAME, "full_build": "x"}, id="names, bad full_build"),
    pytest.param({"model_id": None, "model_name": "  "}, id="blank model_name"),
]


@pytest.mark.parametrize("kwargs", BAD_ARGUMENTS)
def test_bad_rendered_arguments_are_refused_before_any_request(
    emulator: EmulatorServer, emulator_clock: DrivenClock, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(AtScaleConfigurationError):
        operator(**kwargs).execute(context(emulator_clock))

    assert emulator.request_log.entries() == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"poll_interval": 0},
        {"timeout": "a day"},
        {"catalog_id": None},
        {"model_name": "Internet Sales"},
    ],
    ids=["poll_interval", "timeout", "no catalog", "model by id and name"],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs: dict[str, Any]) -> None:
    with pytest.raises(AtScaleConfigurationError):
        operator(**kwargs)


def test_a_failed_build_fails_naming_each_failing_aggregate_and_atscale_reason(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    ctx = context(emulator_clock)

    with pytest.raises(AtScaleBuildFailedError) as excinfo:
        operator(model_id=FAILING_MODEL_ID).execute(ctx)

    assert all(message in str(excinfo.value) for message in failing_aggregates(emulator))
    assert ctx["ti"].xcom["batch_status"] == ["new", "failed"]


def test_a_build_that_outlasts_the_timeout_fails_saying_it_goes_on(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    with pytest.raises(AtScaleWaitTimeoutError) as excinfo:
        operator(timeout=45).execute(context(emulator_clock))

    (batch,) = emulator.state.batches()
    assert excinfo.value.batch_id == batch.id
    assert f"AtScale batch {batch.id} did not finish within 45s (last status: inprogress)" in str(
        excinfo.value
    )
    assert "goes on in AtScale" in str(excinfo.value)


# Deferred


def test_defers_with_the_trigger_of_its_wait_after_pushing_the_batch(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    ctx = context(emulator_clock)

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

    result = operator(deferrable=True).execute_complete({"ti": ti}, event)

    assert result == batch_object(status="done")
    assert ti.xcom == {"batch_status": ["done"]}


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (None, AtScaleError),
        ({"outcome": "done", "batch_id": "b-1"}, AtScaleError),
        (
            {"outcome": "timed_out", "batch_id": "b-1", "batch": None, "message": "late"},
            AtScaleWaitTimeoutError,
        ),
        ({"outcome": "error", "batch_id": "b-1", "batch": None, "message": "HTTP 401"}, AtScaleError),
    ],
    ids=["missing", "unknown outcome", "timed out", "error"],
)
def test_execute_complete_fails_on_an_event_that_is_not_a_finished_batch(
    emulator: EmulatorServer, event: Any, error: type[Exception]
) -> None:
    ti = RecordingTaskInstance()

    with pytest.raises(error):
        operator(deferrable=True).execute_complete({"ti": ti}, event)

    assert ti.xcom == {}


def test_on_kill_names_the_batch_and_says_atscale_cannot_cancel_it(
    emulator: EmulatorServer, emulator_clock: DrivenClock, capsys: pytest.CaptureFixture[str]
) -> None:
    task = operator(wait_for_completion=False)
    task.execute(context(emulator_clock))

    task.on_kill()

    (batch,) = emulator.state.batches()
    assert f"AtScale has no API to cancel a build: batch {batch.id} continues in AtScale" in task_log(capsys)


# Names


def test_a_model_given_by_name_is_looked_up_then_built_and_its_ids_pushed(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    ctx = context(emulator_clock)

    operator(**BY_NAME, wait_for_completion=False).execute(ctx)

    assert [(r.method, r.path) for r in emulator.request_log.entries()] == [
        ("GET", "/v1/catalogs"),
        ("POST", f"/v1/aggregates-batch/catalogs/{DEFAULT_CATALOG_ID}/models/{DEFAULT_MODEL_ID}"),
    ]
    assert {key: ctx["ti"].xcom[key] for key in IDS} == IDS


def test_an_unknown_name_fails_before_any_build_without_retries_listing_the_names(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    task = operator(model_id=None, model_name="Web Sales")

    with pytest.raises(AirflowFailException, match=r"no model named 'Web Sales' among .*'Internet Sales'"):
        task.execute(context(emulator_clock))

    assert posts(emulator) == []


# The model's asset


def build_and_tell(
    emulator: EmulatorServer, clock: DrivenClock, outlet: Any, **kwargs: Any
) -> tuple[AtScaleAggregateBuildOperator, dict[str, Any]]:
    """Build with ``outlet`` among the task's outlets; returns the task and the asset events it set."""
    task, ctx = operator(outlets=[outlet], **kwargs), context(clock)
    with contextlib.suppress(AtScaleBuildFailedError):
        task.execute(ctx)
    return task, ctx["outlet_events"]


@pytest.mark.parametrize(
    ("task_names", "asset_names"),
    [(False, False), (True, True), (True, False)],
    ids=["ids", "names", "names, ids"],
)
def test_the_model_asset_event_carries_the_build(
    emulator: EmulatorServer, emulator_clock: DrivenClock, task_names: bool, asset_names: bool
) -> None:
    asset = model_asset(
        emulator.url,
        **(BY_NAME if asset_names else {"catalog_id": DEFAULT_CATALOG_ID, "model_id": DEFAULT_MODEL_ID}),
    )

    _, events = build_and_tell(emulator, emulator_clock, asset, **(BY_NAME if task_names else {}))

    (batch,) = emulator.state.batches()
    assert events[asset].extra == {
        "batch_id": batch.id,
        "build_type": "incremental",
        "status": "done",
        "aggregate_tables": built_tables(emulator),
    }


def test_a_failed_build_gives_its_asset_no_extra(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    asset = model_asset(emulator.url, catalog_id=DEFAULT_CATALOG_ID, model_id=FAILING_MODEL_ID)

    _, events = build_and_tell(emulator, emulator_clock, asset, model_id=FAILING_MODEL_ID)

    assert events == {}


def test_an_atscale_outlet_of_another_model_gets_no_extra_and_a_warning(
    emulator: EmulatorServer, emulator_clock: DrivenClock, capsys: pytest.CaptureFixture[str]
) -> None:
    asset = model_asset(emulator.url, catalog_id=DEFAULT_CATALOG_ID, model_id=SECOND_MODEL_ID)

    _, events = build_and_tell(emulator, emulator_clock, asset)

    assert events == {}
    assert f"Outlet {asset.uri} is not the asset of model {DEFAULT_MODEL_ID}" in task_log(capsys)


# Lineage (what the OpenLineage provider asks the task for; its listener is tests/test_lineage.py's)


def test_lineage_on_start_has_the_model_as_its_input(emulator: EmulatorServer) -> None:
    lineage = operator().get_openlineage_facets_on_start()

    (model,) = lineage.inputs
    assert (model.namespace, model.name) == (
        f"atscale://{emulator.url.removeprefix('http://')}",
        f"{DEFAULT_CATALOG_ID}/{DEFAULT_MODEL_ID}",
    )
    assert (lineage.outputs, lineage.run_facets) == ([], {})


def test_lineage_on_complete_has_an_output_per_built_table_and_the_batch(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    task = operator()
    task.execute(context(emulator_clock))

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
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    task, _ = build_and_tell(
        emulator,
        emulator_clock,
        model_asset(emulator.url, catalog_id="c", model_id="m"),
        model_id=FAILING_MODEL_ID,
    )

    lineage = task.get_openlineage_facets_on_failure(None)

    (batch,) = emulator.state.batches()
    assert lineage.run_facets["atscale_aggregate_batch"].batchId == batch.id
    assert lineage.run_facets["atscale_aggregate_batch"].status == "failed"
    assert all(
        message in lineage.run_facets["errorMessage"].message for message in failing_aggregates(emulator)
    )
