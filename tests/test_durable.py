"""
A task's own build across its tries (``_durable.own_batch`` and ``finish``) against the emulator: recorded in
the task state store and resumed, finished with or replaced; found in batch history where nothing recorded
it; never adopted by a first try. The dag.test() runs of tests/test_dag_runs.py show it through Airflow.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale import _durable
from airflow_provider_atscale._inputs import BuildRequest
from airflow_provider_atscale.emulator import DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, FaultConfig
from airflow_provider_atscale.emulator.config import SECOND_MODEL_ID
from airflow_provider_atscale.errors import AtScaleServerError
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from tests.helpers import FakeStateStore, RecordingTaskInstance, use_connection

if TYPE_CHECKING:
    from airflow_provider_atscale.batches import AggregateBatch
    from airflow_provider_atscale.emulator import EmulatorServer
    from tests.helpers import DrivenClock

LOG = logging.getLogger("tests.durable")
STORE_KEY = "atscale_aggregate_build"
"""Spelled out: a record written by an earlier release must still be found."""
BUILD = BuildRequest(DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, False, {"factinternetsales": 30})
RECORD = {
    "catalog_id": DEFAULT_CATALOG_ID,
    "model_id": DEFAULT_MODEL_ID,
    "full_build": False,
    "grace_period_overrides": {"factinternetsales": 30},
    "posting_at": 0.0,
    "batch_id": None,
    "finished": False,
}
"""What a try of BUILD records before its POST."""


class Store(FakeStateStore):
    """The task state store, noting how many builds had been posted at each write."""

    def __init__(self, posts: Callable[[], int]) -> None:
        super().__init__()
        self.posts, self.posts_at_write = posts, []

    def set(self, key: str, value: object) -> None:
        self.posts_at_write.append(self.posts())
        super().set(key, value)


class Tries:
    """Tries of a task building BUILD against the emulator, and the task state store they share."""

    def __init__(self, emulator: EmulatorServer, clock: DrivenClock) -> None:
        self.emulator, self.clock, self.store = emulator, clock, Store(self.posts)

    def posts(self) -> int:
        return self.emulator.request_log.count("POST", "/v1/aggregates-batch/")

    def history_reads(self) -> int:
        return self.emulator.request_log.count("GET", "/wapi/p/aggregate/batch-history")

    def earlier_build(self) -> str:
        """A batch of BUILD, started as an earlier try did."""
        return AtScaleHook().start_build(BUILD).id

    def record(self, batch_id: str | None, **changes: Any) -> None:
        """What an earlier try of BUILD left in the store."""
        self.store.values[STORE_KEY] = {**RECORD, "batch_id": batch_id, **changes}

    def context(self, try_number: int = 2, store: bool = True) -> dict[str, Any]:
        """A try's context: its number, when it started (now), and the task state store (Airflow 3.3)."""
        started = datetime.fromtimestamp(self.clock.now(), tz=timezone.utc)
        ti = RecordingTaskInstance(try_number=try_number, start_date=started)
        return {"ti": ti, "task_state_store": self.store} if store else {"ti": ti}

    def own(self, context: dict[str, Any] | None = None, **kwargs: Any) -> tuple[str, AggregateBatch | None]:
        options = {"durable": True, "waiting": True, **kwargs}
        return _durable.own_batch(AtScaleHook(), BUILD, context or self.context(), LOG, **options)


@pytest.fixture
def tries(emulator: EmulatorServer, emulator_clock: DrivenClock, caplog: pytest.LogCaptureFixture) -> Tries:
    caplog.set_level(logging.INFO, logger=LOG.name)
    return Tries(emulator, emulator_clock)


# With a task state store (Airflow 3.3)


def test_a_first_try_records_its_build_before_the_post_and_the_batch_after(tries: Tries) -> None:
    before = tries.clock.now()

    batch_id, batch = tries.own(tries.context(try_number=1))

    intent, answered = tries.store.writes
    assert intent == {**RECORD, "posting_at": pytest.approx(before, abs=5)}
    assert answered == {**intent, "batch_id": batch_id}
    assert tries.store.posts_at_write == [0, 1]
    assert batch is not None
    assert batch.id == batch_id


