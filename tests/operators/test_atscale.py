from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
import requests_mock as rm

from airflow_provider_atscale.errors import (
    AtScaleBuildFailedError,
    AtScaleConfigurationError,
    AtScaleError,
    AtScaleWaitTimeoutError,
)
from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator
from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger
from tests.helpers import (
    BATCH_ID,
    CATALOG_ID,
    HISTORY_URL,
    INSTANCES_URL,
    MODEL_ID,
    TOKEN,
    TRIGGER_URL,
    FakeClock,
    RecordingTaskInstance,
    batch_object,
    history_page,
    instance_object,
)

DAG_RUN_START = datetime(2025, 2, 27, 9, 0, tzinfo=timezone.utc)


def operator(**kwargs: Any) -> AtScaleAggregateBuildOperator:
    arguments: dict[str, Any] = {
        "task_id": "build",
        "catalog_id": CATALOG_ID,
        "model_id": MODEL_ID,
        "poll_interval": 30,
        "deferrable": False,
    }
    arguments.update(kwargs)
    return AtScaleAggregateBuildOperator(**arguments)


def context() -> dict[str, Any]:
    return {"ti": RecordingTaskInstance(), "dag_run": SimpleNamespace(start_date=DAG_RUN_START)}


def task_log(capsys: pytest.CaptureFixture[str]) -> str:
    """What the task logged: Airflow's task logger writes structured lines to stdout."""
    captured = capsys.readouterr()
    return captured.out + captured.err


def history(*statuses: str) -> list[dict[str, Any]]:
    """Successive batch history answers in which the batch has each status in turn."""
    return [{"json": history_page(batch_object(status=status))} for status in statuses]


@pytest.fixture
def atscale(atscale_conn: str, requests_mock: rm.Mocker) -> rm.Mocker:
    """AtScale answers a trigger with a new batch; no other batch runs for the model."""
    requests_mock.post(TRIGGER_URL, status_code=201, json={"batch": batch_object(), "success": True})
    return requests_mock


def posts(mock: rm.Mocker) -> int:
    return sum(1 for request in mock.request_history if request.method == "POST")


class TestStart:
    def test_without_waiting_pushes_id_and_status_and_returns_the_batch(self, atscale: rm.Mocker) -> None:
        atscale.get(HISTORY_URL, json=history_page())
        ctx = context()

        result = operator(wait_for_completion=False).execute(ctx)

        assert result == batch_object()
        assert ctx["ti"].xcom == {"batch_id": [BATCH_ID], "batch_status": ["new"]}
        assert posts(atscale) == 1

    def test_logs_one_line_with_everything_about_the_new_batch(
        self, atscale: rm.Mocker, capsys: pytest.CaptureFixture[str]
    ) -> None:
        atscale.get(HISTORY_URL, json=history_page())

        operator(wait_for_completion=False, full_build=True).execute(context())

        logged = task_log(capsys)
        assert logged.count("Started") == 1
        assert (
            f"Started full AtScale build of model {MODEL_ID} in catalog {CATALOG_ID}: batch {BATCH_ID}, "
            "status new, estimate 1053"
        ) in logged
        assert TOKEN not in logged

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"catalog_id": ""}, "catalog_id must be a non-empty string id"),
            ({"model_id": " "}, "model_id must be an AtScale id without whitespace"),
            ({"model_id": "a/b"}, "model_id must be an AtScale id"),
            ({"full_build": "maybe"}, "full_build must be True, False, 'true' or 'false', got 'maybe'"),
            ({"grace_period_overrides": {"sales": -3}}, "got -3"),
            ({"grace_period_overrides": {"sales": "3.5"}}, "got '3.5'"),
            ({"grace_period_overrides": '{"sales": '}, "JSON object string"),
            ({"full_build": True, "grace_period_overrides": {"sales": 3}}, "incremental builds only"),
            ({"full_build": "TRUE", "grace_period_overrides": '{"sales": 3}'}, "incremental builds only"),
        ],
    )
    def test_bad_rendered_arguments_fail_before_any_request(
        self, atscale: rm.Mocker, kwargs: dict[str, Any], match: str
    ) -> None:
        with pytest.raises(AtScaleConfigurationError, match=match):
            operator(**kwargs).execute(context())

        assert atscale.call_count == 0

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"poll_interval": 0}, "poll_interval must be a positive number of seconds, got 0"),
            ({"poll_interval": -5}, "got -5"),
            ({"timeout": "a day"}, "timeout must be a positive number of seconds, got 'a day'"),
            ({"timeout": True}, "got True"),
        ],
    )
    def test_bad_waiting_arguments_fail_when_the_dag_is_parsed(
        self, kwargs: dict[str, Any], match: str
    ) -> None:
        with pytest.raises(AtScaleConfigurationError, match=match):
            operator(**kwargs)

    def test_string_full_build_is_read_in_any_case(self, atscale: rm.Mocker) -> None:
        atscale.get(HISTORY_URL, json=history_page())

        operator(full_build="True", wait_for_completion=False).execute(context())

        assert atscale.last_request.qs == {"isfullbuild": ["true"]}


