from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
import requests_mock as rm

from airflow_provider_atscale._durable import STORE_KEY
from airflow_provider_atscale.errors import (
    AtScaleBuildFailedError,
    AtScaleConfigurationError,
    AtScaleError,
    AtScaleWaitTimeoutError,
)
from airflow_provider_atscale.operators import atscale as atscale_operator
from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator
from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger
from tests.helpers import (
    ACCESS_TOKEN,
    BATCH_ID,
    CATALOG_ID,
    HISTORY_URL,
    INSTANCES_URL,
    MODEL_ID,
    TOKEN,
    TOKEN_URL,
    TRIGGER_URL,
    FakeClock,
    FakeStateStore,
    RecordingTaskInstance,
    batch_object,
    connection_uri,
    history_page,
    instance_object,
)

DAG_RUN_START = datetime(2025, 2, 27, 9, 0, tzinfo=timezone.utc)
IDS = {"catalog_id": [CATALOG_ID], "model_id": [MODEL_ID]}
"""The XCom every run pushes first: the ids the build is of."""


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
    requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
    return requests_mock


def posts(mock: rm.Mocker) -> int:
    """Builds posted (token exchanges left out)."""
    return sum(
        1
        for request in mock.request_history
        if request.method == "POST" and "/aggregates-batch/" in request.path
    )