def test_a_new_build_is_logged_in_one_line_without_the_token(
    tries: Tries, caplog: pytest.LogCaptureFixture
) -> None:
    batch_id, _ = tries.own(tries.context(try_number=1))

    assert [r.getMessage() for r in caplog.records if r.name == LOG.name] == [
        f"Started incremental AtScale build of model {DEFAULT_MODEL_ID} in catalog {DEFAULT_CATALOG_ID}: "
        f"batch {batch_id}, status new, estimate 1m 40s"
    ]
    assert tries.emulator.token not in caplog.text


@pytest.mark.parametrize(
    ("batch_id", "durable", "finished"),
    [("b-1", True, True), ("b-other", True, False), ("b-1", False, False)],
    ids=["its batch", "another batch", "not durable"],
)
def test_finish_marks_the_record_of_its_batch_finished(
    tries: Tries, batch_id: str, durable: bool, finished: bool
) -> None:
    tries.record("b-1")

    _durable.finish({"task_state_store": tries.store}, batch_id, durable=durable)

    assert tries.store.values[STORE_KEY]["finished"] is finished  # type: ignore[index]


@pytest.mark.parametrize(
    ("seconds", "status", "said"),
    [
        (
            20,
            "inprogress",
            "Resuming AtScale batch {} (inprogress), which an earlier try of this task started",
        ),
        (
            200,
            "done",
            "AtScale batch {}, which an earlier try of this task started, finished done: no new build",
        ),
    ],
)
def test_a_retry_takes_the_recorded_batch_running_or_finished_good_without_posting(
    tries: Tries, caplog: pytest.LogCaptureFixture, seconds: float, status: str, said: str
) -> None:
    batch_id = tries.earlier_build()
    tries.record(batch_id)
    tries.clock.advance(seconds)

    found_id, batch = tries.own()

    assert (found_id, batch.status if batch else None) == (batch_id, status)
    assert (tries.posts(), tries.store.writes) == (1, [])
    assert said.format(batch_id) in caplog.text


@pytest.mark.parametrize(
    ("model_changes", "recorded_id", "said"),
    [
        ({"fail": True}, None, "ended failed: starting a new build"),
        ({"final_status": "archived"}, None, "ended archived: starting a new build"),
        ({}, "no-such-batch", "cannot be found"),
    ],
    ids=["failed", "unknown status", "gone"],
)
def test_a_retry_starts_a_new_build_when_the_recorded_batch_ended_badly_or_is_gone(
    tries: Tries,
    caplog: pytest.LogCaptureFixture,
    model_changes: dict[str, Any],
    recorded_id: str | None,
    said: str,
) -> None:
    tries.emulator.state.configure_model(DEFAULT_MODEL_ID, **model_changes)
    earlier = tries.earlier_build()
    tries.record(recorded_id or earlier)
    tries.clock.advance(200)

    batch_id, _ = tries.own()

    assert batch_id not in (earlier, recorded_id)
    assert tries.posts() == 2
    assert said in caplog.text


@pytest.mark.parametrize(
    "changes",
    [
        {"grace_period_overrides": {"factinternetsales": 7}},
        {"full_build": True, "grace_period_overrides": {}},
        {"model_id": SECOND_MODEL_ID},
        {"finished": True},
    ],
    ids=["other overrides", "full build", "other model", "finished (a cleared task)"],
)
def test_a_record_of_another_build_is_not_resumed(tries: Tries, changes: dict[str, Any]) -> None:
    earlier = tries.earlier_build()
    tries.record(earlier, **changes)

    batch_id, _ = tries.own()

    assert batch_id != earlier
    assert (tries.posts(), tries.history_reads()) == (2, 0), "nothing looked up"


@pytest.mark.parametrize(("build_seconds", "advance", "resumed"), [(100, 20, True), (7200, 600, False)])
def test_a_retry_lost_between_post_and_record_resumes_only_a_build_created_since_the_post(
    tries: Tries, build_seconds: float, advance: float, resumed: bool
) -> None:
    tries.emulator.state.configure_model(DEFAULT_MODEL_ID, build_seconds=build_seconds)
    posting_at = tries.clock.now()
    earlier = tries.earlier_build()  # still running either way
    tries.clock.advance(advance)
    tries.record(None, posting_at=posting_at if resumed else tries.clock.now())

    batch_id, _ = tries.own()

    assert (batch_id == earlier) is resumed
    assert tries.posts() == (1 if resumed else 2)


