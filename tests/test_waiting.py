"""
The waiting loop as a flow, driven by feeding it answers: no HTTP, no Airflow, a fake clock.

:func:`wait_for_batch` yields ``Sleep`` and ``POLL``; these tests answer each ``POLL`` with a batch or an
error, move the clock by each ``Sleep``, and look at what it asked for, what it logged and how it ended.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable
from typing import Any

import pytest

from airflow_provider_atscale._flow import POLL, Sleep
from airflow_provider_atscale._waiting import Outcome, WaitEvent, WaitPlan, wait_for_batch
from airflow_provider_atscale.batches import AggregateBatch
from airflow_provider_atscale.errors import (
    AtScaleAuthError,
    AtScaleError,
    AtScaleNotFoundError,
    AtScaleRateLimitError,
    AtScaleServerError,
    AtScaleTransportError,
)
from tests.helpers import FakeClock

START = 1_767_225_600.0


def batch(status: str, **fields: Any) -> AggregateBatch:
    return AggregateBatch(id="b-1", catalog_id="c", model_id="m", status=status, **fields)


def plan(**changes: Any) -> WaitPlan:
    values: dict[str, Any] = {
        "batch_id": "b-1",
        "poll_interval": 60.0,
        "deadline": START + 3600,
        "timeout": 3600.0,
        "started_at": START,
        "first_poll_at": START + 60,
        "last_status": "new",
    }
    values.update(changes)
    return WaitPlan(**values)


def server_error() -> AtScaleServerError:
    return AtScaleServerError(
        "AtScale GET /wapi failed with HTTP 503",
        method="GET",
        path="/wapi",
        status_code=503,
        atscale_message=None,
    )


class Driver:
    """Runs a waiting flow, answering each poll from a list and recording when each poll came."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.polled_at: list[float] = []

    def run(
        self, flow: Generator[Any, Any, WaitEvent], answers: Iterable[AggregateBatch | AtScaleError]
    ) -> WaitEvent:
        pending = iter(answers)
        reply: Any = None
        error: AtScaleError | None = None
        while True:
            try:
                instruction = flow.throw(error) if error is not None else flow.send(reply)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply, error = None, None
            if isinstance(instruction, Sleep):
                assert instruction.seconds > 0
                self.clock.sleep(instruction.seconds)
            else:
                assert instruction is POLL
                self.polled_at.append(self.clock.now())
                answer = next(pending)
                if isinstance(answer, AtScaleError):
                    error = answer
                else:
                    reply = answer


@pytest.fixture
def clock(fake_clock: FakeClock) -> FakeClock:
    fake_clock.time = START
    return fake_clock


@pytest.fixture
def logger() -> logging.Logger:
    return logging.getLogger("tests.waiting")


def test_polls_on_schedule_until_the_batch_finishes(clock: FakeClock, logger: logging.Logger) -> None:
    driver = Driver(clock)

    event = driver.run(
        wait_for_batch(plan(), logger), [batch("inprogress"), batch("inprogress"), batch("done")]
    )

    assert event.outcome is Outcome.SUCCEEDED
    assert event.batch == batch("done").to_api()
    assert driver.polled_at == [START + 60, START + 120, START + 180]


@pytest.mark.parametrize(
    "error",
    [
        AtScaleTransportError("no answer", method="GET", path="/wapi"),
        AtScaleRateLimitError("429", method="GET", path="/wapi", status_code=429, atscale_message=None),
        server_error(),
    ],
)
def test_an_outage_does_not_end_the_wait_and_is_logged_once_at_each_end(
    clock: FakeClock, logger: logging.Logger, caplog: pytest.LogCaptureFixture, error: AtScaleError
) -> None:
    driver = Driver(clock)
    answers = [batch("inprogress"), *[error] * 8, batch("inprogress"), batch("done")]

    with caplog.at_level(logging.INFO, logger="tests.waiting"):
        event = driver.run(wait_for_batch(plan(), logger), answers)

    assert event.outcome is Outcome.SUCCEEDED
    gaps = [later - earlier for earlier, later in zip(driver.polled_at, driver.polled_at[1:], strict=False)]
    assert all(0 < gap <= 60.0 for gap in gaps), "backing off, never longer than the poll interval"
    assert gaps[:4] == [60.0, 5.0, 10.0, 20.0], "backoff doubles from 5 s"
    messages = [record.getMessage() for record in caplog.records]
    assert sum("does not answer polls of batch b-1" in m for m in messages) == 1
    assert sum("answers polls of batch b-1 again" in m for m in messages) == 1


