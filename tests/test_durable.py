"""
A task's own build across its tries (``_durable.own_batch`` and ``finish``) against the emulator: recorded in
the task state store and resumed, finished with or replaced; found in batch history where nothing recorded
it; never adopted by a first try. The dag.test() runs of tests/test_dag_runs.py show it through Airflow.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale import _durable
from airflow_provider_atscale._durable import finish, own_batch
from airflow_provider_atscale._inputs import BuildRequest
from airflow_provider_atscale.emulator import (
    DEFAULT_CATALOG_ID,
    DEFAULT_MODEL_ID,
    SECOND_MODEL_ID,
    FaultConfig,
)
from airflow_provider_atscale.errors import AtScaleServerError
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from tests.helpers import FakeStateStore, RecordingTaskInstance, connection_uri

if TYPE_CHECKING:
    from airflow_provider_atscale.batches import AggregateBatch
    from airflow_provider_atscale.emulator import EmulatorServer
    from tests.helpers import DrivenClock

LOG = logging.getLogger("tests.durable")
TRIGGER_PATH = "/v1/aggregates-batch/"
HISTORY_PATH = "/wapi/p/aggregate/batch-history"
STORE_KEY = "atscale_aggregate_build"
"""Spelled out: a record written by an earlier release must still be found."""
BUILD = BuildRequest.parse(
    catalog_id=DEFAULT_CATALOG_ID,
    model_id=DEFAULT_MODEL_ID,
    full_build=False,
    grace_period_overrides={"factinternetsales": "30"},
)


class Store(FakeStateStore):
    """The task state store, noting how many builds the emulator had been asked for at each write."""

    def __init__(self, emulator: EmulatorServer) -> None:
        super().__init__()
        self.emulator = emulator
        self.posts_at_write: list[int] = []

    def set(self, key: str, value: object) -> None:
        self.posts_at_write.append(self.emulator.request_log.count("POST", TRIGGER_PATH))
        super().set(key, value)


def record(store: Store, batch_id: str | None, posting_at: float = 0.0, **changes: Any) -> Store:
    """What an earlier try of BUILD left in the store."""
    store.values[STORE_KEY] = {
        "catalog_id": DEFAULT_CATALOG_ID,
        "model_id": DEFAULT_MODEL_ID,
        "full_build": False,
        "grace_period_overrides": {"factinternetsales": 30},
        "posting_at": posting_at,
        "batch_id": batch_id,
        "finished": False,
        **changes,
    }
    return store


def context(clock: DrivenClock, store: Store | None = None, try_number: int = 2) -> dict[str, Any]:
    """A try's context: its number, when it started (now), and the task state store (Airflow 3.3)."""
    started = datetime.fromtimestamp(clock.now(), tz=timezone.utc)
    ti = RecordingTaskInstance(try_number=try_number, start_date=started)
    return {"ti": ti} if store is None else {"ti": ti, "task_state_store": store}


def own(
    ctx: dict[str, Any], *, durable: bool = True, waiting: bool = True
) -> tuple[str, AggregateBatch | None]:
    return own_batch(AtScaleHook(), BUILD, ctx, LOG, durable=durable, waiting=waiting)


def earlier_build() -> str:
    """A batch of BUILD, started as an earlier try did."""
    return AtScaleHook().start_build(BUILD).id


def posts(emulator: EmulatorServer) -> int:
    return emulator.request_log.count("POST", TRIGGER_PATH)


@pytest.fixture
def store(emulator: EmulatorServer) -> Store:
    return Store(emulator)


# With a task state store (Airflow 3.3)


def test_a_first_try_records_its_build_before_the_post_and_the_batch_after(
    emulator: EmulatorServer, emulator_clock: DrivenClock, store: Store
) -> None:
    before = emulator_clock.now()

    batch_id, batch = own(context(emulator_clock, store, try_number=1))

    intent, answered = store.writes
    assert intent == {
        "catalog_id": DEFAULT_CATALOG_ID,
        "model_id": DEFAULT_MODEL_ID,
        "full_build": False,
        "grace_period_overrides": {"factinternetsales": 30},
        "posting_at": pytest.approx(before, abs=5),
        "batch_id": None,
        "finished": False,
    }
    assert answered == {**intent, "batch_id": batch_id}
    assert store.posts_at_write == [0, 1]
    assert batch is not None
    assert batch.id == batch_id


def test_a_new_build_is_logged_in_one_line_without_the_token(
    emulator: EmulatorServer, emulator_clock: DrivenClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)

    batch_id, _ = own(context(emulator_clock, try_number=1))

    assert [r.getMessage() for r in caplog.records if r.name == LOG.name] == [
        f"Started incremental AtScale build of model {DEFAULT_MODEL_ID} in catalog {DEFAULT_CATALOG_ID}: "
        f"batch {batch_id}, status new, estimate 1m 40s"
    ]
    assert emulator.token not in caplog.text