def test_an_unreadable_record_is_ignored_with_a_warning(
    tries: Tries, caplog: pytest.LogCaptureFixture
) -> None:
    tries.store.values[STORE_KEY] = {"catalog_id": DEFAULT_CATALOG_ID}

    tries.own()

    assert tries.posts() == 1
    assert "Ignoring an unreadable AtScale build record" in caplog.text


@pytest.mark.parametrize("waiting", [True, False])
def test_a_recorded_batch_whose_status_cannot_be_read_now_is_waited_on_unless_the_task_does_not_wait(
    tries: Tries, monkeypatch: pytest.MonkeyPatch, waiting: bool
) -> None:
    earlier = tries.earlier_build()
    tries.record(earlier)
    use_connection(monkeypatch, tries.emulator.url, tries.emulator.token, max_retries=0)
    tries.emulator.faults.configure(FaultConfig(rate_503=1.0))

    with contextlib.nullcontext() if waiting else pytest.raises(AtScaleServerError):
        assert tries.own(waiting=waiting) == (earlier, None)

    assert tries.posts() == 1


# Without a store (before Airflow 3.3)


@pytest.mark.parametrize(
    ("atscale_clock_ahead", "adopted"), [(-30, True), (30, True), (-200, False), (200, False), (-900, False)]
)
def test_without_a_store_a_retry_resumes_a_build_created_during_its_tries_by_atscale_clock(
    tries: Tries, monkeypatch: pytest.MonkeyPatch, atscale_clock_ahead: float, adopted: bool
) -> None:
    first_try = tries.clock.now()
    monkeypatch.setattr(_durable, "_first_try", lambda context: (first_try, "the first try started"))
    tries.emulator.faults.configure(FaultConfig(clock_offset_seconds=atscale_clock_ahead))
    earlier = tries.earlier_build()
    tries.clock.advance(30)

    batch_id, _ = tries.own(tries.context(store=False))

    assert (batch_id == earlier) is adopted
    assert tries.posts() == (1 if adopted else 2)


def test_a_first_try_never_looks_in_history(tries: Tries) -> None:
    earlier = tries.earlier_build()
    context = tries.context(try_number=1, store=False)
    context["dag_run"] = SimpleNamespace(
        start_date=datetime.fromtimestamp(tries.clock.now() - 60, timezone.utc)
    )

    batch_id, _ = tries.own(context)

    assert batch_id != earlier
    assert tries.history_reads() == 0


def test_not_durable_every_try_posts_and_nothing_is_recorded(tries: Tries) -> None:
    earlier = tries.earlier_build()
    tries.record(earlier)

    batch_id, _ = tries.own(durable=False)

    assert batch_id != earlier
    assert (tries.store.writes, tries.history_reads()) == ([], 0)


@pytest.mark.parametrize(
    ("start_date", "expected"),
    [
        (datetime(2025, 2, 27, 9, 0, tzinfo=timezone.utc), (1740646800.0, "this DAG run started")),
        (datetime(2025, 2, 27, 9, 0), (1740646800.0, "this DAG run started")),
        (None, None),
    ],
    ids=["aware", "naive, read as UTC", "not started"],
)
def test_where_nothing_tells_of_earlier_tries_the_first_try_is_bounded_by_the_dag_run_start(
    start_date: datetime | None, expected: tuple[float, str] | None
) -> None:
    assert _durable._first_try({"dag_run": SimpleNamespace(start_date=start_date)}) == expected


@pytest.mark.usefixtures("airflow_db")
def test_on_airflow_2_a_task_instance_without_earlier_tries_in_history_is_bounded_by_the_dag_run_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Airflow 2 reads earlier tries from TaskInstanceHistory; Airflow 3 has the same table, so the query runs
    # here too (on Airflow 2 CI it is the path every retry takes).
    monkeypatch.setattr(_durable, "AIRFLOW_V_3_0_PLUS", False)
    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1)
    dag_run = SimpleNamespace(start_date=datetime(2025, 2, 27, 9, 0, tzinfo=timezone.utc))

    assert _durable._first_try({"ti": ti, "dag_run": dag_run}) == (1740646800.0, "this DAG run started")