def test_an_outage_past_the_deadline_times_out_saying_so(clock: FakeClock, logger: logging.Logger) -> None:
    driver = Driver(clock)

    event = driver.run(
        wait_for_batch(plan(deadline=START + 300), logger), [batch("inprogress")] + [server_error()] * 50
    )

    assert event.outcome is Outcome.TIMED_OUT
    assert clock.now() >= START + 300
    assert driver.polled_at[-1] == START + 300, "the last poll is at the deadline"
    assert "did not finish within 1h 00m (last status: inprogress)" in event.message
    assert "AtScale had not answered its polls for" in event.message


@pytest.mark.parametrize(
    "error",
    [
        AtScaleAuthError("401", method="GET", path="/wapi", status_code=401, atscale_message=None),
        AtScaleNotFoundError("404", method="GET", path="/wapi", status_code=404, atscale_message=None),
    ],
)
def test_an_error_that_will_not_pass_ends_the_wait_at_once(
    clock: FakeClock, logger: logging.Logger, error: AtScaleError
) -> None:
    driver = Driver(clock)

    with pytest.raises(type(error)):
        driver.run(wait_for_batch(plan(), logger), [batch("inprogress"), error, batch("done")])

    assert len(driver.polled_at) == 2


def test_a_resumed_wait_polls_at_once_and_does_not_log_again_what_was_seen_before(
    clock: FakeClock, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import datetime, timezone

    # The triggerer restarted 10 s after the poll at START + 180; the batch started at START + 100.
    clock.time = START + 190
    began = datetime.fromtimestamp(START + 100, tz=timezone.utc)
    driver = Driver(clock)

    with caplog.at_level(logging.INFO, logger="tests.waiting"):
        event = driver.run(
            wait_for_batch(plan(), logger, resumed=True),
            [
                batch("inprogress", start_time=began),
                batch("done", end_time=datetime.fromtimestamp(START + 230, tz=timezone.utc)),
            ],
        )

    assert event.outcome is Outcome.SUCCEEDED
    assert driver.polled_at == [START + 190, START + 240], "at once, then back on the schedule"
    logged = [record.getMessage() for record in caplog.records]
    assert not any("is inprogress" in m for m in logged), "the trigger before the restart logged it"
    assert any("is done after" in m for m in logged)


def test_a_resumed_wait_logs_a_status_that_began_after_the_restart(
    clock: FakeClock, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import datetime, timezone

    clock.time = START + 190
    began = datetime.fromtimestamp(START + 400, tz=timezone.utc)
    driver = Driver(clock)

    with caplog.at_level(logging.INFO, logger="tests.waiting"):
        driver.run(
            wait_for_batch(plan(last_status="inprogress"), logger, resumed=True),
            [batch("inprogress"), batch("done", end_time=began)],
        )

    assert sum("is done after" in record.getMessage() for record in caplog.records) == 1


def test_a_status_seen_again_is_not_logged_again(
    clock: FakeClock, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    driver = Driver(clock)

    with caplog.at_level(logging.INFO, logger="tests.waiting"):
        driver.run(
            wait_for_batch(plan(), logger),
            [batch("new"), batch("inprogress"), batch("inprogress"), batch("done")],
        )

    logged = [record.getMessage() for record in caplog.records]
    assert [m.split(" after ")[0] for m in logged] == [
        "AtScale batch b-1 is inprogress",
        "AtScale batch b-1 is done",
    ]
    assert logged[0] == "AtScale batch b-1 is inprogress after 2m 00s (estimate: not given)"