class TestWaiting:
    def test_polls_until_done_and_returns_the_final_batch(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        atscale.get(HISTORY_URL, [{"json": history_page()}, *history("inprogress", "inprogress", "done")])
        ctx = context()

        result = operator().execute(ctx)

        assert result["status"] == "done"
        assert ctx["ti"].xcom == {"batch_id": [BATCH_ID], "batch_status": ["new", "done"]}
        assert fake_clock.sleeps == [30, 30, 30]
        assert posts(atscale) == 1

    def test_each_status_change_is_logged_once_with_elapsed_time_and_estimate(
        self, atscale: rm.Mocker, fake_clock: FakeClock, capsys: pytest.CaptureFixture[str]
    ) -> None:
        atscale.get(
            HISTORY_URL,
            [{"json": history_page()}, *history("new", "inprogress", "inprogress", "inprogress", "done")],
        )

        operator().execute(context())

        logged = task_log(capsys)
        assert logged.count(f"AtScale batch {BATCH_ID} is") == 2
        assert f"AtScale batch {BATCH_ID} is inprogress after 60s (estimate: 1053)" in logged
        assert f"AtScale batch {BATCH_ID} is done after 150s (estimate: 1053)" in logged
        assert logged.index("is inprogress after") < logged.index("is done after")

    @pytest.mark.parametrize("status", ["failed", "error", "cancelled", "invalid", "unreliable", "deleted"])
    def test_a_failed_batch_fails_with_each_failing_aggregate(
        self, atscale: rm.Mocker, fake_clock: FakeClock, status: str
    ) -> None:
        atscale.get(HISTORY_URL, [{"json": history_page()}, *history("inprogress", status)])
        atscale.get(
            INSTANCES_URL,
            json={
                "data": [
                    instance_object("active", "agg_ok"),
                    instance_object("invalid", "agg_sales", "permission denied on schema"),
                    instance_object("invalid", "agg_returns", "disk full"),
                ],
                "total": 3,
            },
        )
        ctx = context()

        with pytest.raises(AtScaleBuildFailedError) as excinfo:
            operator().execute(ctx)

        message = str(excinfo.value)
        assert f"AtScale batch {BATCH_ID}" in message
        assert f"ended in status {status!r}" in message
        assert "atscale_aggs.agg_sales (invalid): permission denied on schema" in message
        assert "atscale_aggs.agg_returns (invalid): disk full" in message
        assert "agg_ok" not in message
        assert ctx["ti"].xcom["batch_status"] == ["new", status]

    def test_an_unknown_status_fails_naming_it_and_is_never_success(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        atscale.get(HISTORY_URL, [{"json": history_page()}, *history("inprogress", "archived")])
        atscale.get(INSTANCES_URL, json={"data": [], "total": 0})

        with pytest.raises(
            AtScaleBuildFailedError, match="ended in status 'archived', which this provider does not"
        ):
            operator().execute(context())

    def test_timeout_fails_saying_the_build_goes_on(self, atscale: rm.Mocker, fake_clock: FakeClock) -> None:
        atscale.get(HISTORY_URL, [{"json": history_page()}, *history("inprogress")])

        with pytest.raises(AtScaleWaitTimeoutError) as excinfo:
            operator(timeout=100).execute(context())

        assert excinfo.value.batch_id == BATCH_ID
        assert f"AtScale batch {BATCH_ID} did not finish within 100s" in str(excinfo.value)
        assert "goes on in AtScale" in str(excinfo.value)
        assert fake_clock.sleeps == [30, 30, 30, 10]

    def test_follows_instances_where_batch_history_is_not_served(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        atscale.get(HISTORY_URL, status_code=404, json={"message": "Not Found"})
        atscale.get(
            INSTANCES_URL,
            [
                {
                    "json": {
                        "data": [instance_object("pending", "a"), instance_object("active", "b")],
                        "total": 2,
                    }
                },
                {
                    "json": {
                        "data": [instance_object("active", "a"), instance_object("active", "b")],
                        "total": 2,
                    }
                },
            ],
        )

        result = operator().execute(context())

        assert result["status"] == "done"
        history_calls = [r for r in atscale.request_history if r.path == "/wapi/p/aggregate/batch-history"]
        assert len(history_calls) == 1, "a server without batch history is asked only once"


class TestReuseRunningBatch:
    def test_attaches_to_a_running_batch_of_this_run_instead_of_posting(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        running = batch_object(id="running-1", status="inprogress", createDate="2025-02-27T09:10:00Z")
        atscale.get(
            HISTORY_URL,
            [{"json": history_page(running)}, {"json": history_page(dict(running, status="done"))}],
        )
        ctx = context()

        result = operator().execute(ctx)

        assert posts(atscale) == 0
        assert result["id"] == "running-1"
        assert ctx["ti"].xcom["batch_id"] == ["running-1"]

    @pytest.mark.parametrize(
        "other",
        [
            batch_object(id="older", status="inprogress", createDate="2025-02-27T08:59:59Z"),
            batch_object(id="full", status="inprogress", isFullBuild=True, createDate="2025-02-27T09:10:00Z"),
            batch_object(id="finished", status="done", createDate="2025-02-27T09:10:00Z"),
        ],
    )
    def test_does_not_attach_to_other_batches(self, atscale: rm.Mocker, other: dict[str, Any]) -> None:
        atscale.get(HISTORY_URL, json=history_page(other))

        operator(wait_for_completion=False).execute(context())

        assert posts(atscale) == 1

    def test_can_be_turned_off(self, atscale: rm.Mocker) -> None:
        running = batch_object(id="running-1", status="inprogress", createDate="2025-02-27T09:10:00Z")
        atscale.get(HISTORY_URL, json=history_page(running))

        operator(wait_for_completion=False, reuse_running_batch=False).execute(context())

        assert posts(atscale) == 1
        assert all(r.path != "/wapi/p/aggregate/batch-history" for r in atscale.request_history)


class TestDeferrable:
    def test_defers_with_a_serializable_trigger_after_pushing_the_batch_id(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        from tests.compat import TaskDeferred

        atscale.get(HISTORY_URL, json=history_page())
        ctx = context()

        with pytest.raises(TaskDeferred) as excinfo:
            operator(deferrable=True, timeout=3600).execute(ctx)

        assert ctx["ti"].xcom == {"batch_id": [BATCH_ID], "batch_status": ["new"]}
        trigger = excinfo.value.trigger
        assert isinstance(trigger, AtScaleAggregateBatchTrigger)
        assert excinfo.value.method_name == "execute_complete"
        assert excinfo.value.timeout is None, "the deadline lives in the trigger, not in defer()"
        _, kwargs = trigger.serialize()
        assert kwargs["deadline"] == fake_clock.time + 3600
        assert kwargs["batch_id"] == BATCH_ID
        assert kwargs["poll_interval"] == 30.0

    def test_execute_complete_returns_the_final_batch(self, atscale: rm.Mocker) -> None:
        ctx = context()
        event = {
            "outcome": "succeeded",
            "batch_id": BATCH_ID,
            "batch": batch_object(status="done"),
            "message": "",
        }

        result = operator(deferrable=True).execute_complete(ctx, event)

        assert result == batch_object(status="done")
        assert ctx["ti"].xcom == {"batch_status": ["done"]}

    @pytest.mark.parametrize(
        ("event", "error", "match"),
        [
            (None, AtScaleError, "refusing to guess"),
            ({}, AtScaleError, "Unknown AtScale trigger event outcome None"),
            ({"outcome": "done", "batch_id": BATCH_ID}, AtScaleError, "outcome 'done'"),
            ({"outcome": "succeeded", "batch_id": BATCH_ID, "batch": None}, AtScaleError, "carries no batch"),
            (
                {"outcome": "timed_out", "batch_id": BATCH_ID, "batch": None, "message": "late"},
                AtScaleWaitTimeoutError,
                "late",
            ),
            (
                {"outcome": "error", "batch_id": BATCH_ID, "batch": None, "message": "HTTP 500"},
                AtScaleError,
                "HTTP 500",
            ),
        ],
    )
    def test_execute_complete_refuses_missing_unknown_and_bad_events(
        self, atscale: rm.Mocker, event: Any, error: type[Exception], match: str
    ) -> None:
        with pytest.raises(error, match=match):
            operator(deferrable=True).execute_complete(context(), event)

    def test_execute_complete_fails_a_failed_batch_with_its_aggregates(self, atscale: rm.Mocker) -> None:
        atscale.get(INSTANCES_URL, json={"data": [instance_object("invalid", "agg_x", "boom")], "total": 1})
        event = {
            "outcome": "failed",
            "batch_id": BATCH_ID,
            "batch": batch_object(status="failed"),
            "message": "",
        }

        with pytest.raises(AtScaleBuildFailedError, match=r"agg_x \(invalid\): boom"):
            operator(deferrable=True).execute_complete(context(), event)


def test_on_kill_says_the_build_goes_on(atscale: rm.Mocker, capsys: pytest.CaptureFixture[str]) -> None:
    atscale.get(HISTORY_URL, json=history_page())
    task = operator(wait_for_completion=False)
    task.execute(context())

    task.on_kill()

    assert f"AtScale batch {BATCH_ID} goes on running in AtScale" in task_log(capsys)