@pytest.mark.parametrize(
    ("batch_id", "durable", "finished"),
    [("b-1", True, True), ("b-other", True, False), ("b-1", False, False)],
    ids=["its batch", "another batch", "not durable"],
)
def test_finish_marks_the_record_of_its_batch_finished(
    emulator: EmulatorServer, store: Store, batch_id: str, durable: bool, finished: bool
) -> None:
    record(store, "b-1")

    finish({"task_state_store": store}, batch_id, durable=durable)

    assert store.values[STORE_KEY]["finished"] is finished  # type: ignore[index]


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
    emulator: EmulatorServer,
    emulator_clock: DrivenClock,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    seconds: float,
    status: str,
    said: str,
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    batch_id = earlier_build()
    emulator_clock.advance(seconds)

    found_id, batch = own(context(emulator_clock, record(store, batch_id)))

    assert found_id == batch_id
    assert batch is not None
    assert batch.status == status
    assert posts(emulator) == 1
    assert store.writes == []
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
    emulator: EmulatorServer,
    emulator_clock: DrivenClock,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    model_changes: dict[str, Any],
    recorded_id: str | None,
    said: str,
) -> None:
    emulator.state.configure_model(DEFAULT_MODEL_ID, **model_changes)
    earlier = earlier_build()
    emulator_clock.advance(200)

    batch_id, _ = own(context(emulator_clock, record(store, recorded_id or earlier)))

    assert batch_id not in (earlier, recorded_id)
    assert posts(emulator) == 2
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
def test_a_record_of_another_build_is_not_resumed(
    emulator: EmulatorServer, emulator_clock: DrivenClock, store: Store, changes: dict[str, Any]
) -> None:
    earlier = earlier_build()

    batch_id, _ = own(context(emulator_clock, record(store, earlier, **changes)))

    assert batch_id != earlier
    assert posts(emulator) == 2
    assert emulator.request_log.count("GET", HISTORY_PATH) == 0, "nothing looked up"


def test_a_retry_lost_between_post_and_record_resumes_the_build_created_since_the_post(
    emulator: EmulatorServer, emulator_clock: DrivenClock, store: Store
) -> None:
    posting_at = emulator_clock.now()
    earlier = earlier_build()
    emulator_clock.advance(20)

    batch_id, _ = own(context(emulator_clock, record(store, None, posting_at)))

    assert batch_id == earlier
    assert posts(emulator) == 1


def test_a_retry_lost_between_post_and_record_posts_when_nothing_was_created_since(
    emulator: EmulatorServer, emulator_clock: DrivenClock, store: Store
) -> None:
    emulator.state.configure_model(DEFAULT_MODEL_ID, build_seconds=7200)
    earlier = earlier_build()  # still running, but created long before this task posted
    emulator_clock.advance(600)

    batch_id, _ = own(context(emulator_clock, record(store, None, emulator_clock.now())))

    assert batch_id != earlier
    assert posts(emulator) == 2


def test_an_unreadable_record_is_ignored_with_a_warning(
    emulator: EmulatorServer, emulator_clock: DrivenClock, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store.values[STORE_KEY] = {"catalog_id": DEFAULT_CATALOG_ID}

    own(context(emulator_clock, store))

    assert posts(emulator) == 1
    assert "Ignoring an unreadable AtScale build record" in caplog.text


def unreadable(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on AtScale answers 503, and the connection does not retry."""
    uri = connection_uri(host=emulator.url, password=emulator.token, max_retries=0)
    monkeypatch.setenv("AIRFLOW_CONN_ATSCALE_DEFAULT", uri)
    emulator.faults.configure(FaultConfig(rate_503=1.0))


def test_a_recorded_batch_whose_status_cannot_be_read_now_is_waited_on(
    emulator: EmulatorServer, emulator_clock: DrivenClock, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = earlier_build()
    unreadable(emulator, monkeypatch)

    assert own(context(emulator_clock, record(store, earlier))) == (earlier, None)
    assert posts(emulator) == 1


def test_a_recorded_batch_whose_status_cannot_be_read_now_fails_a_task_that_does_not_wait(
    emulator: EmulatorServer, emulator_clock: DrivenClock, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = earlier_build()
    unreadable(emulator, monkeypatch)

    with pytest.raises(AtScaleServerError):
        own(context(emulator_clock, record(store, earlier)), waiting=False)
    assert posts(emulator) == 1


# Without a store (before Airflow 3.3)


@pytest.mark.parametrize(
    ("atscale_clock_ahead", "adopted"),
    [
        (-30, True),
        (30, True),
        (-200, False),
        (200, False),
        (-900, False),
    ],
)
def test_without_a_store_a_retry_resumes_a_build_created_during_its_tries_by_atscale_clock(
    emulator: EmulatorServer,
    emulator_clock: DrivenClock,
    monkeypatch: pytest.MonkeyPatch,
    atscale_clock_ahead: float,
    adopted: bool,
) -> None:
    first_try = emulator_clock.now()
    monkeypatch.setattr(_durable, "_first_try", lambda context: (first_try, "the first try started"))
    emulator.faults.configure(FaultConfig(clock_offset_seconds=atscale_clock_ahead))
    earlier = earlier_build()
    emulator_clock.advance(30)

    batch_id, _ = own(context(emulator_clock))

    assert (batch_id == earlier) is adopted
    assert posts(emulator) == (1 if adopted else 2)


def test_a_first_try_never_looks_in_history(emulator: EmulatorServer, emulator_clock: DrivenClock) -> None:
    earlier = earlier_build()

    ctx = context(emulator_clock, try_number=1)
    ctx["dag_run"] = SimpleNamespace(
        start_date=datetime.fromtimestamp(emulator_clock.now() - 60, tz=timezone.utc)
    )

    batch_id, _ = own(ctx)

    assert batch_id != earlier
    assert emulator.request_log.count("GET", HISTORY_PATH) == 0


def test_not_durable_every_try_posts_and_nothing_is_recorded(
    emulator: EmulatorServer, emulator_clock: DrivenClock, store: Store
) -> None:
    earlier = earlier_build()

    batch_id, _ = own(context(emulator_clock, record(store, earlier)), durable=False)

    assert batch_id != earlier
    assert store.writes == []
    assert emulator.request_log.count("GET", HISTORY_PATH) == 0


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
