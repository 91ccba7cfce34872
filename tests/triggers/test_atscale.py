from __future__ import annotations

import asyncio
import importlib
import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale.emulator import DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, FAILING_MODEL_ID
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import EmulatorServer
    from tests.helpers import DrivenClock


def start_batch(model_id: str = DEFAULT_MODEL_ID) -> str:
    return AtScaleHook().trigger_aggregate_build(DEFAULT_CATALOG_ID, model_id, full_build=True).id


def make_trigger(batch_id: str, clock: DrivenClock, **kwargs: Any) -> AtScaleAggregateBatchTrigger:
    arguments: dict[str, Any] = {
        "atscale_conn_id": "atscale_default",
        "catalog_id": DEFAULT_CATALOG_ID,
        "model_id": DEFAULT_MODEL_ID,
        "batch_id": batch_id,
        "poll_interval": 30.0,
        "deadline": clock.now() + 3600,
        "timeout": 3600.0,
        "started_at": clock.now(),
        "last_status": "new",
    }
    arguments.update(kwargs)
    return AtScaleAggregateBatchTrigger(**arguments)


async def first_event(trigger: AtScaleAggregateBatchTrigger) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1, "a trigger emits exactly one event"
    return events[0]


def rebuilt(trigger: AtScaleAggregateBatchTrigger) -> AtScaleAggregateBatchTrigger:
    """Rebuild a trigger the way the triggerer does: from its serialized classpath and kwargs."""
    from airflow.serialization.serialized_objects import BaseSerialization

    classpath, kwargs = trigger.serialize()
    stored = json.loads(json.dumps(BaseSerialization.serialize(kwargs)))
    module, _, name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**BaseSerialization.deserialize(stored))


def test_serialize_round_trips_exactly(emulator_clock: DrivenClock) -> None:
    trigger = make_trigger("batch-1", emulator_clock)

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_atscale.triggers.atscale.AtScaleAggregateBatchTrigger"
    assert rebuilt(trigger).serialize() == (classpath, kwargs)
    assert json.loads(json.dumps(kwargs)) == kwargs, "every argument is plain JSON"


