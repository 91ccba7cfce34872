"""The trigger against the emulator: its stored form, its polls, the events only it emits, its session.
How a wait ends (each outcome, the deadline, a changed connection) is tests/test_waiting.py's."""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale import _clock
from airflow_provider_atscale.emulator import DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger
from tests.helpers import use_connection

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import EmulatorServer
    from tests.helpers import DrivenClock

CLASSPATH = "airflow_provider_atscale.triggers.atscale.AtScaleAggregateBatchTrigger"
HISTORY_PATH = "/wapi/p/aggregate/batch-history"


def start_batch() -> str:
    return AtScaleHook().trigger_aggregate_build(DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, full_build=True).id


def kwargs_of(batch_id: str, clock: DrivenClock) -> dict[str, Any]:
    """A trigger's arguments as release 0.1.0 wrote them to the trigger table, word for word."""
    now = clock.now()
    return {
        "atscale_conn_id": "atscale_default",
        "catalog_id": DEFAULT_CATALOG_ID,
        "model_id": DEFAULT_MODEL_ID,
        "batch_id": batch_id,
        "poll_interval": 30.0,
        "deadline": now + 3600,
        "timeout": 3600.0,
        "started_at": now,
        "last_status": "new",
    }


def make_trigger(batch_id: str, clock: DrivenClock) -> AtScaleAggregateBatchTrigger:
    return AtScaleAggregateBatchTrigger(**kwargs_of(batch_id, clock))


def stored(classpath: str, kwargs: dict[str, Any]) -> AtScaleAggregateBatchTrigger:
    """A trigger rebuilt as the triggerer does, from its classpath and kwargs stored as JSON by Airflow."""
    from airflow.serialization.serialized_objects import BaseSerialization

    row = json.loads(json.dumps(BaseSerialization.serialize(kwargs)))
    module, _, name = classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**BaseSerialization.deserialize(row))
    assert isinstance(trigger, AtScaleAggregateBatchTrigger)
    return trigger


def event_of(trigger: AtScaleAggregateBatchTrigger) -> dict[str, Any]:
    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())
    return event


def test_a_trigger_is_stored_without_secrets_and_rebuilt_exactly(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    classpath, kwargs = make_trigger("batch-1", emulator_clock).serialize()

    assert classpath == CLASSPATH
    assert stored(classpath, kwargs).serialize() == (classpath, kwargs)
    assert emulator.token not in json.dumps(kwargs)


def test_a_trigger_stored_by_the_previous_release_still_runs(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    event = event_of(stored(CLASSPATH, kwargs_of(start_batch(), emulator_clock)))

    assert event["outcome"] == "succeeded"


def test_succeeds_after_polling_once_an_interval_from_its_spread_first_poll(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    batch_id = start_batch()
    trigger = make_trigger(batch_id, emulator_clock)
    emulator_clock.sleeps.clear()

    event = event_of(trigger)

    assert (event["outcome"], event["batch_id"]) == ("succeeded", batch_id)
    assert (event["batch"]["id"], event["batch"]["status"]) == (batch_id, "done")
    first, *rest = emulator_clock.sleeps
    assert first == pytest.approx(trigger.plan().first_poll_at - trigger.started_at, abs=1.0)
    assert all(25.0 < wait <= 30.0 for wait in rest), "what is left of each interval after its poll"
    assert first + sum(rest) >= 110.0, "no event before the batch is done (110 s of build)"
    assert emulator.request_log.count("GET", HISTORY_PATH) == len(emulator_clock.sleeps), "none before"


def test_an_error_that_ends_the_wait_is_an_error_event_without_the_token(
    emulator: EmulatorServer, emulator_clock: DrivenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = make_trigger(start_batch(), emulator_clock)
    use_connection(monkeypatch, emulator.url, "wrong-tok")

    event = event_of(trigger)

    assert event["outcome"] == "error"
    assert "HTTP 401" in event["message"]
    assert "wrong-tok" not in event["message"]


def test_a_trigger_rebuilt_after_a_triggerer_restart_resumes_and_finishes(
    emulator: EmulatorServer, emulator_clock: DrivenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = make_trigger(start_batch(), emulator_clock)
    sleeps = 0

    async def stop_at_the_second_sleep(seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 2:
            raise asyncio.CancelledError  # the triggerer stops while the trigger waits after its first poll
        await emulator_clock.asleep(seconds)

    with monkeypatch.context() as patch:
        patch.setattr(_clock, "asleep", stop_at_the_second_sleep)
        with pytest.raises(asyncio.CancelledError):
            event_of(trigger)
    assert emulator.request_log.count("GET", HISTORY_PATH) == 1

    event = event_of(stored(*trigger.serialize()))

    assert event["outcome"] == "succeeded"
    assert emulator.request_log.count("POST", "/v1/aggregates-batch/") == 1


def test_one_http_session_serves_every_poll_and_is_closed_at_the_end(
    emulator: EmulatorServer, emulator_clock: DrivenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_atscale.hooks import _http

    trigger = make_trigger(start_batch(), emulator_clock)
    sessions: list[Any] = []
    original = _http.open_session
    monkeypatch.setattr(
        _http, "open_session", lambda verify: sessions.append(original(verify)) or sessions[-1]
    )
    before = emulator.request_log.count()

    event_of(trigger)

    assert emulator.request_log.count("GET", HISTORY_PATH) >= 4
    assert len(sessions) >= emulator.request_log.count() - before, "every request, the token exchange too"
    assert len({id(session) for session in sessions}) == 1
    assert sessions[0].closed


def test_on_kill_names_the_batch_and_says_atscale_cannot_cancel_it(
    emulator_clock: DrivenClock, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(make_trigger("batch-1", emulator_clock).on_kill())

    assert (
        "AtScale has no API to cancel a build: batch batch-1 continues in AtScale" in capsys.readouterr().out
    )