class TestStart:
    def test_without_waiting_pushes_id_and_status_and_returns_the_batch(self, atscale: rm.Mocker) -> None:
        ctx = context()

        result = operator(wait_for_completion=False).execute(ctx)

        assert result == batch_object()
        assert ctx["ti"].xcom == {**IDS, "batch_id": [BATCH_ID], "batch_status": ["new"]}
        assert [r.method for r in atscale.request_history] == ["POST"], "a first try only posts"

    def test_logs_one_line_with_everything_about_the_new_batch(
        self, atscale: rm.Mocker, capsys: pytest.CaptureFixture[str]
    ) -> None:
        operator(wait_for_completion=False, full_build=True).execute(context())

        logged = task_log(capsys)
        assert logged.count("Started") == 1
        assert (
            f"Started full AtScale build of model {MODEL_ID} in catalog {CATALOG_ID}: batch {BATCH_ID}, "
            "status new, estimate 1.1s"
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
        operator(full_build="True", wait_for_completion=False).execute(context())

        assert atscale.last_request.qs == {"isfullbuild": ["true"]}


class TestWaiting:
    def test_polls_until_done_and_returns_the_final_batch(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        atscale.get(HISTORY_URL, [*history("inprogress", "inprogress", "done")])
        ctx = context()

        result = operator().execute(ctx)

        assert result["status"] == "done"
        assert ctx["ti"].xcom == {**IDS, "batch_id": [BATCH_ID], "batch_status": ["new", "done"]}
        assert fake_clock.sleeps == [30, 30, 30]
        assert [r.method for r in atscale.request_history] == ["POST", "POST", "GET", "GET", "GET"], (
            "the build, the token exchange for history, one poll per interval"
        )
        assert posts(atscale) == 1

    def test_each_status_change_is_logged_once_with_elapsed_time_and_estimate(
        self, atscale: rm.Mocker, fake_clock: FakeClock, capsys: pytest.CaptureFixture[str]
    ) -> None:
        atscale.get(
            HISTORY_URL,
            [*history("new", "inprogress", "inprogress", "inprogress", "done")],
        )

        operator().execute(context())

        logged = task_log(capsys)
        assert logged.count(f"AtScale batch {BATCH_ID} is") == 2
        assert f"AtScale batch {BATCH_ID} is inprogress after 1m 00s (estimate: 1.1s)" in logged
        assert f"AtScale batch {BATCH_ID} is done after 2m 30s (estimate: 1.1s)" in logged
        assert logged.index("is inprogress after") < logged.index("is done after")

    @pytest.mark.parametrize("status", ["failed", "error", "cancelled", "invalid", "unreliable", "deleted"])
    def test_a_failed_batch_fails_with_each_failing_aggregate(
        self, atscale: rm.Mocker, fake_clock: FakeClock, status: str
    ) -> None:
        atscale.get(HISTORY_URL, [*history("inprogress", status)])
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
        atscale.get(HISTORY_URL, [*history("inprogress", "archived")])
        atscale.get(INSTANCES_URL, json={"data": [], "total": 0})

        with pytest.raises(
            AtScaleBuildFailedError, match="ended in status 'archived', which this provider does not"
        ):
            operator().execute(context())

    def test_timeout_fails_saying_the_build_goes_on(self, atscale: rm.Mocker, fake_clock: FakeClock) -> None:
        atscale.get(HISTORY_URL, [*history("inprogress")])

        with pytest.raises(AtScaleWaitTimeoutError) as excinfo:
            operator(timeout=100).execute(context())

        assert excinfo.value.batch_id == BATCH_ID
        assert f"AtScale batch {BATCH_ID} did not finish within 1m 40s" in str(excinfo.value)
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

    def test_a_server_whose_history_refuses_every_token_still_builds_and_follows_the_build(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        refused = {"statusCode": 401, "message": "Unauthorized", "error": {"cause": "UnauthorizedException"}}
        atscale.get(HISTORY_URL, status_code=401, json=refused)
        atscale.get(
            INSTANCES_URL,
            [
                {"json": {"data": [instance_object("pending", "a"), instance_object("active", "b")]}},
                {"json": {"data": [instance_object("active", "a"), instance_object("active", "b")]}},
            ],
        )

        result = operator().execute(context())

        assert result["status"] == "done"
        assert posts(atscale) == 1


class TestDeferrable:
    def test_defers_with_a_serializable_trigger_after_pushing_the_batch_id(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        from tests.compat import TaskDeferred

        ctx = context()

        with pytest.raises(TaskDeferred) as excinfo:
            operator(deferrable=True, timeout=3600).execute(ctx)

        assert ctx["ti"].xcom == {**IDS, "batch_id": [BATCH_ID], "batch_status": ["new"]}
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
    task = operator(wait_for_completion=False)
    task.execute(context())

    task.on_kill()

    assert f"AtScale batch {BATCH_ID} goes on running in AtScale" in task_log(capsys)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def retry_context(store: FakeStateStore | None, clock: FakeClock, try_number: int = 2) -> dict[str, Any]:
    """A later try's context: its try number, when it started, and (Airflow 3.3) the task's state store."""
    started = datetime.fromtimestamp(clock.now(), tz=timezone.utc)
    ctx: dict[str, Any] = {
        "ti": RecordingTaskInstance(try_number=try_number, start_date=started),
        "dag_run": SimpleNamespace(start_date=datetime.fromtimestamp(clock.now() - 600, tz=timezone.utc)),
    }
    if store is not None:
        ctx["task_state_store"] = store
    return ctx


def recorded(store: FakeStateStore, **changes: Any) -> FakeStateStore:
    """A store holding what an earlier try recorded: an incremental build of MODEL_ID, batch BATCH_ID."""
    record = {
        "catalog_id": CATALOG_ID,
        "model_id": MODEL_ID,
        "full_build": False,
        "grace_period_overrides": {},
        "posting_at": 1_767_225_000.0,
        "batch_id": BATCH_ID,
        "finished": False,
    }
    record.update(changes)
    store.set(STORE_KEY, record)
    store.writes.clear()
    return store


class TestDurable:
    def test_a_first_try_posts_its_own_build_beside_a_running_build_of_the_same_model(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        running = batch_object(id="someone-elses", status="inprogress", createDate=_iso(fake_clock.now() - 5))
        atscale.get(HISTORY_URL, json=history_page(running))
        ctx = retry_context(FakeStateStore(), fake_clock, try_number=1)

        operator(wait_for_completion=False, grace_period_overrides={"sales": 30}).execute(ctx)

        (post,) = [r for r in atscale.request_history if r.method == "POST"]
        assert post.json() == {"gracePeriodOverrides": {"sales": 30}}
        assert all(r.path != "/wapi/p/aggregate/batch-history" for r in atscale.request_history)
        assert ctx["ti"].xcom["batch_id"] == [BATCH_ID]

    def test_the_build_is_recorded_before_the_post_with_its_batch_after_and_finished_at_the_end(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        atscale.get(HISTORY_URL, history("inprogress", "done"))
        store = FakeStateStore()

        operator(grace_period_overrides={"sales": "30"}).execute(
            retry_context(store, fake_clock, try_number=1)
        )

        intent, started, finished = store.writes
        assert intent == {
            "catalog_id": CATALOG_ID,
            "model_id": MODEL_ID,
            "full_build": False,
            "grace_period_overrides": {"sales": 30},
            "posting_at": fake_clock.now() - 60,
            "batch_id": None,
            "finished": False,
        }
        assert started == {**intent, "batch_id": BATCH_ID}
        assert finished == {**started, "finished": True}

    def test_a_retry_resumes_the_recorded_batch_while_it_runs_without_posting(
        self, atscale: rm.Mocker, fake_clock: FakeClock, capsys: pytest.CaptureFixture[str]
    ) -> None:
        atscale.get(HISTORY_URL, history("inprogress", "inprogress", "done"))
        ctx = retry_context(recorded(FakeStateStore()), fake_clock)

        result = operator().execute(ctx)

        assert result["status"] == "done"
        assert posts(atscale) == 0
        assert ctx["ti"].xcom == {**IDS, "batch_id": [BATCH_ID], "batch_status": ["inprogress", "done"]}
        assert f"Resuming AtScale batch {BATCH_ID} (inprogress), which an earlier try" in task_log(capsys)

    def test_a_retry_finishes_with_a_recorded_batch_that_finished_good_without_posting(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        atscale.get(HISTORY_URL, history("done"))
        ctx = retry_context(recorded(FakeStateStore()), fake_clock)

        result = operator().execute(ctx)

        assert result["status"] == "done"
        assert posts(atscale) == 0
        assert ctx["ti"].xcom == {**IDS, "batch_id": [BATCH_ID], "batch_status": ["done"]}
        assert fake_clock.sleeps == [], "nothing to wait for"

    @pytest.mark.parametrize("status", ["failed", "archived"])
    def test_a_retry_starts_a_new_build_when_the_recorded_batch_ended_badly(
        self, atscale: rm.Mocker, fake_clock: FakeClock, capsys: pytest.CaptureFixture[str], status: str
    ) -> None:
        atscale.get(HISTORY_URL, json=history_page(batch_object(id="earlier", status=status)))
        ctx = retry_context(recorded(FakeStateStore(), batch_id="earlier"), fake_clock)

        operator(wait_for_completion=False).execute(ctx)

        assert posts(atscale) == 1
        assert (
            f"AtScale batch earlier, which an earlier try of this task started, ended {status}"
            in task_log(capsys)
        )

    @pytest.mark.parametrize(
        "changes",
        [{"grace_period_overrides": {"sales": 7}}, {"full_build": True}, {"model_id": "another-model"}],
    )
    def test_a_retry_asking_for_another_build_starts_a_new_one(
        self, atscale: rm.Mocker, fake_clock: FakeClock, changes: dict[str, Any]
    ) -> None:
        atscale.get(HISTORY_URL, history("inprogress"))
        ctx = retry_context(recorded(FakeStateStore(), **changes), fake_clock)

        operator(wait_for_completion=False).execute(ctx)

        assert posts(atscale) == 1
        assert all(r.path != "/wapi/p/aggregate/batch-history" for r in atscale.request_history)

    def test_a_cleared_task_whose_run_succeeded_builds_anew(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        atscale.get(HISTORY_URL, history("inprogress"))
        ctx = retry_context(recorded(FakeStateStore(), finished=True), fake_clock)

        operator(wait_for_completion=False).execute(ctx)

        assert posts(atscale) == 1

    def test_a_retry_lost_between_post_and_record_finds_its_batch_created_after_the_post(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        posted = fake_clock.now() - 300
        atscale.get(
            HISTORY_URL,
            [
                {
                    "json": history_page(
                        batch_object(
                            id="cleanup",
                            status="inprogress",
                            batchType="aggregate_cleanup",
                            createDate=_iso(posted + 2),
                        ),
                        batch_object(id="ours", status="inprogress", createDate=_iso(posted + 1)),
                        batch_object(id="before", status="inprogress", createDate=_iso(posted - 3600)),
                    )
                },
                {"json": history_page(batch_object(id="ours", status="done"))},
            ],
        )
        ctx = retry_context(recorded(FakeStateStore(), batch_id=None, posting_at=posted), fake_clock)

        result = operator().execute(ctx)

        assert result["id"] == "ours"
        assert posts(atscale) == 0

    def test_a_retry_lost_between_post_and_record_posts_when_nothing_was_created(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        posted = fake_clock.now() - 300
        atscale.get(
            HISTORY_URL,
            json=history_page(batch_object(id="before", status="inprogress", createDate=_iso(posted - 3600))),
        )
        ctx = retry_context(recorded(FakeStateStore(), batch_id=None, posting_at=posted), fake_clock)

        operator(wait_for_completion=False).execute(ctx)

        assert posts(atscale) == 1

    @pytest.mark.parametrize(("skew", "adopted"), [(-3, True), (3, True), (-900, False)])
    def test_without_a_store_a_retry_looks_for_its_build_in_the_window_of_its_tries(
        self,
        atscale: rm.Mocker,
        fake_clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch,
        skew: float,
        adopted: bool,
    ) -> None:
        # The first try started 600 s ago and posted right then, AtScale's clock off by `skew`. (Where
        # Airflow reads that start from, per version, the dag.test() runs of tests/test_dag_runs.py show.)
        first_try = fake_clock.now() - 600
        monkeypatch.setattr(
            atscale_operator, "first_try_started_at", lambda context: (first_try, "the first try started")
        )
        created = first_try + skew
        atscale.get(
            HISTORY_URL,
            [
                {
                    "json": history_page(
                        batch_object(id="ours", status="inprogress", createDate=_iso(created))
                    )
                },
            ],
        )

        operator(wait_for_completion=False).execute(retry_context(None, fake_clock))

        assert posts(atscale) == (0 if adopted else 1)

    def test_without_a_store_a_first_try_never_looks_in_history(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        running = batch_object(id="running", status="inprogress", createDate=_iso(fake_clock.now()))
        atscale.get(HISTORY_URL, json=history_page(running))

        operator(wait_for_completion=False).execute(retry_context(None, fake_clock, try_number=1))

        assert [r.method for r in atscale.request_history] == ["POST"]

    def test_not_durable_every_try_posts_and_nothing_is_recorded(
        self, atscale: rm.Mocker, fake_clock: FakeClock
    ) -> None:
        atscale.get(HISTORY_URL, history("inprogress"))
        store = recorded(FakeStateStore())

        operator(wait_for_completion=False, durable=False).execute(retry_context(store, fake_clock))

        assert posts(atscale) == 1
        assert store.writes == []

    def test_a_retry_that_cannot_read_the_recorded_batch_now_waits_on_it(
        self, atscale: rm.Mocker, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(max_retries=0))
        atscale.get(HISTORY_URL, [{"status_code": 503, "json": {}}, *history("inprogress", "done")])
        atscale.get(INSTANCES_URL, status_code=503, json={})
        ctx = retry_context(recorded(FakeStateStore()), fake_clock)

        result = operator().execute(ctx)

        assert result["status"] == "done"
        assert posts(atscale) == 0
        assert ctx["ti"].xcom == {**IDS, "batch_id": [BATCH_ID], "batch_status": ["done"]}