def test_no_secret_among_the_serialized_arguments(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    _, kwargs = make_trigger("batch-1", emulator_clock).serialize()

    assert emulator.token not in json.dumps(kwargs)


def test_succeeded_event_after_polling_while_in_progress(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    batch_id = start_batch()
    trigger = make_trigger(batch_id, emulator_clock)
    emulator_clock.sleeps.clear()

    event = asyncio.run(first_event(trigger))

    assert event["outcome"] == "succeeded"
    assert event["batch_id"] == batch_id
    assert event["batch"]["status"] == "done"
    assert event["batch"]["id"] == batch_id
    first, *rest = emulator_clock.sleeps
    assert first == pytest.approx(trigger.first_poll_at() - trigger.started_at, abs=1.0)
    # Polls keep to a schedule of one per interval: each wait is what is left of the interval after the poll
    # before it (real time passes while the emulator answers).
    assert all(25.0 < wait <= 30.0 for wait in rest), "then one poll per interval while in progress"
    assert first + sum(rest) >= 110.0, "no event before the batch is done (110 s of build)"
    history_gets = emulator.request_log.count("GET", "/wapi/p/aggregate/batch-history")
    assert history_gets == len(emulator_clock.sleeps), "one poll after each wait, none at once on deferral"


def test_the_first_poll_comes_within_one_interval_at_a_point_that_survives_a_restart(
    emulator_clock: DrivenClock,
) -> None:
    points = []
    for index in range(50):
        trigger = make_trigger(f"batch-{index}", emulator_clock)
        offset = trigger.first_poll_at() - trigger.started_at
        assert 15.0 <= offset <= 30.0
        assert rebuilt(trigger).first_poll_at() == trigger.first_poll_at()
        points.append(round(offset))

    assert len(set(points)) > 5, "triggers deferred together do not poll in lock-step"


def test_failed_event_for_a_failing_model(emulator: EmulatorServer, emulator_clock: DrivenClock) -> None:
    batch_id = start_batch(FAILING_MODEL_ID)

    event = asyncio.run(first_event(make_trigger(batch_id, emulator_clock, model_id=FAILING_MODEL_ID)))

    assert event["outcome"] == "failed"
    assert event["batch"]["status"] == "failed"


@pytest.mark.parametrize(
    ("final_status", "outcome"), [("cancelled", "failed"), ("archived", "unknown_status")]
)
def test_a_finished_batch_in_a_bad_or_unknown_status(
    emulator: EmulatorServer, emulator_clock: DrivenClock, final_status: str, outcome: str
) -> None:
    emulator.state.configure_model(DEFAULT_MODEL_ID, final_status=final_status)
    batch_id = start_batch()

    event = asyncio.run(first_event(make_trigger(batch_id, emulator_clock)))

    assert event["outcome"] == outcome
    assert event["batch"]["status"] == final_status


def test_timed_out_event_when_the_deadline_passes(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    batch_id = start_batch()
    emulator_clock.sleeps.clear()

    event = asyncio.run(
        first_event(make_trigger(batch_id, emulator_clock, deadline=emulator_clock.now() + 45, timeout=45.0))
    )

    assert event["outcome"] == "timed_out"
    assert event["batch"]["status"] == "inprogress"
    assert "did not finish within 45s" in event["message"]
    assert "goes on in AtScale" in event["message"]
    assert sum(emulator_clock.sleeps) == pytest.approx(45.0, abs=1.0), "the last sleep stops at the deadline"
    assert all(seconds <= 30.0 for seconds in emulator_clock.sleeps)


def test_error_event_when_atscale_refuses(
    emulator: EmulatorServer, emulator_clock: DrivenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import connection_uri

    batch_id = start_batch()
    monkeypatch.setenv(
        "AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(host=emulator.url, password="wrong-token")
    )

    event = asyncio.run(first_event(make_trigger(batch_id, emulator_clock)))

    assert event["outcome"] == "error"
    assert "HTTP 401" in event["message"]
    assert "wrong-token" not in event["message"]


def test_a_rebuilt_trigger_resumes_and_finishes(
    emulator: EmulatorServer, emulator_clock: DrivenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_atscale import _clock

    batch_id = start_batch()
    trigger = make_trigger(batch_id, emulator_clock)
    waits = 0

    async def stopped_on_second_wait(seconds: float) -> None:
        # The triggerer goes away (its task is cancelled) while the trigger waits after its first poll.
        nonlocal waits
        waits += 1
        if waits == 2:
            raise asyncio.CancelledError
        await emulator_clock.asleep(seconds)

    with monkeypatch.context() as patch:
        patch.setattr(_clock, "asleep", stopped_on_second_wait)
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(first_event(trigger))
    polls_before_restart = emulator.request_log.count("GET", "/wapi/p/aggregate/batch-history")

    event = asyncio.run(first_event(rebuilt(trigger)))

    assert polls_before_restart == 1
    assert event["outcome"] == "succeeded"
    assert emulator.request_log.count("POST", "/v1/aggregates-batch/") == 1


def test_one_http_session_serves_every_poll(emulator: EmulatorServer, emulator_clock: DrivenClock) -> None:
    from airflow_provider_atscale.hooks._async_transport import AsyncTransport

    batch_id = start_batch()
    sessions: list[object] = []
    original = AsyncTransport._session

    def recording_session(self: AsyncTransport) -> Any:
        session = original(self)
        sessions.append(session)
        return session

    before = emulator.request_log.count()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AsyncTransport, "_session", recording_session)
        asyncio.run(first_event(make_trigger(batch_id, emulator_clock)))

    assert emulator.request_log.count("GET", "/wapi/p/aggregate/batch-history") >= 4
    requests_made = emulator.request_log.count() - before
    assert len(sessions) == requests_made, "every request, the token exchange included"
    assert len({id(session) for session in sessions}) == 1
    assert all(session.closed for session in sessions), "closed when the trigger ends"
