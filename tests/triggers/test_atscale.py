"""The trigger against the emulator: every event it emits, its serialized form, and its polls."""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale import _clock
from airflow_provider_atscale.emulator import DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, FAILING_MODEL_ID
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger
from tests.helpers import connection_uri

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_atscale.emulator import EmulatorServer
    from tests.helpers import DrivenClock

CLASSPATH = "airflow_provider_atscale.triggers.atscale.AtScaleAggregateBatchTrigger"
HISTORY_PATH = "/wapi/p/aggregate/batch-history"


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
    return AtScaleAggregateBatchTrigger(**{**arguments, **kwargs})


def event_of(trigger: AtScaleAggregateBatchTrigger) -> dict[str, Any]:
    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())
    return event


def stored(classpath: str, kwargs: dict[str, Any]) -> AtScaleAggregateBatchTrigger:
    """A trigger rebuilt as the triggerer does: from its classpath and kwargs, stored through Airflow's
    serialization as JSON."""
    from airflow.serialization.serialized_objects import BaseSerialization

    row = json.loads(json.dumps(BaseSerialization.serialize(kwargs)))
    module, _, name = classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**BaseSerialization.deserialize(row))
    assert isinstance(trigger, AtScaleAggregateBatchTrigger)
    return trigger


def on_sleep(
    monkeypatch: pytest.MonkeyPatch, clock: DrivenClock, number: int, action: Callable[[], None]
) -> None:
    """Do ``action`` as the trigger begins its ``number``-th sleep (while it waits between polls)."""
    sleeps = 0

    async def asleep(seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == number:
            action()
        await clock.asleep(seconds)

    monkeypatch.setattr(_clock, "asleep", asleep)


def test_serialize_round_trips_exactly_through_airflow_serialization(emulator_clock: DrivenClock) -> None:
    trigger = make_trigger("batch-1", emulator_clock)

    classpath, kwargs = trigger.serialize()

    assert classpath == CLASSPATH
    assert stored(classpath, kwargs).serialize() == (classpath, kwargs)


def test_no_secret_among_the_serialized_arguments(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    _, kwargs = make_trigger("batch-1", emulator_clock).serialize()

    assert emulator.token not in json.dumps(kwargs)


def test_a_trigger_serialized_by_the_previous_release_still_runs(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    now = emulator_clock.now()
    # What 0.1.0 wrote to the trigger table, word for word.
    kwargs = {
        "atscale_conn_id": "atscale_default",
        "catalog_id": DEFAULT_CATALOG_ID,
        "model_id": DEFAULT_MODEL_ID,
        "batch_id": start_batch(),
        "poll_interval": 30.0,
        "deadline": now + 3600,
        "timeout": 3600.0,
        "started_at": now,
        "last_status": "new",
    }

    event = event_of(stored(CLASSPATH, kwargs))

    assert event["outcome"] == "succeeded"


def test_succeeded_after_polling_on_schedule_while_the_batch_runs(
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
    # One poll per interval: each wait is what is left of the interval after the poll before it.
    assert all(25.0 < wait <= 30.0 for wait in rest)
    assert first + sum(rest) >= 110.0, "no event before the batch is done (110 s of build)"
    assert emulator.request_log.count("GET", HISTORY_PATH) == len(emulator_clock.sleeps), (
        "none before the first"
    )


@pytest.mark.parametrize(
    ("model_id", "final_status", "outcome"),
    [
        (FAILING_MODEL_ID, "failed", "failed"),
        (DEFAULT_MODEL_ID, "cancelled", "failed"),
        (DEFAULT_MODEL_ID, "archived", "unknown_status"),
    ],
)
def test_a_batch_ending_badly_or_in_an_unknown_status(
    emulator: EmulatorServer, emulator_clock: DrivenClock, model_id: str, final_status: str, outcome: str
) -> None:
    if model_id == DEFAULT_MODEL_ID:
        emulator.state.configure_model(model_id, final_status=final_status)

    event = event_of(make_trigger(start_batch(model_id), emulator_clock, model_id=model_id))

    assert (event["outcome"], event["batch"]["status"]) == (outcome, final_status)


def test_timed_out_when_the_deadline_passes(emulator: EmulatorServer, emulator_clock: DrivenClock) -> None:
    batch_id = start_batch()
    emulator_clock.sleeps.clear()

    event = event_of(make_trigger(batch_id, emulator_clock, deadline=emulator_clock.now() + 45, timeout=45.0))

    assert (event["outcome"], event["batch"]["status"]) == ("timed_out", "inprogress")
    assert "did not finish within 45s" in event["message"]
    assert "goes on in AtScale" in event["message"]
    assert sum(emulator_clock.sleeps) == pytest.approx(45.0, abs=1.0), "the last sleep stops at the deadline"


def test_error_when_atscale_refuses_the_connection(
    emulator: EmulatorServer, emulator_clock: DrivenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = start_batch()
    monkeypatch.setenv(
        "AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(host=emulator.url, password="wrong-token")
    )

    event = event_of(make_trigger(batch_id, emulator_clock))

    assert event["outcome"] == "error"
    assert "HTTP 401" in event["message"]
    assert "wrong-token" not in event["message"]


def test_a_token_rotated_mid_wait_is_read_and_the_wait_succeeds(
    emulator: EmulatorServer, emulator_clock: DrivenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def rotate() -> None:
        # AtScale refuses the old API token and the JWTs it gave for it; the connection holds the new one.
        rotated = emulator.rotate_api_token()
        monkeypatch.setenv(
            "AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(host=emulator.url, password=rotated)
        )

    trigger = make_trigger(start_batch(), emulator_clock)
    on_sleep(monkeypatch, emulator_clock, 2, rotate)

    event = event_of(trigger)

    assert event["outcome"] == "succeeded"
    assert emulator.request_log.count(status=401) >= 1, "the old token was refused mid-wait"


def test_a_trigger_rebuilt_after_a_triggerer_restart_resumes_and_finishes(
    emulator: EmulatorServer, emulator_clock: DrivenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = make_trigger(start_batch(), emulator_clock)

    def restart() -> None:
        raise asyncio.CancelledError  # the triggerer stops while the trigger waits after its first poll

    with monkeypatch.context() as patch:
        on_sleep(patch, emulator_clock, 2, restart)
        with pytest.raises(asyncio.CancelledError):
            event_of(trigger)
    polls_before_restart = emulator.request_log.count("GET", HISTORY_PATH)

    event = event_of(stored(*trigger.serialize()))

    assert polls_before_restart == 1
    assert event["outcome"] == "succeeded"
    assert emulator.request_log.count("POST", "/v1/aggregates-batch/") == 1


def test_one_http_session_serves_every_poll_and_is_closed_at_the_end(
    emulator: EmulatorServer, emulator_clock: DrivenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_atscale.hooks import _http

    trigger = make_trigger(start_batch(), emulator_clock)
    sessions: list[Any] = []
    original = _http.open_session

    def recording_open_session(verify: bool | str) -> Any:
        sessions.append(original(verify))
        return sessions[-1]

    monkeypatch.setattr(_http, "open_session", recording_open_session)
    before = emulator.request_log.count()

    event_of(trigger)

    assert emulator.request_log.count("GET", HISTORY_PATH) >= 4
    assert len(sessions) >= emulator.request_log.count() - before, (
        "every request, the token exchange included"
    )
    assert len({id(session) for session in sessions}) == 1
    assert sessions[0].closed


def test_on_kill_names_the_batch_and_says_atscale_cannot_cancel_it(
    emulator_clock: DrivenClock, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(make_trigger("batch-1", emulator_clock).on_kill())

    assert (
        "AtScale has no API to cancel a build: batch batch-1 continues in AtScale" in capsys.readouterr().out
    )
