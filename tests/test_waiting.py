"""The waiting loop, :class:`Wait`, driven directly: a fake AtScale answers its polls and re-reads of the
connection, the fake clock moves with every sleep. No HTTP, no Airflow."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_atscale import _clock
from airflow_provider_atscale._waiting import (
    RECONNECT_EVERY,
    TOKEN_REFUSED_GRACE,
    Outcome,
    Wait,
    WaitPlan,
    WaitResult,
    failure_message,
    raise_unless_succeeded,
)
from airflow_provider_atscale.batches import AggregateBatch, AggregateInstance
from airflow_provider_atscale.errors import (
    AtScaleAuthError,
    AtScaleBadRequestError,
    AtScaleBuildFailedError,
    AtScaleError,
    AtScaleHTTPError,
    AtScaleNotFoundError,
    AtScaleRateLimitError,
    AtScaleResponseError,
    AtScaleServerError,
    AtScaleTransportError,
    AtScaleWaitTimeoutError,
)
from tests.helpers import FakeClock, batch_object

START = 1_767_225_600.0


def batch(status: str, **fields: Any) -> AggregateBatch:
    return AggregateBatch(id="b-1", catalog_id="c", model_id="m", status=status, **fields)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(START + seconds, tz=timezone.utc)


def http_error(cls: type[AtScaleHTTPError], status: int) -> AtScaleHTTPError:
    return cls(f"HTTP {status}", method="GET", path="/wapi", status_code=status, atscale_message=None)


NO_ANSWER = AtScaleTransportError("no answer", method="GET", path="/wapi")
UNAVAILABLE = http_error(AtScaleServerError, 503)
PASSING = [NO_ANSWER, http_error(AtScaleRateLimitError, 429), UNAVAILABLE]
REFUSED = http_error(AtScaleAuthError, 401)
NOT_FOUND = http_error(AtScaleNotFoundError, 404)


class Said(list[str]):
    """A logger keeping each message as the wait formats it."""

    def info(self, message: str, *args: object) -> None:
        self.append(message % args)

    warning = info


class AtScale:
    """
    Answers each poll with the next of its batches (the last one for ever), or with ``error`` while an
    outage lasts, each poll taking ``poll_seconds``; a re-read of the connection finds it changed as
    ``changed`` says (one answer for all, or one per re-read). Records when polls and re-reads came, and
    what the wait said.
    """

    def __init__(
        self,
        *batches: AggregateBatch | AtScaleError,
        outage: tuple[float, float] = (math.inf, math.inf),
        error: AtScaleError = UNAVAILABLE,
        poll_seconds: float = 0.0,
        changed: bool | list[bool] = False,
    ) -> None:
        self.answers, self.outage, self.error = list(batches), outage, error
        self.poll_seconds, self.changed = poll_seconds, changed
        self.polled_at: list[float] = []
        self.reconnected_at: list[float] = []
        self.said = Said()

    async def poll(self) -> AggregateBatch:
        now = _clock.now()
        self.polled_at.append(now)
        await _clock.asleep(self.poll_seconds)
        if self.outage[0] <= now < self.outage[1]:
            raise self.error
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, AtScaleError):
            raise answer
        return answer

    async def reconnect(self) -> bool:
        self.reconnected_at.append(_clock.now())
        return self.changed.pop(0) if isinstance(self.changed, list) else self.changed

    def wait(self, plan: WaitPlan | None = None, *, resumed: bool = False) -> WaitResult:
        """Wait with this AtScale until the wait ends."""
        wait = Wait(plan or make_plan(), self.poll, self.reconnect, self.said, resumed=resumed)
        return asyncio.run(wait.run())


def after(*seconds: float) -> list[float]:
    """Moments ``seconds`` after START."""
    return [START + s for s in seconds]


def make_plan(
    batch_id: str = "b-1", timeout: float = 3600.0, last_status: str | None = "new", **more: Any
) -> WaitPlan:
    """A wait begun now, polling every minute; on a worker, its first poll a minute from now."""
    more.setdefault("deferred", False)
    return WaitPlan.make(batch_id, poll_interval=60.0, timeout=timeout, last_status=last_status, **more)


@pytest.fixture(autouse=True)
def clock(fake_clock: FakeClock) -> FakeClock:
    fake_clock.time = START
    return fake_clock


# How a wait ends


@pytest.mark.parametrize(
    ("status", "outcome"),
    [("done", Outcome.SUCCEEDED), ("failed", Outcome.FAILED), ("archived", Outcome.UNKNOWN_STATUS)],
)
def test_a_finished_batch_ends_the_wait_with_the_outcome_its_status_means(
    status: str, outcome: Outcome
) -> None:
    result = AtScale(batch("inprogress"), batch(status)).wait()

    assert result == WaitResult(outcome, "b-1", batch(status), f"AtScale batch b-1 is {status}")


def test_a_batch_running_at_the_deadline_times_out_with_the_last_poll_at_the_deadline() -> None:
    atscale = AtScale(batch("inprogress"))

    result = atscale.wait(make_plan(timeout=150))

    assert result.outcome is Outcome.TIMED_OUT
    assert result.batch == batch("inprogress")
    assert atscale.polled_at == after(60, 120, 150)
    assert result.message.startswith(
        "AtScale batch b-1 did not finish within 2m 30s (last status: inprogress)"
    )
    assert "goes on in AtScale" in result.message
    assert "had not answered" not in result.message


def test_polls_keep_to_their_schedule_however_long_each_poll_takes() -> None:
    atscale = AtScale(batch("inprogress"), batch("inprogress"), batch("done"), poll_seconds=7.0)

    atscale.wait()

    assert atscale.polled_at == after(60, 120, 180)


def test_each_status_change_is_logged_once_with_elapsed_time_and_the_last_estimate_given() -> None:
    atscale = AtScale(
        batch("new"), batch("inprogress", estimate_time=1053), batch("inprogress"), batch("done")
    )

    atscale.wait()

    assert atscale.said == [
        "AtScale batch b-1 is inprogress after 2m 00s (estimate: 1.1s)",
        "AtScale batch b-1 is done after 4m 00s (estimate: 1.1s)",
    ]


@pytest.mark.parametrize(
    ("last_status", "running", "ended"),
    [("new", batch("inprogress", start_time=at(100)), 230), ("inprogress", batch("inprogress"), 400)],
    ids=["a status seen before the restart", "a status that ended after it"],
)
def test_a_resumed_wait_polls_at_once_and_logs_only_what_began_after_the_restart(
    clock: FakeClock, last_status: str, running: AggregateBatch, ended: float
) -> None:
    # The triggerer restarted 10 s after the poll at START + 180.
    began = make_plan(last_status=last_status)
    clock.time = START + 190
    atscale = AtScale(running, batch("done", end_time=at(ended)))

    result = atscale.wait(began, resumed=True)

    assert result.outcome is Outcome.SUCCEEDED
    assert atscale.polled_at == after(190, 240), "at once, then back on the schedule"
    assert [m.split(" after ")[0] for m in atscale.said] == ["AtScale batch b-1 is done"]


# Outages and errors


@pytest.mark.parametrize("error", PASSING, ids=["no answer", "429", "503"])
def test_an_outage_backs_off_to_the_poll_interval_and_is_logged_once_when_it_starts_and_ends(
    error: AtScaleError,
) -> None:
    atscale = AtScale(
        batch("inprogress"),
        batch("inprogress"),
        batch("done"),
        outage=(START + 120, START + 300),
        error=error,
    )

    result = atscale.wait()

    assert result.outcome is Outcome.SUCCEEDED
    assert atscale.polled_at == after(60, 120, 125, 135, 155, 195, 255, 315, 360)
    outage = [m for m in atscale.said if "polls of batch b-1" in m]
    assert outage == [
        f"AtScale does not answer polls of batch b-1 ({error}); polling on until 2026-01-01 01:00:00 UTC, "
        "at most every 1m 00s",
        "AtScale answers polls of batch b-1 again, after 3m 15s",
    ]


def test_an_outage_that_lasts_past_the_deadline_times_out_saying_so() -> None:
    atscale = AtScale(batch("inprogress"), outage=(START + 120, math.inf))

    result = atscale.wait(make_plan(timeout=300))

    assert result.outcome is Outcome.TIMED_OUT
    assert atscale.polled_at[-1] == START + 300, "polling on to the deadline"
    assert result.message.endswith(f"AtScale had not answered its polls for 3m 00s: {UNAVAILABLE}")


@pytest.mark.parametrize(
    "error",
    [
        http_error(AtScaleBadRequestError, 400),
        AtScaleResponseError("not JSON", method="GET", path="/wapi", status_code=200),
    ],
)
def test_an_error_that_stays_ends_the_wait_at_once_without_reading_the_connection(
    error: AtScaleError,
) -> None:
    atscale = AtScale(batch("inprogress"), error, batch("done"))

    with pytest.raises(type(error)):
        atscale.wait()

    assert len(atscale.polled_at) == 2
    assert atscale.reconnected_at == []


# Reading the connection again


def test_an_unknown_batch_ends_the_wait_when_the_connection_is_unchanged() -> None:
    atscale = AtScale(batch("inprogress"), NOT_FOUND, batch("done"))

    with pytest.raises(AtScaleNotFoundError):
        atscale.wait()

    assert atscale.polled_at == after(60, 120)
    assert atscale.reconnected_at == after(120), "read before giving up"


def test_a_token_refused_after_an_answer_is_polled_on_reading_the_connection_until_the_grace_ends() -> None:
    atscale = AtScale(batch("inprogress"), REFUSED)

    with pytest.raises(AtScaleAuthError):
        atscale.wait()

    refused = [t for t in atscale.polled_at if t > START + 60]
    assert refused[-1] - refused[0] == TOKEN_REFUSED_GRACE
    assert atscale.reconnected_at == refused, "the connection read before each refused poll is given up"
    assert sum("refuses the token" in m for m in atscale.said) == 1


def test_a_token_refused_until_the_connection_changes_within_the_grace_lets_the_wait_go_on() -> None:
    atscale = AtScale(
        batch("inprogress"), REFUSED, REFUSED, REFUSED, batch("done"), changed=[False, False, True]
    )

    result = atscale.wait()

    assert result.outcome is Outcome.SUCCEEDED
    assert atscale.polled_at == after(60, 120, 180, 240, 240)


def test_a_token_refused_before_atscale_ever_answered_the_wait_ends_it_at_once() -> None:
    atscale = AtScale(REFUSED, batch("done"))

    with pytest.raises(AtScaleAuthError):
        atscale.wait(make_plan(last_status=None))  # type: ignore[arg-type]

    assert atscale.polled_at == after(60)


@pytest.mark.parametrize(
    "error", [REFUSED, NOT_FOUND, NO_ANSWER, UNAVAILABLE], ids=["401", "404", "no answer", "503"]
)
def test_a_failed_poll_with_a_changed_connection_polls_again_at_once_and_goes_on(error: AtScaleError) -> None:
    atscale = AtScale(batch("inprogress"), error, batch("done"), changed=True)

    result = atscale.wait()

    assert result.outcome is Outcome.SUCCEEDED
    assert atscale.polled_at == after(60, 120, 120)
    assert atscale.reconnected_at == after(120)
    assert "Polling AtScale batch b-1 with the connection as it is now" in atscale.said
    assert not any("does not answer" in m for m in atscale.said), "no outage"


def test_a_token_refused_again_by_every_changed_connection_ends_the_wait_after_the_grace() -> None:
    atscale = AtScale(REFUSED, changed=True)

    with pytest.raises(AtScaleAuthError):
        atscale.wait()

    assert atscale.polled_at[:4] == after(60, 60, 120, 120), "polled again at once after each change"
    assert len(atscale.reconnected_at) == len(atscale.polled_at) / 2, "one re-read of the connection per poll"
    assert atscale.polled_at[-1] - atscale.polled_at[0] == TOKEN_REFUSED_GRACE


def test_a_long_outage_reads_the_connection_when_it_starts_then_every_five_minutes() -> None:
    atscale = AtScale(batch("done"), outage=(START + 60, START + 60 + 20 * 60))

    atscale.wait()

    assert len(atscale.polled_at) > 20
    assert atscale.reconnected_at[0] == START + 60, "when the outage starts"
    assert len(atscale.reconnected_at) == 1 + 3
    gaps = [b - a for a, b in zip(atscale.reconnected_at, atscale.reconnected_at[1:], strict=False)]
    assert all(gap >= RECONNECT_EVERY for gap in gaps)


def test_a_wait_whose_polls_succeed_never_reads_the_connection() -> None:
    atscale = AtScale(batch("new"), batch("inprogress"), batch("inprogress"), batch("done"))

    atscale.wait()

    assert atscale.reconnected_at == []


# The plan


def test_a_wait_on_a_worker_polls_first_exactly_one_interval_after_it_starts() -> None:
    assert make_plan() == WaitPlan("b-1", 60.0, START + 3600, 3600.0, START, START + 60, "new")


def test_deferred_waits_poll_first_in_the_second_half_of_the_interval_at_points_set_by_their_batch() -> None:
    offsets = [make_plan(f"batch-{i}", deferred=True).first_poll_at - START for i in range(50)]

    assert all(30.0 <= offset <= 60.0 for offset in offsets)
    assert len({round(offset) for offset in offsets}) > 10, "waits deferred together do not poll in lock-step"


def test_a_deferred_wait_rebuilt_later_from_its_arguments_keeps_its_schedule(clock: FakeClock) -> None:
    first = make_plan(deferred=True)
    clock.time += 1000

    rebuilt = make_plan(deferred=True, started_at=first.started_at, deadline=first.deadline)

    assert rebuilt == first


# The result, as a trigger event


@pytest.mark.parametrize(
    "result",
    [
        WaitResult(Outcome.SUCCEEDED, "b-1", AggregateBatch.from_api(batch_object(status="done")), "done"),
        WaitResult(Outcome.FAILED, "b-1", AggregateBatch.from_api(batch_object(status="failed")), "failed"),
        WaitResult(Outcome.UNKNOWN_STATUS, "b-1", AggregateBatch.from_api(batch_object(status="x")), ""),
        WaitResult(Outcome.TIMED_OUT, "b-1", batch("inprogress", create_date=at(0)), "late"),
        WaitResult(Outcome.TIMED_OUT, "b-1", None, "late, never seen"),
        WaitResult(Outcome.ERROR, "b-1", None, "HTTP 401"),
    ],
    ids=lambda result: f"{result.outcome.value}{'' if result.batch else ' without batch'}",
)
def test_a_result_round_trips_through_its_json_payload(result: WaitResult) -> None:
    payload = json.loads(json.dumps(result.to_payload()))

    assert WaitResult.from_payload(payload) == result
    assert payload["batch"] == (result.batch.to_api() if result.batch else None)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (None, "Expected an AtScale trigger event, got None: refusing to guess"),
        ([], "refusing to guess"),
        ({}, "Unknown AtScale trigger event outcome None"),
        ({"outcome": "done", "batch_id": "b-1"}, "outcome 'done'"),
        ({"outcome": "succeeded", "batch_id": "b-1", "batch": None}, "'succeeded' carries no batch"),
        ({"outcome": "failed", "batch_id": "b-1"}, "'failed' carries no batch"),
        ({"outcome": "error", "batch_id": 7, "batch": None}, "Malformed"),
        ({"outcome": "error", "batch_id": "b-1", "batch": "done"}, "Malformed"),
        ({"outcome": "succeeded", "batch_id": "b-1", "batch": {"status": "done"}}, "Malformed.*no id"),
    ],
)
def test_a_missing_malformed_or_unknown_payload_is_refused(payload: Any, match: str) -> None:
    with pytest.raises(AtScaleError, match=match):
        WaitResult.from_payload(payload)


@pytest.mark.parametrize(
    ("outcome", "error"), [(Outcome.TIMED_OUT, AtScaleWaitTimeoutError), (Outcome.ERROR, AtScaleError)]
)
def test_a_wait_that_saw_no_end_raises_with_its_message(outcome: Outcome, error: type[AtScaleError]) -> None:
    with pytest.raises(error, match="the reason"):
        WaitResult(outcome, "b-1", batch("inprogress"), "the reason").batch_or_raise()


# What a bad end says


def aggregate(status: str, table: str, message: str | None = None) -> AggregateInstance:
    return AggregateInstance(
        id=f"i-{table}", status=status, table_name=table, table_schema="s", message=message
    )


@pytest.mark.parametrize(
    ("status", "aggregates", "expected"),
    [
        ("failed", None, "'failed' (its aggregates could not be listed)"),
        ("failed", [aggregate("active", "ok")], "'failed' (no aggregate reported a failure)"),
        (
            "archived",
            [],
            "'archived', which this provider does not know: not treating it as success "
            "(no aggregate reported a failure)",
        ),
        (
            "failed",
            [aggregate("active", "ok"), aggregate("invalid", "a", "disk full"), aggregate("failed", "b")],
            "'failed'. Failing aggregates:\n  - s.a (invalid): disk full\n  - s.b (failed)",
        ),
    ],
)
def test_failure_message_names_the_status_and_every_failing_aggregate(
    status: str, aggregates: list[AggregateInstance] | None, expected: str
) -> None:
    head = "AtScale batch b-1 of model m ended in status "

    assert failure_message(batch(status), aggregates) == head + expected


def test_a_failed_batch_whose_aggregates_cannot_be_listed_still_fails_saying_so() -> None:
    said = Said()

    def read_aggregates(ref: object) -> list[AggregateInstance]:
        raise UNAVAILABLE

    with pytest.raises(AtScaleBuildFailedError, match="could not be listed") as excinfo:
        raise_unless_succeeded(batch("failed"), SimpleNamespace(read_aggregates=read_aggregates), said)

    assert excinfo.value.batch == batch("failed")
    assert said[0].startswith("Could not list the aggregates of AtScale batch b-1")
